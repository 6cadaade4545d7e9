"""Pipeline stages (hwmodels.pipeline): the engines' layer split, a step as the cycle of its stages, the memory a stage
holds, where PP wins (a weak scale-out fabric) and where it does not (Kimi K2 on 16 H200 at the default example's
batches), each from real step-model evaluations and real searches."""

from dataclasses import replace

import pytest

from hwmodels.catalog import load_model, load_unit
from hwmodels.hardware import instance_cluster, make_cluster
from hwmodels.layout import Layout
from hwmodels.layouts import layout_space, pipeline_stages
from hwmodels.memory import device_memory, kv_bytes_per_token_per_device, weights_per_device
from hwmodels.pipeline import PipelineTimes, stage_layers
from hwmodels.precision import default_plan
from hwmodels.roles import Phase
from hwmodels.step import StepContext
from moeplan import api, example_path
from planner.pipeline_notes import pipeline_assumptions
from planner.search import pareto_frontier, score_decode


@pytest.fixture(scope="module")
def kimi():
    arch = load_model("kimi-k2")
    return arch, default_plan(arch.quantization_config, arch.torch_dtype)


def _weak_nic_unit(fraction: float):
    """An HGX H200 node whose NIC carries `fraction` of its 400 Gb/s per GPU (a slower fabric, e.g. 100 GbE)."""
    unit = load_unit("hgx-h200")
    return replace(unit, device=replace(unit.device, scaleout_bytes_per_s=unit.device.scaleout_bytes_per_s * fraction))


def test_stages_split_the_layers_as_the_engines_do():
    # vLLM / SGLang get_pp_indices: the remainder to the stages before the last, from the second-to-last backwards
    assert list(map(len, stage_layers(61, 2))) == [31, 30]
    assert list(map(len, stage_layers(61, 4))) == [15, 15, 16, 15]
    assert list(map(len, stage_layers(22, 4))) == [5, 6, 6, 5]
    assert list(map(len, stage_layers(64, 4))) == [16] * 4


def test_cycle_is_the_sum_of_the_stages_or_pp_times_the_slowest():
    even = PipelineTimes((10.0, 10.0), (1.0, 0.5))
    assert even.latency_s == 21.5 and even.cycle_s == 21.5 and even.interval_s == 10.0
    skewed = PipelineTimes((4.0, 10.0), (0.5, 0.5))
    assert skewed.cycle_s == 20.0  # the slowest stage serves both micro-batches
    assert even.prompt_s(1) == 21.5 and even.prompt_s(5) == 21.5 + 4 * 10.0


@pytest.mark.parametrize("phase, tokens, context", [("decode", 64, 4096), ("prefill", 4096, 8192)])
def test_a_pipelined_step_is_its_stages_and_their_transfers(kimi, phase, tokens, context):
    """PP2 of DP8 + EP8 on 16 H200: the stages sum to the one-stage layout's step over every layer (same per-layer
    costs: each stage's EP8 group is one node, as EP8 on one node), and the step is their cycle."""
    arch, plan = kimi
    piped = StepContext(arch, plan, instance_cluster(load_unit("hgx-h200"), 16), Layout(1, 8, pp=2))
    whole = StepContext(arch, plan, instance_cluster(load_unit("hgx-h200"), 8), Layout(1, 8))
    s, one = piped.step(phase, tokens, context), whole.step(phase, tokens, context)
    p = s.pipeline
    assert p is not None and p.pp == 2 and len(p.transfer_s) == (2 if phase == "decode" else 1)
    assert sum(p.stage_s) == pytest.approx(one.time_s, rel=1e-9)
    assert s.time_s == pytest.approx(max(p.latency_s, 2 * max(p.stage_s)))
    assert s.time_s == pytest.approx(sum(s.by_layer_type_s.values()))
    assert s.breakdown_s["expert_gemm"] == pytest.approx(one.breakdown_s["expert_gemm"])
    # the activations cross between the nodes over the NIC (2 x rows x D x bf16 at 400 Gb/s): a few % of a stage
    assert 0 < p.transfer_s[0] < 0.03 * max(p.stage_s)
    assert "point-to-point" in dict((n, src) for n, src, _ in s.operator_sources)["pp_send_recv"]
    assert whole.step(phase, tokens, context).pipeline is None


