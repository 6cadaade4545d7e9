"""How close a one-token glue kernel can come to its roofline when it starts on cold caches, as
`moeplan bench-kernels` times it: the floor, measured.

Issue 24 holds every glue row to 0.40 of its roofline, the row's bytes over the memory bandwidth measured
alongside. At one token a glue kernel moves a few kilobytes, and after the harness's flush (a 256 MiB copy) each
of its cache lines comes from memory at the latency of a cold access, not the bandwidth of a stream. So this
benchmark times, right after that same flush, the least any such kernel could do: the C glue's `touch_bytes`,
which reads the kernel's input bytes once and writes its output bytes once (non-temporal stores) and computes
nothing, on one thread. Its roofline fraction is the ceiling of every one-thread kernel of that shape on this
machine under that protocol (a kernel on two threads, as the router's tuning picks, can pass it); beside it, the
kernel itself (the prepared call bench-kernels times, on the threads tuned for it), both by the kernel's own clock.

The bytes are the rows' of bench-kernels (kernels_ref.bench) for one token of Kimi K2 (hidden 7168, 56 groups
of 128, top-8, the router over the 32 experts of one EP12 device), split into what is read and what is written:
quantisation reads 2 D (bf16) and writes D + 4 x 56 (codes and scales); dispatch reads those and writes top_k
copies; combine reads top_k bf16 rows and writes one fp32 row; the router reads the token and its fp32 weight and
writes 32 logits, 8 ids and 8 gates.

Run: python benchmarks/bench_cold_floor.py (needs torch and a C compiler). Writes
benchmarks/results/bench_cold_floor.json; the README quotes it.
"""

import ctypes
import statistics
import time

import torch

from kernels_ref import native_cpu
from kernels_ref.dispatch import plan_dispatch
from kernels_ref.fp8 import quantize_activation_groups
from kernels_ref.generators import random_router
from kernels_ref.glue_calls import prepare_combine, prepare_dispatch, prepare_quantize, prepare_router
from kernels_ref.roofline import device_name, make_probes
from kernels_ref.timing import keep_freed_memory
from record import run_context, write_results

HIDDEN, EXPERTS, TOP_K, ROUTER_EXPERTS = 7168, 384, 8, 32
GROUPS = HIDDEN // 128
ROUNDS = 60
ACTIVATION = HIDDEN + 4 * GROUPS  # one token's e4m3 codes and fp32 group scales
# kernel -> (bytes read, bytes written) for one token
BYTES = {
    "quantize_fp8": (2 * HIDDEN, ACTIVATION),
    "dispatch_fp8": (ACTIVATION, TOP_K * ACTIVATION),
    "combine_bf16": (TOP_K * 2 * HIDDEN, 4 * HIDDEN),
    "router_noaux_tc": (2 * HIDDEN + 4 * ROUTER_EXPERTS * HIDDEN, 4 * ROUTER_EXPERTS + 12 * TOP_K),
}


def _kernels() -> tuple[dict, tuple]:
    """The prepared one-token call of each kernel, as bench-kernels times it, and the inputs they read (a prepared
    call reads them where they were when prepared: the caller keeps them)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, HIDDEN, generator=generator).to(torch.bfloat16)
    topk_ids = torch.rand(1, EXPERTS, generator=generator).topk(TOP_K, dim=-1).indices
    x_q, x_scale = quantize_activation_groups(x)
    y = torch.randn(TOP_K, HIDDEN, generator=generator).to(torch.bfloat16)
    plan, gates = plan_dispatch(topk_ids, EXPERTS), torch.rand(1, TOP_K, generator=generator)
    router = random_router(ROUTER_EXPERTS, HIDDEN, TOP_K, generator)
    return {
        "quantize_fp8": prepare_quantize(x),
        "dispatch_fp8": prepare_dispatch(x_q, x_scale, topk_ids, EXPERTS),
        "combine_bf16": prepare_combine(y, plan, gates),
        "router_noaux_tc": prepare_router(x, router),
    }, (x, topk_ids, x_q, x_scale, y, plan, gates, router)


def _floor_call(glue: ctypes.CDLL, read_bytes: int, write_bytes: int):
    """touch_bytes on buffers of its own; returns a call that runs it and gives its seconds."""
    src, dst = torch.ones(read_bytes, dtype=torch.uint8), torch.empty(write_bytes + 64, dtype=torch.uint8)
    offset = -dst.data_ptr() % 64  # whole lines, as the kernels' outputs are
    elapsed = ctypes.c_int64()

    def call() -> float:
        glue.touch_bytes(src.data_ptr(), read_bytes, dst.data_ptr() + offset, write_bytes, ctypes.byref(elapsed))
        return elapsed.value * 1e-9
    call.held = (src, dst)
    return call


def main() -> int:
    glue = native_cpu.library("glue")
    if glue is None:
        print("no native glue here (no C compiler or not x86): nothing to measure")
        return 1
    keep_freed_memory()
    started = run_context()
    flush = make_probes("cpu")["memory_copy"]
    kernels, _inputs = _kernels()  # held while the calls run
    floors = {name: _floor_call(glue, *BYTES[name]) for name in kernels}
    samples = {name: {"kernel": [], "floor": []} for name in kernels}
    copy_s = []
    for fn in [*kernels.values(), *floors.values()]:
        fn()
    for _ in range(ROUNDS):
        for name, kernel in kernels.items():
            flush.fn()
            kernel()
            samples[name]["kernel"].append(kernel.kernel_seconds())
            start = time.perf_counter()
            flush.fn()
            copy_s.append(time.perf_counter() - start)
            samples[name]["floor"].append(floors[name]())
    bandwidth = flush.bytes_moved / statistics.median(copy_s)
    print(f"{device_name('cpu')}: memory bandwidth {bandwidth / 1e9:.1f} GB/s (the flush, median of {len(copy_s)})")
    print(f"{'kernel (1 token)':18} {'bytes':>8} {'roofline':>9} {'floor':>8} {'kernel':>8} {'floor frac':>10} "
          f"{'kernel frac':>11} {'threads':>7}")
    figures = {}
    for name in kernels:
        read_bytes, write_bytes = BYTES[name]
        roofline_s = (read_bytes + write_bytes) / bandwidth
        floor_s, kernel_s = (statistics.median(samples[name][k]) for k in ("floor", "kernel"))
        figures[name] = {"read_bytes": read_bytes, "write_bytes": write_bytes, "roofline_us": roofline_s * 1e6,
                         "floor_us": floor_s * 1e6, "kernel_us": kernel_s * 1e6,
                         "floor_fraction": roofline_s / floor_s, "kernel_fraction": roofline_s / kernel_s,
                         "kernel_threads": kernels[name].threads}
        f = figures[name]
        print(f"{name:18} {read_bytes + write_bytes:>8,} {f['roofline_us']:>7.2f}us {f['floor_us']:>6.2f}us "
              f"{f['kernel_us']:>6.2f}us {f['floor_fraction']:>10.2f} {f['kernel_fraction']:>11.2f} {f['kernel_threads']:>7}")
    write_results("bench_cold_floor", {"device": device_name("cpu"), "bandwidth_bytes_per_s": bandwidth,
                                       "rounds": ROUNDS, "kernels": figures}, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
