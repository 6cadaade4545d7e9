"""Attention-FFN disaggregation (hwmodels.afd): decode pools whose routed experts run on devices of their own, priced
by the ping-pong pipeline, held by the attention devices' KV, weighed by the engine-agnostic search, written to and
read from plan.json, refused where no engine can launch it."""

import json

import numpy as np
import pytest

from hwmodels import afd
from hwmodels.calibrate.operator_costs import fitted_costs
from hwmodels.errors import InputError
from hwmodels.hardware import instance_cluster
from hwmodels.layout import Layout
from hwmodels.layout_text import layout_text, parse_layout
from hwmodels.layouts import layout_space
from hwmodels.memory import device_memory
from hwmodels.step import StepContext
from moeplan import api, example_path, figures, tables
from moeplan.launch import launch_files
from planner.device_map import attention_map, kv_map
from planner.plan_json import plan_from_json, plan_to_json
from planner.search import afd_searched, instance_sizes, score_decode, score_prefill

AFD = "attention=dp8,experts=ep8,afd=on"
PLAIN = "attention=dp16,experts=ep16"


@pytest.fixture(scope="module")
def kimi():
    return api.deployment(example_path(), backend="fitted")


@pytest.fixture(scope="module")
def estimated(kimi):
    return api.estimate(example_path(), decode=AFD, prefill=PLAIN, backend="fitted")


def _cluster(d, devices):
    return instance_cluster(d.cluster.unit, devices)


def test_the_layout_counts_attention_and_ffn_devices_apart():
    lay = Layout(tp=2, dp=4, ffn_devices=8, redundant_experts=8)
    assert (lay.attention_devices, lay.devices, lay.ep) == (8, 16, 8)
    assert lay.name() == "TP2 x DP4 attention + EP8 (+8 redundant), AFD"
    for bad in (dict(pp=2), dict(moe_tp=2), dict(two_batch_overlap=True), dict(ffn_devices=-1)):
        with pytest.raises(ValueError):
            Layout(tp=2, dp=4, **{"ffn_devices": 8, **bad})


def test_layout_text_reads_and_writes_afd(kimi):
    lay = parse_layout(AFD, kimi.model)
    assert lay == Layout(tp=1, dp=8, ffn_devices=8) and parse_layout(layout_text(lay), kimi.model) == lay
    for text, key in ((AFD + ",pp=2", "afd"), ("attention=dp8,afd=on", "afd"), ("attention=dp8,experts=tp2xep4,afd=on", "afd"),
                      ("attention=dp8,experts=ep8,afd=maybe", "afd")):
        with pytest.raises(InputError, match=key):
            parse_layout(text, kimi.model)


def test_attention_devices_hold_no_experts_and_more_sequences(kimi):
    d, context = kimi, kimi.workload.context_tokens
    mem = {t: device_memory(d.model, d.precision, _cluster(d, 16), parse_layout(t, d.model), context,
                            d.serving.hbm_utilization, d.serving.tokens_per_step) for t in (AFD, PLAIN)}
    assert mem[AFD].weights_by_part["routed_experts"] == 0 < mem[PLAIN].weights_by_part["routed_experts"]
    assert mem[AFD].concurrent_sequences / 8 > mem[PLAIN].concurrent_sequences / 16
    # each FFN device holds 384 / 8 experts of every MoE layer: about twice a plain EP16 device's
    assert mem[AFD].ffn_device_bytes == pytest.approx(2 * mem[PLAIN].weights_by_part["routed_experts"], rel=0.05)
    # two FFN devices cannot hold a trillion parameters of experts: the layout does not fit
    squeezed = device_memory(d.model, d.precision, _cluster(d, 8), Layout(tp=1, dp=6, ffn_devices=2), context,
                             d.serving.hbm_utilization, d.serving.tokens_per_step)
    assert squeezed.ffn_device_bytes > squeezed.usable_bytes and not squeezed.fits


