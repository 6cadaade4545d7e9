"""The glue kernels as prepared calls: outputs sized once, the native C function's arguments bound once.

# T = tokens, K = top-k, E = experts, D = hidden

Why: at decode sizes a glue kernel moves a few kilobytes (1 token of Kimi K2: 14 kB of bf16 in, 7 kB of
e4m3 out, about 2 us at 10 GB/s), while each eager call (kernels_ref.fp8 / dispatch / moe_layer) allocates
its outputs and crosses several torch and ctypes layers: on the 2-core Xeon, after the benchmark's
cache-flushing copy, `quantize_activation_groups` of one token took about 150 us, a bare ctypes call of
the same C function about 20-40 us and `torch.empty` alone about 40 us. A serving engine runs these
kernels on buffers sized once per batch shape (CUDA graphs on a GPU), so each `prepare_*` here does
what an engine does once per shape and returns a zero-argument call that runs only the C kernel(s):
outputs allocated once, every argument converted to its ctypes value once, the function called
through a prototype without argtypes, so no torch op and no argument conversion runs per call.

A prepared call reads its inputs where they were when prepared and overwrites the same outputs on
every call: fill the inputs in place (`x.copy_(...)`) between calls and copy out an output that must
outlive the next call. Its `kernel_seconds()` is the time its last call spent inside the C kernel, as the
kernel measured it (a GPU's events around the kernel, not the host's dispatch: kernels_ref.timing).
Each runs on one thread or on all of torch's, whichever ran faster for its shape on this machine
(kernels_ref.autotune, on cold caches): whether the second thread pays depends on the machine and on what
else runs there (native_cpu.EAGER_PARALLEL_BYTES says how much). Where the native glue does not build (no
compiler, not a CPU tensor, another dtype), `prepare_*` returns the eager call on the same inputs, which
allocates as before and has no kernel_seconds.
Results are bit for bit those of the eager functions (tests/kernels_ref/test_glue_calls.py).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

import torch

from kernels_ref import autotune, native_cpu
from kernels_ref.dispatch import DispatchPlan, combine, dispatch, plan_dispatch
from kernels_ref.fp8 import BLOCK, ceil_div, quantize_activation_groups
from kernels_ref.moe_layer import Router, route_noaux_tc, router_choice

_P, _I64, _INT, _F32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_float


def bind(library: ctypes.CDLL, name: str, *args) -> Callable[[], int]:
    """The C function `name` of a native_cpu library with `args` converted to ctypes values now: a call converts
    nothing. Each arg is (ctypes type, value); the pointers' tensors must outlive the call (the caller holds them)."""
    restype = getattr(library, name).restype
    function = ctypes.CFUNCTYPE(restype)(ctypes.cast(getattr(library, name), ctypes.c_void_p).value)
    function.argtypes = None  # a prototype without argtypes passes ctypes instances as they are
    values = tuple(kind(value) for kind, value in args)
    return lambda: function(*values)


class PreparedCall:
    """A prepared native call on `threads` threads: calling it runs the kernel and returns `outputs`; `check`
    reads the kernel's status (raising on an error); kernel_seconds() is the last call's time inside the kernel."""

    def __init__(self, call: Callable[[], int], outputs, elapsed_ns: ctypes.c_int64, threads: int,
                 check: Callable[[int], None] = lambda status: None, held: tuple = ()):
        self._call, self._outputs, self._elapsed_ns, self._check = call, outputs, elapsed_ns, check
        self.threads = threads
        self._held = held  # tensors the bound pointers read that no caller holds (converted router weights)

    def __call__(self):
        self._check(self._call())
        return self._outputs

    def kernel_seconds(self) -> float:
        return self._elapsed_ns.value * 1e-9


def _elapsed() -> tuple[ctypes.c_int64, tuple]:
    """A counter a kernel writes its nanoseconds to, and the argument that points the kernel to it."""
    elapsed_ns = ctypes.c_int64()
    return elapsed_ns, (_P, ctypes.addressof(elapsed_ns))


