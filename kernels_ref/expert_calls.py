"""The routed experts' SwiGLU MLP, and the whole MoE layer, as prepared calls: the native kernels bound once on
buffers sized once, run back to back.

# T = token rows sorted by expert, E = experts, D = hidden, I = expert intermediate size

Why: grouped_swiglu_fp8 reaches its two GEMMs and the SwiGLU quantisation through some twenty PyTorch operations
(argument checks, scale ranges, slices, outputs), and after the benchmark's cache-flushing copy each cost 20 to 30
us on a 2-CPU Zen 4: 0.5 ms of host dispatch around the 1.1 ms the up projection of one Kimi K2 token takes in C.
A serving engine calls these kernels from compiled code or a CUDA graph on buffers sized once per batch shape, so
`prepare_grouped_swiglu` does once what an engine does once per shape (the path of each GEMM from the tuned choices,
the scale-range check, the outputs, every ctypes argument) and returns a call that runs only the three C kernels.
It is timed by the wall clock around the call (kernels_ref.timing): the three ctypes calls' dispatch is charged,
about 20 us each cold, where a GPU's events would charge the launch gaps between its kernels.

The call reads its inputs where they were when prepared and overwrites the same fp32 output on every call (the
kernels write fp32; grouped_swiglu_fp8 converts to bf16 in one more pass). Where a GEMM's tuned choice is not a
native kernel (the tile path of many tokens per expert) or the scales are outside the native kernels' range, the
eager grouped_swiglu_fp8 in fp32 is returned instead. Results are bit for bit those of the eager kernels with the
same choices (tests/kernels_ref/test_expert_calls.py). `prepare_moe_layer` chains the glue's prepared calls with these
into moe_layer_fp8's layer, so the benchmark's whole-layer rows time what its parts' rows time.
"""

from __future__ import annotations

import ctypes
import dataclasses
import itertools
from collections.abc import Callable

import torch

from kernels_ref import native_cpu
from kernels_ref.fp8 import BLOCK, ceil_div
from kernels_ref.fp8_gemm import AMX_SCALE_MODES, GemmPath, fits_exponent_range, gemm_choice
from kernels_ref.glue_calls import PreparedCall, bind, prepare_combine, prepare_dispatch, prepare_quantize, prepare_router
from kernels_ref.grouped_gemm import Fp8ExpertWeights, grouped_swiglu_fp8
from kernels_ref.moe_layer import Router

_P, _I64, _INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int


def _gemm_call(choice: str, x_q, x_scale, w_q, w_scale, expert_ids, starts, y) -> Callable[[], int] | None:
    """One native GEMM of fp8_grouped_gemm's, bound: y = (x_q * x_scale) @ (w_q[e] * w_scale[e]).T per group."""
    path, *tunables = choice.split(":")
    (t, k), (n, threads) = x_q.shape, (w_q.shape[1], torch.get_num_threads())
    args = [(_P, w_q.data_ptr()), (_P, w_scale.data_ptr()), (_P, expert_ids.data_ptr()), (_P, starts.data_ptr()),
            (_I64, expert_ids.numel()), (_P, x_q.data_ptr()), (_P, x_scale.data_ptr()), (_P, y.data_ptr()),
            (_I64, t), (_I64, n), (_I64, k), (_INT, threads)]
    if path == GemmPath.NATIVE_CPU.value:
        (rows,) = tunables
        return bind(native_cpu.library("gemm_avx512"), "fp8_grouped_gemm", *args, (_INT, int(rows[1:])))
    if path == GemmPath.NATIVE_AMX.value:
        scale, chunk = tunables
        return bind(native_cpu.library("gemm_amx"), "fp8_grouped_gemm_amx", *args, (_I64, int(chunk[1:])),
                    (_INT, AMX_SCALE_MODES[scale]))
    return None


def _native_choice(tokens_per_expert: int, n: int, k: int) -> str | None:
    """The tuned choice for the largest expert's tokens x an [N, K] weight, or None where it is not a native kernel.
    One choice serves every expert, as one grouped-GEMM launch of an engine has one configuration (grouped_swiglu_fp8
    tunes each expert: the two agree where the experts' token counts share a shape class)."""
    choice = gemm_choice(max(tokens_per_expert, 1), n, k, "cpu")
    return choice if choice.split(":")[0] in (GemmPath.NATIVE_CPU.value, GemmPath.NATIVE_AMX.value) else None


def prepare_grouped_swiglu(x_q: torch.Tensor, x_scale: torch.Tensor, counts: list[int],
                           weights: Fp8ExpertWeights) -> Callable[[], torch.Tensor]:
    """x_q: [T, D] fp8 sorted by expert, x_scale: [T, ceil(D/128)] fp32, counts: tokens of each of the E experts
    -> a call returning [T, D] fp32: the values of fp8_grouped_gemm, swiglu_quantize and fp8_grouped_gemm in fp32, each
    GEMM with the choice named in the call's `choices`."""
    return _prepare_experts(x_q, x_scale, torch.tensor([0, *itertools.accumulate(counts)], dtype=torch.int64),
                            weights, max(counts, default=0))


