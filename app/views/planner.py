"""Capacity planner: model, hardware, cluster size, workload (a catalog workload, custom means or an uploaded
request trace), SLOs, price and optional routing statistics -> moeplan.plan: the recommendation, the Pareto
frontier with the chosen point, the step-time breakdown, memory per device and the cost with its inputs.

A spec YAML upload fills the inputs (and plans it); fields without an input here (the rest of serving, other
precision parts) are carried over from it. What this page plans becomes the session's spec, which the other pages study.
"""

from __future__ import annotations

import copy
import json

import streamlit as st
import yaml

import common  # app/common.py: the script folder is on sys.path (`import app` would find app/app.py)
from moeplan import api, display, report
from moeplan.api import InputError
from moeplan.spec import parse_spec

CHECKPOINT = "as the checkpoint"
BEST_COVERED = "best covered"  # no serving.engine: the engine whose measured tables cover the model best
ENGINES = (BEST_COVERED, "sglang", "trtllm", "vllm", "fitted")
SOURCES = ("Catalog workload", "Custom", "Trace file")
DEVICES = common.planned_devices()
BASE_KEY = "planner_base"  # an uploaded spec not planned yet: the fields without an input come from it
PENDING_KEY = "planner_pending"  # plan on this run without a button press (a spec was just uploaded)
UPLOAD_ERROR_KEY = "planner_upload_error"


# ------------------------------------------------------------------------------------------- spec <-> inputs

def _inputs_from_spec(raw: dict) -> None:
    """Set every input's session state from a spec dict (before the inputs are drawn on this run)."""
    s = st.session_state
    cluster = raw["cluster"]
    unit = common.catalog_lists()["units"][cluster["unit"]]
    s.planner_model = raw["model"]
    s.planner_device = unit["device"]
    s.planner_unit = unit["name"]
    s.planner_devices = cluster.get("devices") or cluster["units"] * unit["devices"]
    precision = raw.get("precision") or {}
    s.planner_experts = precision.get("routed_experts", CHECKPOINT)
    s.planner_kv = precision.get("kv_cache", CHECKPOINT)
    s.planner_engine = ((raw.get("serving") or {}).get("engine") or {}).get("name", BEST_COVERED)
    w = raw["workload"]
    named = common.catalog_lists()["workloads"].get(w.get("name"), {})
    shape_overridden = any(w.get(k) is not None for k in ("input_tokens", "output_tokens"))
    s.planner_source = SOURCES[0] if named and not shape_overridden else SOURCES[1]
    s.planner_workload = w["name"] if named else next(iter(common.catalog_lists()["workloads"]))
    s.planner_rate_override = w.get("requests_per_s") if named else None
    s.planner_input_tokens = int(w.get("input_tokens") or named.get("input_tokens") or 1)
    s.planner_output_tokens = int(w.get("output_tokens") or named.get("output_tokens") or 1)
    s.planner_requests_per_s = w.get("requests_per_s") or named.get("requests_per_s")
    s.planner_ttft_s = float(raw["slo"]["ttft_s"])
    s.planner_tpot_ms = float(raw["slo"]["tpot_s"]) * 1e3  # the dashboard shows TPOT in ms
    s.planner_percentile = float(raw["slo"].get("percentile", 99.0))
    s.planner_price = (raw.get("prices") or {}).get(unit["device"])
    s.planner_cloud = common.spec_prices_choice(raw)


def _on_spec_upload() -> None:
    """A spec YAML was uploaded: validate it whole, fill the inputs, and plan it on this run."""
    uploaded = st.session_state.get("planner_spec_upload")
    st.session_state.pop(UPLOAD_ERROR_KEY, None)
    if uploaded is None:
        return
    try:
        raw = common.routing_on_uploads(common.spec_from_upload(common.upload_bytes(uploaded), uploaded.name))
        api.deployment(parse_spec({k: v for k, v in raw.items() if k != "routing"}, uploaded.name))  # names, sizes
        _inputs_from_spec(raw)
    except InputError as e:
        st.session_state[UPLOAD_ERROR_KEY] = str(e)
        return
    st.session_state[BASE_KEY] = raw
    st.session_state[PENDING_KEY] = True


def _on_device_change() -> None:
    """A new device: its first cluster unit, and its catalog price (an override was for the old device)."""
    st.session_state.planner_unit = common.catalog_lists()["devices"][st.session_state.planner_device]["cluster_units"][0]
    st.session_state.planner_price = None


