"""A DeepSeek-V3 / Kimi K2 MoE layer built from the kernels: route, dispatch, grouped experts,
shared expert, combine.

# T = tokens, E = routed experts, K = top-k, D = hidden, I = expert intermediate size
Routing is DeepSeek-V3's "noaux_tc" with a single group (n_group = 1, as Kimi K2): sigmoid
scores, top-k on the scores plus the load-balancing bias, gates = the chosen (bias-free) scores
normalised to sum to 1, times routed_scaling_factor.
"""

import functools
from dataclasses import dataclass

import torch

from kernels_ref import autotune, native_cpu
from kernels_ref.dispatch import combine, dispatch, plan_dispatch
from kernels_ref.fp8 import ceil_div, quantize_activation_groups
from kernels_ref.grouped_gemm import (
    ExpertWeights,
    Fp8ExpertWeights,
    grouped_swiglu_fp8,
    swiglu_reference,
)


# Experts side by side in the native router's packed weight: one AVX-512 register of fp32 (glue.c's ROUTER_LANES).
ROUTER_LANES = 16


@dataclass(frozen=True)
class Router:
    weight: torch.Tensor  # [E, D]
    e_score_correction_bias: torch.Tensor  # [E]
    top_k: int
    routed_scaling_factor: float

    @functools.cached_property
    def packed_weight(self) -> torch.Tensor:
        """The fp32 weight as the native router's GEMM reads it, [ceil(E/16), D, 16] (16 experts' weights of each
        column side by side, experts past E zero): laid out once, as an engine lays out its weights at load (a
        router's weights are not changed after it is built)."""
        experts, hidden = self.weight.shape
        padded = torch.zeros(ceil_div(experts, ROUTER_LANES) * ROUTER_LANES, hidden, dtype=torch.float32)
        padded[:experts] = self.weight
        return padded.view(-1, ROUTER_LANES, hidden).transpose(1, 2).contiguous()


# Tokens routed at a time: see route_noaux_tc.
ROUTER_CHUNK_TOKENS = 256
# Router shape classes round tokens up to a power of two, up to this many.
ROUTER_MAX_CLASS_TOKENS = 8192


def router_choice(tokens: int, experts: int, hidden: int, dtype: torch.dtype) -> str:
    """"native" (the glue's fused C router) or "torch" (PyTorch's fp32 GEMM, then sigmoid and top-k) for a CPU
    router of this shape class: see _router_tuned."""
    return _router_tuned(tokens, experts, hidden, dtype).split(":")[0]


def _router_tuned(tokens: int, experts: int, hidden: int, dtype: torch.dtype) -> str:
    """"native:<threads>" or "torch" for a CPU router of this shape class, timed at first use and cached
    (kernels_ref.autotune): the native router on one thread and on all of torch's are candidates of their own, so
    neither a busy second core nor a single thread's rate decides for the other; timed on cold caches, as a decode
    step reads the router weight from memory. At decode sizes the fused call wins (one pass over the weight, no
    per-op overhead); at prefill sizes the GEMM is compute-bound, and PyTorch's fp32 GEMM once ran 2-3x faster than
    the C loop on the 2-core Xeon, while the C router's register tile (glue.c) ran 1.6-1.9x faster than PyTorch's
    path there at 16 to 1024 tokens (one thread, cold cache, under load): which wins where is measured per
    machine, not assumed."""
    if native_cpu.library("glue") is None or dtype not in (torch.bfloat16, torch.float32):
        return "torch"
    m = min(ROUTER_MAX_CLASS_TOKENS, 1 << max(0, tokens - 1).bit_length())
    return autotune.choose(f"router:{experts}x{hidden}:{str(dtype).removeprefix('torch.')}:m{m}",
                           lambda: _router_tuning_calls(m, experts, hidden, dtype), cold=True)


def _router_tuning_calls(tokens: int, experts: int, hidden: int, dtype: torch.dtype) -> dict:
    generator = torch.Generator().manual_seed(0)
    router = Router(torch.randn(experts, hidden, generator=generator) / hidden**0.5,
                    torch.randn(experts, generator=generator) * 1e-2, min(8, experts), 2.5)
    x = torch.randn(tokens, hidden, generator=generator).to(dtype)
    thread_counts = sorted({1, torch.get_num_threads()})
    return {**{f"native:{n}": functools.partial(_route_native, x, router, n) for n in thread_counts},
            "torch": lambda: route_noaux_tc_torch(x, router)}


def route_noaux_tc(x: torch.Tensor, router: Router) -> tuple[torch.Tensor, torch.Tensor]:
    """x: [T, D] -> (topk_weights [T, K] float32, topk_ids [T, K] int64), in fp32.

    On a CPU, bf16 and fp32 inputs take the path router_choice measured fastest for their shape class: one
    native call (native_cpu's glue) for the GEMM, sigmoid and top-k together, where PyTorch's small fp32 GEMM
    and the elementwise passes after it cost more in per-call overhead and thread wake-ups than reading the
    router weight (decode sizes: on a shared 2-core VM, a 1-token fp32 GEMM took 8 ms on 2 threads, 32 us on
    one), or route_noaux_tc_torch, whose GEMM is faster where the router is compute-bound. Elsewhere
    route_noaux_tc_torch."""
    if x.device.type != "cpu":
        return route_noaux_tc_torch(x, router)
    path, _, threads = _router_tuned(x.shape[0], router.weight.shape[0], x.shape[1], x.dtype).partition(":")
    if path == "torch":
        return route_noaux_tc_torch(x, router)
    return _route_native(x, router, int(threads))


