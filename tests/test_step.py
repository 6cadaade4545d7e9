"""Step cost of a layout: structure, monotonicity, overlap, skew, and serving metrics by hand."""

import numpy as np
import pytest

from hwmodels.catalog import load_model, load_unit
from hwmodels.errors import InputError
from hwmodels.hardware import instance_cluster, make_cluster
from hwmodels.layout import Layout
from hwmodels.precision import default_plan
from dataclasses import replace

from hwmodels.calibrate.operator_costs import fitted_costs
from hwmodels.expert_load import ExpertLoad
from hwmodels.speculation import Speculation
from hwmodels.serving import (aggregated_performance, decode_performance, largest_batch_that_fits,
                              lockstep_aggregated_performance, offline_performance, one_rank_prefill_step,
                              padded_decode_step, prefill_performance, usd_per_million_tokens)
from hwmodels.step import COMPONENTS, StepContext, lockstep_time_s


@pytest.fixture(scope="module")
def kimi_128_h200():
    arch = load_model("kimi-k2")
    plan = default_plan(arch.quantization_config, arch.torch_dtype)
    return arch, plan, make_cluster(load_unit("hgx-h200"), units=16)


def test_breakdown_adds_up_and_says_where_load_came_from(kimi_128_h200):
    arch, plan, cluster = kimi_128_h200
    for overlap in (False, True):
        s = StepContext(arch, plan, cluster, Layout(1, 128, two_batch_overlap=overlap)).step("decode", 64, 4096)
        assert set(s.breakdown_s) == set(COMPONENTS)
        assert sum(s.breakdown_s.values()) - s.overlap_hidden_s == pytest.approx(s.time_s)
        assert sum(s.by_layer_type_s.values()) == pytest.approx(s.time_s)
        assert "uniform" in s.load_source
        assert s.sources and all(s.sources)
    assert s.overlap_hidden_s > 0


@pytest.mark.parametrize("phase", ["decode", "prefill"])
def test_more_work_takes_longer(kimi_128_h200, phase):
    arch, plan, cluster = kimi_128_h200
    ctx = StepContext(arch, plan, cluster, Layout(1, 128))
    small = ctx.step(phase, 32 if phase == "decode" else 2048, 2048).time_s
    bigger_batch = ctx.step(phase, 128 if phase == "decode" else 8192, 2048).time_s
    longer_context = ctx.step(phase, 32 if phase == "decode" else 2048, 16384).time_s
    assert bigger_batch > small and longer_context > small


def test_skewed_load_slows_the_moe_layers(kimi_128_h200):
    arch, plan, cluster = kimi_128_h200
    layout = Layout(1, 128)
    n_moe = len(arch.moe_layers)
    uniform = StepContext(arch, plan, cluster, layout).step("prefill", 8192, 4096)
    shares = np.full((n_moe, 128), 1.0)
    shares[:, 0] = 3.0  # one device gets 3x the mean of the others on every layer
    skew = ExpertLoad(shares / shares.sum(axis=1, keepdims=True), "test skew")
    skewed = StepContext(arch, plan, cluster, layout, skew).step("prefill", 8192, 4096)
    assert skewed.breakdown_s["expert_gemm"] > 2 * uniform.breakdown_s["expert_gemm"]
    assert skewed.breakdown_s["dispatch"] > uniform.breakdown_s["dispatch"]
    assert skewed.time_s > uniform.time_s and skewed.load_source == "test skew"


def test_load_shape_is_checked(kimi_128_h200):
    arch, plan, cluster = kimi_128_h200
    with pytest.raises(ValueError, match="load shares"):
        StepContext(arch, plan, cluster, Layout(1, 128), ExpertLoad.uniform(64, 60)).step("decode", 8, 1024)


