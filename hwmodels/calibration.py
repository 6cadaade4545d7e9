"""Calibration from measurements: a kernels_ref benchmark CSV becomes a device's efficiency table.

The CSV holds, per kernel and shape, FLOPs, bytes and median seconds, and the machine's matmul peak
and memory bandwidth measured in the same run (its roofline probes). Each kernel gets the roofline
model every operator in hwmodels uses, with its efficiencies fitted to its own rows:

    time = max(FLOPs / (peak x compute_efficiency), bytes / (bandwidth x memory_efficiency)) + overhead

three parameters per kernel, fitted by least squares on log time over a grid (efficiencies in
(0, 1], overhead >= 0), so no modelled time is below the roofline. The fit is reported per row, with
leave-one-out error where a kernel has at least four rows. Predicting a whole MoE layer from the
per-kernel fits, and comparing with the layer measured end to end, proves the method composes.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from hwmodels.errors import InputError

_EFFICIENCY_GRID = np.geomspace(0.01, 1.0, 61)
_OVERHEAD_GRID_S = np.concatenate(([0.0], np.geomspace(1e-6, 1e-2, 41)))


@dataclass(frozen=True)
class MeasuredRow:
    kernel: str
    shape: dict
    flops: float
    bytes: float
    seconds: float
    peak_flops_per_s: float | None  # the run's measured matmul peak for the kernel's dtype (None: data movement)
    peak_bytes_per_s: float


@dataclass(frozen=True)
class KernelFit:
    kernel: str
    compute_efficiency: float
    memory_efficiency: float
    overhead_s: float
    rows: int

    def seconds(self, flops: float, bytes_moved: float, peak_flops_per_s: float | None, peak_bytes_per_s: float) -> float:
        compute = flops / (peak_flops_per_s * self.compute_efficiency) if peak_flops_per_s else 0.0
        return max(compute, bytes_moved / (peak_bytes_per_s * self.memory_efficiency)) + self.overhead_s


@dataclass(frozen=True)
class MeasuredTable:
    device: str
    source: str  # the CSV path, date and library versions
    rows: tuple[MeasuredRow, ...]

    def kernels(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(r.kernel for r in self.rows))

    def of(self, kernel: str) -> tuple[MeasuredRow, ...]:
        return tuple(r for r in self.rows if r.kernel == kernel)


_SHAPE_KEYS = ("groups", "m_per_group", "tokens", "hidden", "intermediate", "top_k", "experts", "batch", "context", "heads")


def load_measured(path: str | Path) -> MeasuredTable:
    """Read a kernels_ref CSV; the roofline probe rows (kernel matmul_* / memory_*) are the peaks, not kernels."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            raw = list(csv.DictReader(f))
    except OSError as e:
        raise InputError(str(path), f"cannot read: {e}", "give a CSV written by moeplan bench-kernels") from None
    rows = []
    for line, r in enumerate(raw, start=2):
        if r.get("phase") in (None, ""):
            continue  # a roofline probe
        try:
            peak = float(r["peak_flops_per_s"]) if r.get("peak_flops_per_s") else None
            rows.append(MeasuredRow(
                kernel=f"{r['kernel']}:{r['phase']}:{r['impl']}",
                shape={k: int(float(r[k])) for k in _SHAPE_KEYS if r.get(k)},
                flops=float(r["flops"]), bytes=float(r["bytes"]), seconds=float(r["seconds"]),
                peak_flops_per_s=peak, peak_bytes_per_s=float(r["peak_bytes_per_s"]),
            ))
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"{path} line {line}", f"not a kernels_ref benchmark row ({e})", "regenerate it with moeplan bench-kernels") from None
    if not rows:
        raise InputError(str(path), "no kernel rows", "give a CSV written by moeplan bench-kernels")
    first = raw[0]
    source = f"{path.name}: measured {first.get('date')} on {first.get('device')}, torch {first.get('torch_version')}"
    return MeasuredTable(first.get("device", ""), source, tuple(rows))


def fit_kernel(rows: Sequence[MeasuredRow]) -> KernelFit:
    """Least squares on log time over the efficiency and overhead grids (exhaustive: 61 x 61 x 42)."""
    flops = np.array([r.flops for r in rows])
    peak = np.array([r.peak_flops_per_s or np.inf for r in rows])
    bytes_ = np.array([r.bytes for r in rows])
    bw = np.array([r.peak_bytes_per_s for r in rows])
    measured = np.log(np.array([r.seconds for r in rows]))
    compute = (flops / peak)[None, None, None, :] / _EFFICIENCY_GRID[:, None, None, None]  # [c, 1, 1, rows]
    memory = (bytes_ / bw)[None, None, None, :] / _EFFICIENCY_GRID[None, :, None, None]  # [1, m, 1, rows]
    model = np.maximum(compute, memory) + _OVERHEAD_GRID_S[None, None, :, None]  # [c, m, o, rows]
    loss = ((np.log(model) - measured) ** 2).sum(axis=-1)
    c, m, o = np.unravel_index(np.argmin(loss), loss.shape)
    return KernelFit(rows[0].kernel, float(_EFFICIENCY_GRID[c]), float(_EFFICIENCY_GRID[m]), float(_OVERHEAD_GRID_S[o]), len(rows))


def fits(table: MeasuredTable) -> dict[str, KernelFit]:
    return {k: fit_kernel(table.of(k)) for k in table.kernels()}


def report(table: MeasuredTable) -> list[dict]:
    """Per measured row: predicted vs measured seconds, and the leave-one-out error where possible."""
    out = []
    for kernel, fit in fits(table).items():
        rows = table.of(kernel)
        for i, r in enumerate(rows):
            predicted = fit.seconds(r.flops, r.bytes, r.peak_flops_per_s, r.peak_bytes_per_s)
            loo = None
            if len(rows) >= 4:
                held = fit_kernel(rows[:i] + rows[i + 1:])
                loo = held.seconds(r.flops, r.bytes, r.peak_flops_per_s, r.peak_bytes_per_s) / r.seconds - 1
            out.append({"kernel": kernel, **r.shape, "measured_s": r.seconds, "predicted_s": predicted,
                        "error": predicted / r.seconds - 1, "loo_error": loo,
                        "compute_efficiency": fit.compute_efficiency, "memory_efficiency": fit.memory_efficiency,
                        "overhead_s": fit.overhead_s})
    return out