def _tuned(shape_class: str, prepare: Callable[[int], PreparedCall]) -> PreparedCall:
    """prepare(threads) on one thread or on all of torch's, whichever autotune timed faster for the shape class."""
    threads = torch.get_num_threads()
    if threads == 1:
        return prepare(1)
    calls = {"1 thread": prepare(1), f"{threads} threads": prepare(threads)}
    return calls[autotune.choose(f"glue:{shape_class}", lambda: calls, cold=True)]


def _glue(*tensors: torch.Tensor) -> ctypes.CDLL | None:
    return native_cpu.library("glue") if all(t.device.type == "cpu" for t in tensors) else None


def prepare_quantize(x: torch.Tensor) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
    """x: [..., D] bf16 or fp32, contiguous -> a call returning (q [..., D] e4m3, scale [..., ceil(D/128)] fp32),
    the same two tensors every call (quantize_activation_groups's values)."""
    glue = _glue(x)
    if glue is None or x.dtype not in (torch.bfloat16, torch.float32) or not x.is_contiguous():
        return lambda: quantize_activation_groups(x)
    *lead, k = x.shape
    rows = x.numel() // k if k else 0
    q = torch.empty(x.shape, dtype=torch.float8_e4m3fn)
    scale = torch.empty(*lead, ceil_div(k, BLOCK), dtype=torch.float32)

    def prepare(threads: int) -> PreparedCall:
        elapsed_ns, elapsed_arg = _elapsed()
        call = bind(glue, "quantize_fp8", (_P, x.data_ptr()), (_INT, int(x.dtype == torch.bfloat16)), (_I64, rows),
                      (_I64, k), (_P, q.data_ptr()), (_P, scale.data_ptr()), (_INT, threads), elapsed_arg)
        return PreparedCall(call, (q, scale), elapsed_ns, threads)
    return _tuned(f"quantize:{rows}x{k}:{str(x.dtype).removeprefix('torch.')}", prepare)


def prepare_dispatch(x_q: torch.Tensor, x_scale: torch.Tensor, topk_ids: torch.Tensor,
                     num_experts: int) -> Callable[[], tuple[torch.Tensor, torch.Tensor, DispatchPlan]]:
    """x_q: [T, D] fp8 codes, x_scale: [T, D/128] fp32, topk_ids: [T, K] int64 -> a call that plans the permutation
    and moves the codes and their scales to expert order ([T * K, ...] each), as a layer does: the values of
    plan_dispatch and dispatch. Expert ids out of range raise, as plan_dispatch's do."""
    glue = _glue(x_q, x_scale, topk_ids)
    if (glue is None or topk_ids.dtype != torch.int64 or not all(t.is_contiguous() for t in (x_q, x_scale, topk_ids))
            or x_q.shape[0] == 0):
        def eager():
            plan = plan_dispatch(topk_ids, num_experts)
            return dispatch(x_q, plan), dispatch(x_scale, plan), plan
        return eager
    tokens, top_k = topk_ids.shape
    plan = DispatchPlan(torch.empty(tokens * top_k, dtype=torch.int64), torch.empty(tokens, top_k, dtype=torch.int64),
                        torch.empty(num_experts, dtype=torch.int64), torch.empty(num_experts + 1, dtype=torch.int64))
    q_out = torch.empty((tokens * top_k, *x_q.shape[1:]), dtype=x_q.dtype)
    s_out = torch.empty((tokens * top_k, *x_scale.shape[1:]), dtype=x_scale.dtype)
    q_row_bytes, s_row_bytes = x_q[0].numel() * x_q.element_size(), x_scale[0].numel() * x_scale.element_size()

    def check(status: int) -> None:
        if status:
            raise ValueError("an expert id is out of range")

    def prepare(threads: int) -> PreparedCall:
        elapsed_ns, elapsed_arg = _elapsed()
        call = bind(glue, "dispatch_fp8", (_P, topk_ids.data_ptr()), (_I64, tokens), (_I64, top_k),
                      (_I64, num_experts), (_P, x_q.data_ptr()), (_I64, q_row_bytes), (_P, x_scale.data_ptr()),
                      (_I64, s_row_bytes), (_P, plan.token_of_row.data_ptr()), (_P, plan.row_of_slot.data_ptr()),
                      (_P, plan.counts.data_ptr()), (_P, plan.offsets.data_ptr()), (_P, q_out.data_ptr()),
                      (_P, s_out.data_ptr()), (_INT, threads), elapsed_arg)
        return PreparedCall(call, (q_out, s_out, plan), elapsed_ns, threads, check)
    return _tuned(f"dispatch:{tokens}x{top_k}:{q_row_bytes}+{s_row_bytes}B", prepare)


