"""Named plotly figures over moeplan's tables: the same charts in report.html, the dashboard and notebooks."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from hwmodels.units import GB
from moeplan import display, tables
from planner.plan import Plan

_LAYOUT = dict(template="plotly_white", margin=dict(l=60, r=20, t=50, b=50))


def frontier_figure(result: Plan) -> go.Figure:
    """Output tokens/s per device against tokens/s per user; the recommended decode point is a star."""
    f = tables.frontier_frame(result)
    fig = go.Figure()
    if not f.empty:
        fig.add_scatter(x=f["tokens_per_s_per_user"], y=f["output_tokens_per_s_per_device"], mode="lines+markers",
                        name="Pareto frontier", text=f["layout"] + ", batch " + f["batch_per_device"].astype(str),
                        hovertemplate="%{text}<br>%{x:.1f} tok/s/user<br>%{y:,.0f} tok/s/device<extra></extra>")
    r = result.recommendation
    if r is not None:  # an aggregated instance is not on the decode frontier: mark it wherever it is
        fig.add_scatter(x=[r.decode.tokens_per_s_per_user], y=[r.decode.tokens_per_s_per_device], mode="markers",
                        marker=dict(symbol="star", size=16, color="crimson"), name=f"recommended ({r.mode})")
    d = result.deployment
    fig.add_vline(x=1.0 / d.slo.tpot_s, line_dash="dot", annotation_text=f"TPOT SLO {d.slo.tpot_s * 1e3:g} ms")
    fig.update_layout(title="Decode layouts: throughput per device vs speed per user",
                      xaxis_title="output tokens/s per user", yaxis_title="output tokens/s per device", **_LAYOUT)
    note = recommendation_note(result)
    if note:  # below the axis title, in a bottom margin made room for it (after _LAYOUT's, which would undo it)
        fig.add_annotation(text=note, xref="paper", yref="paper", x=0, y=-0.28, showarrow=False, align="left",
                           xanchor="left", yanchor="top", font=dict(size=11))
        fig.update_layout(margin=dict(_LAYOUT["margin"], b=130))
    return fig


def recommendation_note(result: Plan) -> str:
    """Why the recommended point is not on the frontier's curve, where it is not ("" where it is)."""
    r = result.recommendation
    if r is None:
        return ""
    c = r.decode
    if r.prefill is None:
        return (f"The star is below the curve because an aggregated instance also prefills ({c.perf.prefill_share:.0%} of "
                "its time):<br>its output tokens/s per device count that time; the curve is decode-only layouts.")
    above = [f for f in result.frontier if f.tokens_per_s_per_user >= c.tokens_per_s_per_user
             and f.tokens_per_s_per_device > 1.05 * c.tokens_per_s_per_device]
    if not above:
        return ""
    bigger = min(above, key=lambda f: f.instance_devices)
    return (f"The star is below the curve because the curve's layouts at this speed need instances of "
            f"{bigger.instance_devices}+ devices;<br>the offered {r.requests_per_s:,.3g} requests/s fill {r.utilization:.0%} "
            f"of the cheapest deployment, {r.devices} devices, and more throughput per device would not lower its bill.")


def step_name(role: str, step: str) -> str:
    """'decode step' for a role's own step, 'prefill step (aggregated)' for one of an aggregated instance's two."""
    return f"{step} step" if role == step else f"{step} step ({role})"


def breakdown_figure(result: Plan) -> go.Figure:
    """Step time per component of each role (ms), one panel per step, each on its own scale: a 48 ms decode step
    beside a 1.2 s prefill step would be a sliver on a shared axis. Overlap's saving is a negative bar."""
    b = tables.breakdown_frame(result)
    b = b[b["seconds"] != 0].assign(ms=lambda x: x["seconds"] * 1e3, component=lambda x: x["component"].str.replace("_", " "))
    b["panel"] = [step_name(role, step) for role, step in zip(b["role"], b["step"])]
    totals = b.groupby("panel", sort=False)["ms"].sum()
    b["panel"] = [f"{p}: {totals[p]:,.1f} ms" for p in b["panel"]]
    fig = px.bar(b, x="panel", y="ms", color="component", facet_col="panel", facet_col_spacing=0.1,
                 title="Step time by component", labels={"ms": "ms per step"})
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=", 1)[-1]))  # "panel=decode step: 48 ms" -> the name
    fig.update_xaxes(matches=None, showticklabels=False, title_text="")
    fig.update_yaxes(matches=None, showticklabels=True)
    fig.update_layout(barmode="relative", **_LAYOUT)
    return fig


def memory_figure(result: Plan) -> go.Figure:
    """HBM of the busiest device per role, stacked by part, against the device's HBM."""
    m = tables.memory_frame(result).assign(gb=lambda x: x["bytes"] / GB, part=lambda x: x["part"].str.replace("_", " "))
    fig = px.bar(m, x="role", y="gb", color="part", title="Memory per device")
    hbm = result.deployment.cluster.device.hbm_bytes / GB
    fig.add_hline(y=hbm, line_dash="dot", annotation_text=f"HBM {hbm:.0f} GB")
    fig.update_layout(barmode="stack", yaxis_title="GB", xaxis_title="", **_LAYOUT)
    return fig


