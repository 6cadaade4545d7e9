"""Calibration from measurements: a kernels_ref benchmark CSV becomes a device's efficiency table.

The CSV holds, per kernel and shape, FLOPs, bytes and median seconds, and the machine's matmul peak
and memory bandwidth measured in the same run (its roofline probes). Each kernel gets the roofline
model every operator in hwmodels uses, with its efficiencies fitted to its own rows:

    time = max(FLOPs / (peak x compute_efficiency), bytes / (bandwidth x memory_efficiency)) + overhead

three parameters per kernel, fitted by least squares on log time over a grid (efficiencies in
(0, 1], overhead >= 0), so no modelled time is below the roofline. The fit is reported per row, with
leave-one-out error where a kernel has at least four rows.

peak is each row's own matmul probe, timed alongside it. bandwidth is one figure for the whole run,
the median of the memory probes timed alongside every row: on the 2-core VM this was built on, the
copy and reduction probes swung between about 25 and 50 GB/s from one second to the next while a
whole MoE layer reading 1.3 GB of expert weights took 60 to 110 ms (about 20 GB/s) with no relation
to what they read, so a row's own memory probe carries noise into its prediction, not the machine.

A composite row (the whole MoE layer, measured end to end) is not fitted: its `composition` lists the
kernels it runs with the FLOPs and bytes each has in the layer (the grouped GEMM at the tokens per
expert its router produced), and layer_report predicts it as the sum of those kernels' fitted times
under the matmul peak measured alongside the layer. That the sum lands within CALIBRATION_BAR of the
measured layer shows the per-kernel method composes; nothing in it is fitted to the layer.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from catalogs import CATALOG_DIR
from hwmodels.errors import InputError, excerpt, one_line

# Committed kernels_ref CSVs, one per device (catalogs/measured/kernels-<device>.csv).
MEASURED_DIR = CATALOG_DIR / "measured"
# Issue 4's bar: every benchmarked shape, and the whole layer, within 25% of the fitted model.
CALIBRATION_BAR = 0.25

_EFFICIENCY_GRID = np.geomspace(0.01, 1.0, 61)
_OVERHEAD_GRID_S = np.concatenate(([0.0], np.geomspace(1e-6, 1e-2, 41)))


@dataclass(frozen=True)
class MeasuredRow:
    kernel: str  # "kernel:phase:impl", the key its fit goes by
    shape: dict
    flops: float
    bytes: float
    seconds: float
    peak_flops_per_s: float | None  # the run's measured matmul peak for the kernel's dtype (None: data movement)
    peak_bytes_per_s: float
    dtype: str | None = None  # the matmul peak its FLOPs are held to
    composition: dict | None = None  # a composite row's tokens_per_expert and parts (see the module docstring)


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
    peaks: dict  # the matmul probes timed on their own: FLOP/s by dtype ("bf16", "fp32")
    bandwidth: float  # the run's bytes/s: the median of the memory probes timed alongside the rows

    def kernels(self) -> tuple[str, ...]:
        """The fitted kernels: every key but the composite rows'."""
        return tuple(dict.fromkeys(r.kernel for r in self.rows if r.composition is None))

    def of(self, kernel: str) -> tuple[MeasuredRow, ...]:
        return tuple(r for r in self.rows if r.kernel == kernel)

    def composites(self) -> tuple[MeasuredRow, ...]:
        return tuple(r for r in self.rows if r.composition is not None)


_SHAPE_KEYS = ("groups", "m_per_group", "tokens", "hidden", "intermediate", "top_k", "experts", "batch", "context", "heads")
_REQUIRED_COLUMNS = ("kernel", "phase", "impl", "flops", "bytes", "seconds", "peak_bytes_per_s")
# Bounds of a CSV read from a user: a full bench-kernels run is about 60 rows and 25 kB; 1,000x that is still a
# kernels CSV, and reading, parsing and fitting it stays under a second or two.
MAX_CSV_BYTES = 16 * 2**20
MAX_CSV_ROWS = 10_000
MAX_ROWS_PER_KERNEL = 64  # a run measures at most 12 shapes of one kernel; fit_kernel's grid is 156k models per row
MAX_SHAPE = 2**40  # a shape coordinate (tokens, experts, context) past this is not a measurement
_FIX = "regenerate it with moeplan bench-kernels --device cpu -o kernels-cpu.csv"