def _route_native(x: torch.Tensor, router: Router, threads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """route_noaux_tc in one call of the glue's C router on `threads` threads (x on the CPU, bf16 or fp32)."""
    glue = native_cpu.library("glue")
    tokens, top_k = x.shape[0], router.top_k
    x, weight, bias = x.contiguous(), router.weight.float().contiguous(), router.e_score_correction_bias.float().contiguous()
    topk_weights = torch.empty(tokens, top_k, dtype=torch.float32)
    topk_ids = torch.empty(tokens, top_k, dtype=torch.int64)
    status = glue.route_noaux_tc(x.data_ptr(), int(x.dtype == torch.bfloat16), weight.data_ptr(),
                                 router.packed_weight.data_ptr(), bias.data_ptr(),
                                 tokens, x.shape[1], weight.shape[0], top_k, router.routed_scaling_factor,
                                 topk_weights.data_ptr(), topk_ids.data_ptr(), threads, None)
    if status:
        raise MemoryError("the native router could not allocate its buffers")
    return topk_weights, topk_ids


def route_noaux_tc_torch(x: torch.Tensor, router: Router) -> tuple[torch.Tensor, torch.Tensor]:
    """route_noaux_tc in PyTorch operations (any device).

    Chunks of tokens keep the fp32 copy of x small: on a CPU a fresh buffer of hundreds of
    megabytes costs page faults that took longer than the GEMM (8192 Kimi K2 tokens: 12 us per
    token in one piece, 4 in chunks; the results are the same, token by token)."""
    tokens, top_k = x.shape[0], router.top_k
    weight, bias = router.weight.float(), router.e_score_correction_bias.float()
    topk_weights = torch.empty(tokens, top_k, dtype=torch.float32, device=x.device)
    topk_ids = torch.empty(tokens, top_k, dtype=torch.int64, device=x.device)
    for t0 in range(0, tokens, ROUTER_CHUNK_TOKENS):
        chunk = slice(t0, t0 + ROUTER_CHUNK_TOKENS)
        scores = torch.sigmoid(x[chunk].float() @ weight.T)  # [chunk, E]
        # The bias steers which experts are chosen, never how much they weigh.
        ids = torch.topk(scores + bias, top_k, dim=-1).indices
        gates = scores.gather(1, ids)
        topk_weights[chunk] = gates / gates.sum(dim=-1, keepdim=True) * router.routed_scaling_factor
        topk_ids[chunk] = ids
    return topk_weights, topk_ids


def moe_layer_reference(x: torch.Tensor, router: Router, experts: ExpertWeights, shared: ExpertWeights) -> torch.Tensor:
    """Expert by expert in fp32 (weights: a checkpoint's dequantised, or never rounded).
    x: [T, D] -> [T, D] float32. shared: the shared expert(s) as one ExpertWeights with E = 1."""
    topk_weights, topk_ids = route_noaux_tc(x, router)
    out = swiglu_reference(x, shared.w13[0], shared.w2[0])
    for e in range(experts.w13.shape[0]):
        token, k = torch.nonzero(topk_ids == e, as_tuple=True)
        if token.numel():
            expert_out = swiglu_reference(x[token], experts.w13[e], experts.w2[e])
            out.index_add_(0, token, expert_out * topk_weights[token, k, None])
    return out


def moe_layer_fp8(
    x: torch.Tensor,
    router: Router,
    experts: Fp8ExpertWeights,
    shared: Fp8ExpertWeights,
    out_dtype: torch.dtype = torch.bfloat16,
) -> torch.Tensor:
    """fp8 experts, fp8 activations, fp32 router. x: [T, D] -> [T, D] out_dtype."""
    # 1. Route (fp32) and quantise the tokens once; dispatch moves fp8 codes, as DeepEP does.
    topk_weights, topk_ids = route_noaux_tc(x, router)
    x_q, x_scale = quantize_activation_groups(x)  # [T, D] fp8, [T, ceil(D/128)]
    plan = plan_dispatch(topk_ids, num_experts=experts.w13.shape[0])
    # 2. Routed experts over the expert-sorted rows: [T * K, D], in bf16 as DeepGEMM writes them
    #    and DeepEP combines them (and as the benchmark harness times each piece on its own).
    routed = grouped_swiglu_fp8(dispatch(x_q, plan), dispatch(x_scale, plan), plan.offsets, experts)
    # 3. Combine with the gates in fp32 and add the shared expert (one group of all T tokens).
    all_tokens = torch.tensor([0, x.shape[0]])
    out = combine(routed, plan, topk_weights, torch.float32)
    out += grouped_swiglu_fp8(x_q, x_scale, all_tokens, shared)
    return out.to(out_dtype)
