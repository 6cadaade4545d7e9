"""The notebook API: every number the CLI and the dashboard show is one call here."""

from __future__ import annotations

import csv
import importlib.util
import io
import math
from dataclasses import replace
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from hwmodels import arithmetic, catalog, units
from hwmodels.deployment import Deployment
from hwmodels.errors import InputError
from hwmodels.calibrate import deployments, kernels_measured, measured_deployments
from hwmodels.calibrate.kernel_profile import load_profile
from hwmodels.calibrate.deepep_fit import deepep_report
from hwmodels.calibrate.deployments import ValidationRow
from hwmodels.calibrate.measured_deployments import MeasuredPrediction
from hwmodels.calibrate.gemm_fit import fit_report_table
from hwmodels.fit import FitReport, fit
from hwmodels.ingest.requests import RequestTrace, load_trace
from hwmodels.layout_text import parse_layout
from hwmodels.ingest.routing import RoutingTrace, read_counts, read_counts_and_tokens
from hwmodels.ingest.source import SourceLike
from hwmodels.precision import default_plan
from hwmodels.roles import Phase
from moeplan import catalog_records, study
from moeplan.measured_report import measured_report as _measured_report
from moeplan.measured_report import rows_frame as _measured_rows_frame
from moeplan.launch import launch_files as _launch_files
from moeplan.spec import SCHEMA_VERSION, Spec, WorkloadSpec, engine_spec, load_spec, parse_spec, resolve, with_prices
from moeplan.spec import read_trace as read_spec_trace
from moeplan import simulation
from moeplan.simulation import Simulation
from moeplan.study import PlanView, Sweep
from planner.compare_placements import MAX_TIME_LIMIT_S as MAX_PLACE_TIME_LIMIT_S
from planner.compare_placements import check_arguments as _check_placement_args
from planner.compare_placements import AllToAll
from planner.compare_placements import compare_placements as _compare_placements
from planner.estimate import Estimate
from planner.estimate import estimate as _estimate
from planner.plan import Pinned, Plan, ReplayCheck
from planner.replay_check import REPLAYED_OPTIONS
from planner.plan_json import estimate_to_json, plan_from_json, read_plan
from planner.search import plan as _plan, with_devices_needed
from sim.config import KVPolicy, Router, SimConfig

__all__ = ["InputError", "KVPolicy", "Plan", "PlanView", "RequestTrace", "Router", "SimConfig", "Simulation", "Spec", "Sweep",
           "ValidationRow", "app_script", "bench_kernels", "check", "clusters", "compare", "compare_placements",
           "clouds", "default_kernel_csv", "deployment", "devices", "estimate", "estimate_json", "launch_files", "kernel_fits",
           "load_plan", "model_config", "model_summary", "placement_alltoall", "placement_scaleout_weight",
           "models", "number_formats", "plan", "read_routing_counts", "read_trace", "simulate", "sweep", "units",
           "validate", "validate_measured", "measured_frame", "measured_report", "measured_summary", "validation_summary", "workloads"]


SpecLike = str | Path | Mapping | Spec | Deployment
MAX_PINNED_WORK = 1_000_000  # sequences or prompt tokens per device: far past any HBM


def deployment(spec: SpecLike, base_dir: Path | None = None, trace: str | Path | None = None,
               backend: str | None = None, cloud: str | None = None, prices: str | Path | None = None,
               device_profile: str | Path | None = None) -> Deployment:
    """A Deployment from a spec path, a dict of the spec's YAML fields, a parsed Spec, or a Deployment (returned
    as is). Relative paths inside a dict or Spec resolve against `base_dir` (the working directory by default).
    trace: a request trace file whose traffic replaces the spec's workload (as workload.trace would give it);
    backend: "NAME[@VERSION]" (sglang, trtllm, vllm), the serving engine replacing the spec's serving.engine;
    cloud: the cloud whose price rows cost the devices (prices.cloud; catalog.cloud_names()); prices: a price file in
    catalogs/prices.yaml's format replacing the catalog's (prices.file). The spec's own device prices still win.
    device_profile: a kernels CSV written by `moeplan bench-kernels`, replacing the spec's cluster.device_profile: the
    kernels it measured are priced by its fits (hwmodels.calibrate.kernel_profile), the rest as without it."""
    if isinstance(spec, Deployment):
        given = [n for n, v in (("trace", trace), ("backend", backend), ("cloud", cloud), ("prices", prices),
                                ("device_profile", device_profile)) if v is not None]
        if given:
            raise InputError(given[0], "a resolved Deployment cannot take it", "pass the spec (a path, dict or Spec)")
        return spec
    if isinstance(spec, Mapping):  # typed in code: the current schema unless it says otherwise
        spec = parse_spec({"schema_version": SCHEMA_VERSION, **spec})
    if not isinstance(spec, Spec):
        spec, base_dir = load_spec(spec)
    if trace is not None:
        spec = spec.model_copy(update={"workload": WorkloadSpec(trace=str(Path(trace).resolve()))})
    if backend is not None:
        spec = spec.model_copy(update={"serving": spec.serving.model_copy(update={"engine": engine_spec(backend)})})
    spec = with_prices(spec, cloud, prices)
    if device_profile is None:
        return resolve(spec, base_dir)
    profile = load_profile(device_profile, "--device-profile")  # read before the spec's own, which it replaces
    d = resolve(spec.model_copy(update={"cluster": spec.cluster.model_copy(update={"device_profile": None})}), base_dir)
    return replace(d, serving=replace(d.serving, device_profile=profile))


