"""Per-layer attention kinds (hwmodels.attention_kinds): what each kind caches per sequence, how its cost scales
with the context, and how the step model prices it."""

from dataclasses import replace

import pytest

import moeplan
from hwmodels import catalog
from hwmodels.arithmetic import (cache_bytes_per_sequence, flops_per_token, kv_bytes_per_token,
                                 linear_state_bytes_per_sequence, window_bytes_per_sequence)
from hwmodels.attention_kinds import Kind
from hwmodels.errors import InputError
from hwmodels.hardware import instance_cluster, make_cluster
from hwmodels.layout import Layout
from hwmodels.memory import device_memory
from hwmodels.model_arch import arch_from_config
from hwmodels.precision import default_plan
from hwmodels.roles import Phase
from hwmodels.step import StepContext

MILLION = 2**20  # Kimi K3's and DeepSeek-V4's max_position_embeddings (1,048,576)


def _model(name):
    arch = catalog.load_model(name)
    return arch, default_plan(arch.quantization_config, arch.torch_dtype)


def test_kimi_k3_reads_its_kda_and_mla_layers_one_based():
    """linear_attn_config numbers layers from 1: full_attn_layers [4, 8, ..., 92, 93] are indices 3, 7, ..., 91, 92."""
    k3, _ = _model("kimi-k3")
    assert k3.layers_of(Kind.FULL) == tuple(range(3, 92, 4)) + (92,)
    assert len(k3.layers_of(Kind.LINEAR)) == 69 and k3.kind(0) == Kind.LINEAR
    assert (k3.linear.family, k3.linear.num_value_heads, k3.linear.key_head_dim) == ("kda", 96, 128)


def test_kimi_k3_caches_kv_in_24_mla_layers_and_a_fixed_state_in_69_kda_layers():
    k3, plan = _model("kimi-k3")
    assert kv_bytes_per_token(k3, plan) == 24 * (512 + 64) * 2  # bf16 latent + rope key of the MLA layers only
    # per KDA layer: a [128, 128] fp32 state per head, and the short convolution's last 3 inputs of q, k and v
    state = 69 * (96 * 128 * 128 + 3 * 3 * 96 * 128) * 4
    assert linear_state_bytes_per_sequence(k3) == state
    for context in (1, 4096, MILLION):  # constant, whatever the context; the KV grows linearly
        assert cache_bytes_per_sequence(k3, plan, context) == pytest.approx(kv_bytes_per_token(k3, plan) * context + state)


