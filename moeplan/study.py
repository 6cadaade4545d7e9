"""What-if studies: a plan with its tables and figures, and sweeps of any spec field.

A sweep varies fields of a spec by their dotted path (`workload.input_tokens`, `slo.tpot_s`,
`cluster.units`, `precision.routed_experts`, `prices.h200-sxm`, ...) over the cartesian product of
the given values, plans every point and returns one row per point. Two names are shorthands:
`device` (the catalog cluster unit built from that device, at the spec's device count rounded up to
whole nodes) and `model`. `compare` is a sweep over devices and/or models.

Points are independent, so they run as tasks (moeplan.engines): in worker processes (`engine="local"`, the
default) or on a Ray cluster (`engine="ray"`). A point that is bad input or infeasible is a row saying why,
and so is one whose task failed on every attempt: never a lost sweep.
"""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import pandas as pd
import plotly.graph_objects as go

from hwmodels import catalog
from hwmodels.calibrate.operator_costs import pricing_source
from hwmodels.errors import InputError, excerpt, nearest_names
from moeplan import display, engines, figures, tables
from moeplan.simulation import Simulation
from moeplan.spec import SCHEMA_VERSION, Spec, engine_spec, load_spec, parse_spec, resolve, spec_yaml
from planner.plan import Plan
from planner.plan_json import plan_to_json
from planner.search import devices_needed, plan as _search


@dataclass(frozen=True)
class PlanView:
    """A planner.plan.Plan as a notebook shows it: its fields read through (.recommendation, .frontier,
    .infeasible, ...), its tables (`to_frame(name)`, names in moeplan.tables.TABLES), its figures (`figure(name)`)
    and plan.json (`to_json()`)."""

    plan: Plan
    replay: Simulation | None = None  # the recommendation's replay, where the search checked it

    def __getattr__(self, name: str):
        if name == "plan":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.plan, name)

    def __repr__(self) -> str:
        return repr(self.plan)

    def to_frame(self, table: str = "recommendation") -> pd.DataFrame:
        if table not in tables.TABLES:
            raise InputError("table", f"unknown table '{table}'", nearest_names(table, tables.TABLES))
        return tables.TABLES[table](self.plan)

    def figure(self, name: str = "frontier", **options) -> go.Figure:
        """A figure of moeplan.figures.FIGURES; `options` go to it (placement: role="prefill")."""
        if name not in figures.FIGURES:
            raise InputError("figure", f"unknown figure '{name}'", nearest_names(name, figures.FIGURES))
        return figures.FIGURES[name](self.plan, **options)

    def to_json(self) -> dict[str, Any]:
        return plan_to_json(self.plan)


@dataclass(frozen=True)
class Sweep:
    """One row per point: the varied fields (by their dotted names), then what the plan predicts."""

    varied: tuple[str, ...]
    rows: tuple[dict[str, Any], ...]
    warnings: tuple[str, ...] = ()  # what to keep in mind reading the rows side by side (e.g. mixed price sources)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(list(self.rows))

    def figure(self, x: str | None = None, y: str = "usd_per_million_output_tokens", color: str | None = None) -> go.Figure:
        """y against one varied field (the first unless `x`), one mark per point: the points that share the other
        varied fields' values form a series (`color` names one field to colour by instead of all of them)."""
        x = x or self.varied[0]
        series = tuple(v for v in self.varied if v != x)
        return figures.comparison_figure(self.to_frame(), x, y, color, title=f"{display.label(y)} by {x}",
                                          series=series)


# ------------------------------------------------------------------------------------------- points

def raw_spec(spec: str | Path | Spec | Mapping) -> tuple[dict, Path | None]:
    """The spec as a plain dict (what a sweep edits) and the folder its relative paths start at."""
    if isinstance(spec, Spec):
        return spec.model_dump(exclude_none=True), None
    if isinstance(spec, Mapping):  # typed in code: the current schema unless it says otherwise
        return copy.deepcopy({"schema_version": SCHEMA_VERSION, **spec}), None
    _, folder = load_spec(spec)  # validates, and names a bad file before any point runs
    return spec_yaml(Path(spec).read_text(encoding="utf-8"), str(spec)), folder


def _set(raw: dict, dotted: str, value: Any) -> None:
    node = raw
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise InputError(dotted, f"'{part}' is not a mapping in the spec", "vary a field inside a mapping")
    node[leaf] = value


def apply(raw: dict, point: Mapping[str, Any]) -> dict:
    """A copy of `raw` with every field of `point` set; `device`, `model` and `backend` (NAME[@VERSION]: the
    serving engine) are shorthands."""
    out = copy.deepcopy(raw)
    for name, value in point.items():
        if name == "device":
            _set_device(out, str(value))
        elif name == "backend":
            _set(out, "serving.engine", engine_spec(str(value)).model_dump())
        else:
            _set(out, name, value)
    return out


