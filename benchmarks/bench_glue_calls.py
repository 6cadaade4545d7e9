"""The glue kernels' per-call cost at decode sizes: the eager call (kernels_ref.fp8 / dispatch / moe_layer) against
the prepared one (kernels_ref.glue_calls: outputs sized and the C function's arguments bound once per shape).

Each call is timed right after a 64 MiB copy that flushes the caches, as `moeplan bench-kernels` times a kernel
after its memory probe: that is where the eager call's Python, torch and ctypes layers run cold. Kimi K2's shapes:
hidden 7168, 384 experts, top-8 (router: the 32 experts of one EP12 device, as bench-kernels' router rows),
1 and 16 tokens; the median of 100 calls each, eager and prepared interleaved. Writes benchmarks/results/bench_glue_calls.json (the README quotes
the 1-token figures from there). Run: python benchmarks/bench_glue_calls.py (needs torch and a C compiler).
"""

import statistics
import time

import torch

from kernels_ref import native_cpu
from kernels_ref.dispatch import combine, dispatch, plan_dispatch
from kernels_ref.fp8 import quantize_activation_groups
from kernels_ref.generators import random_router
from kernels_ref.glue_calls import prepare_combine, prepare_dispatch, prepare_quantize, prepare_router
from kernels_ref.moe_layer import route_noaux_tc
from kernels_ref.timing import keep_freed_memory
from record import run_context, write_results

HIDDEN, EXPERTS, TOP_K, ROUTER_EXPERTS = 7168, 384, 8, 32
FLUSH_BYTES = 64 * 2**20
CALLS = 100


def _medians_after_flush_s(fns, flush) -> list[float]:
    """The median time of each fn, each call right after a flush, the fns interleaved (a shared machine's speed
    changes within seconds: both sides of a comparison see the same conditions)."""
    for _ in range(5):
        for fn in fns:
            fn()
    samples = [[] for _ in fns]
    for _ in range(CALLS):
        for fn, fn_samples in zip(fns, samples, strict=True):
            flush()
            start = time.perf_counter()
            fn()
            fn_samples.append(time.perf_counter() - start)
    return [statistics.median(s) for s in samples]


def _eager_dispatch(x_q, x_scale, topk_ids):
    plan = plan_dispatch(topk_ids, EXPERTS)
    return dispatch(x_q, plan), dispatch(x_scale, plan)


def main() -> int:
    if native_cpu.library("glue") is None:
        print("no native glue here (no C compiler or not x86): nothing to compare")
        return 1
    keep_freed_memory()
    started = run_context()
    src, dst = torch.empty(FLUSH_BYTES, dtype=torch.uint8), torch.empty(FLUSH_BYTES, dtype=torch.uint8)

    def flush():
        dst.copy_(src)
    g = torch.Generator().manual_seed(0)
    router = random_router(ROUTER_EXPERTS, HIDDEN, TOP_K, g)
    figures = {}
    for tokens in (1, 16):
        x = torch.randn(tokens, HIDDEN, generator=g).to(torch.bfloat16)
        topk_ids = torch.rand(tokens, EXPERTS, generator=g).topk(TOP_K, dim=-1).indices
        weights = torch.rand(tokens, TOP_K, generator=g)
        y = torch.randn(tokens * TOP_K, HIDDEN, generator=g).to(torch.bfloat16)
        x_q, x_scale = quantize_activation_groups(x)
        plan = plan_dispatch(topk_ids, EXPERTS)
        pairs = {
            "quantize": (lambda: quantize_activation_groups(x), prepare_quantize(x)),
            "dispatch": (lambda: _eager_dispatch(x_q, x_scale, topk_ids), prepare_dispatch(x_q, x_scale, topk_ids, EXPERTS)),
            "combine": (lambda: combine(y, plan, weights, torch.float32), prepare_combine(y, plan, weights)),
            "router": (lambda: route_noaux_tc(x, router), prepare_router(x, router)),
        }
        for name, (eager, prepared) in pairs.items():
            eager_s, prepared_s = _medians_after_flush_s((eager, prepared), flush)
            figures[f"{name}_{tokens}_tokens_eager_s"] = eager_s
            figures[f"{name}_{tokens}_tokens_prepared_s"] = prepared_s
            print(f"{name:>9} {tokens:>3} tokens: eager {eager_s * 1e6:7.1f} us, prepared {prepared_s * 1e6:7.1f} us")
    write_results("bench_glue_calls", figures, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
