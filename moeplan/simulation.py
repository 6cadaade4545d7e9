"""A simulation's tables and figures: the latency distributions, throughput and KV occupancy over time that
report.html, the dashboard and notebooks show. `Simulation` wraps a sim.SimResult (its fields read through)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from hwmodels.errors import InputError, nearest_names
from hwmodels.ingest.requests import RequestTrace
from planner.plan import Plan, ReplayCheck
from sim.results import PERCENTILES, SimResult

_LAYOUT = dict(template="plotly_white", margin=dict(l=60, r=20, t=60, b=50))


def summary_frame(r: SimResult) -> pd.DataFrame:
    """Percentiles of TTFT, TPOT and end-to-end latency (seconds), with the SLO each is held to."""
    slo = {"ttft": r.slo.ttft_s, "tpot": r.slo.tpot_s, "e2e": None}
    rows = [{"metric": metric, **{f"p{q}_s": r.percentile(metric, q) for q in PERCENTILES}, "slo_s": slo[metric]}
            for metric in ("ttft", "tpot", "e2e")]
    return pd.DataFrame(rows)


def requests_frame(r: SimResult) -> pd.DataFrame:
    """One row per request of the trace, in trace order."""
    return pd.DataFrame({"arrival_s": r.arrival_s, "input_tokens": r.input_tokens, "output_tokens": r.output_tokens,
                         "cached_tokens": r.cached_tokens, "ttft_s": r.ttft_s, "tpot_s": r.tpot_s, "e2e_s": r.e2e_s,
                         "preemptions": r.preemptions, "rejected": r.rejected, "meets_slo": r.meets_slo})


def timeline_frame(r: SimResult) -> pd.DataFrame:
    """Per time bin: output tokens/s, and each pool's utilisation and KV occupancy."""
    bins = len(r.output_tokens_per_s_over_time)
    out = {"time_s": np.arange(bins) * r.timeline_bin_s, "output_tokens_per_s": r.output_tokens_per_s_over_time}
    for role, series in r.utilisation_over_time.items():
        out[f"{role}_utilisation"] = series[:bins]
    for role, series in r.kv_occupancy_over_time.items():
        out[f"{role}_kv_occupancy"] = series[:bins]
    return pd.DataFrame(out)