def test_a_million_tokens_scale_each_kind_its_own_way():
    """Full layers grow linearly in KV and quadratically in prefill attention; sliding windows stop at 128 tokens;
    linear layers cost the same per token at any context."""
    oss, plan = _model("gpt-oss-120b")
    assert window_bytes_per_sequence(oss, plan, MILLION) == window_bytes_per_sequence(oss, plan, 128)
    assert window_bytes_per_sequence(oss, plan, 64) == pytest.approx(window_bytes_per_sequence(oss, plan, 128) / 2)
    growth = cache_bytes_per_sequence(oss, plan, MILLION) - cache_bytes_per_sequence(oss, plan, MILLION // 2)
    assert growth == pytest.approx(kv_bytes_per_token(oss, plan) * MILLION / 2)  # only the 18 full layers grow
    k3, _ = _model("kimi-k3")
    at = {c: flops_per_token(k3, c, Phase.DECODE)["attention"] for c in (0, MILLION // 2, MILLION)}
    mla_per_key = 2 * 96 * (2 * 512 + 64)  # absorbed MLA: scores over latent + rope, values over the latent
    assert at[MILLION] - at[MILLION // 2] == pytest.approx(24 * mla_per_key * MILLION / 2)
    assert at[0] == pytest.approx(69 * 2 * 96 * 2 * 128 * 128)  # the KDA layers: two state products, context-free


def test_deepseek_v4_pro_against_v3_2_at_a_million_tokens_matches_its_card():
    """DeepSeek-V4-Pro's card (huggingface.co/deepseek-ai/DeepSeek-V4-Pro; arXiv 2606.19348): 'In the 1M-token
    context setting, DeepSeek-V4-Pro requires only 27% of single-token inference FLOPs and 10% of KV cache compared
    with DeepSeek-V3.2.' From the two config.json files alone (both caches in their bf16 default), within 3 points."""
    v4, v4_plan = _model("deepseek-v4-pro")
    v32, v32_plan = _model("deepseek-v3.2")
    flops = flops_per_token(v4, MILLION, Phase.DECODE)["total"] / flops_per_token(v32, MILLION, Phase.DECODE)["total"]
    kv = cache_bytes_per_sequence(v4, v4_plan, MILLION) / cache_bytes_per_sequence(v32, v32_plan, MILLION)
    assert flops == pytest.approx(0.27, abs=0.03)
    assert kv == pytest.approx(0.10, abs=0.03)


def _ctx(name, devices=8, tp=8):
    arch, plan = _model(name)
    cluster = make_cluster(catalog.load_unit("hgx-b200"), devices=devices)
    return StepContext(arch, plan, cluster, Layout(tp=tp, dp=devices // tp))


def test_the_step_prices_linear_layers_the_same_at_any_context_and_full_layers_by_it():
    """Qwen3.5 with every layer made linear decodes at 256K tokens as fast as at 4K; made all full, it slows."""
    ctx = _ctx("qwen3.5-397b-a17b")
    assert "linear_state_update" in dict((n, s) for n, s, _ in ctx.step(Phase.DECODE, 8, 4096).operator_sources)
    attention_s = {}
    for kind in (Kind.LINEAR, Kind.FULL):
        arch = replace(ctx.arch, layer_kinds=(kind,) * ctx.arch.num_layers)
        kind_ctx = StepContext(arch, ctx.precision, ctx.cluster, ctx.layout)
        attention_s[kind] = [kind_ctx.step(Phase.DECODE, 8, c).breakdown_s["attention"] for c in (4096, 262144)]
    assert attention_s[Kind.LINEAR][0] == pytest.approx(attention_s[Kind.LINEAR][1])
    assert attention_s[Kind.FULL][1] > 2 * attention_s[Kind.FULL][0]


def test_dsa_reads_at_most_its_top_k_keys_in_decode():
    """DeepSeek-V3.2 differs from V3 by its indexer: at 128K tokens its MLA reads 2,048 keys, so its decode
    attention costs far less than V3's, and it pays for scoring every key with the indexer instead."""
    v3, v32 = _ctx("deepseek-v3"), _ctx("deepseek-v3.2")
    at = {c: v32.step(Phase.DECODE, 16, c) for c in (4096, 131072)}
    full = v3.step(Phase.DECODE, 16, 131072)
    assert at[131072].breakdown_s["attention"] < 0.5 * full.breakdown_s["attention"]
    assert "indexer_scores" in dict((n, s) for n, s, _ in at[131072].operator_sources)


def test_deepseek_v4_and_kimi_k3_step_in_prefill_and_decode():
    for name, devices, tp in (("deepseek-v4-flash", 8, 8), ("kimi-k3", 72, 8)):
        arch, plan = _model(name)
        cluster = make_cluster(catalog.load_unit("gb200-nvl72"), devices=devices)
        ctx = StepContext(arch, plan, cluster, Layout(tp=tp, dp=devices // tp))
        for phase in (Phase.PREFILL, Phase.DECODE):
            step = ctx.step(phase, 1024 if phase == Phase.PREFILL else 16, 65536)
            assert step.time_s > 0 and step.breakdown_s["attention"] > 0


def test_latent_moe_dispatches_in_its_narrower_width():
    """Kimi K3's routed experts and its all-to-all work in routed_expert_hidden_size (3584), half of hidden_size."""
    k3 = _ctx("kimi-k3", devices=72, tp=1)
    ops = dict((n, s) for n, s, _ in k3.step(Phase.DECODE, 16, 4096).operator_sources)
    assert {"latent_down_proj", "latent_up_proj", "dispatch", "combine"} <= set(ops)


def test_memory_holds_the_linear_state_beside_the_kv():
    k3, plan = _model("kimi-k3")
    cluster = make_cluster(catalog.load_unit("gb200-nvl72"), devices=72)
    mem = device_memory(k3, plan, cluster, Layout(tp=2, dp=36), 16384, 0.9, 4096)
    assert mem.linear_state_bytes_per_sequence == pytest.approx(linear_state_bytes_per_sequence(k3) / 2)  # TP2 heads
    assert mem.kv_bytes_per_sequence == pytest.approx(kv_bytes_per_token(k3, plan) * 16384)  # MLA: not sharded
    per_rank = mem.kv_capacity_bytes // (mem.kv_bytes_per_sequence + mem.linear_state_bytes_per_sequence)
    assert mem.concurrent_sequences == per_rank * 36


def test_bad_layer_kinds_name_the_field():
    base = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100,
            "intermediate_size": 128}
    with pytest.raises(InputError, match="layer_types.*each of the 2 layers"):
        arch_from_config({**base, "layer_types": ["full_attention"]}, "x")
    with pytest.raises(InputError, match="linear_attn_config.kda_layers.*layer numbers in \\[1, 2\\]"):
        arch_from_config({**base, "linear_attn_config": {"kda_layers": [0], "num_heads": 4, "head_dim": 16}}, "x")
    with pytest.raises(InputError, match="sliding_window.*missing"):
        arch_from_config({**base, "layer_types": ["sliding_attention", "full_attention"]}, "x")


def test_one_hgx_b200_node_cannot_hold_kimi_k3_and_says_by_how_much():
    """1.56 TB of weights (MXFP4 experts) against 8 x 180 GiB: the reason the B200 example spans 8 nodes."""
    report = moeplan.check({"schema_version": 1, "model": "moonshotai/Kimi-K3", "cluster": {"unit": "hgx-b200", "units": 1},
                            "workload": {"input_tokens": 16384, "output_tokens": 1024}, "slo": {"ttft_s": 3, "tpot_s": 0.05}})
    assert not report.fits and report.model_weight_bytes > 8 * 180 * 2**30
    assert report.smallest_fitting_cluster is not None and report.smallest_fitting_cluster.num_devices > 8


def test_each_engine_holds_sliding_layers_as_its_kv_pool_does():
    """catalogs/engine_kv.yaml: TensorRT-LLM's one pool at the longest window holds a sliding layer for the whole
    context, SGLang's hybrid pool 0.8 of it, vLLM's the window; what the step reads is the window either way."""
    oss, plan = _model("gpt-oss-120b")
    full, sliding = len(oss.layers_of(Kind.FULL)), len(oss.layers_of(Kind.SLIDING))
    shares = {e: catalog.sliding_kv_share(e) for e in ("trtllm", "sglang", "vllm", "no-such-engine")}
    assert shares == {"trtllm": 1.0, "sglang": 0.8, "vllm": 0.0, "no-such-engine": 0.0}
    assert all(entry["source"] for entry in catalog._read_yaml("engine_kv.yaml")["engines"].values())
    per_layer = kv_bytes_per_token(oss, plan) / full
    assert kv_bytes_per_token(oss, plan, 0.8) == pytest.approx(per_layer * (full + 0.8 * sliding))
    assert window_bytes_per_sequence(oss, plan, 4096, 0.8) == 0  # held per token instead
    cluster = instance_cluster(catalog.load_unit("hgx-h200"), 1)
    held = {e: device_memory(oss, plan, cluster, Layout(tp=1, dp=1), 2048, 0.9, 8192, sliding_kv_share=s)
            for e, s in shares.items()}
    fit = {e: m.concurrent_sequences for e, m in held.items()}
    assert fit["trtllm"] < fit["sglang"] < fit["vllm"] == fit["no-such-engine"]
    window = oss.sliding_window
    assert fit["trtllm"] == pytest.approx(fit["vllm"] * (full * 2048 + sliding * window) / ((full + sliding) * 2048), abs=1)
    assert held["trtllm"].kv_bytes_per_sequence == pytest.approx(kv_bytes_per_token(oss, plan, 1.0) * 2048)
    # a step reads the same keys whatever the pool holds
    ctx = StepContext(oss, plan, cluster, Layout(tp=1, dp=1))
    step = ctx.step(Phase.DECODE, 64, 2048).time_s
    assert replace(ctx, sliding_kv_share=1.0).step(Phase.DECODE, 64, 2048).time_s == step
    # models without sliding layers, and DeepSeek-V4's compressed windows, are held alike by every engine
    for name in ("kimi-k2", "deepseek-v4-flash"):
        arch, p = _model(name)
        assert kv_bytes_per_token(arch, p, 1.0) == kv_bytes_per_token(arch, p)
        assert window_bytes_per_sequence(arch, p, 4096, 1.0) == window_bytes_per_sequence(arch, p, 4096)


def test_a_plan_served_by_an_engine_holds_its_sliding_layers_and_says_so():
    spec = {"model": "gpt-oss-120b", "cluster": {"unit": "hgx-h200", "devices": 8},
            "workload": {"input_tokens": 2048, "output_tokens": 512, "requests_per_s": 20},
            "slo": {"ttft_s": 5.0, "tpot_s": 0.05}}
    fitted = {e: moeplan.api.deployment(spec, backend=e) for e in ("trtllm", "vllm")}
    assert fitted["trtllm"].serving.sliding_kv_share == 1.0 and fitted["vllm"].serving.sliding_kv_share == 0.0
    held = {e: moeplan.api.check(d).layouts[0].concurrent_sequences for e, d in fitted.items()}
    assert held["trtllm"] < held["vllm"]
    plan = moeplan.api.plan(fitted["trtllm"], replay=0)
    assert any("holds each sliding-window layer at 100% of the context" in a for a in plan.plan.assumptions)
    assert plan.to_json()["serving"]["sliding_kv_share"] == 1.0
    # the simulator's pools hold the same: per token, both kinds of layer, where the window alone holds per sequence
    from hwmodels.ingest.requests import synthetic_trace
    from sim import SimConfig, simulate

    trace = synthetic_trace(20, 2.0, 2048, 64, seed=1)
    windows = replace(plan.plan, deployment=replace(fitted["trtllm"], serving=replace(fitted["trtllm"].serving,
                                                                                       sliding_kv_share=0.0)))
    tokens = {share: simulate(p, trace, SimConfig()).roles[-1].kv_capacity_tokens_per_group
              for share, p in ((1.0, plan.plan), (0.0, windows))}
    full, sliding = len(fitted["trtllm"].model.layers_of(Kind.FULL)), len(fitted["trtllm"].model.layers_of(Kind.SLIDING))
    assert tokens[1.0] == pytest.approx(tokens[0.0] * full / (full + sliding), rel=1e-3)