def _prepare_experts(x_q: torch.Tensor, x_scale: torch.Tensor, offsets: torch.Tensor, weights: Fp8ExpertWeights,
                     tokens_per_expert: int) -> Callable[[], torch.Tensor]:
    """The experts over rows sorted by expert, expert e owning rows offsets[e]:offsets[e + 1] as the offsets hold
    when called (a dispatch writes them in place), each GEMM with the choice tuned for `tokens_per_expert`."""

    def eager() -> torch.Tensor:
        return grouped_swiglu_fp8(x_q, x_scale, offsets, weights, torch.float32)

    (t, hidden), (experts, two_inter, _) = x_q.shape, weights.w13.shape
    glue = native_cpu.library("glue")
    if (x_q.device.type != "cpu" or glue is None or t == 0 or offsets.numel() != experts + 1
            or not all(a.is_contiguous() for a in (x_q, x_scale, offsets, *vars(weights).values()))):
        return eager
    inter = two_inter // 2
    up = _native_choice(tokens_per_expert, two_inter, hidden)
    down = _native_choice(tokens_per_expert, hidden, inter)
    # the activations' group scales: the input's, and the SwiGLU output's after quantisation (at most 1 / 448 of
    # each group's largest |value|, which the eager path checks on every call; here it is checked on this input)
    w_amax = max(float(weights.w13_scale.amax()), float(weights.w2_scale.amax()))
    if up is None or down is None or not fits_exponent_range(float(x_scale.amax()), w_amax):
        return eager
    expert_ids = torch.arange(experts, dtype=torch.int64)  # an empty group costs its work items nothing
    gate_up = torch.empty(t, two_inter, dtype=torch.float32)
    h_q = torch.empty(t, inter, dtype=torch.float8_e4m3fn)
    h_scale = torch.empty(t, ceil_div(inter, BLOCK), dtype=torch.float32)
    y = torch.empty(t, hidden, dtype=torch.float32)
    calls = [_gemm_call(up, x_q, x_scale, weights.w13, weights.w13_scale, expert_ids, offsets, gate_up),
             bind(glue, "swiglu_quantize_fp8", (_P, gate_up.data_ptr()), (_I64, t), (_I64, inter),
                  (_P, h_q.data_ptr()), (_P, h_scale.data_ptr()), (_INT, native_cpu.glue_threads(gate_up.nbytes))),
             _gemm_call(down, h_q, h_scale, weights.w2, weights.w2_scale, expert_ids, offsets, y)]
    if None in calls:
        return eager
    return PreparedExperts(*calls, eager, h_scale, w_amax, y, f"w13={up} w2={down}",
                           held=(expert_ids, offsets, gate_up, h_q))


class PreparedExperts:
    """The three bound kernels; `choices` names each GEMM's tuned choice, as the benchmark's `tuning` column does."""

    def __init__(self, up_gemm, swiglu, down_gemm, eager, h_scale, w_amax: float, y, choices: str, held: tuple):
        self._up_gemm, self._swiglu, self._down_gemm, self._eager = up_gemm, swiglu, down_gemm, eager
        self._h_scale, self._w_amax, self._y, self.choices = h_scale, w_amax, y, choices
        self._held = held  # the tensors the bound pointers read or write that nothing else holds

    def __call__(self) -> torch.Tensor:
        if self._up_gemm() or self._swiglu():
            raise MemoryError("a native expert kernel could not allocate its buffers")
        # the SwiGLU output's scales are known only now: outside the down GEMM's range, the eager path
        if not fits_exponent_range(float(self._h_scale.amax()), self._w_amax):
            return self._eager()
        if self._down_gemm():
            raise MemoryError("a native expert kernel could not allocate its buffers")
        return self._y


def _in_place(call: Callable[[], object]) -> tuple[Callable[[], object], object]:
    """(a call writing into the same output tensors every time, those outputs). A prepared call already does; an eager
    fallback (a shape its native kernel does not serve) has its fresh results copied into the first call's."""
    outputs = call()
    if isinstance(call, (PreparedCall, PreparedExperts)):
        return call, outputs
    kept = _tensors(outputs)

    def copy() -> None:
        for tensor, fresh in zip(kept, _tensors(call()), strict=True):
            tensor.copy_(fresh)
    return copy, outputs


def _tensors(outputs) -> list[torch.Tensor]:
    """The tensors of a call's outputs: a tensor, a tuple of them, or dataclasses of them (a DispatchPlan)."""
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    if dataclasses.is_dataclass(outputs):
        return _tensors(tuple(getattr(outputs, f.name) for f in dataclasses.fields(outputs)))
    return [t for o in outputs for t in _tensors(o)] if isinstance(outputs, tuple) else []


def prepare_moe_layer(x: torch.Tensor, router: Router, experts: Fp8ExpertWeights,
                      shared: Fp8ExpertWeights) -> Callable[[], torch.Tensor]:
    """x: [T, D] bf16 -> a call returning [T, D] in x's dtype = moe_layer_fp8(x, router, experts, shared), each part
    a prepared call: the router, quantisation, dispatch and combine of kernels_ref.glue_calls and the routed and shared
    experts above, the routed experts reading the dispatch's expert offsets when called. Their GEMMs take the choice
    tuned for the most tokens an expert gets from this input (moe_layer_fp8 tunes each expert); `choices` names
    them. A part its native kernel does not serve runs eagerly into the same buffers."""
    route, (topk_weights, topk_ids) = _in_place(prepare_router(x, router))
    quantize, (x_q, x_scale) = _in_place(prepare_quantize(x))
    dispatched, (q_rows, s_rows, plan) = _in_place(prepare_dispatch(x_q, x_scale, topk_ids, experts.w13.shape[0]))
    routed, y = _in_place(_prepare_experts(q_rows, s_rows, plan.offsets, experts, int(plan.counts.max())))
    combined, out = _in_place(prepare_combine(y, plan, topk_weights))
    shared_expert = prepare_grouped_swiglu(x_q, x_scale, [x.shape[0]], shared)

    def run() -> torch.Tensor:
        for part in (route, quantize, dispatched, routed, combined):
            part()
        return out.add_(shared_expert()).to(x.dtype)

    run.choices = "; ".join(sorted({getattr(call, "choices", "eager") for call in (routed, shared_expert)}))
    return run
