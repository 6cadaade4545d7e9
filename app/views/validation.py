"""Validation: moeplan.validate rebuilds published deployments from moeplan's own catalogs and shows
predicted vs published, with every input it had to assume; an uploaded deployments YAML is validated alike."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

import common  # app/common.py: the script folder is on sys.path (`import app` would find app/app.py)
from moeplan import api


def _frame(rows) -> pd.DataFrame:
    return pd.DataFrame([{"scenario": r.id, "metric": r.metric.replace("_", " "), "published": r.published,
                          "predicted": r.predicted, "error": r.error, "not modelled": r.reason or None,
                          "assumptions": "; ".join(r.assumptions), "source": r.source} for r in rows])


st.title("Validation: predicted vs published")
st.caption(f"Published deployments ({api.DEFAULT_DEPLOYMENTS.name}, each with its source) rebuilt from moeplan's catalogs; "
           "inputs a source does not state are completed as a serving engine would run them and listed. "
           "No constant is tuned to these rows.")
with common.shown_errors():
    upload = st.file_uploader("Your own deployments YAML (same schema; blank: the published set)", type=["yaml", "yml"],
                              max_upload_size=common.MAX_UPLOAD_MB, key="validation_upload")
    with st.spinner("Rebuilding the deployments..."):
        rows = common.validate(common.upload_bytes(upload), upload.name) if upload else common.validate()
    s = api.validation_summary(rows)
    c = st.columns(4)
    c[0].metric("Scenarios", s["scenarios"])
    c[1].metric("Modelled", s["modelled"])
    c[2].metric("Median |error|", "n/a" if s["median_abs_error"] is None else f"{s['median_abs_error']:.1%}")
    c[3].metric("Max |error|", "n/a" if s["max_abs_error"] is None else f"{s['max_abs_error']:.1%}")
    frame = _frame(rows)
    modelled = frame.dropna(subset=["error"])
    if not modelled.empty:
        fig = px.bar(modelled, x="scenario", y="error", hover_data=["metric", "published", "predicted"],
                     title="Prediction error per scenario ((predicted - published) / published)")
        fig.update_layout(template="plotly_white", yaxis_tickformat=".0%", xaxis_title="", yaxis_title="error")
        st.plotly_chart(fig, key="validation_errors")
    st.dataframe(frame, hide_index=True, key="validation_table", column_config={
        "published": st.column_config.NumberColumn(format="localized"),
        "predicted": st.column_config.NumberColumn(format="localized"),
        "error": st.column_config.NumberColumn(format="percent"),
    })
