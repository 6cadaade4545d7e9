"""Validation: moeplan.validate rebuilds published deployments from moeplan's own catalogs and shows
predicted vs published, with every input it had to assume; an uploaded deployments YAML is validated alike."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

import common  # app/common.py: the script folder is on sys.path (`import app` would find app/app.py)
from moeplan import api


def _number(v: float | None) -> str:
    """A published or predicted figure: whole numbers from 100 up, 3 significant digits below."""
    return "" if v is None else f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def _percent(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def _frame(rows) -> pd.DataFrame:
    """One line per scenario; what it assumed and its source are listed below the table (long text)."""
    return pd.DataFrame([{"Scenario": r.id, "Metric": r.metric.replace("_", " "), "Published": _number(r.published),
                          "Predicted": _number(r.predicted), "Error": "" if r.error is None else f"{r.error:+.1%}",
                          "Not modelled because": r.reason} for r in rows])


st.title("Validation: predicted vs published")
st.caption("Published deployments (each with its source) rebuilt from moeplan's catalogs; "
           "inputs a source does not state are completed as a serving engine would run them and listed. "
           "No constant is tuned to these rows.")
with common.shown_errors():
    published = st.selectbox("Published set", [p.name for p in api.PUBLISHED_SETS], key="validation_set",
                             help=f"{api.PUBLISHED_SETS[0].name}: moeplan's validation set; "
                                  f"{api.PUBLISHED_SETS[1].name}: TensorRT-LLM's perf-overview runs "
                                  "../shared/data's copy leaves out")
    upload = st.file_uploader("Your own deployments YAML (same schema; blank: the published set)", type=["yaml", "yml"],
                              max_upload_size=common.MAX_UPLOAD_MB, key="validation_upload")
    with st.spinner("Rebuilding the deployments..."):
        rows = common.validate(common.upload_bytes(upload), upload.name) if upload else common.validate(name=published)
    s = api.validation_summary(rows)
    c = st.columns(4)
    c[0].metric("Scenarios", s["scenarios"])
    c[1].metric("Modelled", s["modelled"])
    c[2].metric("Median |error|", "n/a" if s["median_abs_error"] is None else f"{s['median_abs_error']:.1%}")
    c[3].metric("Max |error|", "n/a" if s["max_abs_error"] is None else f"{s['max_abs_error']:.1%}")
    modelled = [r for r in rows if r.error is not None]
    if modelled:
        errors = pd.DataFrame([{"scenario": r.id, "error": r.error, "metric": r.metric.replace("_", " "),
                                "published": r.published, "predicted": r.predicted} for r in modelled])
        fig = px.bar(errors, x="scenario", y="error", hover_data=["metric", "published", "predicted"],
                     title="Prediction error per scenario ((predicted - published) / published)")
        fig.update_layout(template="plotly_white", yaxis_tickformat=".0%", xaxis_title="", yaxis_title="error")
        st.plotly_chart(fig, key="validation_errors")
    st.table(_frame(rows), hide_index=True)
    with st.expander("What each scenario assumed, and its source"):
        st.markdown("\n".join(f"- **{r.id}** ({r.source}): {'; '.join(r.assumptions) or 'nothing assumed'}" for r in rows))


st.header("Measured deployments")
st.caption("A measured-deployments CSV in the columns of NVIDIA AIConfigurator's silicon results (model, system, engine "
           "and version, formats, layout, concurrency, lengths, measured TTFT and TPOT), e.g. ../shared/data/measured/"
           "aic-silicon-moe.csv: every row rebuilt on its engine's kernel tables and predicted, beside AIConfigurator's "
           "own estimate where the file has one (`moeplan validate --measured FILE -o DIR` writes the same as a report).")
with common.shown_errors():
    measured = st.file_uploader("Measured deployments CSV", type=["csv"], max_upload_size=common.MAX_UPLOAD_MB,
                                key="measured_upload")
    if measured:
        with st.spinner("Predicting every row..."):
            rows, summaries = common.validate_measured(common.upload_bytes(measured), measured.name)
        overall = summaries[None][0]
        c = st.columns(4)
        c[0].metric("Rows modelled", f"{overall['modelled']} of {overall['rows']}")
        c[1].metric("TPOT median |error|", _percent(overall["moeplan_tpot_median"]),
                    help=f"the peer's: {_percent(overall['peer_tpot_median'])} on its {overall['peer_modelled']} rows")
        c[2].metric("TTFT median |error|", _percent(overall["moeplan_ttft_median"]),
                    help=f"the peer's: {_percent(overall['peer_ttft_median'])}")
        c[3].metric("Peer's rows", overall["peer_modelled"])
        for by in ("engine", "mode", "system"):
            st.subheader(f"By {by}")
            st.table(pd.DataFrame([{by: g["group"], "rows": g["rows"], "modelled": g["modelled"],
                                    "TPOT median |error|": _percent(g["moeplan_tpot_median"]),
                                    "peer TPOT": _percent(g["peer_tpot_median"]),
                                    "TTFT median |error|": _percent(g["moeplan_ttft_median"]),
                                    "peer TTFT": _percent(g["peer_ttft_median"])} for g in summaries[by]]), hide_index=True)
        frame = api.measured_frame(rows).dropna(subset=["predicted_tpot_s", "measured_tpot_s"])
        fig = px.scatter(frame, x="measured_tpot_s", y="predicted_tpot_s", color="engine", symbol="mode", hover_name="id",
                         log_x=True, log_y=True, title="TPOT: predicted against measured (s)")
        fig.update_layout(template="plotly_white")
        st.plotly_chart(fig, key="measured_tpot")
