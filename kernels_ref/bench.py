"""Benchmarks of the kernels on the shapes of one MoE layer of a real model (Kimi K2 by default).

Each row is one kernel at one shape: median seconds, FLOP/s, bytes/s and the fraction of the
roofline of the machine it ran on. The roofline probes (a bf16 or fp32 matmul, a large copy
and a large reduction) are timed interleaved with the kernel, so the ratios compare rates
measured under the same conditions (a shared or burstable machine can change speed by 2x
between one minute and the next); the copy also flushes the caches before each kernel call. A
fraction a little above 1 means the kernel outran the probe, a 2048 x 2048 PyTorch matmul, in
that window. The first rows are the probes on their own: the machine's peaks. On a CPU, freed
memory is kept for reuse (timing.keep_freed_memory), as the CUDA caching allocator keeps it.

Shapes: the routed experts of one device (4 experts, and 1 and 16 at decode; decode 1 to 256
tokens per expert, prefill 384 to 2048, i.e. up to 8192 token rows); the router, the activation
quantisation, dispatch and combine of 1 to 8192 tokens; absorbed MLA decode for 1 to 64
sequences of 4096 to 8192 cached tokens; and the whole MoE layer (moe_layer_fp8) end to end.

The layer runs on one device's share of the experts, as under expert parallelism: 4 x top_k of
them (Kimi K2: 32 of 384, an EP12 shard; the row's `experts` says how many, and its
`composition` how many the model has), routed top_k of those by the layer's own router, so each
expert gets about a quarter of the tokens: 1 to 2048 tokens reach decode and prefill loads per
expert that all 384 experts would need 12 times as many tokens for. `composition` lists the
tokens per expert the router produced and each kernel the layer runs, at the shape it runs in
the layer, with its FLOPs and bytes counted as its own rows count them: hwmodels.calibrate.kernels_measured
predicts the layer from those parts and the per-kernel fits.

The CSV (one per device) is what hwmodels' calibration reads. Run standalone with
`python -m kernels_ref.bench [--device cpu|cuda] [--quick] [--config config.json] [-o FILE]`.
"""

import argparse
import csv
import datetime
import functools
import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kernels_ref.dispatch import plan_dispatch
from kernels_ref.fp8 import BLOCK, ceil_div, quantize_activation_groups
from kernels_ref import native_cpu
from kernels_ref.expert_calls import prepare_grouped_swiglu, prepare_moe_layer
from kernels_ref.fp8_gemm import gemm_choice
from kernels_ref.glue_calls import prepare_combine, prepare_dispatch, prepare_quantize, prepare_router
from kernels_ref.generators import (
    cast_mla_decode_inputs,
    offsets_from_counts,
    random_fp8_expert_weights,
    random_mla_decode_inputs,
    random_router,
)
from kernels_ref.grouped_gemm import grouped_swiglu_fp8, masked_swiglu_fp8
from kernels_ref.mla_decode import mla_decode_absorbed
from kernels_ref.moe_layer import moe_layer_fp8, route_noaux_tc, router_choice
from kernels_ref.roofline import Probe, Roofline, device_name, make_probes, roofline_from
from kernels_ref.timing import interleaved_median_seconds, keep_freed_memory

# HuggingFace config.json fields of Kimi K2 (moonshotai/Kimi-K2-Instruct) that the shapes use:
# the MoE ones are required of any model, the MLA ones only for the MLA rows.
MOE_FIELDS = ("hidden_size", "moe_intermediate_size", "n_routed_experts", "num_experts_per_tok")
MLA_FIELDS = ("num_attention_heads", "kv_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim")
KIMI_K2_CONFIG = {
    "hidden_size": 7168,
    "moe_intermediate_size": 2048,
    "n_routed_experts": 384,
    "num_experts_per_tok": 8,
    "num_attention_heads": 64,
    "kv_lora_rank": 512,
    "qk_rope_head_dim": 64,
    "qk_nope_head_dim": 128,
    "v_head_dim": 128,
}

