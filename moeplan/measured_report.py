"""`moeplan validate --measured FILE.csv -o DIR`: report.html, summary.md and rows.csv of measured deployments
predicted, beside the peer's (AIConfigurator's own estimate, where the file has one).

The report leads with the error over all rows and by engine and mode, then predicted against measured TPOT and
TTFT on log axes (one point per row, the peer's beside it), then every row with its reason where it is not
modelled. Errors are |predicted / measured - 1|, as `validate --measured` prints them.
"""

from __future__ import annotations

import html

import pandas as pd
import plotly.graph_objects as go

from moeplan.report import html_page, markdown_table

_COLUMNS = ("group", "rows", "modelled", "coverage", "moeplan_tpot_median", "peer_tpot_median", "moeplan_ttft_median",
            "peer_ttft_median", "peer_modelled")  # moeplan.display names them in words


def _groups(summary: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([{key: g.get(key) for key in _COLUMNS} for g in summary])


def _pct(x) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def _headline(g: dict) -> str:
    """The all-rows medians in one sentence."""
    if not g:
        return "No rows."
    return (f"Median |error| over the {g['modelled']} rows modelled: TPOT {_pct(g['moeplan_tpot_median'])}, TTFT "
            f"{_pct(g['moeplan_ttft_median'])}; the peer's on the {g['peer_modelled']} rows it estimated: TPOT "
            f"{_pct(g['peer_tpot_median'])}, TTFT {_pct(g['peer_ttft_median'])}.")


def rows_frame(rows) -> pd.DataFrame:
    return pd.DataFrame([{"id": r.id, "model": r.model, "system": r.system, "engine": r.engine, "mode": r.mode,
                          "measured_ttft_s": r.measured_ttft_s, "predicted_ttft_s": r.predicted_ttft_s,
                          "peer_ttft_s": r.peer_ttft_s, "measured_tpot_s": r.measured_tpot_s,
                          "predicted_tpot_s": r.predicted_tpot_s, "peer_tpot_s": r.peer_tpot_s,
                          "not_modelled_because": r.reason} for r in rows])


def _scatter(frame: pd.DataFrame, metric: str) -> go.Figure:
    fig = go.Figure()
    for who, column in (("moeplan", f"predicted_{metric}_s"), ("peer (AIConfigurator)", f"peer_{metric}_s")):
        for engine, part in frame.dropna(subset=[column, f"measured_{metric}_s"]).groupby("engine"):
            fig.add_trace(go.Scatter(x=part[f"measured_{metric}_s"], y=part[column], mode="markers",
                                     name=f"{who}: {engine}", text=part["id"],
                                     marker={"symbol": "circle" if who == "moeplan" else "x", "size": 6, "opacity": 0.7}))
    values = frame[[f"measured_{metric}_s", f"predicted_{metric}_s"]].stack()
    values = values[values > 0]
    if len(values):
        lo, hi = float(values.min()) / 1.5, float(values.max()) * 1.5
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="predicted = measured",
                                 line={"color": "#888", "dash": "dash"}))
    fig.update_layout(xaxis={"title": f"measured {metric.upper()} (s)", "type": "log"},
                      yaxis={"title": f"predicted {metric.upper()} (s)", "type": "log"}, height=520,
                      legend={"font": {"size": 10}})
    return fig


def measured_report(source: str, rows, summaries: dict[str | None, list[dict]]) -> dict[str, str]:
    """summaries: api.measured_summary(rows, by) for by in None, engine, mode, ... (the groups to show)."""
    frame = rows_frame(rows)
    overall = summaries[None][0] if summaries.get(None) else {}
    title = f"Measured deployments: {source}"
    subtitle = (f"{overall.get('modelled', 0)} of {overall.get('rows', 0)} rows modelled; errors are |predicted / "
                "measured - 1|, moeplan calibrated on kernel tables only (no end-to-end row fitted)")
    sections = [(f"By {by or 'all rows'}", "", None, _groups(s)) for by, s in summaries.items()]
    sections += [("TPOT: predicted against measured", "One point per row: circles moeplan's, crosses the peer's own estimate.",
                  _scatter(frame, "tpot"), None),
                 ("TTFT: predicted against measured", "", _scatter(frame, "ttft"), None),
                 ("Every row", "Seconds; a row moeplan does not model says why.", None, frame)]
    lead = f'<div class="summary"><p>{html.escape(_headline(overall))}</p></div>'
    md = [f"# {title}", "", subtitle + ".", "", _headline(overall), ""]
    for by, s in summaries.items():
        md += [f"## By {by or 'all rows'}", "", markdown_table(_groups(s))]
    return {"report.html": html_page(title, subtitle, sections, lead=lead), "summary.md": "\n".join(md),
            "rows.csv": frame.to_csv(index=False)}
