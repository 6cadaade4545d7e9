"""Timing: warm up, then the median of repeats, with several functions interleaved.

What is timed is the kernel, as a GPU benchmark times it with events on the kernel's stream: from the
kernel's start to its end, after whatever ran before it (here the cache-flushing copy of the benchmark
harness), so its cold caches, page walks and thread wake-ups count, the host's dispatch of the call does not.
A call that can say how long its kernel ran (a `kernel_seconds()` method: the prepared native glue calls of
kernels_ref.glue_calls, whose C reads the monotonic clock on entry and on return) is timed by that; any other
call (PyTorch operations, Python around several kernels) by the wall clock around the call, which includes its
dispatch: charged more, never less. Why: after the harness's flush, the Python and ctypes dispatch of one call
cost 18 us on the 2-core Xeon before the C code began (an empty ctypes call: 18 us cold, 1 us warm), more than a
decode-sized glue kernel's roofline time (quantising 1 Kimi K2 token: 1 us at 22 GB/s), while a serving
engine calls its kernels from compiled code or a CUDA graph.
"""

import ctypes
import ctypes.util
import statistics
import time
from collections.abc import Callable, Sequence

import torch


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory() -> bool:
    """Make glibc reuse freed memory for large tensors instead of unmapping it; True if it took.

    By default glibc maps each large allocation afresh and unmaps it on free, so every call of a
    kernel that allocates its output pays a page fault and the operating system's zero-fill per
    4 KiB page it writes: on the 2-core VM, quantising 8192 tokens (a 59 MB output) took 85 ms
    instead of 56, 1.5x the time per token of 2048 tokens, whose output glibc kept. PyTorch's CUDA
    caching allocator keeps freed blocks the same way, so a CPU run without this would time the
    operating system, not the kernel. Call once, before benchmarking (it lasts for the process).
    """
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):  # no C library found, or not glibc (musl, macOS, Windows)
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, 1 << 30)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


def synchronize(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_median_seconds(
    fns: Sequence[Callable[[], object]],
    device: torch.device | str,
    warmup: int = 1,
    repeats: int = 5,
    min_seconds: float = 0.0,
    max_repeats: int = 25,
) -> list[float]:
    """Median wall time of each fn, timed round-robin (fns[0], fns[1], ..., fns[0], ...).

    Interleaving puts a kernel and the roofline probes it is compared with under the same
    conditions: shared and burstable machines change speed by 2x within seconds (a 2-core VM
    measured 400 GFLOP/s for 12 s of load, then 190). At least `repeats` rounds, and more (up to
    `max_repeats`) until the rounds span `min_seconds`: a stall of a few hundred milliseconds
    (seen there) moves the median of five one-millisecond calls, not of a second's worth. Each sample is the
    call's kernel_seconds() where it has one, else the wall time around it (see the module docstring).
    """
    for _ in range(warmup):
        for fn in fns:
            fn()
    samples: list[list[float]] = [[] for _ in fns]
    began = time.perf_counter()
    rounds = 0
    while rounds < repeats or (time.perf_counter() - began < min_seconds and rounds < max_repeats):
        rounds += 1
        for fn, fn_samples in zip(fns, samples, strict=True):
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            wall_s = time.perf_counter() - start
            kernel_seconds = getattr(fn, "kernel_seconds", None)
            fn_samples.append(kernel_seconds() if kernel_seconds is not None else wall_s)
    return [statistics.median(s) for s in samples]