COLUMNS = (
    # where and when
    "device", "device_type", "threads", "torch_version", "numpy_version", "date",
    # what: impl is the GEMM path (native_amx, native_cpu, tiles; "+" where a row's GEMMs took
    # several), native (the glue kernels' C) or torch; tuning is the autotuner's choice for each
    # GEMM (kernels_ref.autotune); dtype is the matmul peak the kernel's FLOPs are held to (an fp8
    # GEMM multiplies in bf16 on every device here)
    "kernel", "phase", "impl", "tuning", "dtype",
    # shape: a grouped GEMM has groups x m_per_group token rows through experts of
    # hidden x intermediate; MLA has batch sequences of context cached tokens and heads
    "groups", "m_per_group", "tokens", "hidden", "intermediate", "top_k", "experts",
    "batch", "context", "heads",
    # a composite row (the whole MoE layer) as JSON: tokens_per_expert the router produced, and
    # parts, each a kernel benchmarked on its own with the shape, FLOPs and bytes it has in the layer
    "composition",
    # measured
    "flops", "bytes", "seconds", "flops_per_s", "bytes_per_s",
    # the roofline measured alongside: roofline_fraction = roofline_seconds / seconds, where
    # roofline_seconds = max(flops / peak_flops_per_s, bytes / peak_bytes_per_s) and bound
    # names the larger term
    "peak_flops_per_s", "peak_bytes_per_s", "roofline_seconds", "roofline_fraction", "bound",
)  # fmt: skip


@dataclass(frozen=True)
class BenchCase:
    kernel: str
    phase: str | None  # "decode" or "prefill"; None for the roofline probes
    impl: str
    dtype: str | None  # the matmul peak for its FLOPs; None for pure data movement
    shape: dict[str, int]
    flops: float
    bytes_moved: float
    fn: Callable[[], object]
    composition: dict | None = None
    tuning: str | None = None


def _fp8_activation_bytes(tokens: int, hidden: int) -> int:
    return tokens * (hidden + 4 * ceil_div(hidden, BLOCK))  # codes + fp32 group scales


def _swiglu_impl(tokens: int, hidden: int, intermediate: int, device: str) -> tuple[str, str]:
    """(impl, tuning) of an expert with `tokens` tokens: its two GEMMs' paths and choices."""
    up = gemm_choice(tokens, 2 * intermediate, hidden, device)  # w13: [2I, D]
    down = gemm_choice(tokens, hidden, intermediate, device)  # w2: [D, I]
    return "+".join(sorted({up.split(":")[0], down.split(":")[0]})), f"w13={up} w2={down}"


def _glue_impl(device: str) -> str:
    """The glue kernels run native C on a CPU where it builds, PyTorch operations otherwise."""
    return "native" if torch.device(device).type == "cpu" and native_cpu.library("glue") is not None else "torch"


def _glue_tuning(fn: Callable[[], object]) -> str | None:
    """A native glue row times a prepared call (kernels_ref.glue_calls): outputs sized and arguments bound once per
    shape, as an engine's static buffers run it, on the threads tuned for the shape, and timed inside the kernel
    (kernels_ref.timing): the eager call's allocation and the Python dispatch are not timed."""
    threads = getattr(fn, "threads", None)
    return None if threads is None else f"prepared buffers, {threads} thread{'s' * (threads != 1)}, kernel-timed"


# (FLOPs, bytes) of each kernel, shared by its own rows and the layer's parts.


def _grouped_swiglu_cost(counts: Sequence[int], hidden: int, intermediate: int,
                         out_bytes: int = 2) -> tuple[float, float]:
    """counts: tokens per expert; an empty expert reads no weights. out_bytes: per output element (bf16 or fp32)."""
    tokens, groups = sum(counts), sum(1 for c in counts if c)
    weight_bytes = 3 * intermediate * hidden + 4 * ceil_div(hidden, BLOCK) * (
        ceil_div(2 * intermediate, BLOCK) + ceil_div(intermediate, BLOCK)
    )  # fp8 w13 and w2, and their fp32 block scales
    flops = 6.0 * tokens * hidden * intermediate  # gate/up: 2 x 2I x D, down: 2 x D x I per token
    return flops, groups * weight_bytes + _fp8_activation_bytes(tokens, hidden) + out_bytes * tokens * hidden