def _spec_from_inputs(base: dict, workload: dict, routing: dict | None, files: common.Files) -> tuple[dict, common.Files]:
    s = st.session_state
    raw = copy.deepcopy(base)
    raw["model"] = s.planner_model
    raw["cluster"] = {"unit": s.planner_unit, "devices": int(s.planner_devices)}
    precision = {k: v for k, v in (raw.get("precision") or {}).items() if k not in ("routed_experts", "kv_cache")}
    for part, key in (("routed_experts", "planner_experts"), ("kv_cache", "planner_kv")):
        if s[key] != CHECKPOINT:
            precision[part] = s[key]
    raw["precision"] = precision
    serving = dict(raw.get("serving") or {})
    engine = serving.pop("engine", None) or {}
    if s.planner_engine != BEST_COVERED:  # the uploaded spec's version stays with its engine
        serving["engine"] = engine if engine.get("name") == s.planner_engine else {"name": s.planner_engine}
    raw["serving"] = serving
    raw["workload"] = workload
    raw["slo"] = {"ttft_s": s.planner_ttft_s, "tpot_s": s.planner_tpot_ms / 1e3, "percentile": s.planner_percentile}
    prices = {k: v for k, v in (raw.get("prices") or {}).items() if k not in (s.planner_device, "cloud")}
    if s.planner_price is not None:
        prices[s.planner_device] = s.planner_price
    if common.cloud_of(s.planner_cloud) is not None:  # prices.cloud: one cloud's rows cost the plan (api.plan's cloud=)
        prices["cloud"] = s.planner_cloud
    raw["prices"] = prices
    raw.pop("routing", None)
    if routing:
        raw["routing"] = routing
    parse_spec(raw, "inputs")  # a bad value is named here, before any search
    return raw, files


# ------------------------------------------------------------------------------------------- inputs

def _workload_inputs() -> dict:
    """The spec's workload from the chosen source; a trace file contributes its means."""
    s = st.session_state
    source = st.radio("Workload", SOURCES, key="planner_source", horizontal=True)
    if source == SOURCES[0]:
        named = common.catalog_lists()["workloads"]
        name = st.selectbox("Catalog workload", list(named), key="planner_workload",
                            help="mean request shape and rate of a public trace (catalogs/workloads.yaml)")
        w = named[name]
        rate = f"{w['requests_per_s']:.3g} requests/s" if w.get("requests_per_s") else "no arrival rate"
        st.caption(f"{w['description']}: {w['input_tokens']:,} in / {w['output_tokens']:,} out tokens, {rate}")
        st.number_input("Requests/s (blank: the workload's)", min_value=0.0, value=None, key="planner_rate_override",
                        format="%.3f")
        return {"name": name} | ({"requests_per_s": s.planner_rate_override} if s.planner_rate_override else {})
    if source == SOURCES[1]:
        c1, c2, c3 = st.columns(3)
        c1.number_input("Input tokens", min_value=1, step=256, key="planner_input_tokens")
        c2.number_input("Output tokens", min_value=1, step=64, key="planner_output_tokens")
        c3.number_input("Requests/s", min_value=0.0, value=None, key="planner_requests_per_s", format="%.3f",
                        help="blank: no traffic volume, the planner sizes one instance")
        return {"input_tokens": int(s.planner_input_tokens), "output_tokens": int(s.planner_output_tokens)} | (
            {"requests_per_s": s.planner_requests_per_s} if s.planner_requests_per_s else {})
    uploads = st.file_uploader(
        "Request trace: Mooncake JSONL, Azure or BurstGPT CSV, length CSV, or a ServeGen chunk's two files", accept_multiple_files=True,
        type=["jsonl", "json", "csv"], max_upload_size=common.MAX_UPLOAD_MB, key="planner_trace")
    rate = st.number_input("Requests/s for a length-only CSV (traces with times keep theirs)", min_value=0.0, value=None,
                           key="planner_trace_rate", format="%.3f")
    if not uploads:
        raise InputError("workload", "no trace uploaded", "upload a request trace, or pick a catalog or custom workload")
    trace = common.trace(tuple((u.name, u.getvalue()) for u in uploads), rate or None)  # the reader limits the size
    workload = common.trace_workload(trace)
    st.caption(f"{len(trace):,} requests over {trace.duration_s:,.0f} s: mean {workload['input_tokens']:,} in / "
               f"{workload['output_tokens']:,} out tokens, {workload['requests_per_s']:.3g} requests/s ({trace.source})")
    return {k: v for k, v in workload.items() if v}


