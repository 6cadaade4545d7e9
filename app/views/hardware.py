"""Hardware comparison: moeplan.api.compare plans the session's spec (same model, workload and SLOs) on each chosen
device, on the spec's device count in whole nodes or as many as the workload needs, every device costed by the
chosen price rows (one cloud's, or the default rows); a chart of one metric, the price warnings, the table of every
point, and why a device fails."""

from __future__ import annotations

import streamlit as st

import common  # app/common.py: the script folder is on sys.path (`import app` would find app/app.py)
from moeplan import display

DEVICES = common.planned_devices()
DEFAULT = ("h200-sxm", "b200-sxm", "gb200", "ascend-910c")
TABLE = ("device", "devices", "sized", "mode", "decode_layout", "batch_per_device", "ttft_s", "tpot_s",
         "output_tokens_per_s_per_device", "utilization", "usd_per_device_hour", "usd_per_hour", "usd_per_million_input_tokens",
         "usd_per_million_output_tokens", "usd_per_million_output_tokens_at_capacity")
METRICS = ("usd_per_million_output_tokens", "usd_per_million_input_tokens", "output_tokens_per_s_per_device",
           "tpot_s", "ttft_s", "devices", "usd_per_hour")

st.title("Hardware comparison")
raw, files = common.current_spec()
st.caption(common.spec_caption(raw))
choices = common.price_choices()
with st.form("hardware_form"):
    devices = st.multiselect("Devices", DEVICES, default=[d for d in DEFAULT if d in DEVICES], key="hardware_devices")
    prices = st.selectbox("Prices", list(choices), index=list(choices).index(common.spec_prices_choice(raw)),
                          key="hardware_cloud",
                          help="one cloud's rows cost every device, so the comparison compares hardware at one "
                               "provider's prices (a device it does not offer has no price); or the default rows: "
                               + "; ".join(f"{name}: {what}" for name, what in choices.items()))
    metric = st.selectbox("Chart", METRICS, format_func=display.label, key="hardware_metric")
    st.form_submit_button("Compare", type="primary")
with common.shown_errors():
    if not devices:
        st.info("Choose at least one device.")
    else:
        with st.spinner(f"Planning on {len(devices)} devices..."):
            sweep = common.compare(raw, files, tuple(devices), prices)
        st.plotly_chart(sweep.figure(y=metric), key="hardware_chart")
        for warning in sweep.warnings:
            st.warning(warning, icon=":material/price_change:")
        frame = sweep.to_frame()
        infeasible = frame[~frame["feasible"]]
        for _, row in infeasible.iterrows():
            st.warning(f"{row['device']}: {row['reason']}", icon=":material/warning:")
        feasible = frame[frame["feasible"]]
        if not feasible.empty:  # the others are the warnings above; prices and their sources are in the cost warnings
            common.text_table(feasible[[c for c in TABLE if c in feasible]])
