"""Long trace replays cut into shards that run as independent tasks (the caller says where: in this process, in
local processes or on Ray, moeplan.engines), merged into one SimResult.

Two cuts, and when each is exact:
- by instance: the requests of each group of expert-parallel instances, replayed on those instances alone. Exact
  where instances never interact: an aggregated plan (a disaggregated one routes every finished prompt across the
  whole decode pool), the round-robin router (the k-th admitted request goes to rank k mod R whatever the others
  do; least-loaded and prefix-aware look at every rank), one routing window per role (windows are spread over the
  replay's span, which a shard's own span is not), and no request rejected for want of KV (a rejection does not
  advance the round-robin, so the ranks of the requests after it shift: checked after the run). The per-request
  results are then the unsharded replay's, to float rounding (a shard's clock starts at its first arrival).
- by time window: consecutive slices of the trace, equal in requests, each replayed from an empty cluster with
  the routing windows of its time. Approximate at the window boundaries: a request still in flight when the next
  window starts never competes with that window's arrivals, and each window starts with no queue and a cold
  prefix cache, so near a boundary fewer requests compete (latencies come out low) and fewer prompts hit the
  cache. The result counts the requests in flight across a boundary: windows much longer than a request's
  latency (hours of a day-long trace) keep it small.

Either way the aggregates are rebuilt from the shards: sums (steps, busy time, queue-time integrals) and maxima
add up, and the timelines are the shards' bins spread evenly over the merged replay's bins (approximate within a
bin).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from hwmodels.errors import InputError
from hwmodels.ingest.requests import RequestTrace
from hwmodels.ingest.routing import RoutingTrace
from planner.plan import Mode, Plan
from sim.config import MIN_TIMELINE_BIN_S, Router, SimConfig
from sim.engine import simulate
from sim.results import SimResult

# How shards run: tasks(fn, shared, items) -> [fn(shared, item) for item in items], in item order; an item whose
# task failed may come back as anything with an `error` text instead of a SimResult (moeplan.engines.Failed).
Tasks = Callable[[Callable[[Any, Any], Any], Any, Sequence[Any]], list[Any]]


def in_this_process(fn: Callable[[Any, Any], Any], shared: Any, items: Sequence[Any]) -> list[Any]:
    return [fn(shared, item) for item in items]

CUTS = ("auto", "instance", "window")


@dataclass(frozen=True)
class ShardedReplay:
    """A replay run in shards. result: the merged SimResult, in the trace's request order; by: "instance" or
    "window"; exact: whether the per-request results are the unsharded replay's; note: why, or what is approximate."""

    result: SimResult
    by: str
    shards: int
    exact: bool
    note: str


def instance_blockers(plan: Plan, config: SimConfig, decode_routing: RoutingTrace | None,
                      prefill_routing: RoutingTrace | None) -> list[str]:
    """Why instances of this replay interact (empty: sharding by instance is exact, bar rejections)."""
    out = []
    if plan.recommendation.mode == Mode.DISAGGREGATED:
        out.append("a disaggregated plan routes each finished prompt across the whole decode pool")
    if config.router is not Router.ROUND_ROBIN:
        out.append(f"the {config.router.value} router looks at every rank (round-robin does not)")
    if any(r is not None and len(r.windows) > 1 for r in (decode_routing, prefill_routing)):
        out.append("routing windows are spread over the replay's span, which a shard's is not")
    if plan.recommendation.decode_instances < 2:
        out.append("the plan has one instance")
    return out