def _routing_inputs(base: dict) -> tuple[dict | None, common.Files]:
    """Routing statistics: uploaded files and how to use them; without uploads, the base spec's routing with
    the files planned before (the placement is then fitted and scored on them)."""
    uploads = st.file_uploader("Expert routing statistics (EPLB/SGLang logical_count JSON, SGLang CSV or .pt dump, moeplan "
                               "loads JSON, per-token JSONL, OLMoE .pkl)", type=common.ROUTING_TYPES,
                               accept_multiple_files=True, max_upload_size=common.MAX_UPLOAD_MB,
                               key="planner_routing")
    if not uploads:
        names = common.routing_names(base)
        if names:
            st.caption(f"the spec places experts on {', '.join(names)}")
        kept = tuple((n, b) for n, b in common.current_spec()[1] if n in names)
        return base.get("routing"), kept
    files = tuple((common.safe_name(u.name), common.upload_bytes(u)) for u in uploads)
    names = [n for n, _ in files]
    evaluate = st.selectbox("Score on (today's traffic)", names, key="planner_routing_evaluate")
    fit = st.multiselect("Place on (yesterday's windows; none: in sample)", [n for n in names if n != evaluate],
                         key="planner_routing_fit")
    method = st.radio("Placement", ["ilp", "eplb"], horizontal=True, key="planner_routing_method",
                      help="the robust ILP (HiGHS) or deepseek-ai/EPLB's greedy policy")
    limit = st.number_input("Time limit per placement solve (s)", min_value=0.5, value=2.0, key="planner_routing_limit")
    return {"decode": {"evaluate": evaluate, "fit": fit}, "placement": method, "time_limit_s": limit}, files


def _inputs(base: dict) -> tuple[dict, common.Files] | None:
    """Draw the inputs; returns the spec they describe when Plan is pressed (or a spec was just uploaded)."""
    s = st.session_state
    with st.expander("Load a spec YAML"):
        st.file_uploader("Spec YAML", type=["yaml", "yml"], max_upload_size=common.MAX_UPLOAD_MB,
                         key="planner_spec_upload", on_change=_on_spec_upload)
        if UPLOAD_ERROR_KEY in s:
            st.error(s[UPLOAD_ERROR_KEY], icon=":material/error:")
    lists = common.catalog_lists()
    st.selectbox("Model", list(lists["models"]), key="planner_model")
    st.selectbox("Device", DEVICES, key="planner_device", on_change=_on_device_change)
    device = lists["devices"][s.planner_device]
    st.selectbox("Cluster unit", device["cluster_units"], key="planner_unit")
    unit = lists["units"][s.planner_unit]
    choices = common.price_choices()
    st.selectbox("Prices", list(choices), key="planner_cloud",
                 help="the price rows that cost the plan: the default rows, or one cloud's (a device it does not "
                      "offer has no price there)")
    st.caption(choices[s.planner_cloud])
    c1, c2 = st.columns(2)
    c1.number_input("Devices", min_value=1, step=unit["devices_per_node"], key="planner_devices",
                    help=f"a whole number of {unit['name']} nodes of {unit['devices_per_node']}")
    priced = common.device_prices(s.planner_cloud)[s.planner_device]
    listed = priced["price_usd_per_hour"]
    c2.number_input("USD/device-h", min_value=0.0, value=None, key="planner_price", format="%.2f",
                    placeholder=f"{listed:.2f}" if listed is not None else "none",
                    help=(f"blank: {listed:.2f} ({priced['price_basis']}, {priced['price_date']}: {priced['price_source']})"
                          if listed is not None else
                          f"{priced['price_searched'] or priced['price_source']}: without a price the plan has no cost"))
    st.selectbox("Routed experts", [CHECKPOINT, *lists["formats"]["weights"]], key="planner_experts",
                 help="the number format of the routed experts' weights")
    st.selectbox("KV cache", [CHECKPOINT, *lists["formats"]["kv_cache"]], key="planner_kv")
    st.selectbox("Serving engine", ENGINES, key="planner_engine",
                 help="whose measured kernel tables price the operators (the moeplan[measured] extra): best covered "
                      "picks the engine whose tables measure the most of the model on the device; fitted: the "
                      "fitted kernel models, no engine's tables or overheads")
    workload, workload_error = None, None
    try:
        workload = _workload_inputs()
    except InputError as e:
        workload_error = e
        st.error(str(e), icon=":material/error:")
    st.markdown("**Service-level objectives**")
    c1, c2, c3 = st.columns(3)
    c1.number_input("TTFT (s)", min_value=0.0, step=0.5, key="planner_ttft_s")
    c2.number_input("TPOT (ms)", min_value=0.0, step=5.0, key="planner_tpot_ms")
    c3.number_input("Percentile", min_value=0.0, max_value=100.0, step=1.0, key="planner_percentile")
    with st.expander("Routing statistics (optional)"):
        routing, files = _routing_inputs(base)
    pressed = st.button("Plan", type="primary", key="planner_plan", width="stretch")
    if not (pressed or s.pop(PENDING_KEY, False)):
        return None
    if workload_error is not None:  # its message is beside the input already: here, only why nothing planned
        raise InputError("Workload", f"cannot plan with the workload's error ({workload_error.field})",
                         "fix the workload in the sidebar, or pick a catalog workload")
    return _spec_from_inputs(base, workload, routing, files)