def placement_figure(result: Plan, role: str | None = None) -> go.Figure:
    """Expert load of every device in every MoE layer relative to the mean device (1.0 = balanced)."""
    p = tables.placement_frame(result)
    role = role or (p["role"].iloc[0] if not p.empty else "")
    p = p[p["role"] == role]
    grid = p.pivot(index="device", columns="layer", values="relative_load") if not p.empty else pd.DataFrame()
    # a sequential scale from 0 with 1.0 (the mean) at its middle: uniform load is one mid colour, not the
    # blank white that a diverging scale centred on 1.0 draws
    top = max(2.0, float(p["relative_load"].max())) if not p.empty else 2.0
    fig = go.Figure(go.Heatmap(z=grid.values, x=grid.columns, y=grid.index, colorscale="Viridis", zmin=0.0, zmax=top,
                               colorbar=dict(title="load / mean"),
                               hovertemplate="layer %{x}, device %{y}: %{z:.2f} x the mean<extra></extra>"))
    source = p["source"].iloc[0] if not p.empty else "no MoE layers"
    fig.update_layout(title=f"Expert load per device and layer ({role})<br><sup>{source[:160]}</sup>",
                      xaxis_title="layer", yaxis_title="device", **_LAYOUT)
    return fig


def device_map_figure(result: Plan, role: str | None = None) -> go.Figure:
    """Device by layer: which attention DP rank each device serves in the layers its pipeline stage runs (blank where
    another stage runs the layer), with its stage, TP rank, expert load and KV in the hover."""
    f = tables.device_map_frame(result)
    role = role or (f["role"].iloc[0] if not f.empty else "")
    f = f[f["role"] == role]
    if f.empty:
        return go.Figure().update_layout(title="No recommendation to map", **_LAYOUT)
    z = f.assign(z=f["dp_rank"].where(f["runs_layer"])).pivot(index="device", columns="layer", values="z")
    hover = f.assign(text=[
        ("FFN device: the routed experts, no attention or KV" if r.device_role == "experts" else
         f"stage {r.stage}, DP rank {r.dp_rank}, TP rank {r.tp_rank}"
         + ("" if r.runs_layer else " (another stage runs this layer)"))
        + ("" if pd.isna(r.relative_expert_load) else f"<br>expert load {r.relative_expert_load:.2f} x the mean")
        + f"<br>KV: {r.kv_sequences:,.1f} sequences, {r.kv_bytes / GB:,.1f} of {r.kv_capacity_bytes / GB:,.1f} GB"
        for r in f.itertuples()]).pivot(index="device", columns="layer", values="text")
    fig = go.Figure(go.Heatmap(z=z.values, x=z.columns, y=z.index, text=hover.values, hoverinfo="text",
                               colorscale="Turbo", colorbar=dict(title="attention<br>DP rank")))
    first = f.iloc[0]
    ffn = f.loc[f["device_role"] == "experts", "device"].unique()
    experts = (f"devices {ffn.min()}-{ffn.max()} (blank) hold the routed experts alone (attention-FFN disaggregated)"
               if len(ffn) else "every device also holds its expert slots")
    fig.update_layout(title=f"Where attention, experts and KV sit ({role}): {int(f['stage'].max()) + 1} stage(s), "
                            f"{int(f['dp_rank'].max()) + 1} DP rank(s) per stage<br><sup>{experts}; KV per attention "
                            f"device {first.kv_bytes / GB:,.1f} of {first.kv_capacity_bytes / GB:,.1f} GB "
                            f"({first.kv_sequences:,.1f} sequences)</sup>",
                      xaxis_title="layer", yaxis_title="device", **_LAYOUT)
    return fig


def _mark_missing(fig: go.Figure, frame: pd.DataFrame, x: str, y: str) -> None:
    """A point without a value (no price, infeasible) stays on the axis, labelled, rather than silently absent."""
    missing = frame[frame[y].isna()]
    if missing.empty:
        return
    why = ["no price" if y.startswith("usd") and row.get("feasible", True) else "infeasible"
           for row in missing.to_dict("records")]
    floor = frame[y].min() if frame[y].notna().any() else 0.0
    fig.add_trace(go.Scatter(x=missing[x], y=[floor] * len(missing), text=why, mode="text", textposition="top center",
                             name="no value", hovertext=[str(r.get("reason") or r.get("price_source") or w)
                                                         for r, w in zip(missing.to_dict("records"), why)]))


def comparison_figure(frame: pd.DataFrame, x: str, y: str = "usd_per_million_output_tokens", color: str | None = None,
                      title: str = "", series: tuple[str, ...] = ()) -> go.Figure:
    """A metric of a sweep or comparison against one varied field: one mark per point, never summed. The points
    that share the values of the other varied fields (`series`) form one series (a line through them where x is a
    number), coloured by `color` where given, else by the series."""
    f = frame.dropna(subset=[y]).copy()
    f[y] = f[y] * display.column(y).scale  # in the unit its label says (TPOT in ms, as the inputs are)
    by = list(dict.fromkeys([*series, *([color] if color else [])]))
    f["series"] = [", ".join(f"{name}={value}" for name, value in zip(by, row)) for row in f[by].itertuples(index=False)] \
        if by else "points"
    numeric_x = f[x].dtype.kind in "if"
    shape = {"line_group": "series", "markers": True} if numeric_x else {"symbol": "series"} if color else {}
    fig = (px.line if numeric_x else px.scatter)(f, x=x, y=y, color=color or "series", title=title, hover_data=by, **shape)
    if not numeric_x:
        fig.update_traces(marker=dict(size=10))
        _mark_missing(fig, frame.assign(**{y: pd.to_numeric(frame[y], errors="coerce") * display.column(y).scale}), x, y)
    fig.update_layout(yaxis_title=display.label(y), xaxis_title=display.label(x) if x in display.COLUMNS else x,
                      showlegend=bool(by), **_LAYOUT)
    return fig


FIGURES = {
    "frontier": frontier_figure,
    "breakdown": breakdown_figure,
    "memory": memory_figure,
    "placement": placement_figure,
    "device_map": device_map_figure,
}
