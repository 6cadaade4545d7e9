"""Two-batch overlap efficiency fitted to published TBO ablations (catalogs/published/overlap.yaml).

An ablation measures throughput with two-batch overlap over throughput without it, at the same tokens per
device. The step model's ratio of the two step times falls monotonically as the overlap efficiency falls,
so the efficiency that reproduces the `fit` rows (the geometric middle of each published range) is found
by bisection; `check` rows are held out and reported against the stored, rounded fit
(catalogs/fits/overlap.yaml, OperatorCosts.overlap_efficiency).
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Literal

from pydantic import Field

from catalogs import CATALOG_DIR
from hwmodels.calibrate.deployments import ScenarioEntry, _Strict, build_scenario, load_entries
from hwmodels.calibrate.operator_costs import fitted_costs
from hwmodels.roles import Phase

OVERLAP_ABLATIONS = CATALOG_DIR / "published" / "overlap.yaml"


class AblationWorkload(_Strict):
    input_tokens: int | None = Field(None, gt=0)
    tokens_per_device_per_step: int | None = Field(None, gt=0)
    batch_per_device: int | None = Field(None, gt=0)
    kv_tokens_per_sequence: int | None = Field(None, gt=0)


class SpeedupRange(_Strict):
    low: float = Field(gt=0)
    high: float = Field(gt=0)


class AblationEntry(ScenarioEntry):
    role: Literal["fit", "check"] = Field(description="fit: the efficiency is fitted to it; check: held out")
    workload: AblationWorkload
    speedup: SpeedupRange = Field(description="published throughput with overlap over without, same tokens per device")


def load_ablations(path: str | Path | None = None) -> list[AblationEntry]:
    return load_entries(path or OVERLAP_ABLATIONS, AblationEntry, "ablations")


def modelled_speedup(row: AblationEntry, overlap_efficiency: float | None = None) -> float:
    """Step time without two-batch overlap over step time with it, for one ablation row (at the stored
    efficiency unless one is given)."""
    ctx = build_scenario(row).context
    if overlap_efficiency is not None:
        ctx = replace(ctx, costs=replace(ctx.costs, overlap_efficiency=overlap_efficiency))
    w = row.workload
    if row.phase == Phase.PREFILL:
        tokens, context = w.tokens_per_device_per_step, w.input_tokens
    else:
        tokens, context = w.batch_per_device, w.kv_tokens_per_sequence

    def time_s(overlap: bool) -> float:
        return replace(ctx, layout=replace(ctx.layout, two_batch_overlap=overlap)).step(row.phase, tokens, context).time_s

    return time_s(False) / time_s(True)


def _published(row: AblationEntry) -> float:
    return math.sqrt(row.speedup.low * row.speedup.high)


def fit_overlap_efficiency(rows: list[AblationEntry] | None = None) -> float:
    """The efficiency in [0, 1] at which the fit rows' modelled speedups match the published ones (mean log error 0)."""
    fit_rows = [r for r in (rows or load_ablations()) if r.role == "fit"]

    def log_error(efficiency: float) -> float:
        return sum(math.log(modelled_speedup(r, efficiency) / _published(r)) for r in fit_rows)

    lo, hi = 0.0, 1.0
    if log_error(hi) <= 0:
        return hi
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if log_error(mid) < 0 else (lo, mid)
    return (lo + hi) / 2


def overlap_report(rows: list[AblationEntry] | None = None, overlap_efficiency: float | None = None) -> list[dict]:
    """Per ablation: published speedup range, modelled speedup, and the error outside the range (0 inside)."""
    efficiency = fitted_costs().overlap_efficiency if overlap_efficiency is None else overlap_efficiency
    out = []
    for r in rows or load_ablations():
        low, high = r.speedup.low, r.speedup.high
        modelled = modelled_speedup(r, efficiency)
        error = modelled / high - 1 if modelled > high else modelled / low - 1 if modelled < low else 0.0
        out.append({"id": r.id, "role": r.role, "published_low": low, "published_high": high,
                    "modelled": modelled, "error": error})
    return out
