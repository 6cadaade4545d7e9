"""The moeplan dashboard (`moeplan app`): navigation only. Each page (app/views/) is UI over the notebook API.

The pages live in views/, not pages/: a pages/ folder beside the main script switches Streamlit to its legacy
folder-based navigation, which breaks deep links such as /placement."""

import streamlit as st

st.set_page_config(page_title="moeplan", page_icon=":material/dns:", layout="wide")
st.navigation([
    st.Page("views/planner.py", title="Capacity planner", icon=":material/calculate:", default=True),
    st.Page("views/placement.py", title="Placement", icon=":material/grid_on:"),
    st.Page("views/simulation.py", title="Simulation", icon=":material/timeline:"),
    st.Page("views/hardware.py", title="Hardware comparison", icon=":material/compare_arrows:"),
    st.Page("views/validation.py", title="Validation", icon=":material/fact_check:"),
]).run()