def test_stages_halve_the_weights_and_kv_a_device_holds(kimi):
    arch, plan = kimi
    one, two = Layout(1, 8), Layout(1, 8, pp=2)
    w1, w2 = weights_per_device(arch, plan, one), weights_per_device(arch, plan, two)
    assert sum(w2.values()) == pytest.approx(sum(w1.values()) / 2, rel=0.03)
    # the first stage holds 31 layers: the dense layer 0 and 30 of the 60 MoE layers
    assert w2["routed_experts"] == pytest.approx(w1["routed_experts"] * 30 / 60)
    assert kv_bytes_per_token_per_device(arch, plan, two) == pytest.approx(
        kv_bytes_per_token_per_device(arch, plan, one) * 31 / 61)
    # every attention group holds the KV of all its micro-batches: the instance holds twice the sequences per group
    m1 = device_memory(arch, plan, instance_cluster(load_unit("hgx-h200"), 16), Layout(1, 16), 4096, 0.9, 8192)
    m2 = device_memory(arch, plan, instance_cluster(load_unit("hgx-h200"), 16), Layout(1, 8, pp=2), 4096, 0.9, 8192)
    assert m2.weight_bytes < m1.weight_bytes and m2.concurrent_sequences > m1.concurrent_sequences


def test_the_space_has_stages_of_whole_nodes_across_domains(kimi):
    arch, _ = kimi
    unit = load_unit("hgx-h200")
    assert pipeline_stages(arch, instance_cluster(unit, 8)) == [1]  # one node: its all-to-all is on NVLink already
    assert pipeline_stages(arch, instance_cluster(unit, 16)) == [1, 2]
    assert pipeline_stages(arch, instance_cluster(unit, 24)) == [1]  # 3 nodes split neither in 2 nor 4
    assert pipeline_stages(arch, instance_cluster(unit, 32)) == [1, 2, 4]
    space = layout_space(arch, instance_cluster(unit, 16), "vllm")
    assert {x.pp for x in space} == {1, 2} and all(x.dp == 1 for x in space if x.pp > 1)  # vLLM: TP x PP only
    assert any(x.pp == 2 and x.dp == 8 for x in layout_space(arch, instance_cluster(unit, 16), "sglang"))


def test_attention_tp_spans_domains_only_over_a_whole_instance(kimi):
    """TP16 over two HGX nodes (the engines' two-node recipes) is in the space, with no DP beside it; on four nodes
    only over a PP2 stage's two. Its all-reduce crosses the NICs: a TP16 rank prefills a prompt slower than a TP8 rank of
    TP8 x DP2 (which TensorRT-LLM cannot run) and faster than a one-GPU rank of DP16."""
    arch, plan = kimi
    unit = load_unit("hgx-h200")
    two_nodes = layout_space(arch, instance_cluster(unit, 16), "trtllm")
    assert {x.dp for x in two_nodes if x.tp == 16} == {1} and {x.tp for x in two_nodes if x.pp == 1} == {1, 16}
    four_nodes = layout_space(arch, instance_cluster(unit, 32))
    assert max(x.tp for x in four_nodes if x.pp == 1) == 8 and max(x.tp for x in four_nodes if x.pp == 2) == 16

    def prompt_s(layout: Layout) -> float:  # one 8,192-token chunk of a 4,096-token-context prompt on one rank
        step = StepContext(arch, plan, instance_cluster(unit, 16), layout).step(Phase.PREFILL, 8192 / layout.tp, 4096)
        return step.time_s
    assert prompt_s(Layout(8, 2)) < prompt_s(Layout(16, 1)) < prompt_s(Layout(1, 16))