def test_token_copies_cross_between_the_attention_and_ffn_devices(kimi):
    one_node, two_nodes = _cluster(kimi, 8), _cluster(kimi, 16)
    assert afd.link_copies(one_node, Layout(tp=1, dp=4, ffn_devices=4), 8) == {"device": 0.0, "scaleup": 8.0, "scaleout": 0.0}
    assert afd.link_copies(two_nodes, Layout(tp=1, dp=8, ffn_devices=8), 8) == {"device": 0.0, "scaleup": 0.0, "scaleout": 8.0}
    # 12 attention devices and 4 FFN devices on two nodes: the second node's 4 attention devices reach every FFN
    # device on their own node, the first node's reach none; an FFN device receives three attention devices' worth
    # (24 copies per attention-device token), 4 of the 12 senders local
    mixed = afd.link_copies(two_nodes, Layout(tp=1, dp=12, ffn_devices=4), 8)
    assert mixed["scaleup"] == pytest.approx(8.0) and mixed["scaleout"] == pytest.approx(24.0 * 8 / 12)
    assert afd.link_copies(two_nodes, Layout(tp=1, dp=8, ffn_devices=8), 8, busiest_factor=1.5)["scaleout"] == 12.0


def test_the_ping_pong_pipeline_runs_each_stage_m_times_and_fills_once():
    a, disp, e, comb = (np.array([x]) for x in (3.0, 1.0, 2.0, 1.0))
    one, fill_one = afd.ping_pong_s(a, disp, e, comb, 1)
    assert one[0] + fill_one == 7.0  # no overlap: the stages in turn
    three, fill = afd.ping_pong_s(a, disp, e, comb, 3)
    assert three[0] == 9.0 and fill == 7.0 - 3.0  # the attention stage paces three micro-batches
    two, _ = afd.ping_pong_s(a, disp, e, comb, 2)
    assert two[0] == 2 * 3.5  # two micro-batches cannot hide a 7-unit round trip behind a 3-unit stage


def test_an_afd_step_prices_both_sides_and_spreads_its_tokens_over_every_device(kimi):
    d, context = kimi, kimi.workload.context_tokens
    ctx = StepContext(d.model, d.precision, _cluster(d, 16), Layout(tp=1, dp=8, ffn_devices=8), None, fitted_costs())
    step = ctx.step("decode", 64, context)
    assert step.tokens_per_device == 64 * 8 / 16
    assert min(step.breakdown_s[c] for c in ("attention", "expert_gemm", "dispatch", "combine")) > 0
    assert {"afd_dispatch", "afd_combine"} <= {name for name, _, _ in step.operator_sources}
    assert step.time_s < sum(step.breakdown_s.values())  # the pipeline overlaps the two sides
    # the fastest micro-batch count: no other count is faster
    each = {}
    for m in afd.MICRO_BATCHES:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(afd, "MICRO_BATCHES", (m,))
            each[m] = StepContext(d.model, d.precision, _cluster(d, 16), Layout(tp=1, dp=8, ffn_devices=8), None,
                                  fitted_costs()).step("decode", 64, context).time_s
    assert step.time_s == min(each.values()) == each[step.micro_batches] and len(set(each.values())) == 3
    overlap = StepContext(d.model, d.precision, _cluster(d, 16), Layout(tp=1, dp=16, two_batch_overlap=True))
    assert overlap.step("decode", 64, context).micro_batches == 2
    # the same split inside one node keeps every copy on NVLink: cheaper transfers per token
    inside = StepContext(d.model, d.precision, _cluster(d, 8), Layout(tp=1, dp=4, ffn_devices=4), None, fitted_costs())
    assert inside.step("decode", 64, context).breakdown_s["dispatch"] < step.breakdown_s["dispatch"]
    with pytest.raises(ValueError, match="decode"):
        ctx.step("prefill", 1024, context)
    # TP attention shards the shared expert: its partial sums cost an all-reduce that DP attention does not pay
    tp8 = StepContext(d.model, d.precision, _cluster(d, 16), Layout(tp=8, dp=1, ffn_devices=8), None, fitted_costs())
    assert "shared_expert_allreduce" in {name for name, _, _ in tp8.step("decode", 8, context).operator_sources}
    assert "shared_expert_allreduce" not in {name for name, _, _ in step.operator_sources}