def test_serving_metrics_follow_from_the_step(kimi_128_h200):
    arch, plan, cluster = kimi_128_h200
    layout = Layout(1, 128)
    ctx = StepContext(arch, plan, cluster, layout)
    d = decode_performance(ctx, 64, 4096, 0.9, 8192)
    step = d.steps[0]
    assert d.tokens_per_s_per_device == pytest.approx(64 / step.time_s)
    assert d.tokens_per_s_per_user == pytest.approx(1 / step.time_s)
    p = prefill_performance(ctx, 8192, 4096, 0.9)
    assert p.tokens_per_s_per_device == pytest.approx(8192 / p.steps[0].time_s)
    a = aggregated_performance(ctx, 64, 1024, 1024, 0.9, 8192)
    dec, pre = a.steps
    # 128 DP ranks: a rank's prefill chunk holds the group for a step in which the other ranks still decode
    dp = layout.dp
    prefill_s = dp * 1024 / (8192 * 1024) * (pre.time_s - dec.time_s * (dp - 1) / dp)
    assert 1 / a.tokens_per_s_per_device == pytest.approx(dec.time_s / 64 + prefill_s)
    assert a.prefill_share == pytest.approx(prefill_s * a.tokens_per_s_per_device)
    # one rank's chunk: its attention at the full chunk, the experts at the group's mean tokens
    full = prefill_performance(ctx, 8192, 1024, 0.9).steps[0]
    assert pre.breakdown_s["attention"] == pytest.approx(full.breakdown_s["attention"])
    assert pre.breakdown_s["expert_gemm"] < full.breakdown_s["expert_gemm"] and pre.time_s < full.time_s


def test_lockstep_closed_loop_by_hand(kimi_128_h200):
    """trtllm-bench's shape: 128 slots per rank, a step budget of 1151 tokens (one 1024-token prompt beside 127
    decoding sequences): 128 mixed steps per 2048-step slot lifetime, in which every rank prefills."""
    arch, plan, cluster = kimi_128_h200
    ctx = StepContext(arch, plan, cluster, Layout(1, 128))
    a = lockstep_aggregated_performance(ctx, 128, 1024, 2048, 0.9, 1151)
    decode = ctx.step("decode", 128, 1024 + 1024).time_s
    prefill = ctx.step("prefill", 1024, 1024).time_s
    beside = ctx.step("decode", 127, 1024 + 1024).time_s
    cycle_s = 128 * (prefill + beside) + (2048 - 128) * decode
    assert a.tokens_per_s_per_device == pytest.approx(128 * 2048 / cycle_s)
    assert a.tokens_per_s_per_user == pytest.approx(2048 / cycle_s)
    assert a.prefill_share == pytest.approx(128 * prefill / cycle_s)
    # a budget of 8 prompts' worth admits 7 per mixed step (the decode tokens share it): fewer, bigger steps
    wide = lockstep_aggregated_performance(ctx, 128, 1024, 2048, 0.9, 8192)
    assert wide.steps[1].tokens_per_device == 7 * 1024
    # a budget below one prompt chunks it: 1024 - 127 = 897 prompt tokens per step, the prompts packed back to
    # back, so the 128 prompts of a slot lifetime take ceil(128 x 1024 / 897) = 147 mixed steps, not 2 x 128
    chunked = lockstep_aggregated_performance(ctx, 128, 1024, 2048, 0.9, 1024)
    assert chunked.steps[1].tokens_per_device == 897
    mixed_s = chunked.steps[1].time_s + beside
    assert chunked.tokens_per_s_per_device == pytest.approx(128 * 2048 / (147 * mixed_s + (2049 - 147) * decode))
    assert chunked.tokens_per_s_per_device < a.tokens_per_s_per_device
    with pytest.raises(InputError, match="tokens_per_device_per_step"):
        lockstep_aggregated_performance(ctx, 128, 1024, 2048, 0.9, 128)


def test_offline_run_by_hand(kimi_128_h200):
    """trtllm-bench's offline run from an empty engine to its last token: ramp-up and drain count."""
    arch, plan, cluster = kimi_128_h200
    ctx = StepContext(arch, plan, cluster, Layout(1, 128))
    context = 1024 + 2048 / 2
    prefill = ctx.step("prefill", 1024, 1024).time_s
    decode = {b: ctx.step("decode", b, context).time_s for b in (1, 2, 3)}
    alone = offline_performance(ctx, 1, 128, 1024, 2048, 0.9, 1151)
    total_s = prefill + 2047 * decode[1]  # its prompt, then 2,047 decode steps of one sequence
    assert alone.tokens_per_s_per_device == pytest.approx(2048 / total_s)
    assert alone.tokens_per_s_per_user == pytest.approx(2048 / total_s)
    assert alone.prefill_share == pytest.approx(prefill / total_s)
    # three requests, one prompt per step (1,151 tokens hold one beside the decodes): they start one step apart
    # and finish one step apart
    three = offline_performance(ctx, 3, 128, 1024, 2048, 0.9, 1151)
    total_s = (3 * prefill + decode[1] + decode[2] + 2045 * decode[3] + decode[2] + decode[1])
    assert three.tokens_per_s_per_device == pytest.approx(3 * 2048 / total_s)
    # many waves approach the closed loop's steady state, which never ramps up or drains
    steady = lockstep_aggregated_performance(ctx, 128, 1024, 2048, 0.9, 1151).tokens_per_s_per_device
    one_wave = offline_performance(ctx, 128, 128, 1024, 2048, 0.9, 1151).tokens_per_s_per_device
    waves = offline_performance(ctx, 2048, 128, 1024, 2048, 0.9, 1151).tokens_per_s_per_device
    assert one_wave < waves == pytest.approx(steady, rel=0.05)
    # whole prompts only (trtllm-bench's default) cannot run a prompt longer than the step; chunked prefill can
    with pytest.raises(InputError, match="tokens_per_device_per_step"):
        offline_performance(ctx, 8, 128, 1024, 2048, 0.9, 512)
    chunked = offline_performance(ctx, 8, 128, 1024, 2048, 0.9, 512, chunked=True).tokens_per_s_per_device
    assert 0 < chunked < offline_performance(ctx, 8, 128, 1024, 2048, 0.9, 1151).tokens_per_s_per_device
    with pytest.raises(InputError, match="workload.requests"):
        offline_performance(ctx, 0, 128, 1024, 2048, 0.9, 1151)


