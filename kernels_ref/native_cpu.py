"""Native CPU kernels (csrc/*.c), compiled at first use for the instruction sets this CPU has.

Why native code: PyTorch's CPU fp8 paths convert element by element in scalar code (`.to()`,
`torch._scaled_mm` and oneDNN's fp8 qlinear ran below 1 GB/s on a 2-core AVX-512 machine), and an
eager pipeline of widen, shift, mask, scale and GEMM passes over a weight tile goes through cache
once per pass. The kernels here read each fp8 byte once:

- fp8_gemm_avx512.c (AVX-512 BF16): a fused matrix-vector product, for a few tokens per expert;
- fp8_gemm_amx.c (AMX BF16): tiles of 16 x 32 converted weights times packed tokens, for more;
- glue.c (plain C that the compiler vectorises for AVX2 or AVX-512, or scalar anywhere):
  activation quantisation to e4m3 (alone, and fused with the experts' SwiGLU), the dispatch permutation and gather, the weighted combine, and
  the router (its fp32 GEMM, sigmoid and top-k in one pass).

Which library a machine gets follows from its CPU flags (/proc/cpuinfo), capped by the environment
variable KERNELS_REF_ISA ("amx", "avx512bf16", "avx2" or "none"), which is how tests force the AVX2
fallback on a machine that has more. Each library is compiled once per source, flags and compiler
into a per-user cache directory and called through ctypes. `library(name)` returns None where that
is not possible (no compiler, not x86, an ISA the CPU lacks); callers then take a PyTorch path and
record which path they used.

The glue's kernels run on the threads they are given. An eager call (kernels_ref.fp8, dispatch, grouped_gemm)
takes them from glue_threads, by the size of its work; the router (kernels_ref.moe_layer) and a prepared call
(kernels_ref.glue_calls) from a measurement on this machine.
"""

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

ISA_ENV = "KERNELS_REF_ISA"
# From least to most capable; each level's compiler flags add to the previous one's.
LEVELS = ("none", "avx2", "avx512bf16", "amx")
_LEVEL_FLAGS = {
    "none": [],
    "avx2": ["-mavx2", "-mfma", "-mf16c"],
    "avx512bf16": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512bf16"],
    "amx": ["-mamx-tile", "-mamx-bf16"],
}
# The /proc/cpuinfo flags each level needs.
_LEVEL_CPU_FLAGS = {
    "none": set(),
    "avx2": {"avx2", "fma", "f16c"},
    "avx512bf16": {"avx512f", "avx512bw", "avx512vl", "avx512_bf16"},
    "amx": {"amx_tile", "amx_bf16"},
}
_SOURCE_DIR = Path(__file__).with_name("csrc")
_P, _I64, _INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
# name -> (source, the lowest level it builds for, {function: (restype, argtypes)})
_LIBRARIES = {
    "glue": ("glue.c", "none", {
        "quantize_fp8": (_INT, [_P, _INT, _I64, _I64, _P, _P, _INT, _P]),
        "swiglu_quantize_fp8": (_INT, [_P, _I64, _I64, _P, _P, _INT]),
        "plan_dispatch": (_INT, [_P, _I64, _I64, _I64, _P, _P, _P, _P]),
        "gather_rows": (None, [_P, _I64, _P, _I64, _P, _INT]),
        "touch_bytes": (ctypes.c_uint64, [_P, _I64, _P, _I64, _P]),
        "dispatch_fp8": (_INT, [_P, _I64, _I64, _I64, _P, _I64, _P, _I64] + [_P] * 6 + [_INT, _P]),
        "combine_rows": (None, [_P, _INT, _P, _P, _I64, _I64, _I64, _P, _INT, _P]),
        "route_noaux_tc": (_INT, [_P, _INT, _P, _P, _P, _I64, _I64, _I64, _I64, ctypes.c_float, _P, _P, _INT, _P]),
    }),
    "gemm_avx512": ("fp8_gemm_avx512.c", "avx512bf16", {
        "fp8_grouped_gemm": (_INT, [_P] * 4 + [_I64] + [_P] * 3 + [_I64] * 3 + [_INT, _INT]),
    }),
    "gemm_amx": ("fp8_gemm_amx.c", "amx", {
        "amx_request": (_INT, []),
        "fp8_grouped_gemm_amx": (_INT, [_P] * 4 + [_I64] + [_P] * 3 + [_I64] * 3 + [_INT, _I64, _INT]),
    }),
}  # fmt: skip


