"""The roofline of the machine the benchmarks run on, measured in the same run.

Peaks are rates measured with PyTorch itself (a square matmul per dtype, a large copy and a
large reduction), not datasheet figures, so a kernel's roofline fraction says how close it gets
to what this software stack achieves on this machine. The probes are cheap enough to run
interleaved with every benchmarked kernel (see timing.interleaved_median_seconds).
"""

import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

# Square matmul size per device type: at or near the best rate of each.
_MATMUL_N = {"cpu": 2048, "cuda": 8192}
# Bytes streamed by the bandwidth probes: many times any last-level cache (an H100's L2 is
# 50 MB), so the copy also flushes the caches before the kernel that follows it.
_STREAM_BYTES = {"cpu": 256 * 2**20, "cuda": 2**30}
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


@dataclass(frozen=True)
class Roofline:
    matmul_flops_per_s: dict[str, float]  # "bf16", "fp32" -> measured FLOP/s
    memory_bytes_per_s: float  # the better of the copy and the reduction

    def seconds(self, flops: float, bytes_moved: float, dtype: str | None) -> tuple[float, str]:
        """Roofline time of a kernel and which bound sets it ("compute" or "memory").
        dtype: the matmul peak its FLOPs run at; None for pure data movement."""
        compute_s = flops / self.matmul_flops_per_s[dtype] if dtype else 0.0
        memory_s = bytes_moved / self.memory_bytes_per_s
        return (compute_s, "compute") if compute_s >= memory_s else (memory_s, "memory")


@dataclass(frozen=True)
class Probe:
    fn: Callable[[], object]
    flops: float
    bytes_moved: float


def make_probes(device: torch.device | str) -> dict[str, Probe]:
    """The roofline probes by name ("matmul_bf16", "matmul_fp32", "memory_copy",
    "memory_sum"), with their inputs allocated once."""
    kind = torch.device(device).type
    n, stream_bytes = _MATMUL_N[kind], _STREAM_BYTES[kind]
    probes = {}
    for label, dtype in DTYPES.items():
        a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
        probes[f"matmul_{label}"] = Probe(lambda a=a, b=b: a @ b, 2.0 * n**3, 0.0)
    src = torch.ones(stream_bytes // 4, device=device)
    dst = torch.empty_like(src)
    probes["memory_copy"] = Probe(lambda: dst.copy_(src), 0.0, 2.0 * stream_bytes)
    probes["memory_sum"] = Probe(src.sum, 0.0, float(stream_bytes))
    return probes


def roofline_from(probe_seconds: dict[str, float], probes: dict[str, Probe]) -> Roofline:
    """Peaks from the measured seconds of (some of) the probes: the matmuls give the FLOP/s of
    their dtypes, the memory probes the best bytes/s."""
    rate = {name: (probes[name].flops or probes[name].bytes_moved) / s for name, s in probe_seconds.items()}
    return Roofline(
        matmul_flops_per_s={label: rate[f"matmul_{label}"] for label in DTYPES if f"matmul_{label}" in rate},
        memory_bytes_per_s=max(rate[name] for name in rate if name.startswith("memory_")),
    )


def device_name(device: torch.device | str) -> str:
    """torch.cuda.get_device_name, or the CPU model from /proc/cpuinfo with the thread count."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    models = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    threads = torch.get_num_threads()
    return f"{models[0] if models else platform.processor() or 'cpu'} ({threads} thread{'s' * (threads != 1)})"