def _router_cost(tokens: int, hidden: int, experts: int, top_k: int) -> tuple[float, float]:
    """bf16 tokens, fp32 router weight and scores, int64 ids and fp32 gates out. The weight is read once per call
    (the native router keeps a thread's part of it in L2 across its token tiles). Its rows are held to the fp32
    matmul rate ("fp32" in their cases): the router multiplies the fp32 weight in fp32, as the fp32 routing of
    moe_layer does, and a bf16 GEMM would be a different kernel (a rounded weight moves near-tied experts)."""
    bytes_moved = 2.0 * tokens * hidden + 4.0 * (experts * hidden + tokens * experts) + 12.0 * tokens * top_k
    return 2.0 * tokens * hidden * experts, bytes_moved


def _quantize_cost(tokens: int, hidden: int) -> tuple[float, float]:
    return 0.0, 2.0 * tokens * hidden + _fp8_activation_bytes(tokens, hidden)


def _dispatch_cost(tokens: int, hidden: int, top_k: int) -> tuple[float, float]:
    return 0.0, (1 + top_k) * _fp8_activation_bytes(tokens, hidden)


def _combine_cost(tokens: int, hidden: int, top_k: int) -> tuple[float, float]:
    """bf16 expert outputs in, fp32 sums out."""
    return 2.0 * tokens * top_k * hidden, 2.0 * top_k * tokens * hidden + 4.0 * tokens * hidden


def _grouped_swiglu_cases(
    config: dict, device: str, phase: str, groups: int, m_values: Sequence[int], masked: bool = False
) -> Iterator[BenchCase]:
    """The routed experts of one device: groups experts, m_per_group tokens each. The contiguous layout runs as a
    prepared call (kernels_ref.expert_calls: the native kernels bound once, fp32 out), the masked one eagerly."""
    hidden, intermediate = config["hidden_size"], config["moe_intermediate_size"]
    generator = torch.Generator().manual_seed(0)
    weights = random_fp8_expert_weights(groups, hidden, intermediate, generator, device)
    for m in m_values:
        tokens = groups * m
        x_q, x_scale = quantize_activation_groups(torch.randn(tokens, hidden, generator=generator).to(device))
        impl, tuning = _swiglu_impl(m, hidden, intermediate, device)
        if masked:
            counts = torch.full((groups,), m, dtype=torch.int64)
            x_q, x_scale = x_q.view(groups, m, hidden), x_scale.view(groups, m, -1)
            fn = functools.partial(masked_swiglu_fp8, x_q, x_scale, counts, weights)
        elif torch.device(device).type == "cpu":
            fn = prepare_grouped_swiglu(x_q, x_scale, [m] * groups, weights)
            if hasattr(fn, "choices"):
                tuning = f"{fn.choices}; prepared buffers, wall-timed"
        else:
            fn = functools.partial(grouped_swiglu_fp8, x_q, x_scale, offsets_from_counts([m] * groups), weights,
                                   torch.float32)
        flops, bytes_moved = _grouped_swiglu_cost([m] * groups, hidden, intermediate, out_bytes=2 if masked else 4)
        yield BenchCase(
            kernel="masked_swiglu_fp8" if masked else "grouped_swiglu_fp8",
            phase=phase,
            impl=impl,
            tuning=tuning,
            dtype="bf16",
            shape={
                "groups": groups,
                "m_per_group": m,
                "tokens": tokens,
                "hidden": hidden,
                "intermediate": intermediate,
            },
            flops=flops,
            bytes_moved=bytes_moved,
            fn=fn,
        )