def simulate_sharded(plan: Plan, trace: RequestTrace, config: SimConfig = SimConfig(),
                     decode_routing: RoutingTrace | None = None, prefill_routing: RoutingTrace | None = None, *,
                     by: str = "auto", shards: int | None = None, tasks: Tasks = in_this_process) -> ShardedReplay:
    """sim.simulate's replay in shards, run by `tasks` (the plan, trace and routing are its shared part).

    by: "instance" (exact, where instance_blockers is empty), "window" (approximate at the boundaries), or "auto"
        (instance where exact, else window).
    shards: instance: groups of whole instances (default one per instance); window: slices (default the CPUs
        this process may use).
    """
    if plan.recommendation is None:
        raise InputError(f"{plan.source}: recommendation", f"is null ({plan.infeasible})", "plan again")
    if by not in CUTS:
        raise InputError("by", f"unknown cut '{by}'", f"one of {', '.join(CUTS)}")
    if len(trace) == 0:
        raise InputError("trace", "has no requests", "give a trace with at least one request")
    if shards is not None and shards < 1:
        raise InputError("shards", f"is {shards}", "a whole number >= 1")
    blockers = instance_blockers(plan, config, decode_routing, prefill_routing)
    if by == "instance" and blockers:
        raise InputError("by", "instance sharding would not be exact: " + "; ".join(blockers),
                         "use by='window' (approximate at the window boundaries)")
    by = "window" if by == "auto" and blockers else "instance" if by == "auto" else by
    if by == "instance":
        cuts = _instance_cuts(plan, len(trace), shards or plan.recommendation.decode_instances)
    else:
        cuts = _window_cuts(trace, shards or len(os.sched_getaffinity(0)))
    start = time.perf_counter()
    outcomes = tasks(_replay, (plan, trace, config, decode_routing, prefill_routing), cuts)
    for cut, outcome in zip(cuts, outcomes):
        if not isinstance(outcome, SimResult):
            raise RuntimeError(f"shard of requests {cut.index[0]}..{cut.index[-1]} failed: {getattr(outcome, 'error', outcome)}")
    merged = _merge(plan, trace, config, cuts, outcomes, time.perf_counter() - start)
    if by == "instance":
        rejected = int(merged.rejected.sum())
        exact = rejected == 0
        note = ("exact: instances are independent (aggregated plan, round-robin router, one routing window)" if exact
                else f"approximate: {rejected} requests longer than a rank's KV cache were rejected, which shifts the "
                     "round-robin ranks of the requests after them")
    elif len(cuts) == 1:
        exact, note = True, "exact: one window, the whole replay"
    else:
        crossing = _in_flight_across(trace, merged, cuts)
        exact = False
        note = (f"approximate: {crossing} of {len(trace)} requests were in flight across a window boundary (each window "
                "starts from an empty cluster)" + (f"; by instance it is not exact: {'; '.join(blockers)}" if blockers else ""))
    result = dataclasses.replace(merged, assumptions=merged.assumptions + (f"replayed in {len(cuts)} shards by {by}: {note}",))
    return ShardedReplay(result, by, len(cuts), exact, note)


@dataclass(frozen=True)
class _Cut:
    """One shard: the trace's requests at `index` (sorted); instances: how many of the plan's instances (None:
    all); span: the fraction [start, end) of the trace's arrival span whose routing windows it replays (None: all)."""

    index: np.ndarray
    instances: int | None
    span: tuple[float, float] | None


def _instance_cuts(plan: Plan, requests: int, shards: int) -> list[_Cut]:
    # Request k goes to rank k mod R, i.e. instance (k mod R) // dp; a shard holds a contiguous group of
    # instances, so its own round-robin over its ranks gives each of its requests the same rank.
    lay = plan.recommendation.decode.layout
    instances, dp = plan.recommendation.decode_instances, lay.dp // lay.cp * lay.pp  # ranks per instance (sim.engine._Instance)
    groups = np.array_split(np.arange(instances), min(shards, instances))
    instance_of = (np.arange(requests) % (instances * dp)) // dp
    cuts = [_Cut(np.nonzero((instance_of >= g[0]) & (instance_of <= g[-1]))[0], len(g), None) for g in groups]
    return [c for c in cuts if len(c.index)]


def _window_cuts(trace: RequestTrace, shards: int) -> list[_Cut]:
    span = max(trace.duration_s, 1e-9)
    slices = [s for s in np.array_split(np.arange(len(trace)), min(shards, len(trace))) if len(s)]
    return [_Cut(s, None, (trace.arrival_s[s[0]] / span, trace.arrival_s[s[-1]] / span)) for s in slices]


def _replay(shared, cut: _Cut) -> SimResult:
    """A task: one shard's replay (the plan, trace and routing come from the engine's shared copy)."""
    plan, trace, config, decode_routing, prefill_routing = shared
    if cut.instances is not None:
        plan = dataclasses.replace(plan, recommendation=dataclasses.replace(plan.recommendation, decode_instances=cut.instances))
    if cut.span is not None:
        decode_routing, prefill_routing = (None if r is None else dataclasses.replace(r, windows=_during(r.windows, *cut.span))
                                           for r in (decode_routing, prefill_routing))
    return simulate(plan, trace.take(cut.index), config, decode_routing, prefill_routing)


def _during(windows: np.ndarray, start: float, end: float) -> np.ndarray:
    """The routing windows [W, L, E] that sim.engine would replay between fractions start and end of the arrival
    span (it spreads them evenly over it); at least one."""
    w = len(windows)
    lo = min(int(start * w), w - 1)
    return windows[lo:max(min(math.ceil(end * w), w), lo + 1)]