def test_a_decode_step_runs_as_the_cuda_graph_that_holds_it(kimi_128_h200):
    """Padding requests of one token each fill a decode step up to the captured batch size: every operator runs
    their rows, attention reads one token of KV for each."""
    arch, plan, cluster = kimi_128_h200
    ctx = StepContext(arch, plan, cluster, Layout(1, 128))
    graphs = (64, 128, 256)
    padded = padded_decode_step(ctx, 100, 2048, graphs)
    assert padded.tokens_per_device == 128
    assert padded.time_s == pytest.approx(ctx.step("decode", 128, (100 * 2048 + 28 * 1) / 128).time_s)
    assert ctx.step("decode", 100, 2048).time_s < padded.time_s < ctx.step("decode", 128, 2048).time_s
    for unpadded in ((), (64,), (100, 128)):  # none captured, none holds it, or one fits exactly
        assert padded_decode_step(ctx, 100, 2048, unpadded).time_s == ctx.step("decode", 100, 2048).time_s
    # an offline run's decode-only steps pay the padding (its ramp-up and drain run part batches too); a graph
    # captured at every batch size pads nothing
    args = (ctx, 300, 100, 1024, 2048, 0.9, 1151)
    assert offline_performance(*args, graph_batches=graphs).tokens_per_s_per_device < \
        offline_performance(*args).tokens_per_s_per_device
    assert offline_performance(*args, graph_batches=tuple(range(1, 101))).tokens_per_s_per_device == \
        pytest.approx(offline_performance(*args).tokens_per_s_per_device)
    closed = (ctx, 100, 1024, 2048, 0.9, 1151)
    assert lockstep_aggregated_performance(*closed, graph_batches=graphs).tokens_per_s_per_device < \
        lockstep_aggregated_performance(*closed).tokens_per_s_per_device


def test_cost_per_million_tokens_by_hand():
    # 2.30 USD per device-hour at 1,000 tokens/s per device: 2.3 / 3.6e6 tokens x 1e6
    assert usd_per_million_tokens(2.3, 1000.0) == pytest.approx(0.6389, rel=1e-3)


@pytest.fixture(scope="module")
def deepseek_128_h800():
    arch = load_model("deepseek-v3")
    plan = default_plan(arch.quantization_config, arch.torch_dtype)
    return arch, plan, make_cluster(load_unit("hgx-h800"), units=16)


def test_mtp_verifies_more_rows_and_adds_one_draft_layer(deepseek_128_h800):
    arch, plan, cluster = deepseek_128_h800
    ctx = StepContext(arch, plan, cluster, Layout(1, 128, two_batch_overlap=True))
    plain = ctx.step("decode", 128, 4096)
    spec = ctx.step("decode", 128, 4096, draft_tokens=1)
    doubled_rows = ctx.step("decode", 256, 4096)
    assert spec.tokens_per_device == 128
    # two query rows per sequence cost more than one, and no more than twice the sequences (each cache is read
    # once; at 4K context with 128 heads FlashMLA is compute-bound, so the saving hides under the FLOPs)
    main_layers = spec.time_s - spec.by_layer_type_s["mtp_draft"]
    assert plain.time_s < main_layers <= doubled_rows.time_s
    # the draft: one MoE layer (plus projection and LM head) at one row per sequence
    one_layer = plain.by_layer_type_s["moe_layers"] / len(arch.moe_layers)
    assert one_layer < spec.by_layer_type_s["mtp_draft"] < one_layer + plain.by_layer_type_s["embedding_lm_head"] * 2
    assert sum(spec.breakdown_s.values()) - spec.overlap_hidden_s == pytest.approx(spec.time_s)