def models() -> list[dict]:
    """The catalog models: size, experts, layers, attention, weight bytes, format, KV bytes per token, source."""
    return catalog_records.model_records()


def devices(cloud: str | None = None, prices: str | Path | None = None) -> list[dict]:
    """The catalog devices with every cited figure, its price (the default rows, a cloud's, or a price file's; None
    where none is published, with price_source saying so) and the cluster units built from it."""
    return catalog_records.device_records(cloud, prices)


def clouds() -> list[dict]:
    """The clouds of catalogs/prices.yaml: name, what it is, and the devices it prices."""
    return catalog_records.cloud_records()


def clusters() -> list[dict]:
    """The cluster units (nodes, racks, supernodes) a cluster is built from."""
    return catalog_records.cluster_records()


def workloads() -> dict[str, dict]:
    """The named workloads a spec may use (workload.name)."""
    return catalog_records.workload_records()


def number_formats() -> dict[str, tuple[str, ...]]:
    """The formats a spec's precision may name (weights; KV cache and activations)."""
    return catalog_records.number_formats()


def model_config(name_or_path: str, field: str = "model") -> dict:
    """The config.json fields of a catalog model or a config.json on disk (what kernels_ref runs the shapes of)."""
    return catalog.model_config(name_or_path, field)


def check(spec: SpecLike) -> FitReport:
    """Does the model fit the cluster: weights per device per layout, KV room, concurrent sequences."""
    return fit(deployment(spec))


def model_summary(name_or_path: str, precision: Mapping[str, str] | None = None, context_tokens: int = 4096) -> dict:
    """Parameters, weight bytes, KV bytes per token and FLOPs per token of a catalog model or config.json."""
    arch = catalog.load_model(name_or_path)
    plan = default_plan(arch.quantization_config, arch.torch_dtype).with_overrides(precision or {}, "--precision")
    return dict(arithmetic.summary(arch, plan, context_tokens))


def validate(deployments_yaml: str | Path | None = None, backend: str | None = None) -> list[ValidationRow]:
    """Predicted vs published for each scenario of a deployments YAML (default: the project's published set), each
    priced by its own serving engine where it names one, or by `backend` ("NAME[@VERSION]") for all of them."""
    engine = None if backend is None else deployments.EngineEntry(**engine_spec(backend).model_dump())
    return deployments.validate(deployments_yaml, engine)


def validate_measured(csv_path: str | Path, backend: str | None = None) -> list[MeasuredPrediction]:
    """Every row of a measured-deployments CSV (the columns of ../shared/data/measured/aic-silicon-moe.csv) rebuilt
    and its TTFT and TPOT predicted on its engine's measured kernel tables; a row not modelled carries its reason.
    backend: "NAME[@VERSION]", only the rows that engine (and version) served."""
    engine = None if backend is None else engine_spec(backend)
    return measured_deployments.predict_file(csv_path, engine and engine.name, engine and engine.version)


def measured_report(csv_path: str | Path, rows: Sequence[MeasuredPrediction], by: Sequence[str | None] = (None,)) -> dict[str, str]:
    """`validate --measured -o DIR`'s files (report.html, summary.md, rows.csv) for `rows` of `csv_path`, the
    error summarised over all rows (None) and by each of `by` (model, system, engine, mode)."""
    return _measured_report(Path(csv_path).name, rows, {g: measured_summary(rows, g) for g in by})


def measured_frame(rows: Sequence[MeasuredPrediction]):
    """The rows as a DataFrame: measured, predicted and the peer's TTFT and TPOT in seconds, and why a row is not
    modelled (what `validate --measured -o` writes as rows.csv)."""
    return _measured_rows_frame(rows)


def measured_summary(rows: Sequence[MeasuredPrediction], by: str | None = None) -> list[dict]:
    """Coverage and median |error|, MAPE and p90 of TTFT and TPOT, moeplan's and the peer's, per group of `by`
    (model, system, engine or mode; None: all rows)."""
    return measured_deployments.summarize(list(rows), by)


def validation_summary(rows: Sequence[ValidationRow]) -> dict:
    """Scenarios, how many are modelled, median and largest |error|, and which are not modelled."""
    return deployments.summary(list(rows))


