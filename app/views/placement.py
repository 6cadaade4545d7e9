"""Placement: where the session plan's attention (pipeline stage, DP and TP rank), experts and KV sit, device by
layer; its expert load per device and MoE layer (heatmap) and its imbalance per layer; then contiguous vs EPLB vs the robust ILP (moeplan.api.compare_placements) on uploaded routing statistics in any
format the CLI reads."""

from __future__ import annotations

import json

import pandas as pd
import plotly.express as px
import streamlit as st

import common  # app/common.py: the script folder is on sys.path (`import app` would find app/app.py)
from moeplan import figures


def _device_map(plan) -> None:
    """Where the recommendation's attention, experts and KV sit, device by layer, per role."""
    roles = list(dict.fromkeys(plan.to_frame("device_map")["role"]))
    if not roles:
        return
    role = st.radio("Role", roles, horizontal=True, key="device_map_role") if len(roles) > 1 else roles[0]
    st.plotly_chart(plan.figure("device_map", role=role), key="placement_device_map")


def _plan_load(plan) -> None:
    """The recommendation's expert load as the planner scored it, per role."""
    frame = plan.to_frame("placement")
    if frame.empty:
        st.info("No expert load to show: the plan has no recommendation or the model has no routed experts.")
        return
    role = st.radio("Role", list(dict.fromkeys(frame["role"])), horizontal=True, key="placement_role")
    frame = frame[frame["role"] == role]
    st.plotly_chart(plan.figure("placement", role=role), key="placement_heatmap")
    # busiest device over the mean device of each layer (relative_load is already load / mean)
    per_layer = frame.groupby("layer", as_index=False)["relative_load"].max().rename(columns={"relative_load": "imbalance"})
    fig = px.line(per_layer, x="layer", y="imbalance", markers=True, title="Imbalance per MoE layer: busiest device / mean")
    fig.update_layout(template="plotly_white", xaxis_title="layer", yaxis_title="busiest / mean",
                      yaxis_rangemode="tozero")  # a flat 1.0 (uniform load) reads as balanced, not as noise
    st.plotly_chart(fig, key="placement_imbalance")
    rec = plan.to_json()["recommendation"]
    chosen = rec["prefill"] if role == "prefill" else rec["decode"]
    if chosen["placement"]["experts"] is None:
        st.caption(f"Expert load: {frame['source'].iloc[0]}. Add routing statistics on the Capacity planner page "
                   "to place experts on measured loads.")
        return
    p = chosen["placement"]["experts"]
    st.caption(f"{p['method']} placement on {p['devices']} devices ({p['slots_per_device']} slots each), fitted on "
               f"{', '.join(p['fit_on'])}, scored on {p['evaluated_on']}" + (f"; {p['mapping']}" if p["mapping"] else ""))
    common.text_table(pd.DataFrame([{k: p[k] for k in ("mean_imbalance", "worst_layer_imbalance", "objective", "lp_bound",
                                                        "gap", "solver", "seconds")}]))
    st.download_button("expert_location.json (SGLang --init-expert-location)",
                       json.dumps({"physical_to_logical_map": p["phy2log"]}), "expert_location.json", "application/json")


def _comparison(plan) -> None:
    st.caption("Each method places the experts on the fit windows (yesterday's statistics) and is scored on the "
               "evaluation file (today's) under SGLang's runtime rule: a replicated expert's tokens split evenly. "
               "Step cost = sum over layers of the busiest device's load over the mean device's.")
    fit = st.file_uploader("Fit on (one or more files, each file's windows summed)", type=common.ROUTING_TYPES,
                           accept_multiple_files=True, max_upload_size=common.MAX_UPLOAD_MB, key="placement_fit")
    evaluate = st.file_uploader("Evaluate on (blank: in sample, on the fit windows)", type=common.ROUTING_TYPES,
                                max_upload_size=common.MAX_UPLOAD_MB, key="placement_evaluate")
    r = plan.recommendation
    layout = r.decode.layout if r is not None else None
    c = st.columns(4)
    ep = c[0].number_input("EP devices", min_value=1, value=layout.ep if layout else 8, key="placement_ep")
    redundant = c[1].number_input("Redundant slots", min_value=0, value=layout.redundant_experts if layout else 0,
                                  key="placement_redundant")
    # eight devices a node where that divides the group, else the nearest node count that does (EP 44: 4 nodes)
    nodes_default = next(n for n in range(max(1, ep // 8), 0, -1) if ep % n == 0)
    nodes = c[2].number_input("Nodes", min_value=1, value=nodes_default, key="placement_nodes",
                              help="EPLB's hierarchical policy packs expert groups per node")
    limit = c[3].slider("ILP time limit (s)", 1, 60, 5, key="placement_limit")
    if not st.button("Compare placements", type="primary", key="placement_run"):
        return
    fit_files = tuple((u.name, u.getvalue()) for u in fit or ())  # the reader limits the size
    eval_files = ((evaluate.name, evaluate.getvalue()),) if evaluate else ()
    with st.spinner(f"Placing (the ILP runs up to {limit} s)..."):
        result = common.compare_placements(fit_files, eval_files, int(ep), int(redundant), int(nodes), float(limit))
    methods = pd.DataFrame([{"method": name} | m for name, m in result["methods"].items()])
    st.plotly_chart(figures.comparison_figure(methods, "method", "step_cost", title="Step cost by method"),
                    key="placement_methods")
    common.table(methods)
    st.caption(f"ILP: objective {result['objective']:.4f} on the fit windows, proven lower bound {result['lp_bound']:.4f} "
               f"(gap {result['gap']:.2%}), {result['solver']}; {result['notes']}")
    st.download_button("expert_location.json (the ILP's, SGLang --init-expert-location)",
                       json.dumps(result["expert_location"]), "expert_location.json", "application/json")


st.title("Expert placement")
raw, files = common.current_spec()
st.caption(common.spec_caption(raw))
with common.shown_errors():
    with st.spinner("Planning..."):
        planned = common.plan(raw, files)
    st.subheader("Where attention, experts and KV sit")
    _device_map(planned)
    st.subheader("The plan's expert load")
    _plan_load(planned)
    st.subheader("Contiguous vs EPLB vs ILP on your routing statistics")
    _comparison(planned)