def _dispatch_cases(config: dict, device: str, phase: str, token_counts: Sequence[int]) -> Iterator[BenchCase]:
    """Permute fp8 tokens (codes and scales) to their top-k experts, and combine bf16 outputs."""
    hidden, experts, top_k = config["hidden_size"], config["n_routed_experts"], config["num_experts_per_tok"]
    generator = torch.Generator().manual_seed(0)
    for tokens in token_counts:
        topk_ids = torch.rand(tokens, experts, generator=generator).topk(top_k, dim=-1).indices.to(device)
        topk_weights = torch.rand(tokens, top_k, generator=generator).to(device)
        x_q, x_scale = quantize_activation_groups(torch.randn(tokens, hidden, generator=generator).to(device))
        plan = plan_dispatch(topk_ids, experts)
        y = torch.randn(tokens * top_k, hidden, generator=generator).to(device, torch.bfloat16)
        shape = {"tokens": tokens, "hidden": hidden, "top_k": top_k, "experts": experts}
        impl = _glue_impl(device)
        run = prepare_dispatch(x_q, x_scale, topk_ids, experts)
        yield BenchCase("dispatch_fp8", phase, impl, None, shape, *_dispatch_cost(tokens, hidden, top_k), fn=run,
                        tuning=_glue_tuning(run))
        # fp32 out, as the layer adds the shared expert to it
        run = prepare_combine(y, plan, topk_weights)
        yield BenchCase("combine_bf16", phase, impl, "fp32", shape, *_combine_cost(tokens, hidden, top_k), fn=run,
                        tuning=_glue_tuning(run))


def _layer_experts(config: dict) -> int:
    """The layer's share of the experts on one device: see the module docstring."""
    return min(config["n_routed_experts"], 4 * config["num_experts_per_tok"])


def _router_quantize_cases(config: dict, device: str, phase: str, token_counts: Sequence[int]) -> Iterator[BenchCase]:
    """The layer's router over its share of the experts, and the fp8 quantisation of its bf16 input."""
    hidden, top_k, experts = config["hidden_size"], config["num_experts_per_tok"], _layer_experts(config)
    generator = torch.Generator().manual_seed(0)
    router = random_router(experts, hidden, top_k, generator, device=device)
    impl = _glue_impl(device)
    for tokens in token_counts:
        x = torch.randn(tokens, hidden, generator=generator).to(device, torch.bfloat16)
        # the router's path is measured per shape class (moe_layer.router_choice): native or torch
        router_impl = "torch" if impl == "torch" else router_choice(tokens, experts, hidden, x.dtype)
        run = prepare_router(x, router)
        yield BenchCase("router_noaux_tc", phase, router_impl, "fp32",
                        {"tokens": tokens, "hidden": hidden, "top_k": top_k, "experts": experts},
                        *_router_cost(tokens, hidden, experts, top_k), fn=run, tuning=_glue_tuning(run))
        run = prepare_quantize(x)
        yield BenchCase("quantize_fp8", phase, impl, None, {"tokens": tokens, "hidden": hidden},
                        *_quantize_cost(tokens, hidden), fn=run, tuning=_glue_tuning(run))


def _moe_layer_parts(
    tokens: int, counts: Sequence[int], hidden: int, intermediate: int, top_k: int, device: str, prepared: bool = False
) -> list[dict]:
    """What moe_layer_fp8 runs, in order, each named as its own rows name it. prepared: the layer runs as
    expert_calls.prepare_moe_layer, whose routed experts all take the path of the busiest expert where it is native."""
    experts = len(counts)
    busiest = _swiglu_impl(max(counts), hidden, intermediate, device)[0]
    one_path = prepared and busiest in ("native_cpu", "native_amx")
    out_bytes = 4 if prepared else 2  # the prepared experts write fp32, the eager ones bf16
    by_path: dict[str, list[int]] = {}
    for count in counts:  # fp8_grouped_gemm picks each expert's path from its own token count
        if count:
            path = busiest if one_path else _swiglu_impl(count, hidden, intermediate, device)[0]
            by_path.setdefault(path, []).append(count)
    glue = _glue_impl(device)

    def part(name: str, kernel: str, impl: str, dtype: str | None, shape: dict, cost: tuple[float, float]) -> dict:
        return {"part": name, "kernel": kernel, "impl": impl, "dtype": dtype, **shape, "flops": cost[0], "bytes": cost[1]}

    parts = [
        part("router", "router_noaux_tc", glue if glue == "torch" else router_choice(tokens, experts, hidden, torch.bfloat16),
             "fp32", {"tokens": tokens, "experts": experts},
             _router_cost(tokens, hidden, experts, top_k)),
        part("quantize", "quantize_fp8", glue, None, {"tokens": tokens}, _quantize_cost(tokens, hidden)),
        part("dispatch", "dispatch_fp8", glue, None, {"tokens": tokens}, _dispatch_cost(tokens, hidden, top_k)),
    ]
    parts += [
        part(f"routed experts ({path})", "grouped_swiglu_fp8", path, "bf16",
             {"groups": len(path_counts), "tokens": sum(path_counts)},
             _grouped_swiglu_cost(path_counts, hidden, intermediate, out_bytes))
        for path, path_counts in sorted(by_path.items())
    ]  # fmt: skip
    parts += [
        part("combine", "combine_bf16", glue, "fp32", {"tokens": tokens}, _combine_cost(tokens, hidden, top_k)),
        part("shared expert", "grouped_swiglu_fp8", _swiglu_impl(tokens, hidden, intermediate, device)[0], "bf16",
             {"groups": 1, "tokens": tokens}, _grouped_swiglu_cost([tokens], hidden, intermediate, out_bytes)),
    ]  # fmt: skip
    return parts


