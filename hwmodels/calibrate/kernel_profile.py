"""A device profile: a kernels_ref CSV (`moeplan bench-kernels`) as an operator-cost source of its own.

`load_profile(path)` reads the CSV (hwmodels.calibrate.kernels_measured, every cell checked) and fits each measured
kernel with the roofline-plus-efficiency model of that module, against the peaks the same run measured: the
matmul probe of the kernel's dtype and the run's memory bandwidth. A `KernelProfile` then prices the operators the
CSV measured, on the machine that measured them:

    operator (hwmodels.step)          kernels_ref kernel        covered when
    routed experts of a MoE layer     grouped_swiglu_fp8        the experts are block-scaled fp8 (the kernel's format)
    router GEMM                       router_noaux_tc           always (its FLOPs and bytes, at the kernel's rate)
    activation quantisation           quantize_fp8              bf16 in, fp8 out
    absorbed MLA decode attention     mla_decode_absorbed       a bf16 KV cache (the kernel's)

Each answer is a `Measured` (hwmodels.calibrate.measured_costs): seconds from the fit at the operator's own FLOPs
and bytes, or None with the reason where the CSV does not measure the operator, and how far outside the measured
rows it lay (`beyond`: the asked coordinate over the nearest measured one, 1.0 inside). Several implementations of
one kernel (native_amx, native_cpu, tiles) each have their fit; the one whose measured rows cover the asked
coordinate best prices it, the faster on a tie (what the kernels' autotune picks), and the label names it.

Operators the CSV does not measure (dense GEMMs, prefill attention, collectives, elementwise kernels) are priced
by the fitted model, and their label says the profile does not cover them (OperatorCosts).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from hwmodels.calibrate.kernels_measured import KernelFit, MeasuredTable, fit_kernel, load_measured
from hwmodels.calibrate.measured_costs import Measured
from hwmodels.errors import InputError

# the step model's coordinate of each kernel, and how to read it from a measured row's shape
_COORDINATES: dict[str, tuple[str, Callable[[dict], float | None]]] = {
    "grouped_swiglu_fp8": ("tokens per expert", lambda s: s.get("m_per_group")),
    "router_noaux_tc": ("tokens", lambda s: s.get("tokens")),
    "quantize_fp8": ("tokens", lambda s: s.get("tokens")),
    "mla_decode_absorbed": ("KV tokens read", lambda s: s.get("batch", 0) * s.get("context", 0) or None),
}


@dataclass(frozen=True)
class _Fitted:
    key: str  # kernel:phase:impl
    fit: KernelFit
    peak_flops_per_s: float | None  # the run's matmul probe of the kernel's dtype (None: a data-movement kernel)
    low: float  # the measured rows' coordinate range
    high: float


@dataclass(frozen=True, eq=False)  # identity equality: it keys the step model's operator caches through OperatorCosts
class KernelProfile:
    name: str  # the CSV's file name, in every label
    source: str  # the CSV, its date, device and torch version
    device: str  # the machine that measured it
    bandwidth_bytes_per_s: float  # the run's memory bandwidth
    kernels: dict[str, tuple[_Fitted, ...]]  # kernel name -> its fitted implementations

    def experts(self, flops: float, bytes_moved: float, tokens_per_expert: float, quant: str) -> Measured:
        if quant != "fp8":
            return Measured(None, f"{self.name} measures block-scaled fp8 experts, not {quant}")
        return self._price("grouped_swiglu_fp8", flops, bytes_moved, tokens_per_expert)

    def router(self, flops: float, bytes_moved: float, tokens: float) -> Measured:
        return self._price("router_noaux_tc", flops, bytes_moved, tokens)

    def quantize(self, bytes_moved: float, tokens: float, in_bytes: float, out_bytes: float) -> Measured:
        if (in_bytes, out_bytes) != (2.0, 1.0):
            return Measured(None, f"{self.name} measures bf16 -> fp8 quantisation only")
        return self._price("quantize_fp8", 0.0, bytes_moved, tokens)

    def mla_decode(self, flops: float, bytes_moved: float, kv_tokens: float, kv_bytes_per_element: float) -> Measured:
        if kv_bytes_per_element != 2.0:
            return Measured(None, f"{self.name} measures MLA decode on a bf16 KV cache only")
        return self._price("mla_decode_absorbed", flops, bytes_moved, kv_tokens)

    def missing(self, what: str) -> str:
        """The label of an operator the profile does not measure."""
        return f"{self.name} measures no {what}"

    def _price(self, kernel: str, flops: float, bytes_moved: float, coordinate: float) -> Measured:
        candidates = self.kernels.get(kernel, ())
        if not candidates:
            return Measured(None, self.missing(f"{kernel} rows"))
        asked = max(float(coordinate), 1.0)  # an empty context still reads one token's row

        def beyond(c: _Fitted) -> float:
            return max(asked / c.high, c.low / asked, 1.0)

        def seconds(c: _Fitted) -> float:
            return c.fit.seconds(flops, bytes_moved, c.peak_flops_per_s, self.bandwidth_bytes_per_s)

        best = min(candidates, key=lambda c: (beyond(c), seconds(c)))
        what = _COORDINATES[kernel][0]
        label = (f"measured: {self.name} {best.key} fit ({best.fit.rows} rows, {self.device}, "
                 f"{what} {best.low:g}-{best.high:g})")
        return Measured(seconds(best), label, beyond(best))


def profile_from_table(table: MeasuredTable, name: str) -> KernelProfile:
    """Fit every kernel of a measured table the profile prices (pure: no file read)."""
    kernels: dict[str, list[_Fitted]] = {}
    for key in table.kernels():
        kernel = key.split(":")[0]
        if kernel not in _COORDINATES:  # fitted only where it prices an operator
            continue
        rows = table.of(key)
        fit = fit_kernel(rows, table.bandwidth)
        coordinates = [_COORDINATES[kernel][1](r.shape) for r in rows]
        coordinates = [float(c) for c in coordinates if c]
        if not coordinates:
            continue
        # the matmul rate the fit was made against: each row's own probe, timed alongside it (on an AMX Xeon the
        # bf16 probe swung 0.56 to 2.0 TFLOP/s over one run), so their median, not the run's first probe
        own = [r.peak_flops_per_s for r in rows if r.peak_flops_per_s]
        dtype = rows[0].dtype
        peak = float(np.median(own)) if own else (table.peaks.get(dtype) if dtype else None)
        kernels.setdefault(kernel, []).append(_Fitted(key, fit, peak, min(coordinates), max(coordinates)))
    return KernelProfile(name, table.source, table.device, table.bandwidth, {k: tuple(v) for k, v in kernels.items()})


def load_profile(path: str | Path, field: str | None = None) -> KernelProfile:
    """A device profile from a kernels_ref CSV; field: the flag or spec field it came from (named in any error)."""
    profile = profile_from_table(load_measured(path, field), Path(path).name)
    if not profile.kernels:
        raise InputError(f"{field} {path}" if field else str(path), f"measures none of {', '.join(_COORDINATES)}",
                         "give a CSV written by moeplan bench-kernels --device cpu -o kernels-cpu.csv")
    return profile
