"""What the dashboard pages share: the session's spec, cached calls into the notebook API, size-limited
uploads parsed with the safe loaders (traces and routing statistics straight from their bytes; the spec's
routing files from a temporary folder the spec resolves against), and bad input shown as one line in the page.

The session's spec is the last one the Capacity planner page planned (the built-in example until then):
the other pages study that deployment. Every computation goes through `moeplan`'s notebook API; results
are cached by the plain spec dict and the uploaded files' bytes, so revisiting a page costs nothing.
"""

from __future__ import annotations

import contextlib
import copy
import re
import tempfile
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
import pandas as pd
import streamlit as st
import yaml

import moeplan
import moeplan.api
from moeplan import display
from moeplan.api import InputError, KVPolicy, RequestTrace, Router, SimConfig
from moeplan.spec import example_path, parse_spec, spec_yaml

MAX_UPLOAD_MB = 50  # st.file_uploader(max_upload_size=...) enforces it in the browser; upload_bytes() and the readers' max_bytes here
MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * 2**20
SPEC_KEY = "spec"  # session_state: the spec dict last planned
FILES_KEY = "spec_files"  # session_state: the routing statistics files (Files) that spec names

Files = tuple[tuple[str, bytes], ...]  # hashable {name: bytes}, what the cached functions take
ROUTING_TYPES = ["json", "csv", "jsonl", "pt", "pth", "pkl", "pickle"]  # one-file routing formats (not a TensorRT-LLM folder)
UPLOADED_FOLDER = "uploaded files"  # what a trace of several uploads (a ServeGen chunk's two files) is called


# ------------------------------------------------------------------------------------------- errors

@contextlib.contextmanager
def shown_errors() -> Iterator[None]:
    """Bad input (InputError: a spec field, a catalog name, a file) becomes one line in the page, never a traceback."""
    try:
        yield
    except InputError as e:
        st.error(str(e), icon=":material/error:")


# ------------------------------------------------------------------------------------------- tables

def table(frame: pd.DataFrame, key: str | None = None) -> None:
    """A moeplan frame as an interactive table a person reads (moeplan.display.readable): columns in words with
    their units, numbers rounded and thousands separated, as wide as the page."""
    shown = display.readable(frame)
    numbers = {c: st.column_config.NumberColumn(format="localized") for c in shown if shown[c].dtype.kind in "iuf"}
    st.dataframe(shown, hide_index=True, width="stretch", column_config=numbers, key=key)


def text_table(frame: pd.DataFrame) -> None:
    """A short moeplan frame as a static table (moeplan.display.text_frame) whose long headers and cells wrap:
    every column in view, for tables wider than an interactive grid shows without scrolling."""
    st.table(display.text_frame(frame), hide_index=True)


# ------------------------------------------------------------------------------------------- uploads

def upload_bytes(uploaded) -> bytes:
    """The bytes of an st.file_uploader file, refused over MAX_UPLOAD_MB (the widget's own limit can be
    configured away; this one cannot). Traces and routing statistics skip it: their readers refuse a file
    over the same limit (max_bytes), naming it."""
    data = uploaded.getvalue()
    if len(data) > MAX_UPLOAD_BYTES:
        raise InputError(uploaded.name, f"is {len(data) / 2**20:.1f} MB, over the dashboard's {MAX_UPLOAD_MB} MB limit",
                         "upload a smaller file, or use the moeplan command on the full file")
    return data