DEFAULT_DEPLOYMENTS = deployments.DEFAULT_DEPLOYMENTS
PUBLISHED_SETS = deployments.PUBLISHED_SETS


def kernel_fits() -> dict:
    """The kernel-level fits and how well each reproduces what was published or measured: the DeepGEMM fit's
    stored report (with leave-one-out errors), every published DeepEP and DeepEP-Ascend number against the stored
    all-to-all fits, the two-batch-overlap ablations, the GQA decode fit's parameters and errors (each GPU held out),
    and each committed kernels_ref CSV fitted kernel by kernel and composed into the whole MoE layer."""
    measured = []
    for path in kernels_measured.measured_csvs():
        table = kernels_measured.load_measured(path)
        rows, layers = kernels_measured.report(table), kernels_measured.layer_report(table)
        measured.append({"summary": kernels_measured.summary(table, rows, layers), "rows": rows, "layers": layers,
                         "text": kernels_measured.report_table(table, rows, layers)})
    deepgemm = list(catalog.stored_fit("deepgemm-h800")["report"])
    gqa = catalog.stored_fit("gqa-decode")
    return {"deepgemm": deepgemm, "deepgemm_text": fit_report_table(deepgemm), "deepep": deepep_report(), "measured": measured,
            "overlap": list(catalog.stored_fit("overlap")["report"]), "gqa_decode": dict(gqa)}


def plan(spec: SpecLike, trace: str | Path | None = None, backend: str | None = None, cloud: str | None = None,
         prices: str | Path | None = None, replay: int = REPLAYED_OPTIONS, requests: int | None = None, seed: int = 0,
         shards: int | None = None, shard_by: str = "auto", engine: str = "local", address: str | None = None,
         device_profile: str | Path | None = None) -> PlanView:
    """Search layouts for the spec's model, cluster, workload and SLOs; recommend the cheapest that meets them.
    The PlanView reads like the planner's Plan (.recommendation, .frontier, .infeasible, .replays; `.plan` is the
    Plan itself) and adds .to_frame(table), .figure(name), .to_json() (plan.json) and .replay (the recommendation's
    replay, a Simulation).
    trace: a request trace file whose traffic replaces the spec's workload (its rate, minute-to-minute swings,
    burstiness and lengths, as the spec's workload.trace would give them); backend: "NAME[@VERSION]", the serving
    engine whose measured kernel tables price the operators (serving.engine); cloud, prices: which price rows cost the
    devices (as `deployment` takes them); device_profile: a kernels CSV of `moeplan bench-kernels` pricing the kernels it
    measured (cluster.device_profile; each step's operator_sources name it, or what it lacks).
    replay: how many of the cheapest options are replayed in the simulator before one is recommended (the cheapest
    whose replay completes every request within both SLO percentiles; 0: the analytic ranking alone); each replays
    the workload's trace (its first `requests`, default CHECK_TRACE_REQUESTS) or `requests` synthetic ones (default
    CHECK_SYNTHETIC_REQUESTS, drawn with `seed`); shards / shard_by / engine / address: each replay cut in shards
    and run on local processes or Ray, as `simulate` does."""
    _check_simulate_args(1.0, None, requests, None, seed, shards)
    if not (isinstance(replay, int) and not isinstance(replay, bool) and 0 <= replay <= MAX_REPLAYED_OPTIONS):
        raise InputError("replay", f"is {replay!r}", f"a whole number from 0 to {MAX_REPLAYED_OPTIONS}")
    d = deployment(spec, trace=trace, backend=backend, cloud=cloud, prices=prices, device_profile=device_profile)
    view = _checked_plan(d, replay, requests, seed, shards, shard_by, engine, address)
    return PlanView(with_devices_needed(view.plan), view.replay)


def _checked_plan(d: Deployment, replay: int = REPLAYED_OPTIONS, requests: int | None = None, seed: int = 0,
                  shards: int | None = None, shard_by: str = "auto", engine: str = "local",
                  address: str | None = None) -> PlanView:
    if replay == 0 or d.workload.requests_per_s is None:
        return PlanView(_plan(d))
    runs = {}
    count = requests or (CHECK_TRACE_REQUESTS if d.workload.trace is not None else CHECK_SYNTHETIC_REQUESTS)

    def check(option: Plan) -> ReplayCheck:
        runs[id(option.recommendation)] = run = simulate(d, option, requests=count, seed=seed, shards=shards,
                                                         shard_by=shard_by, engine=engine, address=address)
        return simulation.replay_check(option, run)
    result = _plan(d, check, replay)
    return PlanView(result, runs.get(id(result.recommendation)))