def _set_device(raw: dict, device: str) -> None:
    matching = catalog.units_for_device(device)
    if not matching:
        raise InputError("device", f"no cluster unit is built from '{device}'", nearest_names(device, catalog.device_names()))
    cluster = raw.get("cluster") or {}
    current = catalog.load_unit(cluster.get("unit", matching[0]))
    devices = cluster.get("devices") or cluster.get("units", 1) * current.devices
    unit = catalog.load_unit(matching[0])
    raw["cluster"] = {"unit": unit.name, "devices": math.ceil(devices / unit.devices_per_node) * unit.devices_per_node}


# the refusals a bigger cluster of the same device answers (weights that do not fit, traffic beyond the devices)
TOO_FEW_DEVICES = frozenset({"cluster", "cluster.units", "workload.requests_per_s"})


def evaluate_point(raw: dict, base_dir: Path | None, size: bool = False) -> dict[str, Any]:
    """Plan one spec dict; bad input or no feasible layout is a row saying why, not an exception. With `size`, a
    point whose cluster is too small is planned on the fewest whole nodes of its device that carry it, up to
    planner.refusals.MOST_DEVICES (planner.search.devices_needed): how many of each device the question needs."""
    try:
        d = resolve(parse_spec(raw), base_dir)
        result = _search(d)
    except InputError as e:
        return {"feasible": False, "reason": str(e)}
    asked = d.cluster.num_devices
    if size and result.recommendation is None and result.infeasible_field in TOO_FEW_DEVICES:
        grown = devices_needed(d)
        if grown is not None:
            d, result = grown.deployment, grown
    r, price = result.recommendation, d.price
    row: dict[str, Any] = {"feasible": r is not None, "reason": result.infeasible or None,
                           "infeasible_field": result.infeasible_field or None,
                           "device": d.cluster.device.name, "cluster_devices": d.cluster.num_devices,
                           "usd_per_device_hour": price.usd_per_device_hour if price else None,
                           "price_basis": price.basis if price else None, "price_date": price.date if price else None,
                           "price_source": price.source if price else f"no price: set prices.{d.cluster.device.name}",
                           "priced_by": pricing_source(d)}
    if r is not None:
        row |= {"mode": r.mode, "devices": r.devices, "decode_layout": r.decode.layout.name(d.model.is_moe),
                "batch_per_device": r.decode.work_per_device, "ttft_s": r.ttft_s, "tpot_s": r.tpot_s,
                "output_tokens_per_s_per_device": r.decode.tokens_per_s_per_device, "usd_per_hour": r.usd_per_hour,
                "usd_per_million_input_tokens": r.usd_per_million_input,
                "usd_per_million_output_tokens": r.usd_per_million_output, "utilization": r.utilization,
                "usd_per_million_output_tokens_at_capacity": r.usd_per_million_output_at_capacity}
    if size:
        row |= {"spec_devices": asked,
                "sized": f"grown from {asked} devices" if d.cluster.num_devices > asked else None}
    return row


def _plan_point(spec: tuple[dict, Path | None], point: dict[str, Any]) -> dict[str, Any]:
    """A task's work for one point: the spec travels once per sweep (engines), the point with its task."""
    raw, base_dir = spec
    return evaluate_point(apply(raw, point), base_dir)


def _sized_point(spec: tuple[dict, Path | None], point: dict[str, Any]) -> dict[str, Any]:
    """A point planned on the spec's device count or, where that is too few, on the fewest that carry it."""
    raw, base_dir = spec
    return evaluate_point(apply(raw, point), base_dir, size=True)


MAX_POINTS = 10_000  # plans per sweep: each takes about a second, so 10,000 is hours of CPU already


def check_grid_size(vary: Mapping[str, Sequence], where: str) -> None:
    """Refuse a grid of more than MAX_POINTS before it is built, naming the product."""
    counts = [len(values) for values in vary.values()]
    if math.prod(counts) > MAX_POINTS:
        product = " x ".join(f"{n} {name}" for n, name in zip(counts, vary))
        raise InputError(where, f"{product} = {math.prod(counts):,} points, past the bound of {MAX_POINTS:,}",
                         "vary fewer fields or fewer values, or split the sweep into several")


def points(vary: Mapping[str, Sequence]) -> list[dict[str, Any]]:
    """The cartesian product of the varied values, in the order given."""
    if not vary:
        raise InputError("vary", "nothing to vary", "give at least one field and its values, e.g. workload.input_tokens: [2048, 8192]")
    for name, values in vary.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable) or not list(values):
            raise InputError(f"vary.{name}", f"needs a list of values, got {excerpt(values)}", f"e.g. {name}: [a, b]")
    check_grid_size({name: list(values) for name, values in vary.items()}, "vary")
    names = list(vary)
    return [dict(zip(names, combo)) for combo in itertools.product(*(list(vary[n]) for n in names))]