def safe_name(name: str) -> str:
    """A file name that stays inside the temporary folder: the last path part, no leading dots, plain characters."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", Path(name).name).lstrip(".") or "upload"


@contextlib.contextmanager
def temp_files(files: Mapping[str, bytes]) -> Iterator[Path]:
    """A temporary folder holding `files` under their safe names, removed afterwards: a spec names its routing
    files by path (relative to its folder), and the deployments validator reads a path."""
    with tempfile.TemporaryDirectory(prefix="moeplan-app-") as folder:
        for name, data in files.items():
            (Path(folder) / safe_name(name)).write_bytes(data)
        try:
            yield Path(folder)
        except InputError as e:  # name the upload, not the temporary folder the loader read it from
            raise InputError(*(part.replace(f"{folder}/", "") for part in (e.field, e.problem, e.fix))) from None


def spec_from_upload(data: bytes, name: str = "uploaded spec") -> dict:
    """A spec dict from uploaded YAML bytes: moeplan.spec.spec_yaml (bounded: no alias bomb, duplicate key or deep
    nesting), then the spec's own validation (moeplan.parse_spec).

    The dashboard plans catalog models only: a config.json path would be a file on the server, not the user's."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(name, "is not UTF-8 text", "upload a spec YAML") from None
    raw = spec_yaml(text, name)
    spec = parse_spec(raw, name)
    models = list(catalog_lists()["models"])
    if spec.model not in models:
        raise InputError(f"{name}: model", f"'{spec.model}' is not a catalog model",
                         f"one of {', '.join(models)} (plan a config.json with `moeplan plan`)")
    return raw


def routing_on_uploads(raw: dict) -> dict:
    """The spec with every routing statistics path replaced by its safe file name: in the dashboard those
    files are uploads, written into the temporary folder the spec resolves against."""
    routing = raw.get("routing")
    if not routing:
        return raw
    out = copy.deepcopy(raw)
    for phase in ("decode", "prefill"):
        files = out["routing"].get(phase)
        if isinstance(files, dict):
            if isinstance(files.get("evaluate"), str):
                files["evaluate"] = safe_name(files["evaluate"])
            if isinstance(files.get("fit"), list):
                files["fit"] = [safe_name(f) if isinstance(f, str) else f for f in files["fit"]]
    return out


def routing_names(raw: dict) -> list[str]:
    """The routing statistics files a spec names (evaluate and fit, every phase)."""
    names = []
    for phase in ("decode", "prefill"):
        files = (raw.get("routing") or {}).get(phase) or {}
        names += [files["evaluate"]] if files.get("evaluate") else []
        names += list(files.get("fit") or [])
    return names


# ------------------------------------------------------------------------------------------- catalogs

@st.cache_data(show_spinner=False)
def catalog_lists() -> dict:
    """The catalogs as the notebook API lists them: {"models", "devices", "units": name -> record, "workloads",
    "formats"} (moeplan.api.models, devices, clusters, workloads, number_formats)."""
    return {"models": {m["name"]: m for m in moeplan.api.models()}, "devices": {d["name"]: d for d in moeplan.api.devices()},
            "units": {u["name"]: u for u in moeplan.api.clusters()}, "workloads": moeplan.api.workloads(),
            "formats": moeplan.api.number_formats()}


DEFAULT_ROWS = "default rows"  # the price picker's choice of catalogs/prices.yaml's default rows (no cloud)


@st.cache_data(show_spinner=False)
def price_choices() -> dict[str, str]:
    """What a page may cost devices with: the default rows, or one cloud of catalogs/prices.yaml (moeplan.api.clouds),
    each with what it is."""
    return {DEFAULT_ROWS: "one published price per device, sources mixed (catalogs/prices.yaml)",
            **{c["name"]: c["display_name"] for c in moeplan.api.clouds()}}


def cloud_of(choice: str) -> str | None:
    """The cloud a price choice names (None: the default rows)."""
    return None if choice == DEFAULT_ROWS else choice


def spec_prices_choice(raw: dict) -> str:
    """The price choice a spec dict makes (its prices.cloud, else the default rows)."""
    return (raw.get("prices") or {}).get("cloud") or DEFAULT_ROWS


@st.cache_data(show_spinner=False)
def device_prices(choice: str) -> dict:
    """name -> device record priced by the choice's rows (moeplan.api.devices(cloud)): its price, or None and why."""
    return {d["name"]: d for d in moeplan.api.devices(cloud_of(choice))}