def estimate(spec: SpecLike, layout: str | None = None, batch: int | None = None, prefill: str | None = None,
             decode: str | None = None, prefill_tokens: int | None = None, trace: str | Path | None = None,
             backend: str | None = None, cloud: str | None = None, prices: str | Path | None = None,
             mtp: bool | None = None) -> Estimate:
    """Score a layout the user fixes: `layout` for aggregated instances ("attention=dp16,experts=ep16";
    hwmodels.layout_text), or `prefill` and `decode` for a disaggregated deployment. batch: decode (or aggregated)
    sequences per device (default: the cheapest the KV cache admits that meets the SLOs); prefill_tokens: prompt
    tokens per prefill device per step; mtp: decode with the model's MTP drafts (True) or without (False), default
    whichever is cheaper. The Estimate holds the pinned plan (.plan.recommendation: TTFT, TPOT,
    throughput, cost), the SLO fields it misses (.missed) and why (.why); `estimate_json` is its JSON."""
    d = deployment(spec, trace=trace, backend=backend, cloud=cloud, prices=prices)
    if (layout is None) == (prefill is None and decode is None) or (prefill is None) != (decode is None):
        raise InputError("--layout", "give --layout for aggregated instances, or --prefill and --decode together",
                         "e.g. --layout attention=dp16,experts=ep16")
    for option, value in (("--batch", batch), ("--prefill-tokens", prefill_tokens)):
        if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_PINNED_WORK):
            raise InputError(option, f"is {value!r}", f"give a whole number from 1 to {MAX_PINNED_WORK:,}")
    pinned = Pinned(aggregated=None if layout is None else parse_layout(layout, d.model, "--layout"),
                    prefill=None if prefill is None else parse_layout(prefill, d.model, "--prefill"),
                    decode=None if decode is None else parse_layout(decode, d.model, "--decode"),
                    batch_per_device=batch, prefill_tokens_per_device=prefill_tokens, mtp=mtp)
    if mtp and (layout is not None or d.serving.speculation is None):
        raise InputError("--mtp", "MTP drafting is scored for disaggregated decode pools of a model with MTP modules",
                         "give --prefill and --decode for a model with MTP modules, or leave --mtp out")
    return _estimate(d, pinned)


def estimate_json(e: Estimate) -> dict:
    """`moeplan estimate --json`."""
    return estimate_to_json(e)


def launch_files(plan: Plan | PlanView) -> dict[str, str]:
    """The engine launch folder of a plan's recommendation (moeplan.launch): name -> text, for the plan's serving
    engine (serving.engine or --backend) at its version, else at the version whose flags moeplan checks."""
    plan = plan.plan if isinstance(plan, PlanView) else plan
    d = plan.deployment
    if d.serving.engine is None:
        raise InputError("--backend", "launch files are written for a serving engine and the plan names none",
                         "pass --backend sglang, vllm or trtllm, or set serving.engine in the spec")
    if plan.recommendation is None:
        return {}
    source = catalog.engine_flags()[d.serving.engine]["source"]
    version, note = (d.serving.engine_version, "serving.engine.version") if d.serving.engine_version else (
        f"{source['repo']}@{source['commit'][:8]}", "no serving.engine.version: the source snapshot whose flags "
        "moeplan checks, catalogs/engine_flags.yaml")
    model_path = catalog.model_entry(d.model.name).get("hf_repo", d.model.name) if d.model.name in catalog.model_names() \
        else d.model.name
    return _launch_files(plan, d.serving.engine, version, note, model_path)


def load_plan(source: str | Path | Mapping, spec: SpecLike) -> PlanView:
    """A plan.json (a path, or its parsed document) of the spec, read back to the Plan it was written from."""
    d = deployment(spec)
    return PlanView(plan_from_json(source, d) if isinstance(source, Mapping) else read_plan(source, d))


def compare(spec: str | Path | Spec | Mapping, devices: Sequence[str] = (), models: Sequence[str] = (),
            engine: str = "local", processes: int | None = None, progress=None, address: str | None = None,
            size: bool = True, backends: Sequence[str] = (), cloud: str | None = None,
            prices: str | Path | None = None) -> Sweep:
    """The same workload and SLOs across devices and/or models: each device on the spec's device count in whole
    nodes of its unit or, with `size` and where those are too few, on the fewest whole nodes the workload needs
    (planner.search.devices_needed, up to planner.refusals.MOST_DEVICES). `.warnings` says where prices differ in kind or date, or are missing.
    engine="ray" runs the points on Ray (address: an existing cluster, e.g. ray://head:10001). backends: serving
    engines NAME[@VERSION] whose measured kernel tables price the operators, compared side by side. cloud: the cloud
    whose price rows cost every device (one provider's prices: a comparison of hardware, not of price sources);
    prices: a price file replacing the catalog's."""
    return study.compare(spec, devices, models, engine, processes, progress, address, size, backends, cloud, prices)


