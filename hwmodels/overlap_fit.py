"""Two-batch overlap efficiency fitted to published TBO ablations (catalogs/published/overlap.yaml).

An ablation measures throughput with two-batch overlap over throughput without it, at the same tokens per
device. The step model's ratio of the two step times falls monotonically as the overlap efficiency falls,
so the efficiency that reproduces the `fit` rows (the geometric middle of each published range) is found
by bisection; `check` rows are held out and reported against the fitted constant,
hwmodels.step.TBO_OVERLAP_EFFICIENCY.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

import yaml

from catalogs import CATALOG_DIR
from hwmodels.step import TBO_OVERLAP_EFFICIENCY, step_cost
from hwmodels.validation import build_scenario

OVERLAP_ABLATIONS = CATALOG_DIR / "published" / "overlap.yaml"


def load_ablations(path: str | Path | None = None) -> list[Mapping[str, Any]]:
    return yaml.safe_load(Path(path or OVERLAP_ABLATIONS).read_text(encoding="utf-8"))["ablations"]


def modelled_speedup(row: Mapping[str, Any], overlap_efficiency: float = TBO_OVERLAP_EFFICIENCY) -> float:
    """Step time without two-batch overlap over step time with it, for one ablation row."""
    sc = build_scenario(row)
    w = row["workload"]
    if row["phase"] == "prefill":
        tokens, context = w["tokens_per_device_per_step"], w["input_tokens"]
    else:
        tokens, context = w["batch_per_device"], w["kv_tokens_per_sequence"]

    def time_s(overlap: bool) -> float:
        layout = replace(sc.layout, two_batch_overlap=overlap)
        return step_cost(sc.arch, sc.plan, sc.cluster, layout, row["phase"], tokens, context, sc.load,
                         overlap_efficiency=overlap_efficiency).time_s

    return time_s(False) / time_s(True)


def _published(row: Mapping[str, Any]) -> float:
    return math.sqrt(row["speedup"]["low"] * row["speedup"]["high"])


def fit_overlap_efficiency(rows: list[Mapping[str, Any]] | None = None) -> float:
    """The efficiency in [0, 1] at which the fit rows' modelled speedups match the published ones (mean log error 0)."""
    fit_rows = [r for r in (rows or load_ablations()) if r["role"] == "fit"]

    def log_error(efficiency: float) -> float:
        return sum(math.log(modelled_speedup(r, efficiency) / _published(r)) for r in fit_rows)

    lo, hi = 0.0, 1.0
    if log_error(hi) <= 0:
        return hi
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if log_error(mid) < 0 else (lo, mid)
    return (lo + hi) / 2


def overlap_report(rows: list[Mapping[str, Any]] | None = None,
                   overlap_efficiency: float = TBO_OVERLAP_EFFICIENCY) -> list[dict]:
    """Per ablation: published speedup range, modelled speedup, and the error outside the range (0 inside)."""
    out = []
    for r in rows or load_ablations():
        low, high = r["speedup"]["low"], r["speedup"]["high"]
        modelled = modelled_speedup(r, overlap_efficiency)
        error = modelled / high - 1 if modelled > high else modelled / low - 1 if modelled < low else 0.0
        out.append({"id": r["id"], "role": r["role"], "published_low": low, "published_high": high,
                    "modelled": modelled, "error": error})
    return out