def test_mtp_needs_a_model_with_an_mtp_module(kimi_128_h200, deepseek_128_h800):
    arch, plan, cluster = kimi_128_h200
    if not arch.num_mtp_layers:
        with pytest.raises(ValueError, match="MTP module"):
            StepContext(arch, plan, cluster, Layout(1, 128)).step("decode", 64, 4096, draft_tokens=1)
    arch, plan, cluster = deepseek_128_h800
    with pytest.raises(ValueError, match="decode"):
        StepContext(arch, plan, cluster, Layout(1, 128)).step("prefill", 4096, 4096, draft_tokens=1)


def test_speculation_advances_the_accepted_run(deepseek_128_h800):
    arch, plan, cluster = deepseek_128_h800
    ctx = StepContext(arch, plan, cluster, Layout(1, 128, two_batch_overlap=True))
    spec = Speculation(draft_tokens=2, acceptance=0.5)
    assert spec.tokens_per_step == pytest.approx(1 + 0.5 + 0.25)
    d = decode_performance(ctx, 64, 4096, 0.9, 8192, speculation=spec)
    step = d.steps[0]
    assert d.tokens_per_s_per_device == pytest.approx(64 * 1.75 / step.time_s)
    assert d.tokens_per_s_per_user == pytest.approx(1.75 / step.time_s)
    # the MTP module's weights and its layer's cache take memory
    plain = decode_performance(ctx, 64, 4096, 0.9, 8192)
    assert d.memory.weights_by_part["mtp_module"] > 0
    assert d.memory.kv_bytes_per_sequence > plain.memory.kv_bytes_per_sequence
    # so an engine running MTP admits fewer sequences
    assert largest_batch_that_fits(ctx, 4096, 0.9, 8192, mtp_module=True) < largest_batch_that_fits(ctx, 4096, 0.9, 8192)
    with pytest.raises(ValueError):
        Speculation(draft_tokens=0, acceptance=0.5)


def test_overlap_hides_only_part_of_the_shorter_stage(deepseek_128_h800):
    arch, plan, cluster = deepseek_128_h800
    layout = Layout(1, 32, two_batch_overlap=True)
    costs = [replace(fitted_costs(), overlap_efficiency=e) for e in (0.0, 0.5, 1.0)]
    times = [StepContext(arch, plan, cluster, layout, costs=c).step("prefill", 8192, 4096).time_s for c in costs]
    assert times[0] > times[1] > times[2]


def test_fp8_gemm_inputs_are_quantised_first(deepseek_128_h800):
    """Quantisation and the prefill permutes are memory-bound kernels: they show as time at fixed FLOPs."""
    arch, plan, cluster = deepseek_128_h800
    q = fitted_costs().quantize(cluster.device, 8192, 7168, 2.0, 1.0)
    assert q.flops == 0 and q.bytes == pytest.approx(8192 * 7168 * 3 + 8192 * 7168 / 128 * 4)


def test_one_formula_prices_a_lockstep_group(kimi_128_h200):
    """A rank prefilling a chunk while the other ranks have none: the busiest rank's step with the routed experts
    at the group's mean tokens, the saving scaled by what overlap leaves; the same formula prices the simulator's
    steps (StepContext.lockstep_s) and the planner's one-rank prefill step."""
    arch, plan, cluster = kimi_128_h200
    ctx = StepContext(arch, plan, cluster, Layout(1, 128, two_batch_overlap=True))
    busiest, mean = ctx.step("prefill", 4096, 4096), ctx.step("prefill", 32, 4096)
    expected = busiest.time_s - busiest.time_s / sum(busiest.breakdown_s.values()) * (
        busiest.breakdown_s["expert_gemm"] - mean.breakdown_s["expert_gemm"])
    assert lockstep_time_s(busiest.time_s, busiest.breakdown_s["expert_gemm"], busiest.overlap_ratio,
                           mean.breakdown_s["expert_gemm"]) == pytest.approx(expected, rel=1e-15)
    assert ctx.lockstep_s("prefill", 4096, 32, 4096) == pytest.approx(expected, rel=1e-15)
    assert one_rank_prefill_step(ctx, 4096, 4096).time_s == pytest.approx(expected, rel=1e-15)
    assert busiest.time_s > expected and ctx.lockstep_s("prefill", 4096, 4096, 4096) == busiest.time_s