def sweep(spec: str | Path | Spec | Mapping, vary: Mapping[str, Sequence], engine: str = "local",
          processes: int | None = None, progress=None, address: str | None = None, backend: str | None = None,
          cloud: str | None = None, prices: str | Path | None = None) -> Sweep:
    """Plan the spec at every combination of the varied fields (dotted spec paths, or device / model / backend).
    engine="ray" runs the points on Ray (address: an existing cluster, e.g. ray://head:10001). backend:
    "NAME[@VERSION]", the serving engine of every point (serving.engine); cloud, prices: as `compare`."""
    return study.sweep(spec, vary, engine, processes, progress, address, cloud=cloud, prices=prices, backend=backend)


def read_trace(source: SourceLike, *, name: str | None = None, rate_per_s: float | None = None,
               max_bytes: int | None = None, arrival: str = "poisson", cv: float = 1.0, seed: int = 0,
               limit: int | None = None) -> RequestTrace:
    """The requests of a trace (hwmodels.ingest.requests.load_trace: Mooncake JSONL, Azure CSV, BurstGPT CSV, length CSV,
    ServeGen chunk or folder) from a path, the bytes of one file (name: its file name), or {file name: bytes}
    (a ServeGen chunk's two files). rate_per_s, arrival, cv: arrivals for a length-only CSV; max_bytes: the
    most bytes read from one file (default hwmodels.ingest.source.MAX_FILE_BYTES); seed, limit: as load_trace."""
    return load_trace(source, name=name, max_bytes=max_bytes, arrival=arrival, rate_per_s=rate_per_s, cv=cv, seed=seed,
                      limit=limit)


def read_routing_counts(source: SourceLike, *, name: str | None = None, max_bytes: int | None = None) -> np.ndarray:
    """[L, E] token counts of one routing statistics file (or TensorRT-LLM folder) in its own shape, its windows
    summed: what `moeplan place` and the dashboard's placement page fit on. Every format `moeplan simulate
    --routing` and the spec read (hwmodels.ingest.routing_formats), from a path, bytes (name: its file name) or
    {file name: bytes}; max_bytes: the most bytes read from one file (default hwmodels.ingest.source.MAX_FILE_BYTES)."""
    return read_counts(source, name=name, max_bytes=max_bytes)