def _moe_layer_cases(
    config: dict, device: str, phases: Sequence[tuple[str, Sequence[int]]]
) -> Iterator[BenchCase]:
    """moe_layer_fp8 end to end on the layer's share of the experts, with one shared expert.
    phases: (phase, token counts) pairs, all run on one set of weights (32 random Kimi K2 experts
    take about 20 s to draw and quantise on 2 cores)."""
    hidden, intermediate = config["hidden_size"], config["moe_intermediate_size"]
    top_k, experts = config["num_experts_per_tok"], _layer_experts(config)
    generator = torch.Generator().manual_seed(0)
    router = random_router(experts, hidden, top_k, generator, device=device)
    routed = random_fp8_expert_weights(experts, hidden, intermediate, generator, device)
    shared = random_fp8_expert_weights(1, hidden, intermediate, generator, device)
    for phase, tokens in ((phase, tokens) for phase, token_counts in phases for tokens in token_counts):
        x = torch.randn(tokens, hidden, generator=generator).to(device, torch.bfloat16)
        counts = torch.bincount(route_noaux_tc(x, router)[1].view(-1), minlength=experts).tolist()
        prepared = torch.device(device).type == "cpu"
        parts = _moe_layer_parts(tokens, counts, hidden, intermediate, top_k, device, prepared)
        gemm_paths = sorted({path for p in parts if p["kernel"] == "grouped_swiglu_fp8" for path in p["impl"].split("+")})
        if prepared:
            fn = prepare_moe_layer(x, router, routed, shared)
            tuning = f"{fn.choices}; prepared buffers, wall-timed"
        else:
            fn = functools.partial(moe_layer_fp8, x, router, routed, shared)
            tuning = "; ".join(sorted({_swiglu_impl(c, hidden, intermediate, device)[1] for c in [*counts, tokens] if c}))
        yield BenchCase(
            kernel="moe_layer",
            phase=phase,
            impl="+".join(gemm_paths),
            tuning=tuning,
            dtype="bf16",
            shape={"tokens": tokens, "hidden": hidden, "intermediate": intermediate, "top_k": top_k, "experts": experts},
            flops=sum(p["flops"] for p in parts),
            bytes_moved=sum(p["bytes"] for p in parts),
            fn=fn,
            composition={"experts_of_model": config["n_routed_experts"], "tokens_per_expert": counts, "parts": parts},
        )


def _mla_cases(config: dict, device: str, batches_contexts: Sequence[tuple[int, int]]) -> Iterator[BenchCase]:
    """Absorbed MLA decode in bf16 over a bf16 latent cache, all heads on one device."""
    heads, rank, rope = config["num_attention_heads"], config["kv_lora_rank"], config["qk_rope_head_dim"]
    nope, v = config["qk_nope_head_dim"], config["v_head_dim"]
    generator = torch.Generator().manual_seed(0)
    for batch, context in batches_contexts:
        exact = random_mla_decode_inputs([context] * batch, heads, nope, rope, v, rank, generator, device)
        inputs = cast_mla_decode_inputs(exact, torch.bfloat16)
        del exact
        yield BenchCase(
            kernel="mla_decode_absorbed",
            phase="decode",
            impl="torch",
            dtype="bf16",
            shape={"batch": batch, "context": context, "heads": heads},
            # absorb W_UK, scores (latent + rope), P @ latent, W_UV
            flops=2.0 * batch * heads * (nope * rank + context * (rank + rope) + context * rank + rank * v),
            # the latent cache, W_UK and W_UV, the queries and the output, all bf16
            bytes_moved=2.0 * (batch * context * (rank + rope) + heads * (nope + v) * rank)
            + 2.0 * batch * heads * (nope + rope + v),
            fn=functools.partial(mla_decode_absorbed, inputs),
        )