def _merge(plan: Plan, trace: RequestTrace, config: SimConfig, cuts: list[_Cut], parts: list[SimResult],
           wall_s: float) -> SimResult:
    """One SimResult of the whole trace from its shards' (see the module docstring for what is exact)."""
    n = len(trace)
    per_request = {}
    for name, fill in (("cached_tokens", 0), ("ttft_s", math.nan), ("tpot_s", math.nan), ("e2e_s", math.nan),
                       ("preemptions", 0), ("rejected", False)):
        merged = np.full(n, fill, dtype=getattr(parts[0], name).dtype)
        for cut, part in zip(cuts, parts):
            merged[cut.index] = getattr(part, name)
        per_request[name] = merged
    arrival = trace.arrival_s
    served = ~per_request["rejected"]
    makespan = float(np.nanmax(arrival + per_request["e2e_s"]) - arrival[0]) if served.any() else 0.0
    observed = max(makespan, 1e-12)
    offsets = [float(arrival[cut.index[0]]) for cut in cuts]  # each shard's clock starts at its first arrival
    # sim.engine's timeline: the arrival span in timeline_bins bins (at least MIN_TIMELINE_BIN_S), then the drain
    bin_s = max(max(trace.duration_s, 1e-9) / config.timeline_bins, MIN_TIMELINE_BIN_S)
    bins = int(makespan / bin_s) + 1

    roles, util_t, occ_t = [], {}, {}
    for j, role in enumerate(plan.pools):
        stats = [p.roles[j] for p in parts]
        busy = sum(s.busy_s for s in stats)
        weights = [s.busy_s / busy if busy > 0 else 1 / len(stats) for s in stats]
        roles.append(dataclasses.replace(
            stats[0], instances=role.instances, devices=role.devices, steps=sum(s.steps for s in stats), busy_s=busy,
            utilisation=busy / (makespan * role.instances) if makespan > 0 else 0.0,
            mean_kv_occupancy=sum(w * s.mean_kv_occupancy for w, s in zip(weights, stats)),
            peak_kv_occupancy=max(s.peak_kv_occupancy for s in stats),
            mean_imbalance=sum(w * s.mean_imbalance for w, s in zip(weights, stats)),
            step_cost_evaluations=sum(s.step_cost_evaluations for s in stats)))
        busy_t = np.zeros(bins)
        occupied_t = np.zeros(bins)
        for part, offset, s in zip(parts, offsets, stats):
            part_busy = part.utilisation_over_time[role.role] * part.timeline_bin_s * s.instances
            busy_t += _rebin(part_busy, offset, part.timeline_bin_s, bin_s, bins)
            occupied_t += _rebin(part_busy * part.kv_occupancy_over_time[role.role], offset, part.timeline_bin_s, bin_s, bins)
        util_t[role.role] = busy_t / (bin_s * role.instances)
        occ_t[role.role] = np.divide(occupied_t, busy_t, out=np.zeros(bins), where=busy_t > 0)
    tokens_t = sum(_rebin(p.output_tokens_per_s_over_time * p.timeline_bin_s, o, p.timeline_bin_s, bin_s, bins)
                   for p, o in zip(parts, offsets))
    served_per_part = [int(p.served.sum()) for p in parts]
    return dataclasses.replace(
        parts[0], plan=plan.describe(), trace=trace.source, arrival_s=arrival, input_tokens=trace.input_tokens,
        output_tokens=trace.output_tokens, **per_request, makespan_s=makespan, devices=plan.devices, roles=tuple(roles),
        timeline_bin_s=bin_s, output_tokens_per_s_over_time=tokens_t / bin_s, utilisation_over_time=util_t,
        kv_occupancy_over_time=occ_t,
        # time integrals add up over shards: each part's mean x its own observed span is its integral
        mean_queue_length=sum(p.mean_queue_length * max(p.makespan_s, 1e-12) for p in parts) / observed,
        mean_in_system=sum(p.mean_in_system * max(p.makespan_s, 1e-12) for p in parts) / observed,
        mean_queue_wait_s=sum(p.mean_queue_wait_s * k for p, k in zip(parts, served_per_part)) / max(sum(served_per_part), 1),
        wall_seconds=wall_s)


def _rebin(amounts: np.ndarray, offset_s: float, part_bin_s: float, bin_s: float, bins: int) -> np.ndarray:
    """Amounts per bin of a shard (bins of part_bin_s from offset_s) spread evenly over each bin's time and summed
    into `bins` bins of bin_s from 0; a shard's last bin reaching past the replay's end adds to the last bin."""
    out = np.zeros(bins)
    edges = np.arange(bins + 1) * bin_s
    for i, amount in enumerate(amounts):
        if amount == 0:
            continue
        lo, hi = offset_s + i * part_bin_s, offset_s + (i + 1) * part_bin_s
        overlap = np.clip(np.minimum(edges[1:], hi) - np.maximum(edges[:-1], lo), 0, None)
        overlap[-1] += max(hi - max(edges[-1], lo), 0)
        out += amount * overlap / (hi - lo)
    return out


def _in_flight_across(trace: RequestTrace, result: SimResult, cuts: list[_Cut]) -> int:
    """Requests that arrived before a window boundary and finished after it (the next window's first arrival)."""
    finish = trace.arrival_s + np.nan_to_num(result.e2e_s, nan=0.0)
    count = 0
    for cut, after in itertools.pairwise(cuts):
        boundary = trace.arrival_s[after.index[0]]
        count += int((finish[cut.index] > boundary).sum())
    return count
