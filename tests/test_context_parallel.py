"""Context parallelism in prefill pools: a rank of cp attention groups prefills each prompt together. It gains nothing
on a prompt that fits one group's step, wins on long prompts under a tight TTFT, is searched only where the engine
has it (SGLang), and plan.json, the layout text, estimate, the simulator and the launch files carry it."""

import json
import re
from dataclasses import replace

import numpy as np
import pytest
import yaml

from hwmodels.errors import InputError
from hwmodels.layout import Layout
from hwmodels.layout_text import layout_text, parse_layout
from moeplan import api, example_path
from planner.plan_json import plan_to_json
from planner.prompt_times import prompt_lengths, rank_prefill_s
from planner.search import instance_sizes, score_prefill


def _spec(units: int = 6, ttft_s: float = 4.0, **serving) -> dict:
    spec = yaml.safe_load(example_path().read_text())  # Kimi K2 on H200, Mooncake's prompt lengths (cv 1.31)
    spec["cluster"]["units"], spec["slo"]["ttft_s"] = units, ttft_s
    spec["serving"] |= serving
    return spec


@pytest.fixture(scope="module")
def tight():
    """Kimi K2 on 48 H200 at TTFT 4 s under SGLang: the p99 prompt takes longer than that on any one attention group."""
    return api.plan(_spec(), backend="sglang")


def test_a_prompt_that_fits_one_groups_step_gains_nothing_and_a_long_one_about_cp_fold():
    d = api.deployment(_spec())
    split = next(c for c in score_prefill(d, instance_sizes(d, "prefill")) if c.layout.cp == 4)
    alone = replace(split, layout=replace(split.layout, cp=1))
    one_step = split.work_per_device * split.layout.tp  # a group's prompt tokens per step
    prompts = np.array([one_step / 4, one_step / 2, 64.0 * one_step])
    t_split, t_alone = rank_prefill_s(d, split, prompts), rank_prefill_s(d, alone, prompts)
    assert (t_split[:2] >= t_alone[:2]).all()  # the all-gather on top, no gain
    assert t_alone[2] / 4 < t_split[2] < t_alone[2] / 3.5  # a quarter, plus the gather


def test_a_ttft_no_single_group_meets_is_planned_with_context_parallel(tight):
    r = tight.recommendation
    assert r is not None, tight.infeasible
    assert r.prefill is not None and r.prefill.layout.cp > 1 and r.ttft_s <= 4.0
    assert tight.replays and tight.replays[-1].holds and tight.replays[-1].replayed_ttft_s <= 4.0
    why = next(a for a in tight.assumptions if a.startswith("the recommended prefill pool splits each prompt"))
    split, alone = (float(x) for x in re.findall(r"([\d.]+) s", why)[:2])
    assert split <= 4.0 < alone  # one group alone misses the SLO before any wait
    assert f"CP{r.prefill.layout.cp}" in r.prefill.layout.name()


def test_short_prompts_under_a_loose_ttft_keep_one_group_per_prompt():
    spec = _spec(units=2, ttft_s=5.0)
    spec["workload"] = {"input_tokens": 1000, "output_tokens": 300, "requests_per_s": 1.0}
    r = api.plan(spec, replay=0).recommendation
    assert r is not None and (r.prefill is None or r.prefill.layout.cp == 1)


def test_engines_without_prefill_cp_do_not_search_it():
    for engine in ("vllm", "trtllm"):
        d = api.deployment(_spec(engine={"name": engine}))
        assert all(c.layout.cp == 1 for c in score_prefill(d, instance_sizes(d, "prefill")))


def test_plan_json_carries_context_parallel_and_reads_older_files(tight):
    doc = json.loads(json.dumps(plan_to_json(tight.plan)))
    layout = doc["recommendation"]["prefill"]["layout"]
    assert layout["context_parallel"] == tight.recommendation.prefill.layout.cp
    back = api.load_plan(doc, _spec(engine={"name": "sglang"}))
    assert back.recommendation.prefill.layout == tight.recommendation.prefill.layout
    older = json.loads(json.dumps(doc))
    del older["recommendation"]["decode"]["layout"]["context_parallel"]  # written before context parallelism
    assert api.load_plan(older, _spec(engine={"name": "sglang"})).recommendation.decode.layout.cp == 1
    older["recommendation"]["decode"]["layout"]["context_parallel"] = 2
    with pytest.raises(InputError, match="context_parallel"):
        api.load_plan(older, _spec(engine={"name": "sglang"}))


def test_the_layout_text_says_cp_and_refuses_one_that_does_not_divide_dp():
    arch = api.deployment(_spec()).model
    layout = parse_layout("attention=tp2xdp8,experts=ep16,cp=4", arch)
    assert layout == Layout(tp=2, dp=8, cp=4, redundant_experts=layout.redundant_experts) and layout.rank_devices == 8
    assert parse_layout(layout_text(layout), arch) == layout
    with pytest.raises(InputError, match="--layout cp"):
        parse_layout("attention=dp6,experts=ep6,cp=4", arch)


def test_estimate_takes_cp_on_prefill_only_and_where_the_engine_has_it():
    spec = _spec()
    e = api.estimate(spec, prefill="attention=tp2xdp8,experts=ep16,cp=8", decode="attention=dp16,experts=ep16")
    assert e.plan.recommendation.prefill.layout.cp == 8
    with pytest.raises(InputError, match="--layout"):
        api.estimate(spec, layout="attention=dp16,experts=ep16,cp=2")
    with pytest.raises(InputError, match="vllm has no prefill context parallelism"):
        api.estimate(_spec(engine={"name": "vllm"}), prefill="attention=dp16,experts=ep16,cp=2",
                     decode="attention=dp16,experts=ep16")


def test_launch_files_say_sglangs_prefill_cp_and_other_engines_refuse(tight):
    files = api.launch_files(tight)
    cp = tight.recommendation.prefill.layout.cp
    argv = files["prefill.sh"]
    assert f"--attn-cp-size {cp}" in argv and "--enable-prefill-cp" in argv and "--cp-strategy zigzag" in argv
    doc = json.loads(json.dumps(plan_to_json(tight.plan)))
    with pytest.raises(InputError, match="serving.engine"):  # the plan.json of another engine: refused as it loads
        api.load_plan(doc, _spec(engine={"name": "vllm"}))
    older = {k: v for k, v in doc.items() if k != "serving"}  # one written before plan.json recorded its engine
    with pytest.raises(InputError, match="--backend"):
        api.launch_files(api.load_plan(older, _spec(engine={"name": "vllm"})))


def test_the_replay_prefills_a_long_prompt_on_every_group_of_its_rank(tight):
    # the simulator's ranks are the CP ranks: fewer of them, each taking cp groups' tokens per step
    prompts = prompt_lengths(tight.deployment)
    assert prompts.max() > 16 * tight.recommendation.prefill.work_per_device
    replay = tight.replays[-1]
    assert replay.completed == replay.requests


def test_the_readme_quotes_the_plan(tight):
    from pathlib import Path
    readme = " ".join((Path(__file__).parent.parent / "README.md").read_text().split())
    r = tight.recommendation
    why = next(a for a in tight.assumptions if a.startswith("the recommended prefill pool splits each prompt"))
    for text in (f"the recommended prefill pool is {r.prefill.describe(True)}", why.split(" (prompts up to")[0],
                 f"The replay holds at {tight.replays[-1].replayed_ttft_s:.2f} s at p99"):
        assert " ".join(text.split()) in readme, f"README no longer says: {text}"