def load_measured(path: str | Path, field: str | None = None) -> MeasuredTable:
    """Read a kernels_ref CSV; the roofline probe rows (kernel matmul_* / memory_*) are the peaks, not kernels.
    field: what the user gave it as (a flag or spec field, e.g. --device-profile), named in every error.
    A hostile file (huge, binary, not UTF-8, a 1 MB cell, NaN or negative times, JSON nested 10,000 deep) is one
    InputError naming the file, the line where it can, and the fix."""
    path = Path(path)
    where = f"{field} {path}" if field else str(path)
    text = _read_text(path, where)
    try:
        raw = list(csv.DictReader(io.StringIO(text)))
    except csv.Error as e:  # a NUL byte, a cell past csv's field size limit, an unterminated quote
        raise InputError(where, f"not a CSV ({e})", _FIX) from None
    if len(raw) > MAX_CSV_ROWS:
        raise InputError(where, f"{len(raw):,} rows, past the bound of {MAX_CSV_ROWS:,}", "give one bench-kernels run")
    missing = [c for c in _REQUIRED_COLUMNS if raw and c not in raw[0]]
    if missing:
        raise InputError(where, f"no {', '.join(missing)} column", _FIX)
    rows, peaks = [], {}
    for line, r in enumerate(raw, start=2):
        try:
            if r.get("phase") in (None, ""):  # a roofline probe: the machine's peak, not a kernel
                if str(r["kernel"]).startswith("matmul_"):
                    peaks[r["kernel"].removeprefix("matmul_")] = _number(r, "flops_per_s", positive=True)
                continue
            peak = _number(r, "peak_flops_per_s", positive=True) if r.get("peak_flops_per_s") else None
            rows.append(MeasuredRow(
                kernel=one_line(f"{r['kernel']}:{r['phase']}:{r['impl']}", 200),
                shape={k: _shape(r, k) for k in _SHAPE_KEYS if r.get(k)},
                flops=_number(r, "flops"), bytes=_number(r, "bytes"), seconds=_number(r, "seconds", positive=True),
                peak_flops_per_s=peak, peak_bytes_per_s=_number(r, "peak_bytes_per_s", positive=True),
                dtype=r.get("dtype") or None, composition=_composition(r.get("composition")),
            ))
        except (KeyError, TypeError, ValueError, OverflowError, RecursionError, AttributeError) as e:
            why = f"no {excerpt(e.args[0])} cell" if isinstance(e, KeyError) else one_line(str(e), 120)
            raise InputError(f"{where} line {line}", f"not a kernels_ref benchmark row ({why})", _FIX) from None
    if not rows:
        raise InputError(where, "no kernel rows", "give a CSV written by moeplan bench-kernels")
    counts = Counter(r.kernel for r in rows)
    kernel, most = counts.most_common(1)[0]
    if most > MAX_ROWS_PER_KERNEL:
        raise InputError(where, f"{most:,} rows of {excerpt(kernel)}, past the bound of {MAX_ROWS_PER_KERNEL}",
                         "give one bench-kernels run")
    first = raw[0]
    device = one_line(first.get("device") or "an unnamed device", 80)
    source = f"{path.name}: measured {one_line(first.get('date') or '?', 20)} on {device}, torch {one_line(first.get('torch_version') or '?', 20)}"
    bandwidth = float(np.median([r.peak_bytes_per_s for r in rows]))
    return MeasuredTable(device, source, tuple(rows), peaks, bandwidth)


def _read_text(path: Path, where: str) -> str:
    """The file's text, read in bounded work: a directory, a missing file, an endless device or binary data is an
    InputError."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CSV_BYTES + 1)
    except OSError as e:
        raise InputError(where, f"cannot read: {e.strerror or e}", f"give a CSV written by {_FIX.removeprefix('regenerate it with ')}") from None
    if len(data) > MAX_CSV_BYTES:
        raise InputError(where, f"larger than {MAX_CSV_BYTES // 2**20} MiB", "give one bench-kernels run's CSV")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(where, f"not UTF-8 text (byte {e.start})", _FIX) from None


def _number(r: dict, key: str, positive: bool = False) -> float:
    """A finite number >= 0 (> 0 where positive) from a row's cell; ValueError naming the column otherwise."""
    value = float(r[key])
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{key} is {excerpt(r[key])}, not a {'positive' if positive else 'non-negative'} finite number")
    return value


def _shape(r: dict, key: str) -> int:
    value = _number(r, key)
    if value > MAX_SHAPE:
        raise ValueError(f"{key} is {excerpt(r[key])}, past {MAX_SHAPE:.3g}")
    return int(value)


def _composition(text: str | None) -> dict | None:
    """The composition cell: None for a kernel row; raises ValueError or KeyError if malformed."""
    if not text:
        return None
    composition = json.loads(text)
    parts = [{**p, "kernel": str(p["kernel"]), "impl": str(p["impl"]), "flops": _number(p, "flops"), "bytes": _number(p, "bytes")}
             for p in composition["parts"]]
    return {**composition, "parts": parts}