def prepare_combine(y: torch.Tensor, plan: DispatchPlan, topk_weights: torch.Tensor) -> Callable[[], torch.Tensor]:
    """y: [T * K, D] bf16 or fp32 expert outputs in row order, topk_weights: [T, K] fp32 -> a call returning
    [T, D] fp32 = combine(y, plan, topk_weights, torch.float32)."""
    glue = _glue(y, topk_weights)
    tensors = (y, topk_weights, plan.row_of_slot)
    if (glue is None or y.dtype not in (torch.bfloat16, torch.float32) or topk_weights.dtype != torch.float32
            or not all(t.is_contiguous() for t in tensors)):
        return lambda: combine(y, plan, topk_weights, torch.float32)
    tokens, top_k = plan.row_of_slot.shape
    out = torch.empty(tokens, y.shape[1], dtype=torch.float32)

    def prepare(threads: int) -> PreparedCall:
        elapsed_ns, elapsed_arg = _elapsed()
        call = bind(glue, "combine_rows", (_P, y.data_ptr()), (_INT, int(y.dtype == torch.bfloat16)),
                      (_P, plan.row_of_slot.data_ptr()), (_P, topk_weights.data_ptr()), (_I64, tokens), (_I64, top_k),
                      (_I64, y.shape[1]), (_P, out.data_ptr()), (_INT, threads), elapsed_arg)
        return PreparedCall(call, out, elapsed_ns, threads)
    return _tuned(f"combine:{tokens}x{top_k}x{y.shape[1]}:{str(y.dtype).removeprefix('torch.')}", prepare)


def prepare_router(x: torch.Tensor, router: Router) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
    """x: [T, D] bf16 or fp32 -> a call returning (topk_weights [T, K] fp32, topk_ids [T, K] int64) =
    route_noaux_tc(x, router): prepared where router_choice picks the native router for this shape, else
    route_noaux_tc itself (PyTorch's GEMM path allocates per call)."""
    glue = _glue(x)
    if (glue is None or x.dtype not in (torch.bfloat16, torch.float32) or not x.is_contiguous()
            or router_choice(x.shape[0], router.weight.shape[0], x.shape[1], x.dtype) != "native"):
        return lambda: route_noaux_tc(x, router)  # the path route_noaux_tc takes for this shape here
    tokens, top_k = x.shape[0], router.top_k
    weight, bias = router.weight.float().contiguous(), router.e_score_correction_bias.float().contiguous()
    packed = router.packed_weight
    topk_weights = torch.empty(tokens, top_k, dtype=torch.float32)
    topk_ids = torch.empty(tokens, top_k, dtype=torch.int64)

    def check(status: int) -> None:
        if status:
            raise MemoryError("the native router could not allocate its buffers")

    def prepare(threads: int) -> PreparedCall:
        elapsed_ns, elapsed_arg = _elapsed()
        call = bind(glue, "route_noaux_tc", (_P, x.data_ptr()), (_INT, int(x.dtype == torch.bfloat16)),
                      (_P, weight.data_ptr()), (_P, packed.data_ptr()), (_P, bias.data_ptr()), (_I64, tokens),
                      (_I64, x.shape[1]), (_I64, weight.shape[0]), (_I64, top_k), (_F32, router.routed_scaling_factor),
                      (_P, topk_weights.data_ptr()), (_P, topk_ids.data_ptr()), (_INT, threads), elapsed_arg)
        return PreparedCall(call, (topk_weights, topk_ids), elapsed_ns, threads, check, held=(weight, packed, bias))
    return _tuned(f"router:{tokens}x{x.shape[1]}x{weight.shape[0]}:{str(x.dtype).removeprefix('torch.')}", prepare)
