"""MTP speculative decoding in the search: decode pools of a model with MTP modules are scored with and without
the model's drafts (hwmodels.speculation), TPOT is the step over the tokens it advances, and the plan, plan.json,
the simulator and the launch files carry it."""

import json

import pytest

from hwmodels import catalog
from hwmodels.errors import InputError
from hwmodels.speculation import DEFAULT_ACCEPTANCE, Speculation
from moeplan import api, example_path
from planner.plan_json import plan_from_json, plan_to_json

DEEPSEEK = example_path().parent / "deepseek-v3-gb200-nvl72.yaml"


def _spec(**serving) -> dict:
    return {"model": "deepseek-v3", "cluster": {"unit": "gb200-nvl72", "devices": 48},
            "workload": {"input_tokens": 2000, "output_tokens": 200, "requests_per_s": 40.0, "max_input_tokens": 16000},
            "slo": {"ttft_s": 2.0, "tpot_s": 0.05}, "serving": serving}


@pytest.fixture(scope="module")
def with_mtp():
    return api.plan(_spec(), replay=1)


@pytest.fixture(scope="module")
def without_mtp():
    return api.plan(_spec(speculative={"draft_tokens": 0}), replay=0)


def test_a_model_with_mtp_modules_drafts_one_token_per_module_at_deepseeks_acceptance():
    s = api.deployment(_spec()).serving.speculation
    assert (s.draft_tokens, s.acceptance) == (catalog.load_model("deepseek-v3").num_mtp_layers, DEFAULT_ACCEPTANCE)
    assert "DeepSeek-V3 Technical Report" in s.source
    assert api.deployment(str(example_path())).serving.speculation is None  # Kimi K2 has no MTP module
    given = api.deployment(_spec(speculative={"draft_tokens": 2, "acceptance": 0.7})).serving.speculation
    assert given == Speculation(2, 0.7, "spec serving.speculative") and given.tokens_per_step == pytest.approx(1 + 0.7 + 0.49)
    with pytest.raises(InputError) as e:
        api.deployment({**_spec(speculative={"draft_tokens": 1}), "model": "kimi-k2"})
    assert e.value.field == "serving.speculative"


def test_tpot_is_the_verify_step_over_the_tokens_it_advances(with_mtp):
    dc = with_mtp.recommendation.decode
    assert dc.speculation is not None
    assert dc.tpot_s == pytest.approx(dc.step_s / dc.speculation.tokens_per_step)
    assert dc.tokens_per_s_per_user == pytest.approx(1 / dc.tpot_s)


def test_mtp_wins_where_its_drafts_are_cheap_and_is_dropped_when_turned_off(with_mtp, without_mtp):
    assert all(c.speculation is None for c in without_mtp.frontier)
    assert any(c.speculation is not None for c in with_mtp.frontier)
    assert with_mtp.recommendation.usd_per_hour <= without_mtp.recommendation.usd_per_hour
    assert any("MTP speculative decoding" in a for a in with_mtp.assumptions)


def test_the_verify_step_costs_more_than_a_plain_one(with_mtp):
    from planner.prompt_times import instance_context
    d, dc = with_mtp.deployment, with_mtp.recommendation.decode
    ctx = instance_context(d, dc)
    plain, verify = (ctx.step("decode", dc.work_per_device, 2100, draft).time_s for draft in (0, 1))
    assert plain < verify < 2 * plain


def test_plan_json_carries_the_speculation(with_mtp):
    doc = json.loads(json.dumps(plan_to_json(with_mtp.plan)))
    assert doc["recommendation"]["decode"]["speculation"]["draft_tokens"] == 1
    back = plan_from_json(doc, with_mtp.deployment)
    assert back.recommendation.decode.speculation == with_mtp.recommendation.decode.speculation


def test_the_replay_decodes_at_the_speculative_rate(with_mtp):
    check = with_mtp.replays[0]
    assert check.completed == check.requests
    assert check.replayed_tpot_s == pytest.approx(check.planned_tpot_s, rel=0.35)


def test_launch_files_run_the_mtp_module(with_mtp):
    from dataclasses import replace
    from hwmodels.deployment import Serving
    d = with_mtp.deployment
    for engine, needle in (("sglang", "--speculative-algorithm"), ("vllm", "deepseek_mtp"), ("trtllm", "decoding_type: MTP")):
        served = replace(d, serving=Serving(d.serving.hbm_utilization, d.serving.tokens_per_step, engine,
                                            speculation=d.serving.speculation))
        files = api.launch_files(replace(with_mtp.plan, deployment=served))
        decode = files["decode.yaml"] if engine == "trtllm" else files["decode.sh"]
        assert needle in decode


def test_estimate_pins_mtp_on_or_off():
    kwargs = dict(prefill="attention=dp8", decode="attention=dp8", batch=64)
    on = api.estimate(_spec(), mtp=True, **kwargs).plan.recommendation.decode
    off = api.estimate(_spec(), mtp=False, **kwargs).plan.recommendation.decode
    assert on.speculation is not None and off.speculation is None
    assert on.tpot_s < off.tpot_s < on.step_s  # the verify step is longer, the time per token shorter
    with pytest.raises(InputError) as e:
        api.estimate(str(example_path()), layout="attention=tp8xdp2", mtp=True)
    assert e.value.field == "--mtp"
