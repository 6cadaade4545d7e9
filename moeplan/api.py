"""The notebook API: every number the CLI and the dashboard show is one call here."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from hwmodels import arithmetic, catalog
from hwmodels.deployment import Deployment
from hwmodels.fit import FitReport, fit
from hwmodels.calibrate import deployments, kernels_measured
from hwmodels.calibrate.deepep_fit import deepep_report
from hwmodels.calibrate.deployments import ValidationRow
from hwmodels.calibrate.gemm_fit import fit_report_table
from hwmodels.ingest.requests import RequestTrace, load_trace
from hwmodels.ingest.routing import RoutingTrace, read_counts
from hwmodels.ingest.source import SourceLike
from hwmodels.precision import default_plan
from moeplan import study
from moeplan.spec import Spec, load_spec, resolve
from moeplan.simulation import Simulation
from moeplan.study import Plan, Sweep
from planner.compare_placements import compare_placements as _compare_placements
from planner.search import plan as _plan


def deployment(spec: str | Path | Spec | Deployment, base_dir: Path | None = None) -> Deployment:
    """A Deployment from a spec path, a parsed Spec, or a Deployment (returned as is)."""
    if isinstance(spec, Deployment):
        return spec
    if isinstance(spec, Spec):
        return resolve(spec, base_dir)
    parsed, folder = load_spec(spec)
    return resolve(parsed, folder)


def check(spec: str | Path | Spec | Deployment) -> FitReport:
    """Does the model fit the cluster: weights per device per layout, KV room, concurrent sequences."""
    return fit(deployment(spec))


def model_summary(name_or_path: str, precision: Mapping[str, str] | None = None, context_tokens: int = 4096) -> dict:
    """Parameters, weight bytes, KV bytes per token and FLOPs per token of a catalog model or config.json."""
    arch = catalog.load_model(name_or_path)
    plan = default_plan(arch.quantization_config, arch.torch_dtype).with_overrides(precision or {}, "--precision")
    return dict(arithmetic.summary(arch, plan, context_tokens))


def validate(deployments_yaml: str | Path | None = None) -> list[ValidationRow]:
    """Predicted vs published for each scenario of a deployments YAML (default: the project's published set)."""
    return deployments.validate(deployments_yaml)


def validation_summary(rows: Sequence[ValidationRow]) -> dict:
    """Scenarios, how many are modelled, median and largest |error|, and which are not modelled."""
    return deployments.summary(list(rows))


DEFAULT_DEPLOYMENTS = deployments.DEFAULT_DEPLOYMENTS


def kernel_fits() -> dict:
    """The kernel-level fits and how well each reproduces what was published or measured: the DeepGEMM fit's
    stored report (with leave-one-out errors), every published DeepEP and DeepEP-Ascend number against the stored
    all-to-all fits, the two-batch-overlap ablations, and each committed kernels_ref CSV fitted kernel by kernel
    and composed into the whole MoE layer."""
    measured = []
    for path in kernels_measured.measured_csvs():
        table = kernels_measured.load_measured(path)
        rows, layers = kernels_measured.report(table), kernels_measured.layer_report(table)
        measured.append({"summary": kernels_measured.summary(table, rows, layers), "rows": rows, "layers": layers,
                         "text": kernels_measured.report_table(table, rows, layers)})
    deepgemm = list(catalog.stored_fit("deepgemm-h800")["report"])
    return {"deepgemm": deepgemm, "deepgemm_text": fit_report_table(deepgemm), "deepep": deepep_report(),
            "overlap": list(catalog.stored_fit("overlap")["report"]), "measured": measured}


def plan(spec: str | Path | Spec | Deployment) -> Plan:
    """Search layouts for the spec's model, cluster, workload and SLOs; recommend the cheapest that meets them.
    The Plan reads like a PlanResult (.recommendation, .frontier, .infeasible) and adds .to_frame(table),
    .figure(name) and .to_json() (plan.json)."""
    return Plan(_plan(deployment(spec)))


def compare(spec: str | Path | Spec | Mapping, devices: Sequence[str] = (), models: Sequence[str] = (),
            engine: str = "local", processes: int | None = None, progress=None, address: str | None = None) -> Sweep:
    """The same workload and SLOs across devices (at the spec's device count, whole nodes) and/or models.
    engine="ray" runs the points on Ray (address: an existing cluster, e.g. ray://head:10001)."""
    return study.compare(spec, devices, models, engine, processes, progress, address)


def sweep(spec: str | Path | Spec | Mapping, vary: Mapping[str, Sequence], engine: str = "local",
          processes: int | None = None, progress=None, address: str | None = None) -> Sweep:
    """Plan the spec at every combination of the varied fields (dotted spec paths, or device / model).
    engine="ray" runs the points on Ray (address: an existing cluster, e.g. ray://head:10001)."""
    return study.sweep(spec, vary, engine, processes, progress, address)


def read_trace(source: SourceLike, *, name: str | None = None, rate_per_s: float | None = None,
               max_bytes: int | None = None, arrival: str = "poisson", cv: float = 1.0, seed: int = 0,
               limit: int | None = None) -> RequestTrace:
    """The requests of a trace (hwmodels.ingest.requests.load_trace: Mooncake JSONL, Azure CSV, length CSV,
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


def compare_placements(fit_windows: Sequence[np.ndarray] | np.ndarray, eval_loads: np.ndarray, ep: int, redundant: int,
                       nodes: int = 1, time_limit_s: float = 60.0, workers: int | None = None) -> dict:
    """Contiguous, EPLB (global policy) and the robust ILP placed on `fit_windows` ([L, E] counts, one or several)
    over `ep` devices with `redundant` extra slots on `nodes` nodes, each scored on `eval_loads` ([L, E]) under
    the runtime even split (planner.compare_placements). Returns what `moeplan place --json` prints, with the
    ILP placement as SGLang's --init-expert-location mapping under `expert_location`. time_limit_s: the ILP's
    limit; workers: its processes (None: the solver's default)."""
    return _compare_placements(fit_windows, eval_loads, ep, redundant, nodes, time_limit_s=time_limit_s, workers=workers)


SYNTHETIC_REQUESTS = 1000  # requests of the synthetic trace when neither a trace nor a count is given


def simulate(spec: str | Path | Spec | Deployment, plan=None, trace=None, routing=None, *, prefill_routing=None,
             requests: int | None = None, speedup: float = 1.0, subsample: float | None = None,
             rate_per_s: float | None = None, seed: int = 0, config=None, shards: int | None = None,
             shard_by: str = "auto", engine: str = "local", address: str | None = None):
    """Replay a request trace through a plan of the spec (sim, SimPy): per-request TTFT / TPOT / end-to-end
    latency, percentiles, throughput and goodput over time, utilisation, KV occupancy, cost per million
    output tokens. Returns a Simulation: a sim.SimResult (its fields read through; .to_json(), .summary())
    with .to_frame(table) and .figure(name).

    plan: a plan.json path, its parsed dict, a sim.Plan, or None (plan the spec now, as `plan` does).
    trace: a request trace file (Mooncake JSONL, Azure CSV, length CSV, ServeGen chunk or folder), a
      RequestTrace (hwmodels.ingest.requests), or None: synthetic Poisson arrivals at the workload's requests_per_s with its
      mean lengths (`requests` of them, default SYNTHETIC_REQUESTS).
    routing: decode routing statistics (a file, a list of files replayed in order, or a RoutingTrace), also
      used for prefill unless prefill_routing is given. None: the spec's routing statistics
      (routing.<phase>.evaluate) where it has them, else uniform expert load (labelled).
    requests: keep the first N requests; subsample: keep each with probability F (seeded), before `requests`;
      speedup: arrivals X times faster; rate_per_s: arrival rate for a length-only CSV; seed: the synthetic
      parts and the sub-sample. config: a sim.SimConfig (router, KV policy, batch limit, placement fallback).
    shards / shard_by / engine / address: replay in shards (moeplan.sharding: by instance where that is exact,
      else by time window, approximate at the boundaries) on local processes or Ray; the Simulation's
      `sharding` says which and whether it is exact. None and engine "local": one replay in this process.
    """
    from hwmodels.errors import InputError
    from sim import SimConfig, concat_routing, plan_from_json, read_plan, simulate as replay
    from hwmodels.ingest.requests import synthetic_trace
    from hwmodels.ingest.routing import load_routing
    from sim.plan import Plan as SimPlan

    d = deployment(spec)
    if plan is None:
        plan = plan_from_json(Plan(_plan(d)).to_json(), d, "moeplan plan (this spec)")
    elif isinstance(plan, Mapping):
        plan = plan_from_json(plan, d)
    elif not isinstance(plan, SimPlan):
        plan = read_plan(plan, d)
    for name, value, ok, fix in (("speedup", speedup, speedup > 0, "a factor > 0 (2: arrivals twice as fast)"),
                                 ("subsample", subsample, subsample is None or 0 < subsample <= 1, "a fraction in (0, 1]"),
                                 ("requests", requests, requests is None or requests >= 1, "a whole number >= 1")):
        if not ok:
            raise InputError(name, f"is {value!r}", fix)
    if trace is None:
        w = d.workload
        if w.requests_per_s is None:
            raise InputError("workload.requests_per_s", "a synthetic trace needs an arrival rate",
                             "set workload.requests_per_s in the spec, or pass a request trace (--trace)")
        trace = synthetic_trace(requests or SYNTHETIC_REQUESTS, w.requests_per_s, w.input_tokens, w.output_tokens, seed=seed)
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

    decode = routing_trace(routing, "decode")
    prefill = decode if routing is not None and prefill_routing is None else routing_trace(prefill_routing, "prefill")
    if shards is None and engine == "local":
        return Simulation(replay(plan, trace, config or SimConfig(), decode, prefill))
    from moeplan.sharding import simulate_sharded

    run = simulate_sharded(plan, trace, config or SimConfig(), decode, prefill, by=shard_by, shards=shards, engine=engine,
                           address=address)
    exactness = "" if run.note.startswith(("exact", "approximate")) else ("exact; " if run.exact else "approximate; ")
    return Simulation(run.result, f"{run.shards} shards by {run.by}, {exactness}{run.note}")