def fit_kernel(rows: Sequence[MeasuredRow], bandwidth: float | None = None) -> KernelFit:
    """Least squares on log time over the efficiency and overhead grids (exhaustive: 61 x 61 x 42).
    bandwidth: the run's bytes/s (MeasuredTable.bandwidth); None takes each row's own probe."""
    flops = np.array([r.flops for r in rows])
    peak = np.array([r.peak_flops_per_s or np.inf for r in rows])
    bytes_ = np.array([r.bytes for r in rows])
    bw = np.array([bandwidth or r.peak_bytes_per_s for r in rows])
    measured = np.log(np.array([r.seconds for r in rows]))
    compute = (flops / peak)[None, None, None, :] / _EFFICIENCY_GRID[:, None, None, None]  # [c, 1, 1, rows]
    memory = (bytes_ / bw)[None, None, None, :] / _EFFICIENCY_GRID[None, :, None, None]  # [1, m, 1, rows]
    model = np.maximum(compute, memory) + _OVERHEAD_GRID_S[None, None, :, None]  # [c, m, o, rows]
    loss = ((np.log(model) - measured) ** 2).sum(axis=-1)
    c, m, o = np.unravel_index(np.argmin(loss), loss.shape)
    return KernelFit(rows[0].kernel, float(_EFFICIENCY_GRID[c]), float(_EFFICIENCY_GRID[m]), float(_OVERHEAD_GRID_S[o]), len(rows))


def fits(table: MeasuredTable) -> dict[str, KernelFit]:
    return {k: fit_kernel(table.of(k), table.bandwidth) for k in table.kernels()}


def report(table: MeasuredTable) -> list[dict]:
    """Per measured row: predicted vs measured seconds, and the leave-one-out error where possible."""
    out = []
    for kernel, fit in fits(table).items():
        rows = table.of(kernel)
        for i, r in enumerate(rows):
            predicted = fit.seconds(r.flops, r.bytes, r.peak_flops_per_s, table.bandwidth)
            loo = None
            if len(rows) >= 4:
                held = fit_kernel(rows[:i] + rows[i + 1:], table.bandwidth)
                loo = held.seconds(r.flops, r.bytes, r.peak_flops_per_s, table.bandwidth) / r.seconds - 1
            out.append({"kernel": kernel, **r.shape, "measured_s": r.seconds, "predicted_s": predicted,
                        "error": predicted / r.seconds - 1, "loo_error": loo,
                        "compute_efficiency": fit.compute_efficiency, "memory_efficiency": fit.memory_efficiency,
                        "overhead_s": fit.overhead_s})
    return out


def _fit_for(fitted: dict[str, KernelFit], table: MeasuredTable, part: dict, phase: str, where: str) -> KernelFit:
    """The fit that prices a part of a layer: of its kernel and implementation, the one whose rows' tokens per expert
    cover the part's best (a grouped GEMM's path and speed follow the tokens each expert gets, not the phase: a
    1,024-token prefill layer gives 32 experts 256 tokens each, the shape of the decode rows), then the layer's own
    phase, then the most rows."""
    kernel, impl = part["kernel"], part["impl"]
    same = {key: f for key, f in fitted.items() if key.split(":")[0] == kernel and key.split(":")[2] == impl}
    if not same:
        raise InputError(where, f"no measured rows of {kernel} ({impl}) to predict the layer from",
                         "regenerate the CSV with moeplan bench-kernels")
    asked = part["tokens"] / part["groups"] if part.get("groups") and part.get("tokens") else None

    def beyond(key: str) -> float:
        measured = [r.shape["m_per_group"] for r in table.of(key) if r.shape.get("m_per_group")]
        if asked is None or not measured:
            return 1.0
        return max(asked / max(measured), min(measured) / asked, 1.0)
    return same[min(same, key=lambda key: (beyond(key), key.split(":")[1] != phase, -same[key].rows))]