def test_pp_beats_ep_across_nodes_on_a_weak_fabric(kimi):
    """At a quarter of the H200 node's NIC (100 Gb/s per GPU) EP16's all-to-all crossing the nodes costs more than
    PP2's two one-node stages at 64 sequences per device; at the full NIC it does not."""
    arch, plan = kimi

    def tokens_per_s(unit, layout):
        return StepContext(arch, plan, instance_cluster(unit, 16), layout).step(Phase.DECODE, 64, 4096).tokens_per_s_per_device
    weak, full = _weak_nic_unit(0.25), load_unit("hgx-h200")
    assert tokens_per_s(weak, Layout(1, 8, pp=2)) > 1.2 * tokens_per_s(weak, Layout(1, 16))
    assert tokens_per_s(full, Layout(1, 8, pp=2)) < tokens_per_s(full, Layout(1, 16))
    # the weak fabric does not touch the pipeline's stages: only its small transfers cross it
    assert tokens_per_s(weak, Layout(1, 8, pp=2)) == pytest.approx(tokens_per_s(full, Layout(1, 8, pp=2)), rel=0.02)


def test_on_a_weak_fabric_the_search_puts_pp_on_the_frontier_and_says_why():
    d = api.deployment(str(example_path()))
    weak = replace(d, cluster=make_cluster(_weak_nic_unit(0.25), units=2))
    decode = score_decode(weak, [16])
    frontier = pareto_frontier(decode)
    assert any(c.layout.pp == 2 for c in frontier)
    notes = pipeline_assumptions(weak, decode, frontier)
    assert any("PP2 keeps each stage's all-to-all inside one node" in n for n in notes)


def test_at_the_default_example_pp_reaches_only_the_frontiers_fastest_end_and_the_plan_says_why():
    """At one sequence per device a step reads few experts, so PP2's all-to-all kept inside each node is worth more
    than the weights a stage device reads twice a cycle; at larger batches it is not, and the traffic's
    recommendation has no stages. Only an attention-FFN disaggregated layout, whose two sides work on different
    micro-batches at once, is faster per user."""
    view = api.plan(str(example_path()), replay=0)
    staged = [c for c in view.frontier if c.layout.pp > 1]
    assert staged and all(c.work_per_device == min(f.work_per_device for f in view.frontier) for c in staged)
    fastest = max((c for c in view.frontier if not c.layout.ffn_devices), key=lambda c: c.tokens_per_s_per_user)
    assert fastest.layout.pp > 1 and view.recommendation.decode.layout.pp == 1
    assert all(c.layout.ffn_devices for c in view.frontier if c.tokens_per_s_per_user > fastest.tokens_per_s_per_user)
    assert any(a.startswith("on the frontier with pipeline stages: ") for a in view.plan.assumptions)


def test_a_pipelined_decode_layout_estimates(kimi):
    e = api.estimate(str(example_path("kimi-k2-h200-128.yaml")), prefill="attention=tp8xdp2,experts=ep16",
                     decode="attention=dp8,experts=ep8,pp2", batch=32)
    r = e.plan.recommendation
    assert r.decode.layout == Layout(1, 8, pp=2) and r.decode.perf.steps[0].pipeline.pp == 2
    assert r.tpot_s > 0 and e.plan.recommendation.decode.instance_devices == 16
    with pytest.raises(Exception) as refused:
        api.estimate(str(example_path()), layout="attention=dp8,experts=ep8,pp=2")
    assert "decode pools only" in str(refused.value)


def test_the_simulator_replays_a_pipelined_decode_pool_at_its_planned_tpot():
    """A decode pool pinned to PP2 (DP8 + EP8 a stage) replays with dp x pp ranks, each a micro-batch stepping once
    a cycle: its TPOT at the SLO percentile near the plan's."""
    e = api.estimate(str(example_path("kimi-k2-h200-128.yaml")), prefill="attention=tp8xdp2,experts=ep16",
                     decode="attention=dp8,experts=ep8,pp=2", batch=32)
    plan = e.plan
    sim = api.simulate(example_path("kimi-k2-h200-128.yaml"), plan, requests=300, seed=1)
    assert sim.completed == 300
    r = plan.recommendation
    assert sim.percentile("tpot", 99) == pytest.approx(r.tpot_s, rel=0.15)  # 43.6 against 45.5 ms when written
