"""What a replay measured: per-request latencies, their percentiles, throughput, goodput under the SLO,
utilisation and KV occupancy over time, and the cost per million output tokens.

Definitions (requests the cluster could never hold are counted as rejected and left out):
- TTFT: arrival -> first output token (disaggregated: the prompt's KV has reached the decode pool,
  which holds the first token; aggregated: the last prefill chunk is done).
- TPOT: (completion - first token) / (output tokens - 1); undefined (NaN) for one-token outputs.
- end-to-end latency: arrival -> last token.
- makespan: first arrival -> last completion; throughputs are per second of it.
- goodput: requests that met both SLOs (TTFT <= slo.ttft_s and TPOT <= slo.tpot_s) per second of the arrival
  span (first arrival -> last arrival): the drain after the last arrival serves no new traffic, and counting it
  would make a short replay's goodput look lower than the traffic it keeps up with (all at once: the makespan).
- cost per million output tokens: every device of the plan x its price per device-hour x the makespan,
  over the output tokens served (prefill devices included: they serve no output token on their own).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from hwmodels.deployment import SLO
from hwmodels.ingest.requests import RequestTrace
from planner.plan import Plan, Pool
from sim.loads import RoleLoads
from sim.request_state import Requests, State

PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class RoleStats:
    """One pool over the whole replay. utilisation: fraction of the makespan its instances spent stepping;
    kv_occupancy: step-time-weighted mean of KV tokens in use over KV capacity."""

    role: str
    instances: int
    devices: int
    steps: int
    busy_s: float
    utilisation: float
    mean_kv_occupancy: float
    peak_kv_occupancy: float
    kv_capacity_tokens_per_group: int
    max_running_per_group: int | None
    mean_imbalance: float  # busiest device over the mean device, mean over MoE layers and routing windows
    expert_load: str
    step_cost_evaluations: int
    routing_mapping: str = ""  # how another model's routing statistics were mapped onto this model

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True, eq=False)
class SimResult:
    """Per request (arrays of R, trace order): arrival_s, input_tokens, output_tokens, cached_tokens (prefix-cache
    hits), ttft_s, tpot_s, e2e_s (NaN where rejected), preemptions, rejected (bool).
    Over time (arrays of bins of timeline_bin_s from the first arrival to the last completion):
    output_tokens_per_s_over_time, and per role utilisation_over_time (fraction of the bin its instances
    stepped) and kv_occupancy_over_time (KV in use over capacity, weighted by step time; 0 where idle)."""

    plan: str
    trace: str
    slo: SLO
    arrival_s: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    cached_tokens: np.ndarray
    ttft_s: np.ndarray
    tpot_s: np.ndarray
    e2e_s: np.ndarray
    preemptions: np.ndarray
    rejected: np.ndarray
    makespan_s: float
    devices: int
    usd_per_device_hour: float | None
    roles: tuple[RoleStats, ...]
    timeline_bin_s: float
    output_tokens_per_s_over_time: np.ndarray
    utilisation_over_time: dict[str, np.ndarray]
    kv_occupancy_over_time: dict[str, np.ndarray]
    mean_queue_length: float  # time-average of requests waiting for their first prefill chunk
    mean_queue_wait_s: float  # their mean wait
    mean_in_system: float  # time-average of requests arrived and not completed
    assumptions: tuple[str, ...]
    wall_seconds: float = field(default=0.0)

    @property
    def served(self) -> np.ndarray:
        return ~self.rejected

    @property
    def completed(self) -> int:
        return int(self.served.sum())

    @property
    def output_tokens_served(self) -> int:
        return int(self.output_tokens[self.served].sum())

    @property
    def output_tokens_per_s(self) -> float:
        return self.output_tokens_served / self.makespan_s if self.makespan_s > 0 else 0.0

    @property
    def input_tokens_per_s(self) -> float:
        return int(self.input_tokens[self.served].sum()) / self.makespan_s if self.makespan_s > 0 else 0.0

    @property
    def meets_slo(self) -> np.ndarray:
        """Per request: served, TTFT within the SLO and TPOT within it (or a one-token output)."""
        tpot_ok = np.isnan(self.tpot_s) | (self.tpot_s <= self.slo.tpot_s)
        return self.served & (self.ttft_s <= self.slo.ttft_s) & tpot_ok

    @property
    def goodput_requests_per_s(self) -> float:
        span = float(self.arrival_s.max() - self.arrival_s.min()) if len(self.arrival_s) else 0.0
        span = span if span > 0 else self.makespan_s
        return int(self.meets_slo.sum()) / span if span > 0 else 0.0

    @property
    def prefix_cache_hit_rate(self) -> float:
        """Prompt tokens served from the prefix cache over all prompt tokens."""
        total = int(self.input_tokens[self.served].sum())
        return int(self.cached_tokens[self.served].sum()) / total if total else 0.0

    @property
    def usd_per_million_output_tokens(self) -> float | None:
        if self.usd_per_device_hour is None or not self.output_tokens_served:
            return None
        usd = self.devices * self.usd_per_device_hour * self.makespan_s / 3600.0
        return usd / self.output_tokens_served * 1e6

    def percentile(self, metric: str, q: float) -> float:
        """The q-th percentile of "ttft", "tpot" or "e2e" over served requests (NaN when none has one)."""
        values = {"ttft": self.ttft_s, "tpot": self.tpot_s, "e2e": self.e2e_s}[metric]
        values = values[self.served & ~np.isnan(values)]
        return float(np.percentile(values, q)) if len(values) else math.nan

    def to_json(self) -> dict:
        out = {"requests": len(self.arrival_s), "completed": self.completed, "rejected": int(self.rejected.sum()),
               "plan": self.plan, "trace": self.trace}
        for metric in ("ttft", "tpot", "e2e"):
            for q in PERCENTILES:
                out[f"{metric}_p{q}_s"] = _num(self.percentile(metric, q))
            out[f"{metric}_slo_percentile_s"] = _num(self.percentile(metric, self.slo.percentile))
        usd = self.usd_per_million_output_tokens
        out |= {
            "slo": {"ttft_s": self.slo.ttft_s, "tpot_s": self.slo.tpot_s, "percentile": self.slo.percentile},
            "slo_attainment": float(self.meets_slo.sum() / max(self.completed, 1)),
            "output_tokens_per_s": self.output_tokens_per_s,
            "input_tokens_per_s": self.input_tokens_per_s,
            "goodput_requests_per_s": self.goodput_requests_per_s,
            "usd_per_million_output_tokens": usd,
            "devices": self.devices,
            "usd_per_device_hour": self.usd_per_device_hour,
            "makespan_s": self.makespan_s,
            "prefix_cache_hit_rate": self.prefix_cache_hit_rate,
            "preemptions": int(self.preemptions.sum()),
            "mean_queue_length": self.mean_queue_length,
            "mean_queue_wait_s": self.mean_queue_wait_s,
            "mean_in_system": self.mean_in_system,
            "roles": [r.to_json() for r in self.roles],
            "timeline": {"bin_s": self.timeline_bin_s,
                         "output_tokens_per_s": self.output_tokens_per_s_over_time.tolist(),
                         "utilisation": {k: v.tolist() for k, v in self.utilisation_over_time.items()},
                         "kv_occupancy": {k: v.tolist() for k, v in self.kv_occupancy_over_time.items()}},
            "assumptions": list(self.assumptions),
            "wall_seconds": self.wall_seconds,
        }
        return out

    def summary(self) -> str:
        """A few lines for a terminal."""
        usd = self.usd_per_million_output_tokens
        lines = [
            f"{self.completed:,} of {len(self.arrival_s):,} requests served in {self.makespan_s:,.0f} s of simulated time "
            f"({self.wall_seconds:.1f} s wall); plan: {self.plan}",
            f"trace: {self.trace}",
            "TTFT p50 {:.3f} s, p90 {:.3f} s, p99 {:.3f} s (SLO {:g} s at p{:g})".format(
                self.percentile("ttft", 50), self.percentile("ttft", 90), self.percentile("ttft", 99), self.slo.ttft_s,
                self.slo.percentile),
            "TPOT p50 {:.1f} ms, p90 {:.1f} ms, p99 {:.1f} ms (SLO {:g} ms)".format(
                *(1e3 * self.percentile("tpot", q) for q in PERCENTILES), self.slo.tpot_s * 1e3),
            "end-to-end p50 {:.1f} s, p99 {:.1f} s".format(self.percentile("e2e", 50), self.percentile("e2e", 99)),
            f"{self.output_tokens_per_s:,.0f} output tokens/s, goodput {self.goodput_requests_per_s:.2f} requests/s "
            f"({self.meets_slo.sum() / max(self.completed, 1):.1%} within both SLOs), prefix-cache hits "
            f"{self.prefix_cache_hit_rate:.1%} of prompt tokens, {int(self.preemptions.sum())} preemptions",
            ("cost: " + (f"${usd:,.3f} per million output tokens ({self.devices} devices at ${self.usd_per_device_hour:.2f}/h)"
                         if usd is not None else "no price for the device (set prices in the spec)")),
        ]
        for r in self.roles:
            lines.append(f"{r.role}: {r.instances} x {r.devices // r.instances} devices, utilisation {r.utilisation:.1%}, "
                         f"KV occupancy mean {r.mean_kv_occupancy:.1%} / peak {r.peak_kv_occupancy:.1%}; expert load "
                         f"(imbalance {r.mean_imbalance:.3f}): {r.expert_load}")
        lines += [f"routing mapped: {m}" for m in dict.fromkeys(r.routing_mapping for r in self.roles if r.routing_mapping)]
        return "\n".join(lines)


def _num(x: float) -> float | None:
    return None if math.isnan(x) else x


@dataclass(eq=False)
class PoolTally:
    """What one pool did over a replay, counted step by step (mutable: the replay adds to it)."""

    planned: Pool  # the plan's pool it ran
    capacity: int  # KV tokens one DP group holds
    cap: int | None  # running sequences per DP group (None: a prefill pool)
    loads: RoleLoads
    steps: int = 0
    busy_s: float = 0.0
    occupancy_s: float = 0.0  # sum over steps of KV occupancy x duration
    peak_occupancy: float = 0.0
    busy_bins: list[float] = field(default_factory=list)  # per timeline bin: step seconds within it
    occupancy_bins: list[float] = field(default_factory=list)  # and occupancy x those seconds

    def step(self, start_s: float, duration_s: float, occupancy: float, bin_s: float) -> None:
        """Count a step of [start_s, start_s + duration_s). Its seconds go to the bins they fall in: all of a
        1.2 s prefill step in the bin it starts in would put that bin over 100% busy. The bins must exist."""
        self.steps += 1
        self.busy_s += duration_s
        self.occupancy_s += occupancy * duration_s
        self.peak_occupancy = max(self.peak_occupancy, occupancy)
        end_s = start_s + duration_s
        b = int(start_s / bin_s)
        while b * bin_s < end_s and b < len(self.busy_bins):
            seconds = min(end_s, (b + 1) * bin_s) - max(start_s, b * bin_s)
            self.busy_bins[b] += seconds
            self.occupancy_bins[b] += occupancy * seconds
            b += 1


def assemble(plan: Plan, trace: RequestTrace, req: Requests, tallies: list[PoolTally], evaluations: list[int],
             tokens_bins: list[float], bin_s: float, waiting_area: float, system_area: float,
             assumptions: tuple[str, ...], wall_seconds: float) -> SimResult:
    """The SimResult of a finished replay from what it counted: per request, per pool and over time.
    waiting_area, system_area: time integrals of the requests waiting and in the system (Little's law)."""
    d = plan.deployment
    arrival = np.asarray(req.arrival)
    first = np.asarray(req.first_token)
    finish = np.asarray(req.finish)
    out = np.asarray(req.out)
    rejected = np.asarray(req.state) == State.REJECTED
    served = ~rejected
    makespan = float(np.nanmax(finish) - arrival[0]) if served.any() else 0.0
    overhead_s = d.serving.request_overhead_s  # the engine's per-request latency outside the devices' steps
    ttft = first - arrival + overhead_s
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(out > 1, (finish - first) / (out - 1), math.nan)
    waits = np.asarray(req.queue_start)[served] - arrival[served]
    bins = int(makespan / bin_s) + 1  # every series as long as the replay
    tokens_bins = tokens_bins + [0.0] * (bins - len(tokens_bins))
    roles, util_t, occ_t = [], {}, {}
    for tally, count in zip(tallies, evaluations):
        role = tally.planned
        wall = makespan * role.instances
        roles.append(RoleStats(
            role=role.role, instances=role.instances, devices=role.devices, steps=tally.steps, busy_s=tally.busy_s,
            utilisation=tally.busy_s / wall if wall > 0 else 0.0,
            mean_kv_occupancy=tally.occupancy_s / tally.busy_s if tally.busy_s > 0 else 0.0,
            peak_kv_occupancy=tally.peak_occupancy, kv_capacity_tokens_per_group=tally.capacity,
            max_running_per_group=tally.cap, mean_imbalance=float(np.mean(tally.loads.mean_imbalance)),
            expert_load=tally.loads.label, step_cost_evaluations=count, routing_mapping=tally.loads.mapping))
        busy = np.asarray(tally.busy_bins + [0.0] * (bins - len(tally.busy_bins)))
        occupied = np.asarray(tally.occupancy_bins + [0.0] * (bins - len(tally.occupancy_bins)))
        util_t[role.role] = busy / (bin_s * role.instances)
        occ_t[role.role] = np.divide(occupied, busy, out=np.zeros(len(busy)), where=busy > 0)
    # the plan's devices at their own prices (a prefill pool on other hardware has its own), as one mean rate
    prices = [(pool.devices, d.price_of(pool.role)) for pool in plan.pools]
    price = None if not prices or any(p is None for _, p in prices) else \
        sum(n * p.usd_per_device_hour for n, p in prices) / sum(n for n, _ in prices)
    observed = max(makespan, 1e-12)
    return SimResult(
        plan=plan.describe(), trace=trace.source, slo=d.slo, arrival_s=arrival,
        input_tokens=np.asarray(req.inp), output_tokens=out, cached_tokens=np.asarray(req.cached),
        ttft_s=np.where(served, ttft, math.nan), tpot_s=np.where(served, tpot, math.nan),
        e2e_s=np.where(served, finish - arrival + overhead_s, math.nan), preemptions=np.asarray(req.preempted), rejected=rejected,
        makespan_s=makespan, devices=plan.devices, usd_per_device_hour=price, roles=tuple(roles),
        timeline_bin_s=bin_s, output_tokens_per_s_over_time=np.asarray(tokens_bins) / bin_s,
        utilisation_over_time=util_t, kv_occupancy_over_time=occ_t,
        mean_queue_length=waiting_area / observed,
        mean_queue_wait_s=float(waits.mean()) if len(waits) else 0.0,
        mean_in_system=system_area / observed,
        assumptions=assumptions, wall_seconds=wall_seconds)