def latency_figure(r: SimResult, other: SimResult | None = None, labels: tuple[str, str] = ("", "")) -> go.Figure:
    """Cumulative distributions of TTFT and TPOT over served requests, with the SLOs; `other` overlays a second run
    (e.g. uniform routing against measured skew)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("TTFT", "TPOT"))
    for run, label, dash in ((r, labels[0], "solid"), (other, labels[1], "dash")):
        if run is None:
            continue
        for col, values, scale in ((1, run.ttft_s, 1.0), (2, run.tpot_s, 1e3)):
            v = np.sort(values[run.served & ~np.isnan(values)]) * scale
            fig.add_scatter(x=v, y=np.arange(1, len(v) + 1) / max(len(v), 1), mode="lines", line=dict(dash=dash),
                            name=f"{label or 'simulated'} {'TTFT' if col == 1 else 'TPOT'}", row=1, col=col)
    fig.add_vline(x=r.slo.ttft_s, line_dash="dot", annotation_text="SLO", row=1, col=1)
    fig.add_vline(x=r.slo.tpot_s * 1e3, line_dash="dot", annotation_text="SLO", row=1, col=2)
    fig.add_hline(y=r.slo.percentile / 100, line_dash="dot", line_color="grey")
    fig.update_xaxes(title_text="seconds", row=1, col=1)
    fig.update_xaxes(title_text="ms", row=1, col=2)
    fig.update_yaxes(title_text="fraction of requests", row=1, col=1)
    fig.update_layout(title="Latency distributions (simulated)", **_LAYOUT)
    return fig


def timeline_figure(r: SimResult) -> go.Figure:
    """Output tokens/s, pool utilisation and KV occupancy over the replay."""
    t = timeline_frame(r)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, subplot_titles=("output tokens/s", "utilisation and KV occupancy"))
    fig.add_scatter(x=t["time_s"], y=t["output_tokens_per_s"], mode="lines", name="output tokens/s", row=1, col=1)
    for column in t.columns:
        if column.endswith(("_utilisation", "_kv_occupancy")):
            fig.add_scatter(x=t["time_s"], y=t[column], mode="lines", name=column.replace("_", " "), row=2, col=1)
    fig.update_xaxes(title_text="simulated time, s", row=2, col=1)
    fig.update_yaxes(range=[0, 1.05], row=2, col=1)
    fig.update_layout(title="Throughput and occupancy over time (simulated)", **_LAYOUT)
    return fig


@dataclass(frozen=True)
class Simulation:
    """A sim.SimResult (fields read through) with `to_frame(table)`, `figure(name)` and `to_json()`."""

    result: SimResult
    sharding: str = ""  # how a sharded replay was cut and whether it is exact ("" for one replay)
    warnings: tuple[str, ...] = ()  # what makes the replay a different question from the plan's (api.simulate)
    tables = ("summary", "requests", "timeline")
    figures = ("latency", "timeline")
    figure_titles = {"latency": "Latency distributions (simulated)", "timeline": "Throughput and occupancy over time"}

    def __getattr__(self, name: str):
        if name == "result":
            raise AttributeError(name)
        return getattr(self.result, name)

    def to_frame(self, table: str = "summary") -> pd.DataFrame:
        frames = {"summary": summary_frame, "requests": requests_frame, "timeline": timeline_frame}
        if table not in frames:
            raise InputError("table", f"unknown table '{table}'", nearest_names(table, frames))
        return frames[table](self.result)

    def figure(self, name: str = "latency") -> go.Figure:
        plots = {"latency": latency_figure, "timeline": timeline_figure}
        if name not in plots:
            raise InputError("figure", f"unknown figure '{name}'", nearest_names(name, plots))
        return plots[name](self.result)

    def to_json(self) -> dict[str, Any]:
        return self.result.to_json() | ({"sharding": self.sharding} if self.sharding else {}) | {"warnings": list(self.warnings)}

    def summary(self) -> str:
        return "\n".join([self.result.summary(), *([f"sharded: {self.sharding}"] if self.sharding else []),
                          *(f"warning: {w}" for w in self.warnings)])


def replay_check(plan: Plan, sim: Simulation) -> ReplayCheck:
    """The plan's one option against its replay, both at the SLO percentile (planner.replay_check)."""
    r, slo, result = plan.recommendation, plan.deployment.slo, sim.result
    ttft, tpot = result.percentile("ttft", slo.percentile), result.percentile("tpot", slo.percentile)
    requests = len(result.arrival_s)
    holds = (result.completed == requests and ttft <= slo.ttft_s and (math.isnan(tpot) or tpot <= slo.tpot_s))
    traffic = result.trace if result.trace.startswith("synthetic") else f"{requests:,} requests of {result.trace}"
    return ReplayCheck(r.mode, r.devices, r.usd_per_hour, r.ttft_s, r.tpot_s, ttft, tpot, requests, result.completed,
                       holds, traffic + (f" (in {sim.sharding})" if sim.sharding else ""), result.wall_seconds)


RATE_MISMATCH = 0.2  # a replay whose arrivals differ from the plan's rate by more than this asks another question


def rate_warnings(plan: Plan, trace: RequestTrace) -> tuple[str, ...]:
    """A warning where the trace arrives more than RATE_MISMATCH faster or slower than the plan was sized for:
    its latencies then answer for other traffic (a plan sized for 1.1 requests/s replaying 3.4 queues without
    bound), with the --speedup that replays it at the plan's rate."""
    r = plan.recommendation
    if r is None or len(trace) < 2 or trace.duration_s <= 0:
        return ()
    rate = len(trace) / trace.duration_s
    if abs(rate / r.requests_per_s - 1.0) <= RATE_MISMATCH:
        return ()
    return (f"the trace arrives at {rate:,.3g} requests/s, {rate / r.requests_per_s:.2g} x the {r.requests_per_s:,.3g} the "
            f"plan was sized for: its latencies answer for that traffic; --speedup {r.requests_per_s / rate:.3g} replays it "
            f"at the plan's rate, or plan for the trace's (workload.requests_per_s: {rate:.3g})",)