def planned_devices() -> tuple[str, ...]:
    """The devices a cluster unit is built from (the ones a spec can name)."""
    return tuple(name for name, d in catalog_lists()["devices"].items() if d["cluster_units"])


# ------------------------------------------------------------------------------------------- session

@st.cache_data(show_spinner=False)
def default_spec() -> dict:
    """The built-in example spec (catalogs/examples/kimi-k2-h200.yaml) as a dict."""
    return yaml.safe_load(example_path().read_text(encoding="utf-8"))


def current_spec() -> tuple[dict, Files]:
    """The spec the planner last planned (or the built-in example) and the routing files it names."""
    return st.session_state.get(SPEC_KEY) or default_spec(), st.session_state.get(FILES_KEY, ())


def set_current_spec(raw: dict, files: Files) -> None:
    st.session_state[SPEC_KEY] = raw
    st.session_state[FILES_KEY] = files


def spec_caption(raw: dict) -> str:
    """One line naming the deployment a page studies."""
    cluster = raw["cluster"]
    size = f"{cluster['devices']} devices" if cluster.get("devices") else f"{cluster.get('units')} units"
    return f"{raw['model']} on {cluster['unit']} ({size}); change it on the Capacity planner page"


# ------------------------------------------------------------------------------------------- cached API calls

@st.cache_data(show_spinner=False, max_entries=32)
def plan(raw: dict, files: Files = ()) -> moeplan.Plan:
    """moeplan.plan of a spec dict whose routing statistics are the uploaded `files` (name, bytes)."""
    with temp_files(dict(files)) as folder:
        return moeplan.plan(moeplan.api.deployment(parse_spec(raw), folder))


@st.cache_data(show_spinner=False, max_entries=16)
def compare(raw: dict, files: Files, devices: tuple[str, ...], prices: str = DEFAULT_ROWS) -> moeplan.Sweep:
    """moeplan.api.compare of the spec across devices, every device costed by the `prices` choice (a cloud's rows,
    or the default rows: the spec's own prices.cloud is replaced by it). In this process (processes=1): the
    dashboard's script runs in a thread of the Streamlit server, and forking a threaded server is not safe."""
    spec = copy.deepcopy(raw)
    if spec.get("prices"):
        spec["prices"] = {k: v for k, v in spec["prices"].items() if k != "cloud"}
    with temp_files(dict(files)) as folder:
        return moeplan.api.compare(_with_absolute_routing(spec, folder), devices=devices, processes=1,
                                   cloud=cloud_of(prices))


def _with_absolute_routing(raw: dict, folder: Path) -> dict:
    """A sweep plans spec dicts without a folder to resolve against: name the uploaded files by full path."""
    out = copy.deepcopy(raw)
    for phase in ("decode", "prefill"):
        files = (out.get("routing") or {}).get(phase)
        if files:
            files["evaluate"] = str(folder / files["evaluate"])
            files["fit"] = [str(folder / f) for f in files.get("fit") or []]
    return out


@st.cache_data(show_spinner=False, max_entries=16)
def routing_counts(data: bytes, name: str) -> np.ndarray:
    """[L, E] token counts of one uploaded routing statistics file, its windows summed (moeplan.api.read_routing_counts:
    every format the CLI reads), refused over MAX_UPLOAD_MB."""
    return moeplan.api.read_routing_counts(data, name=name, max_bytes=MAX_UPLOAD_BYTES)


@st.cache_data(show_spinner=False, max_entries=8)
def compare_placements(fit: Files, evaluate: Files, ep: int, redundant: int, nodes: int, time_limit_s: float) -> dict:
    """moeplan.api.compare_placements: contiguous, EPLB and the ILP placed on the `fit` windows and scored on
    `evaluate` (none: the fit windows summed, an in-sample score). One process (workers=1), as in compare()."""
    windows = [routing_counts(data, name) for name, data in fit]
    if not windows:
        raise InputError("fit", "no routing statistics uploaded", "upload one or more statistics files to place on")
    shapes = {w.shape for w in windows}
    if len(shapes) > 1:
        raise InputError("fit", f"the files differ in shape ({', '.join(map(str, sorted(shapes)))})",
                         "upload statistics of one model: the same layers and experts")
    today = routing_counts(evaluate[0][1], evaluate[0][0]) if evaluate else np.sum(windows, axis=0)
    return moeplan.api.compare_placements(windows, today, ep, redundant, nodes, time_limit_s=time_limit_s, workers=1)