def predict_composite(row: MeasuredRow, table: MeasuredTable, fitted: dict[str, KernelFit] | None = None) -> list[dict]:
    """Each part of a composite row: its fitted seconds at its shape in the layer, under the matmul
    peak measured alongside the layer (a part in another dtype takes that dtype's probe of the run)
    and the run's bandwidth."""
    fitted = fits(table) if fitted is None else fitted
    phase = row.kernel.split(":")[1]
    out = []
    for part in row.composition["parts"]:
        fit = _fit_for(fitted, table, part, phase, table.source)
        dtype = part.get("dtype")
        if dtype is None:
            peak = None
        elif dtype == row.dtype:
            peak = row.peak_flops_per_s
        elif dtype in table.peaks:
            peak = table.peaks[dtype]
        else:
            raise InputError(table.source, f"no {dtype} matmul probe to predict {part['kernel']} with",
                             "regenerate the CSV with moeplan bench-kernels")
        out.append({"part": part.get("part", part["kernel"]), "kernel": fit.kernel,
                    "predicted_s": fit.seconds(part["flops"], part["bytes"], peak, table.bandwidth)})
    return out


def layer_report(table: MeasuredTable) -> list[dict]:
    """Per composite row (the MoE layer end to end): measured vs the sum of its parts' fitted
    times, error = predicted / measured - 1, and the predicted seconds of each part."""
    fitted = fits(table)
    out = []
    for r in table.composites():
        parts = predict_composite(r, table, fitted)
        predicted = sum(p["predicted_s"] for p in parts)
        out.append({"kernel": r.kernel, **r.shape, "experts_of_model": r.composition.get("experts_of_model"),
                    "tokens_per_expert": r.composition.get("tokens_per_expert"),
                    "measured_s": r.seconds, "predicted_s": predicted, "error": predicted / r.seconds - 1,
                    "parts": {p["part"]: p["predicted_s"] for p in parts}})
    return out


def summary(table: MeasuredTable, rows: list[dict] | None = None, layers: list[dict] | None = None) -> dict:
    """The bars: largest |error| over the fitted rows and over the layer rows, against CALIBRATION_BAR.
    rows, layers: report(table) and layer_report(table) where already computed."""
    rows = report(table) if rows is None else rows
    layers = layer_report(table) if layers is None else layers
    row_max = max(abs(r["error"]) for r in rows)
    loo = [abs(r["loo_error"]) for r in rows if r["loo_error"] is not None]
    layer_max = max((abs(r["error"]) for r in layers), default=None)
    return {"source": table.source, "bandwidth": table.bandwidth, "bar": CALIBRATION_BAR,
            "rows": len(rows), "max_abs_error": row_max, "max_abs_loo_error": max(loo, default=None),
            "rows_within_bar": row_max <= CALIBRATION_BAR, "layers": len(layers), "layer_max_abs_error": layer_max,
            "layers_within_bar": None if layer_max is None else layer_max <= CALIBRATION_BAR}


def measured_csvs() -> list[Path]:
    """The committed kernels_ref CSVs, one per measured device."""
    return sorted(MEASURED_DIR.glob("*.csv"))


def report_table(table: MeasuredTable, rows: list[dict] | None = None, layers: list[dict] | None = None) -> str:
    """report(), layer_report() and summary() as text, e.g. for `print` (rows, layers: where already computed)."""
    rows = report(table) if rows is None else rows
    layers = layer_report(table) if layers is None else layers
    shape_keys = ("groups", "m_per_group", "tokens", "batch", "context")
    lines = [f"{'kernel:phase:impl':<40}{'shape':<28}{'measured':>11}{'predicted':>11}{'error':>8}{'LOO':>8}",
             f"{'':<68}{'ms':>11}{'ms':>11}"]
    for r in rows:
        shape = " ".join(f"{k}={r[k]}" for k in shape_keys if r.get(k) is not None)
        loo = "" if r["loo_error"] is None else f"{r['loo_error']:+.1%}"
        lines.append(f"{r['kernel']:<40}{shape:<28}{r['measured_s'] * 1e3:>11.2f}{r['predicted_s'] * 1e3:>11.2f}"
                     f"{r['error']:>+8.1%}{loo:>8}")
    for r in layers:
        shape = f"tokens={r.get('tokens')} experts={r.get('experts')}/{r.get('experts_of_model')}"
        lines.append(f"{r['kernel']:<40}{shape:<28}{r['measured_s'] * 1e3:>11.2f}{r['predicted_s'] * 1e3:>11.2f}"
                     f"{r['error']:>+8.1%}    (sum of its parts' fits)")
    s = summary(table, rows, layers)
    loo = "" if s["max_abs_loo_error"] is None else f", |LOO| max {s['max_abs_loo_error']:.1%}"
    lines.append(f"{s['rows']} kernel rows: |error| max {s['max_abs_error']:.1%}{loo}; "
                 + (f"{s['layers']} whole-layer rows: |error| max {s['layer_max_abs_error']:.1%}"
                    if s["layers"] else "no whole-layer rows")
                 + f" (bar {s['bar']:.0%})")
    return "\n".join(lines)
