"""The cost of one operator on one device: roofline time with shape-dependent efficiencies.

time = max(FLOPs / (peak x compute_efficiency), bytes / (HBM bytes/s x memory_efficiency)) + overhead.
Every cost keeps its pure-roofline twin (`roofline_s`, efficiencies 1, no overhead) so a test can
assert that no modelled time is ever below the roofline, and names where its efficiency came from.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OpCost:
    name: str
    flops: float
    bytes: float
    compute_s: float  # FLOPs / (peak x compute efficiency)
    memory_s: float  # bytes / (HBM bytes/s x memory efficiency)
    overhead_s: float  # launch / pipeline fill / synchronisation
    roofline_s: float  # max(FLOPs / peak, bytes / HBM bytes/s): the floor
    source: str  # which efficiency table or fit produced the efficiencies ("roofline" when none)
    # how far outside a measured table's coverage the shape lay: the asked over the nearest measured coordinate
    # (1.0: inside, or no measured table was asked)
    beyond_coverage: float = 1.0

    @property
    def total_s(self) -> float:
        return max(self.compute_s, self.memory_s) + self.overhead_s

    @property
    def bound(self) -> str:
        return "compute" if self.compute_s >= self.memory_s else "memory"


def roofline_cost(
    name: str,
    flops: float,
    bytes_moved: float,
    peak_flops_per_s: float,
    hbm_bytes_per_s: float,
    compute_efficiency: float = 1.0,
    memory_efficiency: float = 1.0,
    overhead_s: float = 0.0,
    source: str = "roofline",
) -> OpCost:
    """An OpCost from counts, peaks and efficiencies in (0, 1]."""
    if not (0 < compute_efficiency <= 1 and 0 < memory_efficiency <= 1):
        raise ValueError(f"{name}: efficiencies must be in (0, 1], got {compute_efficiency}, {memory_efficiency}")
    roofline = max(flops / peak_flops_per_s, bytes_moved / hbm_bytes_per_s)
    return OpCost(
        name=name,
        flops=flops,
        bytes=bytes_moved,
        compute_s=flops / (peak_flops_per_s * compute_efficiency),
        memory_s=bytes_moved / (hbm_bytes_per_s * memory_efficiency),
        overhead_s=overhead_s,
        roofline_s=roofline,
        source=source,
    )