def _cases(config: dict, device: str, quick: bool) -> Iterator[BenchCase]:
    """Each family builds its inputs lazily, so only one family's tensors are alive at a time."""
    if quick:
        # every shape class (power of two) of tokens per expert the 16-token layer below can produce,
        # so each of its parts has rows of its own implementation to be predicted from
        yield from _grouped_swiglu_cases(config, device, "decode", groups=4, m_values=(1, 2, 4, 8, 16))
        yield from _grouped_swiglu_cases(config, device, "prefill", groups=2, m_values=(512,))
        yield from _router_quantize_cases(config, device, "decode", (16,))
        yield from _dispatch_cases(config, device, "decode", (256,))
        yield from _moe_layer_cases(config, device, (("decode", (16,)),))
        if _has_mla(config):
            yield from _mla_cases(config, device, ((4, 1024),))
        return
    yield from _grouped_swiglu_cases(config, device, "decode", groups=4, m_values=(1, 2, 4, 8, 16, 32, 64, 128, 256))
    # 1 and 16 experts: the weight bytes vary, so a fit tells reading them from a fixed cost per call
    yield from _grouped_swiglu_cases(config, device, "decode", groups=1, m_values=(1,))
    yield from _grouped_swiglu_cases(config, device, "decode", groups=16, m_values=(1, 4))
    yield from _grouped_swiglu_cases(config, device, "decode", groups=4, m_values=(1, 32), masked=True)
    yield from _grouped_swiglu_cases(config, device, "prefill", groups=4, m_values=(384, 512, 1024, 2048))
    for phase, token_counts in (("decode", (1, 16, 128, 256)), ("prefill", (1024, 2048, 8192))):
        yield from _router_quantize_cases(config, device, phase, token_counts)
        yield from _dispatch_cases(config, device, phase, token_counts)
    if _has_mla(config):
        yield from _mla_cases(config, device, ((1, 8192), (16, 4096), (64, 4096)))
    yield from _moe_layer_cases(config, device, (("decode", (1, 16, 128)), ("prefill", (1024, 2048))))


def _has_mla(config: dict) -> bool:
    return all(config.get(field) for field in MLA_FIELDS)


def _row(case: BenchCase, seconds: float, roofline: Roofline) -> dict:
    roofline_s, bound = roofline.seconds(case.flops, case.bytes_moved, case.dtype)
    return {"kernel": case.kernel, "phase": case.phase, "impl": case.impl, "tuning": case.tuning, "dtype": case.dtype,
            **case.shape,
            "composition": json.dumps(case.composition) if case.composition else None,
            "flops": case.flops, "bytes": case.bytes_moved, "seconds": seconds,
            "flops_per_s": case.flops / seconds, "bytes_per_s": case.bytes_moved / seconds,
            "peak_flops_per_s": roofline.matmul_flops_per_s.get(case.dtype),
            "peak_bytes_per_s": roofline.memory_bytes_per_s,
            "roofline_seconds": roofline_s, "roofline_fraction": roofline_s / seconds, "bound": bound}  # fmt: skip


def _probe_rows(probes: dict[str, Probe], device: str, repeats: int) -> list[dict]:
    """The probes timed on their own, as rows: the machine's peaks."""
    seconds = interleaved_median_seconds([probe.fn for probe in probes.values()], device, repeats=repeats)
    roofline = roofline_from(dict(zip(probes, seconds, strict=True)), probes)
    rows = []
    for (name, probe), probe_s in zip(probes.items(), seconds, strict=True):
        dtype = name.removeprefix("matmul_") if probe.flops else None
        case = BenchCase(name, None, "torch", dtype, {}, probe.flops, probe.bytes_moved, probe.fn)
        rows.append(_row(case, probe_s, roofline))
    return rows


