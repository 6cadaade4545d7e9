"""Choose among implementations of a kernel by timing them on this machine, once per shape class.

A threshold tuned on one CPU (the GEMM path once switched at 256 tokens per expert, measured on a
Zen 4) is wrong on the next: on an AMX Xeon that path ran at 9% of the bf16 matmul rate where it
was picked. So the first call of a shape class times every candidate on inputs of that class
(interleaved, the least of a few rounds: other work on a shared machine only ever adds time) and
keeps the fastest. A candidate whose inputs a real call reads from memory (an expert's weights: a decode
step streams hundreds of megabytes, far more than any cache) is timed on a cold cache (`before` evicts the
last-level cache before each timed call): timed hot, a one-expert tuning input of 29 MB sat in the Xeon's
300 MB L3, so the choice rewarded arithmetic the benchmark's streaming shapes never got to use (at 2 tokens
per expert it picked an AMX variant that streamed the weights from memory 1.2-1.4x slower than the AVX-512
kernel).
Choices are cached in memory and in a
JSON file per machine under the per-user cache directory (native_cpu.cache_dir()), keyed by the CPU
model, its ISA level and flags, the thread count, torch's version and the kernel sources, so a
different machine, thread count or kernel tunes afresh and the repository holds no machine's choice.
The benchmark harness records the choice of each row in its CSV ("tuning").
"""

import functools
import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from kernels_ref import native_cpu

# Rounds of timing per candidate (after one warm-up call); the least time decides.
ROUNDS = 5
# How candidates are timed; in the cache key, so choices timed another way are timed again.
TIMING = "least of rounds; memory-fed kernels on a cold cache; a call's kernel_seconds() where it has one"
_choices: dict[tuple, str] = {}  # (ISA level, threads, shape class) -> choice


@functools.cache
def _fixed() -> dict:
    """What a tuning depends on that cannot change within a process."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown")
    return {
        "cpu": model,
        "flags": hashlib.sha256(" ".join(sorted(native_cpu.cpu_flags())).encode()).hexdigest()[:12],
        "torch": torch.__version__,
        "kernels": native_cpu.source_digest(),
        "timing": TIMING,
    }


def machine() -> dict:
    """What a tuning depends on besides the shape."""
    return {**_fixed(), "isa": native_cpu.isa_level(), "threads": torch.get_num_threads()}


def cache_path() -> Path:
    """The JSON file of this machine's choices."""
    key = hashlib.sha256(json.dumps(machine(), sort_keys=True).encode()).hexdigest()[:16]
    return native_cpu.cache_dir() / f"tuning-{key}.json"


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())["choices"]
    except (OSError, ValueError, KeyError):
        return {}


def _write(path: Path, shape_class: str, choice: str, seconds: Mapping[str, float]) -> None:
    """Add one choice to the file (read again first: another process may have added others)."""
    choices = _read(path)
    choices[shape_class] = {"choice": choice, "seconds": dict(seconds)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"machine": machine(), "choices": choices}, indent=1, sort_keys=True))
    os.replace(tmp, path)  # atomic


def last_level_cache_bytes() -> int:
    """The largest CPU cache's size from sysfs (Linux), else 64 MiB."""
    sizes = []
    for path in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
        digits = text[:-1] if text[-1:] in "KMG" else text
        if digits.isdigit():
            sizes.append(int(digits) * scale)
    return max(sizes, default=64 * 2**20)


def cache_evictor() -> Callable[[], None]:
    """A call that evicts the CPU caches: it writes a buffer of 1.5x the last-level cache (allocated now, freed
    with the call)."""
    buffer = torch.empty(last_level_cache_bytes() * 3 // 8, dtype=torch.float32)
    return lambda: buffer.fill_(1.0)


def time_candidates(candidates: Mapping[str, Callable[[], object]], rounds: int = ROUNDS,
                    before: Callable[[], object] | None = None) -> dict[str, float]:
    """The least seconds of each candidate over the rounds, timed round-robin after one warm-up call each: a call's
    kernel_seconds() where it has one (as kernels_ref.timing times it), else the wall time around it.
    before: run (untimed) before every timed call, e.g. a cache_evictor()."""
    for fn in candidates.values():
        fn()
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            if before is not None:
                before()
            start = time.perf_counter()
            fn()
            wall_s = time.perf_counter() - start
            kernel_seconds = getattr(fn, "kernel_seconds", None)
            samples[name].append(kernel_seconds() if kernel_seconds is not None else wall_s)
    return {name: min(s) for name, s in samples.items()}


def choose(shape_class: str, candidates: Callable[[], Mapping[str, Callable[[], object]]], cold: bool = False) -> str:
    """The name of the fastest candidate for the shape class: cached, else timed now and cached.

    candidates: builds {name: a call that runs that implementation on inputs of the class}; it
    is only called when the class has no choice yet (building inputs can take a while). cold: time
    each call after evicting the caches (for kernels whose inputs come from memory in real use)."""
    key = (native_cpu.isa_level(), torch.get_num_threads(), shape_class)
    if key in _choices:
        return _choices[key]
    path = cache_path()
    cached = _read(path).get(shape_class)
    if cached is None:
        options = candidates()
        if len(options) > 1:
            seconds = time_candidates(options, before=cache_evictor() if cold else None)
        else:
            seconds = {name: 0.0 for name in options}
        choice = min(seconds, key=seconds.get)
        _write(path, shape_class, choice, seconds)
    else:
        choice = cached["choice"]
    _choices[key] = choice
    return choice


def forget() -> None:
    """Drop the in-memory choices (the file stays): the next call of each class reads the file again."""
    _choices.clear()