def test_layers_that_agree_share_one_evaluation(kimi_128_h200):
    """The busiest device of each MoE layer is read to imbalance_decimals: loads that agree there cost the same."""
    arch, plan, cluster = kimi_128_h200
    layout = Layout(1, 128)
    n_moe = len(arch.moe_layers)
    a = ExpertLoad.from_imbalance(1.2341, 128, n_moe, "a")
    b = ExpertLoad.from_imbalance(1.2338, 128, n_moe, "b")
    at = lambda load, decimals: StepContext(arch, plan, cluster, layout, load, imbalance_decimals=decimals).step(
        "decode", 64, 4096).time_s
    assert at(a, 3) == at(b, 3) and at(a, 4) != at(b, 4)
    assert StepContext(arch, plan, cluster, layout, a, imbalance_decimals=2).layer_factors == (1.23,) * n_moe


def test_a_grouped_gemm_reads_only_the_experts_some_token_chose():
    """At a few tokens most of a device's experts are idle and their weights are never loaded: gpt-oss-120b (128
    experts, top 4) on one H200 decodes 4 sequences far faster than 128, and the experts read follow
    1 - exp(-pairs / slots)."""
    from hwmodels.step_moe import _experts_read

    assert _experts_read(128, 16) == 16  # 128 x (1 - exp(-1/8)) = 15.04, rounded up
    assert _experts_read(128, 128) == 81
    assert _experts_read(32, 10_000) == 32 and _experts_read(32, 0.01) == 1
    arch = load_model("gpt-oss-120b")
    ctx = StepContext(arch, default_plan(arch.quantization_config, arch.torch_dtype),
                      instance_cluster(load_unit("hgx-h200"), 1), Layout(tp=1, dp=1))
    few, many = (ctx.step("decode", b, 2048).breakdown_s["expert_gemm"] for b in (4, 128))
    assert few < many / 4


def test_the_engine_step_overhead_adds_to_every_step_once():
    arch = load_model("deepseek-v3")
    plan = default_plan(arch.quantization_config, arch.torch_dtype)
    cluster = instance_cluster(load_unit("hgx-h200"), 8)
    bare = StepContext(arch, plan, cluster, Layout(tp=1, dp=8))
    slow = StepContext(arch, plan, cluster, Layout(tp=1, dp=8), step_overhead_s=0.001)
    for phase, tokens in (("decode", 32), ("prefill", 4096)):
        a, b = bare.step(phase, tokens, 4096), slow.step(phase, tokens, 4096)
        assert b.time_s - a.time_s == pytest.approx(0.001)
        assert b.by_layer_type_s["engine_step_overhead"] == 0.001 and "engine_step_overhead" not in a.by_layer_type_s


def test_minimax_normalises_q_and_k_across_heads_with_an_all_reduce_under_tp():
    """MiniMax-M2's `qk_norm_type: per_layer` RMSNorm spans every head, so a TP group sums its shards' squares with
    one all-reduce per layer (MiniMaxText01RMSNormTP); Qwen3's per-head norm needs none."""
    from hwmodels.catalog import load_model, load_unit
    from hwmodels.hardware import instance_cluster
    from hwmodels.layout import Layout
    from hwmodels.precision import default_plan
    from hwmodels.roles import Phase
    from hwmodels.step import StepContext

    cluster = instance_cluster(load_unit("hgx-h200"), 4)
    names = {}
    for model in ("minimax-m2.5", "qwen3-235b-a22b-fp8"):
        arch = load_model(model)
        plan = default_plan(arch.quantization_config, arch.torch_dtype)
        for tp in (1, 4):
            step = StepContext(arch, plan, cluster, Layout(tp=tp, dp=4 // tp)).step(Phase.DECODE, 4.0, 2048)
            names[model, tp] = {n for n, _, _ in step.operator_sources}
    assert load_model("minimax-m2.5").attention.qk_norm_across_heads
    assert "qk_norm_allreduce" in names["minimax-m2.5", 4] and "qk_norm_allreduce" not in names["minimax-m2.5", 1]
    assert not any("qk_norm" in n for n in names["qwen3-235b-a22b-fp8", 4])