def _case_row(case: BenchCase, probes: dict[str, Probe], device: str, repeats: int, min_seconds: float) -> dict:
    """The kernel timed interleaved with the probes it is compared with; memory_copy runs last,
    right before the kernel, and flushes the caches."""
    names = ([f"matmul_{case.dtype}"] if case.dtype else []) + ["memory_sum", "memory_copy"]
    seconds = interleaved_median_seconds(
        [probes[n].fn for n in names] + [case.fn], device, repeats=repeats, min_seconds=min_seconds
    )
    return _row(case, seconds[-1], roofline_from(dict(zip(names, seconds[:-1], strict=True)), probes))


def run_benchmarks(device: str = "cpu", model_config: dict | None = None, quick: bool = False) -> list[dict]:
    """Benchmark every kernel on the shapes of one layer of the model.

    model_config: a model's HuggingFace config.json fields (default: KIMI_K2_CONFIG); it must
    have MOE_FIELDS, and the MLA rows need MLA_FIELDS; other fields are ignored. quick: fewer
    and smaller shapes, for tests (on a 2-core CPU: 5 s for a small model, 30 s for Kimi K2, most
    of it drawing the layer's 32 experts). Returns one dict per row with the keys of COLUMNS.
    """
    config = KIMI_K2_CONFIG if model_config is None else model_config
    missing = [field for field in MOE_FIELDS if not config.get(field)]
    if missing:
        raise ValueError(f"model_config lacks the MoE fields {missing}")
    repeats, min_seconds = (3, 0.0) if quick else (5, 1.0)
    meta = {
        "device": device_name(device),
        "device_type": torch.device(device).type,
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "date": datetime.datetime.now(datetime.UTC).date().isoformat(),
    }
    if torch.device(device).type == "cpu":
        keep_freed_memory()
    probes = make_probes(device)
    rows = _probe_rows(probes, device, repeats)
    rows += [_case_row(case, probes, device, repeats, min_seconds) for case in _cases(config, device, quick)]
    return [{column: {**meta, **row}.get(column) for column in COLUMNS} for row in rows]


def write_csv(rows: Sequence[dict], path: str | Path) -> None:
    """Write a new CSV; an existing file is never overwritten (FileExistsError): measurements
    are not reproducible, so a lost one is lost."""
    with open(path, "x", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def default_csv_name(device: str) -> str:
    """kernels-<device name as a slug>.csv, e.g. kernels-nvidia-h100-80gb-hbm3.csv."""
    return "kernels-" + re.sub(r"[^a-z0-9]+", "-", device_name(device).lower()).strip("-") + ".csv"


def format_table(rows: Sequence[dict]) -> str:
    """DeepGEMM-style lines: kernel, shape, us | TFLOP/s | GB/s | x roofline (bound)."""
    shape_keys = ("groups", "m_per_group", "tokens", "experts", "batch", "context")
    lines = []
    for row in rows:
        shape = " ".join(f"{k}={row[k]}" for k in shape_keys if row.get(k) is not None)
        lines.append(
            f"{row['kernel']:<20} {row['impl'] or '':<16} {shape:<36} {row['seconds'] * 1e6:>10.0f} us | "
            f"{row['flops_per_s'] / 1e12:6.3f} TFLOP/s | {row['bytes_per_s'] / 1e9:7.1f} GB/s | "
            f"{row['roofline_fraction']:.2f}x roofline ({row['bound']})"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kernels_ref.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--quick", action="store_true", help="fewer, smaller shapes (seconds, not minutes)")
    parser.add_argument("--config", type=Path, help="a HuggingFace config.json (default: Kimi K2's shapes)")
    parser.add_argument("-o", "--output", type=Path, help="CSV path (default: kernels-<device>.csv)")
    args = parser.parse_args(argv)
    config = json.loads(args.config.read_text()) if args.config else None
    output = args.output or Path(default_csv_name(args.device))
    if output.exists():
        parser.error(f"{output} exists; give a new file name")
    rows = run_benchmarks(args.device, config, args.quick)
    print(format_table(rows))
    write_csv(rows, output)
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
