"""Wall-clock timing: warm up, then the median of repeats, with several functions interleaved."""

import statistics
import time
from collections.abc import Callable, Sequence

import torch


def synchronize(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_median_seconds(
    fns: Sequence[Callable[[], object]], device: torch.device | str, warmup: int = 1, repeats: int = 5
) -> list[float]:
    """Median wall time of each fn, timed round-robin (fns[0], fns[1], ..., fns[0], ...).

    Interleaving puts a kernel and the roofline probes it is compared with under the same
    conditions: shared and burstable machines change speed by 2x within seconds (a 2-core VM
    measured 400 GFLOP/s for 12 s of load, then 190).
    """
    for _ in range(warmup):
        for fn in fns:
            fn()
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, fn_samples in zip(fns, samples, strict=True):
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            fn_samples.append(time.perf_counter() - start)
    return [statistics.median(s) for s in samples]


def median_seconds(fn: Callable[[], object], device: torch.device | str, warmup: int = 1, repeats: int = 5) -> float:
    return interleaved_median_seconds([fn], device, warmup, repeats)[0]
