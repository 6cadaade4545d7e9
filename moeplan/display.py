"""Tables for people: moeplan's frames (SI units, snake_case names: what the CSVs, plan.json and notebooks
hold) with every column named in words, in the unit a person reads beside the inputs (GB, ms for TPOT, %)
and rounded to what the model can tell apart. report.html, summary.md and the dashboard show these.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd


@dataclass(frozen=True)
class Column:
    label: str  # words, and the unit the value is shown in
    scale: float = 1.0  # shown value = stored (SI) value x scale
    decimals: int | None = None  # rounding of a number; None: leave it (ints, names, flags)


_MS, _PCT, _GB = 1e3, 100.0, 1e-9
COLUMNS: dict[str, Column] = {
    # plans (moeplan.tables, moeplan.study rows)
    "rank": Column("Rank"), "mode": Column("Mode"), "devices": Column("Devices"), "device": Column("Device"),
    "cluster_devices": Column("Cluster devices"), "feasible": Column("Feasible"), "reason": Column("Why not"),
    "layout": Column("Layout"), "decode_layout": Column("Decode layout"), "prefill_layout": Column("Prefill layout"),
    "decode_instances": Column("Decode instances"), "prefill_instances": Column("Prefill instances"),
    "batch_per_device": Column("Batch per device"), "chosen": Column("Chosen"),
    "ttft_s": Column("TTFT (s)", decimals=2), "tpot_s": Column("TPOT (ms)", _MS, 1),
    "output_tokens_per_s_per_device": Column("Output tokens/s per device", decimals=0),
    "tokens_per_s_per_user": Column("Tokens/s per user", decimals=1),
    "usd_per_hour": Column("USD per hour", decimals=2), "usd_per_device_hour": Column("USD per device-hour", decimals=2),
    "usd_per_million_input_tokens": Column("USD per M input tokens", decimals=3),
    "usd_per_million_output_tokens": Column("USD per M output tokens", decimals=3),
    "requests_per_s": Column("Requests/s", decimals=3),
    "utilization": Column("Utilisation (%)", _PCT, 1), "capacity_requests_per_s": Column("Full at (requests/s)", decimals=3),
    "usd_per_million_input_tokens_at_capacity": Column("USD per M input tokens, full", decimals=3),
    "usd_per_million_output_tokens_at_capacity": Column("USD per M output tokens, full", decimals=3),
    "price_basis": Column("Price basis"), "price_date": Column("Price date"), "price_source": Column("Price source"),
    "spec_devices": Column("Devices asked"), "sized": Column("Sized"), "infeasible_field": Column("Field to change"),
    "input_tokens_per_request": Column("Input tokens per request"),
    "output_tokens_per_request": Column("Output tokens per request"),
    "role": Column("Role"), "part": Column("Part"), "bytes": Column("GB", _GB, 2),
    "step": Column("Step"), "component": Column("Component"), "seconds": Column("Time (s)", decimals=3),
    # measured deployments (moeplan.measured_report)
    "group": Column("Group"), "rows": Column("Rows"), "modelled": Column("Modelled"),
    "coverage": Column("Coverage (%)", _PCT, 1), "peer_modelled": Column("Peer's rows"),
    "moeplan_tpot_median": Column("TPOT median error (%)", _PCT, 1), "peer_tpot_median": Column("Peer TPOT median error (%)", _PCT, 1),
    "moeplan_ttft_median": Column("TTFT median error (%)", _PCT, 1), "peer_ttft_median": Column("Peer TTFT median error (%)", _PCT, 1),
    # latency percentiles (moeplan.simulation.summary_frame)
    "metric": Column("Metric"), "p50_s": Column("p50 (s)", decimals=3), "p90_s": Column("p90 (s)", decimals=3),
    "p99_s": Column("p99 (s)", decimals=3), "slo_s": Column("SLO (s)", decimals=3),
    # placements (moeplan.api.compare_placements, plan.json's placement)
    "method": Column("Method"), "step_cost": Column("Step cost (sum over layers of busiest / mean)", decimals=3),
    "mean_imbalance": Column("Mean imbalance (busiest / mean)", decimals=3),
    "worst_layer_imbalance": Column("Worst layer (busiest / mean)", decimals=3),
    "objective": Column("ILP objective", decimals=4), "lp_bound": Column("Lower bound", decimals=4),
    "gap": Column("Gap (%)", _PCT, 2), "solver": Column("Solver"),
    # simulations (sim.results.RoleStats)
    "instances": Column("Instances"), "steps": Column("Steps"), "busy_s": Column("Busy (s)", decimals=1),
    "utilisation": Column("Utilisation (%)", _PCT, 1),
    "mean_kv_occupancy": Column("Mean KV occupancy (%)", _PCT, 1),
    "peak_kv_occupancy": Column("Peak KV occupancy (%)", _PCT, 1),
    "kv_capacity_tokens_per_group": Column("KV capacity (tokens per group)"),
    "max_running_per_group": Column("Max sequences per group"), "expert_load": Column("Expert load"),
    "step_cost_evaluations": Column("Step cost evaluations"), "routing_mapping": Column("Routing mapped"),
}


# the options table (moeplan.tables.recommendation_frame) as shown: the offered traffic, the same on every row,
# and the bill per hour, which the cost per million tokens follows from, are left to the CSV and the summary
OPTION_COLUMNS = ("rank", "mode", "devices", "decode_layout", "decode_instances", "batch_per_device", "prefill_layout",
                  "prefill_instances", "ttft_s", "tpot_s", "output_tokens_per_s_per_device", "utilization",
                  "usd_per_million_input_tokens", "usd_per_million_output_tokens", "usd_per_million_output_tokens_at_capacity")


def options(frame: pd.DataFrame) -> pd.DataFrame:
    """The options table's columns that are shown (OPTION_COLUMNS), in that order."""
    return frame[[c for c in OPTION_COLUMNS if c in frame]]