def test_the_search_weighs_afd_for_decode_only_and_only_without_a_named_engine(kimi):
    assert afd_searched(kimi) and not afd_searched(api.deployment(example_path(), backend="sglang"))
    assert not any(x.ffn_devices for x in layout_space(kimi.model, _cluster(kimi, 16)))
    assert any(x.ffn_devices for x in layout_space(kimi.model, _cluster(kimi, 16), afd=True))
    decode = score_decode(kimi, [16])
    assert any(c.layout.ffn_devices for c in decode) and any(not c.layout.ffn_devices for c in decode)
    assert all(c.layout.devices == 16 and c.speculation is None for c in decode if c.layout.ffn_devices)
    assert not any(c.layout.ffn_devices for c in score_prefill(kimi, instance_sizes(kimi, "prefill")[:1]))


def test_an_afd_plan_round_trips_through_plan_json_and_replays(estimated):
    p = estimated.plan
    doc = json.loads(json.dumps(plan_to_json(p)))
    decode = doc["recommendation"]["decode"]
    assert decode["layout"]["ffn_devices"] == 8 and decode["memory_per_device"]["ffn_device_bytes"] > 0
    att, kv = decode["placement"]["attention"], decode["placement"]["kv"]
    assert att["role_of_device"] == ["attention"] * 8 + ["experts"] * 8
    assert att["dp_rank_of_device"] == list(range(8)) + [None] * 8 and kv["devices"] == 8
    back = plan_from_json(doc, p.deployment).recommendation.decode
    assert back.layout == p.recommendation.decode.layout
    assert decode["steps"][0]["micro_batches"] == back.perf.steps[0].micro_batches in afd.MICRO_BATCHES
    bad = json.loads(json.dumps(doc))
    bad["recommendation"]["prefill"]["layout"]["ffn_devices"] = 4
    with pytest.raises(InputError, match="ffn_devices"):
        plan_from_json(bad, p.deployment)
    sim = api.simulate(p.deployment, plan=p, requests=60)
    # the replay steps the same pipeline: its TPOT near the plan's
    assert sim.completed == 60
    assert 0.5 < np.percentile(sim.tpot_s, 99) / p.recommendation.tpot_s < 1.5


def test_the_device_map_puts_kv_on_attention_devices_and_load_on_ffn_devices(estimated):
    frame = tables.device_map_frame(estimated.plan)
    c = estimated.plan.recommendation.decode
    kv = kv_map(c)
    assert kv["sequences_per_device"] == c.work_per_device and kv["devices"] == 8
    att = attention_map(c, estimated.deployment.model)
    assert att["stage_of_device"][8:] == [None] * 8
    decode = frame[frame["role"] == "decode"]
    ffn, attention = decode[decode["device_role"] == "experts"], decode[decode["device_role"] == "attention"]
    assert len(ffn) == len(attention) == 8 * estimated.deployment.model.num_layers
    assert (ffn["kv_bytes"] == 0).all() and not ffn["runs_layer"].any() and (attention["kv_bytes"] > 0).all()
    moe = estimated.deployment.model.moe_layers
    assert ffn[ffn["layer"].isin(moe)]["relative_expert_load"].notna().all()
    assert attention["relative_expert_load"].isna().all()
    fig = figures.device_map_figure(estimated.plan, "decode")
    assert "hold the routed experts alone" in fig.layout.title.text


def test_afd_is_refused_where_no_engine_serves_it(kimi, estimated):
    with pytest.raises(InputError, match="decode pools only"):
        api.estimate(example_path(), decode=PLAIN, prefill=AFD, backend="fitted")
    with pytest.raises(InputError, match="attention-FFN disaggregation"):
        api.estimate(example_path(), decode=AFD, prefill=PLAIN, backend="sglang")
    with pytest.raises(InputError, match="attention-FFN disaggregated"):
        launch_files(estimated.plan, "sglang", "0.5.6", "", "moonshotai/Kimi-K2-Instruct")


def test_the_plan_says_it_weighed_afd_and_where_it_landed():
    weighed = api.plan(example_path(), replay=0)
    line = next(a for a in weighed.plan.assumptions if a.startswith("attention-FFN disaggregated decode pools"))
    afd_points = sum(1 for c in weighed.frontier if c.layout.ffn_devices)
    assert f"on the decode frontier: {afd_points} of {len(weighed.frontier)} points" in line and afd_points
    named = api.plan(example_path(), replay=0, backend="sglang")
    assert not any("attention-FFN" in a for a in named.plan.assumptions)
    assert not any(c.layout.ffn_devices for c in named.frontier)