def sweep(spec: str | Path | Spec | Mapping, vary: Mapping[str, Sequence], engine: str = "local",
          processes: int | None = None, progress: Callable[[int, int], None] | None = None,
          address: str | None = None, task: Callable[..., dict[str, Any]] = _plan_point, cloud: str | None = None,
          prices: str | Path | None = None, backend: str | None = None) -> Sweep:
    """Plan the spec at every combination of the varied fields; one row per point, in order.

    engine: "local" (worker processes) or "ray" (moeplan.engines; the same rows either way).
    processes: worker processes (default: the CPUs this process may use; 1 runs in this process), or the CPUs
        of a local Ray instance the sweep starts.
    progress: called with (points done, points in all) as results come back.
    address: with engine="ray", the cluster to run on (e.g. ray://head:10001); default a local instance.
    cloud, prices: the cloud whose price rows cost every point (prices.cloud), a price file replacing the catalog's
        (prices.file); the spec's own device prices still win.
    backend: "NAME[@VERSION]", the serving engine of every point (serving.engine), unless the sweep varies it.
    """
    raw, base_dir = raw_spec(spec)
    if backend is not None:
        raw = apply(raw, {"backend": backend})
    if cloud is not None or prices is not None:
        raw["prices"] = {**(raw.get("prices") or {}), **({"cloud": cloud} if cloud is not None else {}),
                         **({"file": str(Path(prices).resolve())} if prices is not None else {})}
    grid = points(vary)
    for name, values in vary.items():  # a bad value (an unknown device) fails here, once, not as N rows
        for value in values:
            apply(raw, {name: value})
    parse_spec(apply(raw, grid[0]), "sweep point 1")  # so does a misspelt field
    results = engines.run_tasks(task, (raw, base_dir), grid, engine, address=address, processes=processes,
                                progress=progress)
    rows = [{"feasible": False, "reason": f"failed: {r.error}"} if isinstance(r, engines.Failed) else r for r in results]
    rows = tuple(p | r for p, r in zip(grid, rows))
    engines_varied = "backend" in vary or "serving.engine" in vary  # then the sources differ on purpose
    return Sweep(tuple(grid[0]), rows, price_warnings(rows) + (() if engines_varied else source_warnings(rows)))


def price_warnings(rows: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    """Where a cost comparison compares price sources: prices of different kinds or dates, and devices without one."""
    priced = {r["device"]: (r["usd_per_device_hour"], r["price_basis"], r["price_date"]) for r in rows
              if r.get("usd_per_device_hour") is not None}
    unpriced = sorted({r["device"] for r in rows if "device" in r and r.get("usd_per_device_hour") is None})
    out = []
    if len({(basis, date) for _, basis, date in priced.values()}) > 1:
        listed = "; ".join(f"{dev} ${usd:.2f}/h ({basis}, {date or 'undated'})" for dev, (usd, basis, date) in priced.items())
        out.append(f"prices come from different sources or dates ({listed}): part of each cost difference is the price "
                   "source; set prices.<device> in the spec to compare at prices of your own")
    if unpriced:
        out.append(f"no price for {', '.join(unpriced)}: their cost is missing, not zero; set prices.<device> in the spec")
    return tuple(out)


def source_warnings(rows: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    """Where points that name no engine each took their own (the best-covered engine per device, or the fits): part
    of each difference is then the operator-cost source."""
    by_source: dict[str, list[str]] = {}
    for r in rows:
        if r.get("priced_by") and r.get("device") and r["device"] not in by_source.get(r["priced_by"], []):
            by_source.setdefault(r["priced_by"], []).append(r["device"])
    if len(by_source) < 2:
        return ()
    listed = "; ".join(f"{', '.join(devices)}: " + ("the fitted kernel models" if source == "fitted" else
                                                    f"{source}'s measured tables") for source, devices in by_source.items())
    return (f"operators are priced by different sources ({listed}): part of each difference is the source; name one "
            "engine (--backend, --backends or MOEPLAN_BACKEND; fitted: the fitted models) to price every point alike",)


def compare(spec: str | Path | Spec | Mapping, devices: Sequence[str] = (), models: Sequence[str] = (),
            engine: str = "local", processes: int | None = None,
            progress: Callable[[int, int], None] | None = None, address: str | None = None,
            size: bool = True, backends: Sequence[str] = (), cloud: str | None = None,
            prices: str | Path | None = None) -> Sweep:
    """The same workload and SLOs across devices, models and/or serving engines (backends: NAME[@VERSION]), each
    on the spec's device count in whole nodes of its own unit or, with `size`, on as many as it needs where those
    are too few (the `sized` column says so)."""
    vary: dict[str, Sequence] = {}
    if devices:
        vary["device"] = list(devices)
    if models:
        vary["model"] = list(models)
    if backends:
        for backend in backends:  # a misspelt engine fails here, once
            engine_spec(backend)
        vary["backend"] = list(backends)
    if not vary:
        raise InputError("--devices", "nothing to compare", "give devices (e.g. h200-sxm,b200-sxm), models or backends")
    return sweep(spec, vary, engine, processes, progress, address, _sized_point if size else _plan_point, cloud, prices)