@st.cache_data(show_spinner=False, max_entries=8)
def simulate(raw: dict, files: Files, trace_files: Files, trace_rate_per_s: float | None, requests: int,
             speedup: float, router: str, kv_policy: str, prefix_cache: bool, seed: int):
    """moeplan.api.simulate: replay a trace (the uploaded `trace_files`, or none: synthetic arrivals at the
    workload's rate and means) through the session's plan, its routing statistics included. Returns a sim.SimResult."""
    config = SimConfig(router=Router(router), kv_policy=KVPolicy(kv_policy), prefix_cache=prefix_cache)
    planned = plan(raw, files)  # the plan this session shows, not a second search
    requests_trace = trace(trace_files, trace_rate_per_s) if trace_files else None
    with temp_files(dict(files)) as folder:
        return moeplan.api.simulate(moeplan.api.deployment(parse_spec(raw), folder), planned, requests_trace, requests=requests,
                                    speedup=speedup, seed=seed, config=config)


@st.cache_data(show_spinner=False, max_entries=8)
def trace(files: Files, rate_per_s: float | None = None) -> RequestTrace:
    """The requests of an uploaded trace (moeplan.api.read_trace), read from its bytes: one file, or the
    chunk-N-trace.csv and chunk-N-dataset.json files of a ServeGen folder. rate_per_s: arrivals for a
    length-only CSV. Each file is refused over MAX_UPLOAD_MB."""
    if not files:
        raise InputError("trace", "no file uploaded", "upload a Mooncake JSONL, Azure CSV, BurstGPT CSV, length CSV or ServeGen chunk")
    name, data = files[0] if len(files) == 1 else (UPLOADED_FOLDER, dict(files))
    return moeplan.api.read_trace(data, name=name, rate_per_s=rate_per_s or None, max_bytes=MAX_UPLOAD_BYTES)


def trace_workload(t: RequestTrace) -> dict:
    """The spec workload a trace stands for: its mean request shape and mean arrival rate."""
    return {"input_tokens": round(float(np.mean(t.input_tokens))), "output_tokens": round(float(np.mean(t.output_tokens))),
            "requests_per_s": t.rate_per_s}


@st.cache_data(show_spinner=False, max_entries=4)
def validate_measured(data: bytes, name: str = "measured.csv") -> tuple[list, dict]:
    """moeplan.api.validate_measured on an uploaded measured-deployments CSV: (rows, {group: summary}) for all
    rows and by engine and mode."""
    with temp_files({name: data}) as folder:
        rows = moeplan.api.validate_measured(folder / safe_name(name))
    return rows, {by: moeplan.api.measured_summary(rows, by) for by in (None, "engine", "mode", "system")}


@st.cache_data(show_spinner=False)
def validate(data: bytes | None = None, name: str = "deployments.yaml") -> list:
    """moeplan.validate on an uploaded deployments YAML (read with yaml.safe_load), or without one on the catalog's
    published set of that name (moeplan.api.PUBLISHED_SETS)."""
    if data is None:
        return moeplan.validate(next(p for p in moeplan.api.PUBLISHED_SETS if p.name == name))
    with temp_files({name: data}) as folder:
        try:
            return moeplan.validate(folder / safe_name(name))
        except (KeyError, TypeError) as e:  # an entry without a field the validator reads, or of the wrong type
            raise InputError(name, f"a deployment lacks a field or has one of the wrong type ({e!r})",
                             "follow the schema of catalogs/published/deployments.yaml") from None