def read_routing_tokens(source: SourceLike, *, name: str | None = None,
                        max_bytes: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """read_routing_counts' [L, E] and, for a per-token file, [T, L, E] bool, the experts each token chose per layer
    (None for aggregated counts): hwmodels.ingest.routing.read_counts_and_tokens."""
    return read_counts_and_tokens(source, name=name, max_bytes=max_bytes)


def placement_alltoall(model: str, field: str = "model") -> AllToAll:
    """The all-to-all of a catalog model or config.json as placements price it: top-k, node-limited groups, and
    the bytes of one token copy there and back, as the step model sends them (DeepEP normal mode: the dispatch in
    the model's dispatch dtype with one fp32 scale per 128 channels when fp8, the combine in its combine dtype)."""
    from hwmodels.efficiency import SCALE_BLOCK
    from hwmodels.precision import DTYPES
    arch = catalog.load_model(model, field)
    if arch.moe is None:
        raise InputError(field, f"{model} is a dense model: it has no experts to place", "name an MoE model")
    plan = default_plan(arch.quantization_config, arch.torch_dtype)
    width = arch.moe.latent_size or arch.hidden_size
    scales = width / SCALE_BLOCK * DTYPES["fp32"].bytes_per_element if plan.dispatch.name == "fp8" else 0.0
    token_bytes = width * (plan.dispatch.bytes_per_element + plan.combine.bytes_per_element) + scales
    return AllToAll(arch.moe.top_k, token_bytes, arch.moe.num_groups, arch.moe.groups_per_token)


def placement_scaleout_weight(model: str, device: str) -> float:
    """The ILP's scale-out weight for `model` on `device` (hwmodels.alltoall_placement.scaleout_weight): one node
    copy of a token over the device's NIC (the DeepEP fit's bandwidth) against the routed experts' roofline time
    per token in their compute dtype, times the groups a token picks."""
    from hwmodels import alltoall_placement, collectives
    from hwmodels.calibrate.operator_costs import fitted_costs, quant_dtype
    arch, dev = catalog.load_model(model), catalog.load_device(device)
    alltoall = placement_alltoall(model)
    links = collectives.link_classes(dev, fitted_costs().collective_fit(dev))
    if "scaleout" not in links:
        raise InputError("device", f"{device} has no published scale-out bandwidth", "name a device with a NIC figure")
    plan = default_plan(arch.quantization_config, arch.torch_dtype)
    dtype = quant_dtype(plan.of("routed_experts").name)
    peak = dev.peak_flops_per_s.get(dtype)
    if peak is None:
        raise InputError("device", f"{device} has no {dtype} peak", "name a device with that peak published")
    flops_per_pair = 2.0 * 3 * (arch.moe.latent_size or arch.hidden_size) * arch.moe.expert_intermediate_size
    return alltoall_placement.scaleout_weight(alltoall.token_bytes, links["scaleout"].bytes_per_s, peak,
                                              alltoall.top_k, flops_per_pair, alltoall.groups_per_token)


def compare_placements(fit_windows: Sequence[np.ndarray] | np.ndarray, eval_loads: np.ndarray, ep: int, redundant: int,
                       nodes: int = 1, time_limit_s: float = 60.0, workers: int | None = None,
                       progress: Callable[[str], None] | None = None, model: str | None = None,
                       scaleout_weight: float = 0.0, fit_tokens: Sequence[np.ndarray | None] | np.ndarray | None = None,
                       eval_tokens: np.ndarray | None = None) -> dict:
    """Contiguous, EPLB (global policy) and the robust ILP placed on `fit_windows` ([L, E] counts, one or several)
    over `ep` devices with `redundant` extra slots on `nodes` nodes, each scored on `eval_loads` ([L, E]) under
    the runtime even split (planner.compare_placements). Returns what `moeplan place --json` prints, with the
    ILP placement as SGLang's --init-expert-location mapping under `expert_location`. time_limit_s: the limit
    of the whole call, in (0, MAX_PLACE_TIME_LIMIT_S] seconds (when it runs out, the ILP keeps the best placement
    found so far and its notes say so); workers: the ILP's processes (None: the solver's default); progress:
    called with each step's name as it starts (moeplan place shows it).
    Bounds: 0 <= redundant <= the experts' count, nodes divides ep, and the placements' estimated memory
    within planner.compare_placements.MAX_PLACEMENT_BYTES; anything else is an InputError naming the argument.
    model: the catalog model or config.json whose statistics these are; with it every method reports
    cross_node_bytes_per_token (placement_alltoall; None without). scaleout_weight > 0 gives the ILP its
    scale-out term (a model with expert groups needed). fit_tokens, eval_tokens: per-token routing behind the fit
    windows and eval_loads (read_routing_tokens), as planner.compare_placements takes them."""
    alltoall = None if model is None else placement_alltoall(model)
    if alltoall is not None and np.shape(eval_loads)[-1] != _experts_of(model):
        raise InputError("model", f"{model} has {_experts_of(model)} routed experts, the statistics "
                         f"{np.shape(eval_loads)[-1]}", "name the model whose routing the statistics record")
    return _compare_placements(fit_windows, eval_loads, ep, redundant, nodes, time_limit_s=time_limit_s, workers=workers,
                               progress=progress, alltoall=alltoall, scaleout_weight=scaleout_weight,
                               fit_tokens=fit_tokens, eval_tokens=eval_tokens)


def _experts_of(model: str) -> int:
    return catalog.load_model(model).moe.num_experts


def check_placement_args(num_layers: int, num_experts: int, ep: int, redundant: int, nodes: int = 1,
                         time_limit_s: float = 60.0, names: Mapping[str, str] | None = None) -> None:
    """compare_placements' argument checks for [num_layers, num_experts] loads, before any work: an InputError
    naming the argument as `names` spells it ({"ep": "--ep", ...}; default: the parameter names)."""
    _check_placement_args(num_layers, num_experts, ep, redundant, nodes, time_limit_s, names or {})


SYNTHETIC_REQUESTS = 1000  # requests of the synthetic trace when neither a trace nor a count is given
# a plan's replay check: a trace's first 20,000 requests (Mooncake's 12,031 replay in about 4 s on 128 H200), or
# 2,000 synthetic ones (20 in the p99 tail); at most 20 options replayed
CHECK_TRACE_REQUESTS = 20_000
CHECK_SYNTHETIC_REQUESTS = 2_000
MAX_REPLAYED_OPTIONS = 20
# simulate's argument bounds (`moeplan simulate` and `plan -o` check the same): a million requests replay in
# about a quarter of an hour (0.8 ms each on 2 cores); arrivals sped up or slowed down by more than a million
# times, and rates beyond that, are typos
MAX_REQUESTS = 1_000_000
SPEEDUP_RANGE = (1e-6, 1e6)
RATE_RANGE_PER_S = (1e-6, 1e6)
MAX_SEED = 2**32 - 1
MAX_SHARDS = 4096
__all__ += ["CHECK_SYNTHETIC_REQUESTS", "CHECK_TRACE_REQUESTS", "MAX_PLACE_TIME_LIMIT_S", "MAX_REPLAYED_OPTIONS", "MAX_REQUESTS",
            "REPLAYED_OPTIONS", "check_placement_args"]


def simulate(spec: SpecLike, plan=None, trace=None, routing=None, *, prefill_routing=None,
             requests: int | None = None, speedup: float = 1.0, subsample: float | None = None,
             rate_per_s: float | None = None, seed: int = 0, config=None, shards: int | None = None,
             shard_by: str = "auto", engine: str = "local", address: str | None = None, backend: str | None = None,
             cloud: str | None = None, prices: str | Path | None = None, device_profile: str | Path | None = None):
    """Replay a request trace through a plan of the spec (sim, SimPy): per-request TTFT / TPOT / end-to-end
    latency, percentiles, throughput and goodput over time, utilisation, KV occupancy, cost per million
    output tokens. Returns a Simulation: a sim.SimResult (its fields read through; .to_json(), .summary())
    with .to_frame(table) and .figure(name).

    plan: a Plan (or the PlanView `plan` returns), a plan.json path or its parsed dict, or None (plan the spec now,
      as `plan` does: its cheapest options checked by replays of the workload).
    trace: a request trace file (Mooncake JSONL, Azure CSV, BurstGPT CSV, length CSV, ServeGen chunk or folder), a
      RequestTrace (hwmodels.ingest.requests), or None: the spec's workload.trace where it has one, else synthetic
      Poisson arrivals at the workload's requests_per_s,
      lengths lognormal around its means with its input_cv and output_cv, prompts cut at its max_input_tokens
      (`requests` of them, default SYNTHETIC_REQUESTS).
    routing: decode routing statistics (a file, a list of files replayed in order, or a RoutingTrace), also
      used for prefill unless prefill_routing is given. None: the spec's routing statistics
      (routing.<phase>.evaluate) where it has them, else uniform expert load (labelled).
    requests: keep the first N requests; subsample: keep each with probability F (seeded), before `requests`;
      speedup: arrivals X times faster; rate_per_s: arrival rate for a length-only CSV; seed: the synthetic
      parts and the sub-sample. config: a sim.SimConfig (router, KV policy, batch limit, placement fallback).
    backend: "NAME[@VERSION]", the serving engine whose measured kernel tables price the steps (serving.engine).
    cloud, prices: which price rows cost the devices (as `deployment` takes them); device_profile: a kernels CSV of
      `moeplan bench-kernels` pricing the kernels it measured (cluster.device_profile).
    shards / shard_by / engine / address: replay in shards (sim.sharding: by instance where that is exact,
      else by time window, approximate at the boundaries) on local processes or Ray; the Simulation's
      `sharding` says which and whether it is exact. None and engine "local": one replay in this process.
    """
    from hwmodels.errors import InputError
    from sim import SimConfig, concat_routing, simulate as replay
    from hwmodels.ingest.requests import synthetic_trace
    from hwmodels.ingest.routing import load_routing

    _check_simulate_args(speedup, subsample, requests, rate_per_s, seed, shards)  # before any planning
    d = deployment(spec, backend=backend, cloud=cloud, prices=prices, device_profile=device_profile)
    if plan is None:  # what `moeplan plan` recommends: checked by its replay of the workload
        plan = _checked_plan(d).plan
    elif isinstance(plan, PlanView):
        plan = plan.plan
    elif not isinstance(plan, Plan):
        plan = load_plan(plan, d).plan
    if plan.deployment is not d and (plan.deployment.model.name, plan.deployment.cluster.describe()) != \
            (d.model.name, d.cluster.describe()):
        raise InputError("plan", f"was made for {plan.deployment.name}, the spec is {d.name}",
                         "simulate with the spec the plan was made for, or plan the spec again")
    w = d.workload
    if trace is None and w.trace is not None:  # the trace the workload was measured from
        trace = read_spec_trace(w.trace, w.requests_per_s)
    if trace is None:
        if w.requests_per_s is None:
            raise InputError("workload.requests_per_s", "a synthetic trace needs an arrival rate",
                             "set workload.requests_per_s in the spec, or pass a request trace (--trace)")
        trace = synthetic_trace(requests or SYNTHETIC_REQUESTS, w.requests_per_s, w.input_tokens, w.output_tokens,
                                length_cv=w.input_cv, output_cv=w.output_cv, seed=seed,
                                max_input_tokens=d.longest_prompt_tokens)
    elif not isinstance(trace, RequestTrace):
        trace = load_trace(trace, rate_per_s=rate_per_s, seed=seed, limit=None if subsample is not None else requests)
    if subsample is not None:
        trace = trace.subsample(subsample, seed)
    if requests is not None and requests < len(trace):
        trace = trace.take(range(requests))
    if speedup != 1.0:
        trace = trace.speedup(speedup)

    arch = d.model

    def routing_trace(given, phase: str) -> RoutingTrace | None:
        if isinstance(given, RoutingTrace):
            return given
        if given is None:  # the statistics the spec's plan was scored on, if any
            stats = d.routing.for_phase(phase) if d.routing is not None else None
            return None if stats is None else RoutingTrace(stats.evaluate[None], arch.moe.top_k, stats.evaluated_on,
                                                           stats.mapping)
        if not arch.is_moe:
            raise InputError("--routing", f"{arch.name} has no experts", "leave routing out for a dense model")
        files = [given] if isinstance(given, (str, Path)) else list(given)
        return concat_routing([load_routing(f, arch.num_layers, arch.moe_layers, arch.moe.num_experts, arch.moe.top_k)
                               for f in files])

    decode = routing_trace(routing, Phase.DECODE)
    prefill = decode if routing is not None and prefill_routing is None else routing_trace(prefill_routing, Phase.PREFILL)
    warnings = simulation.rate_warnings(plan, trace)
    if shards is None and engine == "local":
        return Simulation(replay(plan, trace, config or SimConfig(), decode, prefill), warnings=warnings)
    from moeplan import engines
    from sim.sharding import simulate_sharded

    def tasks(fn, shared, items):
        return engines.run_tasks(fn, shared, items, engine, address=address, chunk_items=1)

    run = simulate_sharded(plan, trace, config or SimConfig(), decode, prefill, by=shard_by, shards=shards, tasks=tasks)
    exactness = "" if run.note.startswith(("exact", "approximate")) else ("exact; " if run.exact else "approximate; ")
    return Simulation(run.result, f"{run.shards} shards by {run.by}, {exactness}{run.note}", warnings)


def _check_simulate_args(speedup, subsample, requests, rate_per_s, seed, shards) -> None:
    """simulate's numbers: finite, of the right type, within the bounds above; else an InputError naming the argument."""
    from hwmodels.errors import excerpt

    def number(x, whole=False) -> bool:
        kinds = (int, np.integer) if whole else (int, float, np.integer, np.floating)
        return isinstance(x, kinds) and not isinstance(x, bool) and (whole or math.isfinite(x))

    checks = (
        ("speedup", speedup, number(speedup) and SPEEDUP_RANGE[0] <= speedup <= SPEEDUP_RANGE[1],
         f"a finite factor from {SPEEDUP_RANGE[0]:g} to {SPEEDUP_RANGE[1]:g} (2: arrivals twice as fast)"),
        ("subsample", subsample, subsample is None or (number(subsample) and 0 < subsample <= 1), "a fraction in (0, 1]"),
        ("requests", requests, requests is None or (number(requests, True) and 1 <= requests <= MAX_REQUESTS),
         f"a whole number from 1 to {MAX_REQUESTS:,}"),
        ("rate_per_s", rate_per_s, rate_per_s is None or (number(rate_per_s) and RATE_RANGE_PER_S[0] <= rate_per_s
                                                          <= RATE_RANGE_PER_S[1]),
         f"a finite rate from {RATE_RANGE_PER_S[0]:g} to {RATE_RANGE_PER_S[1]:g} requests per second"),
        ("seed", seed, number(seed, True) and 0 <= seed <= MAX_SEED, f"a whole number from 0 to {MAX_SEED:,}"),
        ("shards", shards, shards is None or (number(shards, True) and 1 <= shards <= MAX_SHARDS),
         f"a whole number from 1 to {MAX_SHARDS:,}"),
    )
    for name, value, ok, fix in checks:
        if not ok:
            raise InputError(name, f"is {excerpt(value)}", fix)


def bench_kernels(device: str = "cpu", model: str = "kimi-k2", quick: bool = False) -> tuple[list[dict], str, str]:
    """Benchmark the reference fp8 MoE kernels (kernels_ref, needs PyTorch) on the model's layer shapes: the rows,
    their CSV text (what hwmodels.calibrate.kernels_measured reads) and a printable table."""
    bench = _kernels_bench()
    config = catalog.model_config(model, "--model")
    if device == "cuda" and not bench.torch.cuda.is_available():
        raise InputError("--device", "no CUDA device is visible", "use --device cpu")
    try:
        rows = bench.run_benchmarks(device, config, quick)
    except ValueError as e:
        raise InputError("--model", str(e), "give a MoE model") from None
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=bench.COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    return rows, buffer.getvalue(), bench.format_table(rows)


def default_kernel_csv(device: str = "cpu") -> str:
    """The CSV name `moeplan bench-kernels` writes by default: kernels-<this machine's device, as a slug>.csv."""
    return _kernels_bench().default_csv_name(device)


def _kernels_bench():
    try:
        from kernels_ref import bench
    except ImportError:
        raise InputError("bench-kernels", "PyTorch is not installed", "pip install 'moeplan[kernels]'") from None
    return bench


def app_script() -> Path:
    """The dashboard's main script (`moeplan app` hands it to `streamlit run`), found without importing the app."""
    spec = importlib.util.find_spec("app")
    if spec is None or spec.origin is None:
        raise InputError("app", "the dashboard is not installed", "pip install moeplan (it installs the app package)")
    return Path(spec.origin).with_name("app.py")
