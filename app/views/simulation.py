"""Simulation: moeplan.api.simulate replays a request trace (uploaded, or synthetic at the workload's rate and
means) through the session's plan: latency distributions against the SLOs, throughput, utilisation and KV
occupancy over time, goodput and the cost per million output tokens as the replay measured them."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

import common  # app/common.py: the script folder is on sys.path (`import app` would find app/app.py)
from moeplan.api import InputError, KVPolicy, Router

SOURCES = ("Synthetic (the workload's rate and means)", "Trace file")
PREFILL_ROUTERS = tuple(r.value for r in Router)
_LAYOUT = dict(template="plotly_white", margin=dict(l=60, r=20, t=50, b=50))


def _distribution(result, metric: str, title: str, unit: str, scale: float, slo_s: float | None) -> go.Figure:
    """Histogram of one latency over the served requests, with its SLO (if any) and the SLO percentile marked."""
    values = {"ttft": result.ttft_s, "tpot": result.tpot_s, "e2e": result.e2e_s}[metric]
    values = values[result.served & ~np.isnan(values)]
    q = result.slo.percentile
    fig = go.Figure(go.Histogram(x=values * scale, nbinsx=60))
    if slo_s is not None:
        fig.add_vline(x=slo_s * scale, line_dash="dot", line_color="crimson", annotation_text=f"SLO {slo_s * scale:g} {unit}")
    if len(values):
        fig.add_vline(x=result.percentile(metric, q) * scale, line_dash="dash", annotation_text=f"p{q:g}",
                      annotation_position="bottom right")
    fig.update_layout(title=title, xaxis_title=unit, yaxis_title="requests", showlegend=False, **_LAYOUT)
    return fig


def _over_time(result, series: dict[str, np.ndarray], title: str, y_title: str, percent: bool) -> go.Figure:
    fig = go.Figure()
    for name, values in series.items():
        mid_s = (np.arange(len(values)) + 0.5) * result.timeline_bin_s  # each bin at its middle
        fig.add_scatter(x=mid_s, y=values, mode="lines", name=name)
    fig.update_layout(title=title, xaxis_title="simulated time (s)", yaxis_title=y_title, **_LAYOUT)
    if percent:  # a fraction of the bin or of the capacity: never over 100% (sim spreads a step over its bins)
        fig.update_layout(yaxis_tickformat=".0%", yaxis_range=[0, 1.05])
    return fig


def _percentiles(summary: dict, slo) -> pd.DataFrame:
    """p50 / p90 / p99 of each latency in the unit of its SLO input (TPOT in ms), with the SLO."""
    rows = []
    for metric, name, unit, scale, slo_s in (("ttft", "TTFT", "s", 1.0, slo.ttft_s), ("tpot", "TPOT", "ms", 1e3, slo.tpot_s),
                                             ("e2e", "End-to-end", "s", 1.0, None)):
        values = [summary[f"{metric}_p{q}_s"] for q in (50, 90, 99)] + [slo_s]
        rows.append({"Latency": f"{name} ({unit})"} | {
            column: "" if v is None else f"{v * scale:,.{1 if unit == 'ms' else 2}f}"
            for column, v in zip(("p50", "p90", "p99", "SLO"), values)})
    return pd.DataFrame(rows)


def _show(result) -> None:
    summary = result.to_json()
    slo = result.slo
    p = slo.percentile
    st.info(result.summary().splitlines()[0], icon=":material/timeline:")
    c = st.columns(6)
    c[0].metric(f"TTFT p{p:g}", f"{result.percentile('ttft', p):.2f} s", help=f"SLO {slo.ttft_s:g} s")
    c[1].metric(f"TPOT p{p:g}", f"{result.percentile('tpot', p) * 1e3:.1f} ms", help=f"SLO {slo.tpot_s * 1e3:g} ms")
    c[2].metric("Within both SLOs", f"{summary['slo_attainment']:.1%}")
    c[3].metric("Goodput", f"{summary['goodput_requests_per_s']:.2f}/s", help="requests/s served within both SLOs")
    c[4].metric("Output tokens/s", f"{summary['output_tokens_per_s']:,.0f}")
    usd = summary["usd_per_million_output_tokens"]
    c[5].metric("USD/M output", "no price" if usd is None else f"{usd:,.3f}", help="devices x price x makespan / output tokens")
    tabs = st.tabs(["TTFT", "TPOT", "End-to-end"])
    for tab, (metric, title, unit, scale, slo_s) in zip(tabs, (
            ("ttft", "Time to first token", "s", 1.0, slo.ttft_s),
            ("tpot", "Time per output token", "ms", 1e3, slo.tpot_s),
            ("e2e", "End-to-end latency", "s", 1.0, None))):
        with tab:
            st.plotly_chart(_distribution(result, metric, title, unit, scale, slo_s), key=f"sim_chart_{metric}")
    st.plotly_chart(_over_time(result, {"output tokens/s": result.output_tokens_per_s_over_time},
                               "Throughput over time", "output tokens/s", percent=False), key="sim_chart_throughput")
    c1, c2 = st.columns(2)
    with c1:
        st.plotly_chart(_over_time(result, result.kv_occupancy_over_time, "KV cache occupancy", "of KV capacity",
                                   percent=True), key="sim_chart_kv")
    with c2:
        st.plotly_chart(_over_time(result, result.utilisation_over_time, "Utilisation", "time stepping",
                                   percent=True), key="sim_chart_utilisation")
    common.text_table(pd.DataFrame([r.to_json() for r in result.roles]).drop(columns="step_cost_evaluations"))
    with st.expander("Percentiles, assumptions and the full result"):
        st.table(_percentiles(summary, slo), hide_index=True)
        st.markdown("\n".join(f"- {a}" for a in result.assumptions))
        st.download_button("simulation.json", json.dumps(summary, indent=1, default=float), "simulation.json",
                           "application/json")


st.title("Simulation")
raw, files = common.current_spec()
st.caption(common.spec_caption(raw) + ". The replay runs the plan's layout and batch through the step model, "
           "request by request (SimPy).")
with st.form("sim_form"):
    source = st.radio("Requests", SOURCES, horizontal=True, key="sim_source")
    uploads = st.file_uploader("Request trace: Mooncake JSONL, Azure or BurstGPT CSV, length CSV, or a ServeGen chunk's two files",
                               type=["jsonl", "json", "csv"], accept_multiple_files=True,
                               max_upload_size=common.MAX_UPLOAD_MB, key="sim_trace")
    c = st.columns(5)
    rate = c[0].number_input("Requests/s (length-only CSV)", min_value=0.0, value=None, key="sim_rate", format="%.3f")
    requests = c[1].number_input("Requests (the first N)", min_value=1, max_value=50_000, value=500, step=100,
                                 key="sim_requests")
    speedup = c[2].number_input("Speed-up of arrivals", min_value=0.01, value=1.0, step=0.5, key="sim_speedup")
    router = c[3].selectbox("Router", PREFILL_ROUTERS, index=PREFILL_ROUTERS.index(Router.PREFIX_AWARE.value),
                            key="sim_router", help="prefill (or aggregated) ranks; decode ranks: least-loaded")
    kv_policy = c[4].selectbox("When KV is full", [k.value for k in KVPolicy], key="sim_kv",
                               help="queue: admit only what fits to the end; preempt: admit now, evict and recompute")
    prefix_cache = st.checkbox("Prefix cache (traces with block ids)", value=True, key="sim_prefix")
    st.form_submit_button("Simulate", type="primary")
with common.shown_errors():
    trace_files = ()
    if source == SOURCES[1]:
        trace_files = tuple((u.name, u.getvalue()) for u in uploads or ())  # the reader limits the size
        if not trace_files:
            raise InputError("trace", "no file uploaded", "upload a request trace, or simulate synthetic requests")
    with st.spinner(f"Replaying up to {requests:,} requests..."):
        result = common.simulate(raw, files, trace_files, rate or None, int(requests), float(speedup), router, kv_policy,
                                 prefix_cache, 0)
    _show(result)
