"""The MoE part of a step (hwmodels.step): the router and shared experts on a device's own tokens, the routed experts
on each MoE layer's busiest device, and the dispatch and combine around them (module docstring of hwmodels.step);
attention-FFN disaggregated (hwmodels.afd), the two sides on their own devices and the transfers between them.
`ctx` is the step's hwmodels.step.StepContext (not imported: hwmodels.step imports this module)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from hwmodels import afd
from hwmodels.efficiency import SCALE_BLOCK
from hwmodels.expert_load import ExpertLoad
from hwmodels.layout import Layout
from hwmodels.precision import DTYPES
from hwmodels.roles import Phase
from hwmodels.step_ops import _gemm, _Layer, _memory_op, _moe_experts_op

SCALE_BYTES = DTYPES["fp32"].bytes_per_element  # fp8 activations carry one fp32 scale per SCALE_BLOCK channels


@dataclass(frozen=True)
class MoETerms:
    router_s: float  # on this device's own tokens
    shared_expert_s: float
    expert_gemm_s: np.ndarray  # per MoE layer, on the busiest device
    dispatch_s: np.ndarray
    combine_s: np.ndarray
    sources: frozenset
    operators: dict


def _experts_read(slots: int, pairs: float) -> int:
    """Experts of a device's `slots` that some of its `pairs` (token, expert) pairs chose: the grouped GEMM reads
    only those (a group with no rows exits before loading its weights). Pairs land on the slots independently
    (Poisson), so an expert is idle with probability exp(-pairs / slots)."""
    return max(1, min(slots, math.ceil(slots * -math.expm1(-pairs / slots) - 1e-9)))


def _router_and_shared(ctx, tokens_per_device: float) -> tuple[_Layer, float]:
    """(a layer holding the router, a latent MoE's projections and the shared experts on a device's own tokens, the
    router's share of its time)."""
    arch, plan, layout = ctx.arch, ctx.precision, ctx.layout
    moe, d = arch.moe, arch.hidden_size
    fixed = _Layer(ctx)
    fixed.gemm("other", tokens_per_device, moe.num_experts, d, plan.of("router"), "router")
    router_s = fixed.compute_s
    if moe.latent_size:  # latent MoE: into the experts' width before the dispatch, back after the combine
        wl = plan.of("shared_experts")
        fixed.gemm("shared_expert", tokens_per_device, moe.latent_size, d, wl, "latent_down_proj")
        fixed.gemm("shared_expert", tokens_per_device, d, moe.latent_size, wl, "latent_up_proj")
    if moe.shared_intermediate_size:
        ws, width, act = plan.of("shared_experts"), moe.shared_intermediate_size, plan.combine.bytes_per_element
        rows = tokens_per_device
        if layout.tp_over_group:  # sharded like a dense MLP over the TP group, summed by the MoE all-reduce
            rows, width = tokens_per_device * layout.tp, width // layout.tp
        fixed.quantize_input("shared_expert", rows, d, ws)
        fixed.gemm("shared_expert", rows, 2 * width, d, ws, "shared_gate_up")
        fixed.memory("shared_expert", rows * 3 * width * act, "shared_swiglu")
        fixed.quantize_input("shared_expert", rows, width, ws)
        fixed.gemm("shared_expert", rows, d, width, ws, "shared_down")
    return fixed, router_s


def _routed_experts_s(ctx, tokens_per_device: float, phase: Phase, notes: _Layer) -> dict[float, float]:
    """Per busiest-device load factor of `ctx.layer_factors`: the routed experts' time on that device (layers of one
    factor share an evaluation); the operators used are noted in `notes`."""
    arch, plan, dev, layout = ctx.arch, ctx.precision, ctx.cluster.device, ctx.layout
    moe, ep = arch.moe, layout.ep
    d = moe.latent_size or arch.hidden_size  # the width the experts carry
    slots = math.ceil((moe.num_experts + layout.redundant_experts) / ep)
    pairs = tokens_per_device * moe.top_k * layout.moe_tp  # pairs each device's experts receive on average
    # routed experts on the busiest device: `slots` experts sharing its pairs
    we, width = plan.of("routed_experts"), moe.expert_intermediate_size // layout.moe_tp
    grouped = "masked" if phase == Phase.DECODE else "contiguous"
    act = plan.combine.bytes_per_element
    expert_s = {}
    # the measured MoE tables key a kernel by the tokens entering the whole expert group (every attention rank's),
    # of which one device computes num_tokens x top_k / ep pairs (hwmodels.calibrate.measured_costs, moe_perf);
    # where the tokens arrive by DeepEP's all-to-all, the engine's DeepEP MoE table answers first
    group_tokens = tokens_per_device * layout.tp * layout.dp
    deepep = None if ep == 1 or layout.tp_over_group else "generation" if phase == Phase.DECODE else "context"
    for f in sorted(set(ctx.layer_factors)):
        # a measured table of the whole routed-expert kernel, at the busiest device's share of the tokens
        measured = _moe_experts_op(ctx.costs, dev, group_tokens * f, d, moe.expert_intermediate_size, moe.top_k,
                                   moe.num_experts, layout.moe_tp, ep, we, deepep)
        if measured is not None:
            expert_s[f] = measured.total_s
            notes.note(measured)
            continue
        read = _experts_read(slots, pairs * f)
        m = pairs * f / read
        gate_up = _gemm(ctx, m, 2 * width, d, we, "experts_gate_up", groups=read, layout=grouped)
        down = _gemm(ctx, m, d, width, we, "experts_down", groups=read, layout=grouped)
        swiglu = _memory_op(ctx.costs, dev, pairs * f * 3 * width * act, "swiglu")
        permutes_s = 0.0
        if grouped == "contiguous":
            # DeepEP's normal dispatch delivers tokens in arrival order: a permute into expert-major rows
            # for the contiguous grouped GEMM, then a gather that sums each token's expert outputs before
            # the combine (the LMSYS 2025-05-05 blog's Triton permutation kernel; DeepEP README)
            permute = _memory_op(ctx.costs, dev, 2 * pairs * f * (d * plan.dispatch.bytes_per_element
                                                                  + d / SCALE_BLOCK * SCALE_BYTES), "expert_permute")
            gather = _memory_op(ctx.costs, dev, 2 * pairs * f * d * act, "expert_gather")
            permutes_s = permute.total_s + gather.total_s
        expert_s[f] = gate_up.total_s + down.total_s + swiglu.total_s + permutes_s
        notes.note(gate_up)
        notes.note(down)
    return expert_s


def moe_terms(ctx, tokens_per_device: float, phase: Phase) -> MoETerms:
    """MoE of one layer on every device; the routed part priced per layer at its busiest device's load."""
    arch, plan, cluster, layout = ctx.arch, ctx.precision, ctx.cluster, ctx.layout
    moe, ep = arch.moe, layout.ep
    group_tokens = tokens_per_device * layout.tp * layout.dp  # tokens entering the expert group (every DP rank's)
    fixed, router_s = _router_and_shared(ctx, tokens_per_device)
    expert_s = _routed_experts_s(ctx, tokens_per_device, phase, fixed)
    d = moe.latent_size or arch.hidden_size  # the width the experts and the all-to-all carry
    act = plan.combine.bytes_per_element
    mode = "low_latency" if phase == Phase.DECODE else "normal"
    scale_bytes = d / SCALE_BLOCK * SCALE_BYTES if plan.dispatch.name == "fp8" else 0.0  # fp32 scale per 128 channels
    dispatch, combine, comm_sources = {}, {}, set()
    # MoE TP: every device of the group computes part of every token's experts, and the partial outputs are summed
    # (an all-reduce of the group's tokens; with attention DP, an all-gather before and a reduce-scatter after,
    # which move the same bytes)
    tp_reduce_s = 0.0
    if layout.tp_over_group:
        # attention tensor-parallel over the whole group: after its all-reduce every device holds every token, runs
        # its own experts (or expert slices) on them and one all-reduce sums the outputs, with no all-to-all
        # (TensorRT-LLM's MoE without enable_attention_dp, vLLM's and SGLang's expert parallelism without DP
        # attention); the shared experts' partial sums ride on the same all-reduce
        reduce = ctx.costs.allreduce(cluster, layout.tp, group_tokens * d * act)
        fixed.operators["moe_allreduce"] = (reduce.source, reduce.beyond)
        n = len(ctx.layer_factors)
        return MoETerms(router_s, fixed.compute_s - router_s, np.array([expert_s[f] for f in ctx.layer_factors]),
                         np.zeros(n), np.full(n, reduce.time_s), frozenset(fixed.sources | {reduce.source}),
                         dict(fixed.operators))
    if layout.moe_tp > 1:
        reduce = ctx.costs.allreduce(cluster, layout.moe_tp, group_tokens / ep * d * act)
        tp_reduce_s = reduce.time_s
        comm_sources.add(reduce.source)
        fixed.operators["moe_tp_allreduce"] = (reduce.source, reduce.beyond)
    # a layer's all-to-all key: its busiest device's factor, and its placed copies per token where the load has them
    placed = ctx.placed_copies
    comm_keys = list(ctx.layer_factors) if placed is None else list(zip(ctx.layer_factors, placed[mode]))
    for key in sorted(set(comm_keys)):
        f, copies = (key, None) if placed is None else (key[0], dict(key[1]))
        if ep == 1:
            dispatch[key], combine[key] = 0.0, tp_reduce_s
            continue
        # the busiest device draws f / ep of the routed pairs; DeepEP dedups a token per destination device
        dest = None if f == 1.0 or copies else ExpertLoad.from_imbalance(float(f), ep, 1, "").shares[0]
        disp = ctx.costs.dispatch(cluster, ep, tokens_per_device * layout.moe_tp, d, moe.top_k, moe.num_experts,
                                  plan.dispatch.bytes_per_element, scale_bytes, dest, mode, rank_copies=copies)
        comb = ctx.costs.combine(cluster, ep, tokens_per_device * layout.moe_tp, d, moe.top_k, moe.num_experts,
                                 plan.combine.bytes_per_element, dest, mode, rank_copies=copies)
        dispatch[key], combine[key] = disp.time_s, comb.time_s + tp_reduce_s
        comm_sources |= {disp.source, comb.source}
        fixed.operators["dispatch"] = (disp.source, disp.beyond)
        fixed.operators["combine"] = (comb.source, comb.beyond)
    per_layer = ctx.layer_factors
    return MoETerms(router_s, fixed.compute_s - router_s, np.array([expert_s[f] for f in per_layer]),
                     np.array([dispatch[k] for k in comm_keys]), np.array([combine[k] for k in comm_keys]),
                     frozenset(fixed.sources | comm_sources), dict(fixed.operators))


def afd_moe(ctx, tokens_per_device: float, phase: Phase) -> MoETerms:
    """One micro-batch's MoE terms attention-FFN disaggregated (hwmodels.afd): the router and shared experts at an
    attention device's `tokens_per_device`, the routed experts on the busiest FFN device, which sees every attention
    device's tokens (an EP group of the FFN devices alone), and the dispatch and combine between the two sets."""
    layout, moe, plan, cluster = ctx.layout, ctx.arch.moe, ctx.precision, ctx.cluster
    if phase != Phase.DECODE:
        raise ValueError("attention-FFN disaggregation serves decode pools")
    fixed, router_s = _router_and_shared(replace(ctx, layout=replace(layout, ffn_devices=0), load=None), tokens_per_device)
    ffn_layout = Layout(tp=1, dp=layout.ffn_devices, redundant_experts=layout.redundant_experts)
    ffn_tokens = tokens_per_device * layout.attention_devices / layout.ffn_devices
    expert_s = _routed_experts_s(replace(ctx, layout=ffn_layout), ffn_tokens, phase, fixed)
    shared_s, sources = fixed.compute_s - router_s, set(fixed.sources)
    if layout.tp_over_group and moe.shared_intermediate_size:
        # TP attention shards the shared experts like a dense MLP: their partial sums take an all-reduce
        reduce = ctx.costs.allreduce(cluster, layout.tp, tokens_per_device * layout.tp * ctx.arch.hidden_size
                                     * plan.combine.bytes_per_element)
        shared_s += reduce.time_s
        sources.add(reduce.source)
        fixed.operators["shared_expert_allreduce"] = (reduce.source, reduce.beyond)
    d = moe.latent_size or ctx.arch.hidden_size
    scale_bytes = d / SCALE_BLOCK * SCALE_BYTES if plan.dispatch.name == "fp8" else 0.0
    dispatch, combine = {}, {}
    for f in sorted(set(ctx.layer_factors)):
        copies = afd.link_copies(cluster, layout, moe.top_k, f)
        disp = ctx.costs.dispatch(cluster, layout.ffn_devices, tokens_per_device, d, moe.top_k, moe.num_experts,
                                  plan.dispatch.bytes_per_element, scale_bytes, None, "low_latency", rank_copies=copies)
        comb = ctx.costs.combine(cluster, layout.ffn_devices, tokens_per_device, d, moe.top_k, moe.num_experts,
                                 plan.combine.bytes_per_element, None, "low_latency", rank_copies=copies)
        dispatch[f], combine[f] = disp.time_s, comb.time_s
        sources |= {disp.source, comb.source}
        fixed.operators |= {"afd_dispatch": (disp.source, disp.beyond), "afd_combine": (comb.source, comb.beyond)}
    per_layer = ctx.layer_factors
    return MoETerms(router_s, shared_s, np.array([expert_s[f] for f in per_layer]),
                    np.array([dispatch[f] for f in per_layer]), np.array([combine[f] for f in per_layer]),
                    frozenset(sources), dict(fixed.operators))