def column(name: str) -> Column:
    """How a column is shown; an unknown one keeps its value and is named in words."""
    return COLUMNS.get(name) or Column(name.replace("_", " ").capitalize())


def label(name: str) -> str:
    return column(name).label


def value(name: str, v: Any) -> Any:
    """One stored value as shown: scaled and rounded (None and NaN stay missing)."""
    c = column(name)
    if not isinstance(v, float) or math.isnan(v) or c.decimals is None:
        return v
    return round(v * c.scale, c.decimals)


def readable(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame as a person reads it: every column scaled, rounded and named in words, and the columns with no
    value in any row left out. A column of floats rounded to whole numbers becomes integers (no "40.0")."""
    out = pd.DataFrame(index=frame.index)
    for name in _with_values(frame):
        c = column(name)
        series = frame[name]
        if c.decimals is not None and series.dtype.kind == "f":
            series = (series * c.scale).round(c.decimals)
            if c.decimals == 0 and series.notna().all():
                series = series.astype("int64")
        out[c.label] = series
    return out


def text(name: str, v: Any) -> str:
    """One stored value as text: thousands separated, at the column's decimals; missing is blank."""
    v = v.item() if hasattr(v, "item") else v  # a numpy scalar as its Python number
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    c = column(name)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return "yes" if v is True else "no" if v is False else str(v)
    if isinstance(v, float) and c.decimals is not None:
        return f"{v * c.scale:,.{c.decimals}f}"
    return f"{v:,}" if isinstance(v, int) else f"{v:,.4g}"


NO_PRICE = "no price"  # a cost cell of a feasible row without a price: said, never a blank that reads as free


def text_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Every cell as text (text()), columns named in words, those with no value in any row left out: what
    report.html, summary.md and the dashboard's static tables print. A cost column (usd_*) is kept and says
    NO_PRICE in every feasible row that has no cost: a device without a price is a missing cost, not a hole."""
    feasible = [v is not False for v in frame["feasible"].tolist()] if "feasible" in frame else [True] * len(frame)
    costs = [name for name in frame.columns if str(name).startswith("usd") and any(feasible)]
    shown = [name for name in frame.columns if name in _with_values(frame) or name in costs]

    def cell(name, v, ok: bool) -> str:
        missing = v is None or (isinstance(v, float) and math.isnan(v))
        return NO_PRICE if name in costs and ok and missing else text(name, v)

    return pd.DataFrame({label(name): [cell(name, v, ok) for v, ok in zip(frame[name].tolist(), feasible)] for name in shown},
                        index=frame.index)


def _with_values(frame: pd.DataFrame) -> list[str]:
    """The columns with a value (not None, NaN or "") in some row."""
    return [name for name in frame.columns if (frame[name].notna() & (frame[name].astype(str) != "")).any()]


def quantities(frame: pd.DataFrame) -> pd.DataFrame:
    """A (quantity, value, source) frame such as moeplan.tables.cost_frame as text: each quantity in words
    with its unit, its value shown as that quantity's column would be."""
    return pd.DataFrame({"Quantity": [label(q) for q in frame["quantity"]],
                         "Value": [text(q, v) for q, v in zip(frame["quantity"], frame["value"].tolist())],
                         "Source": frame["source"].tolist()})