# ------------------------------------------------------------------------------------------- results

def _show(plan) -> None:
    result = plan.plan
    r = result.recommendation
    if r is None:  # a model that does not fit is an error in the inputs, an SLO miss a finding
        show = st.error if report.verdict(result) == "Does not fit" else st.warning
        show(report.headline_text(result), icon=":material/warning:")
    else:
        st.success(report.headline_text(result), icon=":material/check_circle:")
        cols = st.columns(6)
        cols[0].metric("Devices", r.devices, help=f"{r.mode}: {r.devices} x {result.deployment.cluster.device.name}")
        cols[1].metric("TPOT", f"{r.tpot_s * 1e3:.1f} ms", help=f"SLO {result.deployment.slo.tpot_s * 1e3:g} ms")
        cols[2].metric("TTFT", f"{r.ttft_s:.2f} s", help=f"SLO {result.deployment.slo.ttft_s:g} s")
        # a low utilisation is why a cost per token can look high: the card says so before the cost cards
        full = "" if r.usd_per_million_output_at_capacity is None else \
            f"; when full, USD {r.usd_per_million_output_at_capacity:,.3f} per million output tokens"
        cols[3].metric("Utilisation", f"{r.utilization:.0%}", help=f"{report.utilization_text(r)}{full}")
        for col, label, usd in ((cols[4], "output", r.usd_per_million_output), (cols[5], "input", r.usd_per_million_input)):
            col.metric(f"USD/M {label}", "no price" if usd is None else f"{usd:,.3f}", help=f"USD per million {label} tokens")
    names = ["Frontier"] * bool(result.frontier) + ["Step time", "Memory", "Cost", "Options"] * bool(r) + ["Assumptions"]
    tabs = dict(zip(names, st.tabs(names)))
    if "Frontier" in tabs:
        with tabs["Frontier"]:
            st.plotly_chart(plan.figure("frontier"), key="planner_frontier")
            common.table(plan.to_frame("frontier"))
    if r is not None:
        with tabs["Step time"]:
            st.plotly_chart(plan.figure("breakdown"), key="planner_breakdown")
            if r.prefill is None:
                st.caption("An aggregated instance's TPOT is longer than its decode step: each output token also carries "
                           "its share of the prefill steps the instance runs between decode steps.")
        with tabs["Memory"]:
            st.plotly_chart(plan.figure("memory"), key="planner_memory")
            common.table(plan.to_frame("memory"))
        with tabs["Cost"]:
            st.table(display.quantities(plan.to_frame("cost")), hide_index=True)
        with tabs["Options"]:
            st.caption("The recommendation (rank 0) and the next-cheapest deployments that meet the SLOs")
            common.text_table(display.options(plan.to_frame("recommendation")))
    with tabs["Assumptions"]:
        st.caption(f"{result.candidates_scored:,} candidates scored in {result.seconds:.2f} s")
        st.markdown("\n".join(f"- {a}" for a in result.assumptions))
    c1, c2 = st.columns(2)
    c1.download_button("plan.json", json.dumps(plan.to_json(), indent=1, default=float), "plan.json", "application/json")
    raw, _ = common.current_spec()
    c2.download_button("spec.yaml", yaml.safe_dump(raw, sort_keys=False), "spec.yaml", "application/yaml")


# ------------------------------------------------------------------------------------------- page

st.title("Capacity planner")
requested, error = None, None
with st.sidebar:  # the inputs beside the navigation: the results get the page's width
    st.header("Deployment", divider="gray")
    if "planner_model" not in st.session_state:  # first visit, or back from another page: show the session's spec
        _inputs_from_spec(common.current_spec()[0])
    try:
        requested = _inputs(st.session_state.get(BASE_KEY) or common.current_spec()[0])
    except InputError as e:
        error = e
with common.shown_errors():
    if error is not None:
        raise error  # shown where the result would be, instead of a result of other inputs
    raw, files = requested or common.current_spec()
    with st.spinner("Searching layouts..."):
        planned = common.plan(raw, files)
    common.set_current_spec(raw, files)
    st.session_state.pop(BASE_KEY, None)
    _show(planned)