# Bytes of work below which an eager glue call runs on one thread. One thread streams 6 to 10 GB/s, two nearly
# twice that, but on a shared 2-core machine whose other core is busy a parallel region waits for that core's
# time slice: quantising 128 tokens took 8 ms on two threads against 0.49 on one while another process held it,
# and with the threshold at 1 MB a benchmark run under load 5 to 7 put the decode rows of 128 to 256 tokens
# (quantisation, dispatch, combine) at 0.04 to 0.25 of the roofline. So only calls of several milliseconds on
# one thread take two (Kimi K2: quantising over 585 tokens, gathering over 146 x 8 rows, combining over 73).
EAGER_PARALLEL_BYTES = 1 << 23


def glue_threads(work_bytes: float) -> int:
    """Threads for an eager glue call that moves `work_bytes`: all of torch's above EAGER_PARALLEL_BYTES, else 1."""
    return torch.get_num_threads() if work_bytes > EAGER_PARALLEL_BYTES else 1


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none, e.g. not Linux)."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    return frozenset(next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), []))


def isa_level() -> str:
    """The most capable level this CPU supports (x86 only), capped by KERNELS_REF_ISA."""
    flags, level = cpu_flags(), "none"
    if platform.machine().lower() in ("x86_64", "amd64"):
        for candidate in LEVELS[1:]:
            if not _LEVEL_CPU_FLAGS[candidate] <= flags:
                break
            level = candidate
    cap = os.environ.get(ISA_ENV)
    if cap:
        if cap not in LEVELS:
            raise ValueError(f"{ISA_ENV}={cap!r}: expected one of {', '.join(LEVELS)}")
        level = LEVELS[min(LEVELS.index(level), LEVELS.index(cap))]
    return level


def compile_flags(level: str) -> list[str]:
    """The ISA flags of a level and every level below it."""
    return [flag for lower in LEVELS[: LEVELS.index(level) + 1] for flag in _LEVEL_FLAGS[lower]]


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "moeplan" / "kernels_ref"


def _build(compiler: str, source: Path, flags: list[str]) -> Path:
    command = [compiler, "-O3", "-shared", "-fPIC", "-fopenmp", *flags]
    digest = hashlib.sha256("\0".join([source.read_text(), *command]).encode()).hexdigest()[:16]
    library = cache_dir() / f"{source.stem}_{digest}.so"
    if library.exists():
        return library
    library.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=library.parent) as tmp:
        built = Path(tmp) / library.name
        subprocess.run([*command, str(source), "-o", str(built)], check=True, capture_output=True)
        os.replace(built, library)  # atomic: a concurrent process never loads a partial file
    return library


@functools.cache
def _library(name: str, level: str) -> ctypes.CDLL | None:
    source, lowest, functions = _LIBRARIES[name]
    if LEVELS.index(level) < LEVELS.index(lowest):
        return None
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        return None
    # the glue is built for AVX-512 at most: AMX adds nothing to it
    flags = compile_flags(level if name != "glue" else min(level, "avx512bf16", key=LEVELS.index))
    try:
        lib = ctypes.CDLL(str(_build(compiler, _SOURCE_DIR / source, flags)))
    except (OSError, subprocess.CalledProcessError):
        return None
    for function, (restype, argtypes) in functions.items():
        getattr(lib, function).restype = restype
        getattr(lib, function).argtypes = argtypes
    if name == "gemm_amx" and lib.amx_request() != 0:  # the kernel refused AMX state
        return None
    return lib


def library(name: str) -> ctypes.CDLL | None:
    """The compiled library `name` ("glue", "gemm_avx512", "gemm_amx") for this machine's level, or None."""
    return _library(name, isa_level())


def source_digest() -> str:
    """A digest of every kernel source: a tuning cache keyed by it is redone when a kernel changes."""
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(_SOURCE_DIR.glob("*.c")))).hexdigest()[:16]
