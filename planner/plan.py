"""The Plan: what the planner recommends for a Deployment, as typed, frozen data.

The search (planner.search) returns it; the simulator replays it, the reports and the dashboard show it, and
plan.json is its one serialisation (planner.plan_json, which reads back exactly what it writes). A plan holds:
- the recommendation: a disaggregated deployment (a prefill pool and a decode pool) or an aggregated one
  (instances that prefill and decode), each pool a scored `Candidate` (layout, operating point, predicted step
  times and memory, the per-device expert load and expert placement it was scored with) and an instance count;
- the next-best options and the Pareto frontier of decode candidates, each kept as its predictions (their
  per-device loads and placement maps are left out: the recommendation's are the ones a deployment uses);
- what was assumed, and why nothing was recommended when nothing was;
- the replays that checked the cheapest options (`replays`, in the order tried): planned against replayed at the
  SLO percentile, and whether each held.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field, replace

from hwmodels.deployment import Deployment
from hwmodels.expert_load import ExpertLoad
from hwmodels.layout import Layout
from hwmodels.roles import Role
from hwmodels.serving import Performance
from hwmodels.speculation import Speculation
from planner.placement import Placement


class Mode(enum.StrEnum):
    DISAGGREGATED = "disaggregated"  # a prefill pool and a decode pool
    AGGREGATED = "aggregated"  # instances that prefill and decode


@dataclass(frozen=True)
class PlacementSummary:
    """How a candidate's expert placement was made and how evenly it spread the statistics it was scored on."""

    method: str  # ilp, eplb-global, ...
    slots_per_device: int
    devices: int
    fit_on: tuple[str, ...]  # the routing statistics it was fitted on
    evaluated_on: str  # and scored on
    mapping: str  # how another model's statistics were mapped onto this model ("" for its own)
    expert_load: str  # where the per-device load came from, in words
    mean_imbalance: float  # busiest device over the mean device, mean over MoE layers
    worst_layer_imbalance: float
    objective: float | None  # what the method reached on its fit data (None: it optimises no stated objective)
    lp_bound: float | None  # a proven lower bound on it
    gap: float | None
    solver: str
    seconds: float

    @property
    def label(self) -> str:
        """How the simulator names the placement it replays."""
        return f"{self.method} placement from the plan" + (f" (fitted on {', '.join(self.fit_on)})" if self.fit_on else "")


@dataclass(frozen=True, eq=False)
class Candidate:
    """One scored option of one role: `instance_devices` devices in `layout` at `work_per_device`."""

    role: Role
    instance_devices: int
    layout: Layout
    work_per_device: int  # decode / aggregated: sequences per device; prefill: tokens per device per step
    perf: Performance
    load: ExpertLoad | None = None  # the per-device expert load it was scored with (dropped by `summarised`)
    placement: Placement | None = None  # the expert placement behind that load (None: no routing data)
    placement_summary: PlacementSummary | None = None
    speculation: Speculation | None = None  # MTP speculative decoding the decode candidate was scored with

    @property
    def step_s(self) -> float:
        return self.perf.steps[0].time_s

    @property
    def tpot_s(self) -> float:
        """Time per output token at a full batch: the step over the tokens it advances a sequence."""
        return self.step_s / (self.speculation.tokens_per_step if self.speculation else 1.0)

    @property
    def tokens_per_s_per_device(self) -> float:
        return self.perf.tokens_per_s_per_device

    @property
    def tokens_per_s_per_user(self) -> float:
        return self.perf.tokens_per_s_per_user

    def describe(self, is_moe: bool) -> str:
        unit = "sequences" if self.role != Role.PREFILL else "tokens per step"
        mtp = f", MTP ({self.speculation.draft_tokens} draft)" if self.speculation else ""
        return (f"{self.instance_devices} devices, {self.layout.name(is_moe)}, {self.work_per_device} {unit} per "
                f"{self.layout.batch_device}{mtp}")

    def summarised(self) -> Candidate:
        """The candidate as its predictions, without its per-device load and placement maps."""
        return replace(self, load=None, placement=None)

    def __repr__(self) -> str:
        """One line: the option and its predictions (the maps are in its `load` and `placement`)."""
        unit = "prompt tokens" if self.role == Role.PREFILL else "output tokens"
        placed = f", {self.placement_summary.method} placement" if self.placement_summary else ""
        placed += f", MTP {self.speculation.draft_tokens} draft" if self.speculation else ""
        return (f"Candidate({self.role}: {self.instance_devices} devices, {self.perf.memory.layout_name}, "
                f"{self.work_per_device:,} {'tokens per step' if self.role == Role.PREFILL else 'sequences'} per device; "
                f"{self.tokens_per_s_per_device:,.0f} {unit}/s/device, {self.tokens_per_s_per_user:,.1f} tokens/s/user, "
                f"step {self.step_s * 1e3:,.1f} ms{placed})")


@dataclass(frozen=True, eq=False)
class Recommendation:
    mode: Mode
    decode: Candidate  # the aggregated instance in aggregated mode
    decode_instances: int
    prefill: Candidate | None
    prefill_instances: int
    ttft_s: float
    tpot_s: float
    usd_per_hour: float | None
    usd_per_million_input: float | None
    usd_per_million_output: float | None
    requests_per_s: float  # the traffic it is sized for (the workload's, or what one instance serves)
    # the share of each pool's throughput at its planned operating point that `requests_per_s` uses (aggregated:
    # the instances', in decode_utilization); <= 1 by construction: pools are sized up to carry the traffic
    decode_utilization: float
    prefill_utilization: float | None

    @property
    def decode_devices(self) -> int:
        return self.decode.instance_devices * self.decode_instances

    @property
    def prefill_devices(self) -> int:
        return self.prefill.instance_devices * self.prefill_instances if self.prefill else 0

    @property
    def devices(self) -> int:
        return self.decode_devices + self.prefill_devices

    @property
    def utilization(self) -> float:
        """The busiest pool's: the offered traffic over the traffic at which the deployment is full."""
        return max(self.decode_utilization, self.prefill_utilization or 0.0)

    @property
    def capacity_requests_per_s(self) -> float:
        """The traffic at which the busiest pool runs at its planned operating point all the time."""
        return self.requests_per_s / self.utilization

    @property
    def usd_per_million_output_at_capacity(self) -> float | None:
        """The same bill over the tokens of a full deployment: what a million tokens cost when the traffic fills it."""
        return None if self.usd_per_million_output is None else self.usd_per_million_output * self.utilization

    @property
    def usd_per_million_input_at_capacity(self) -> float | None:
        return None if self.usd_per_million_input is None else self.usd_per_million_input * self.utilization

    def summarised(self) -> Recommendation:
        return replace(self, decode=self.decode.summarised(),
                       prefill=None if self.prefill is None else self.prefill.summarised())

    def __repr__(self) -> str:
        """A few lines (the tables: moeplan.PlanView.to_frame)."""
        pools = [(self.prefill_instances, self.prefill)] if self.prefill else []
        lines = [f"Recommendation({self.mode}, {self.devices} devices)"]
        lines += [f"  {n} x {c!r}" for n, c in [*pools, (self.decode_instances, self.decode)]]
        lines.append(f"  TTFT {self.ttft_s:,.3f} s, TPOT {self.tpot_s * 1e3:,.1f} ms at {self.requests_per_s:,.3g} requests/s: "
                     f"{self.utilization:.0%} of its capacity ({self.capacity_requests_per_s:,.3g} requests/s)")
        if self.usd_per_hour is None:
            lines.append("  cost: no price for this device (prices.usd_per_device_hour sets one)")
        else:
            lines.append(f"  ${self.usd_per_hour:,.2f}/h: ${_usd(self.usd_per_million_input)} per million input tokens, "
                         f"${_usd(self.usd_per_million_output)} per million output tokens; at capacity "
                         f"${_usd(self.usd_per_million_input_at_capacity)} and ${_usd(self.usd_per_million_output_at_capacity)}")
        return "\n".join(lines)


@dataclass(frozen=True, eq=False)
class Pool:
    """Identical instances of one recommended candidate, as the simulator runs them: each instance is one
    expert-parallel group stepping in lockstep."""

    option: Candidate
    instances: int
    chunk_tokens_per_device: int  # prompt tokens per device per step (a decode pool recomputes preempted KV in it)

    @property
    def role(self) -> Role:
        return self.option.role

    @property
    def layout(self) -> Layout:
        return self.option.layout

    @property
    def batch_per_device(self) -> int | None:
        """The running sequences per device the planner chose (the engine's max-running-requests); None for prefill."""
        return None if self.role == Role.PREFILL else self.option.work_per_device

    @property
    def instance_devices(self) -> int:
        return self.layout.devices

    @property
    def devices(self) -> int:
        return self.instances * self.layout.devices

    @property
    def placement(self) -> Placement | None:
        return self.option.placement

    @property
    def placement_label(self) -> str:
        summary = self.option.placement_summary
        return "" if summary is None else summary.label


@dataclass(frozen=True)
class Pinned:
    """Layouts the user fixes (`moeplan estimate`): the search scores only these. `aggregated` alone pins an aggregated
    deployment; `prefill` and `decode` together a disaggregated one. batch_per_device: the decode (or aggregated)
    batch, None for each batch the KV cache admits; prefill_tokens_per_device likewise for the prefill chunk."""

    aggregated: Layout | None = None
    prefill: Layout | None = None
    decode: Layout | None = None
    batch_per_device: int | None = None
    prefill_tokens_per_device: int | None = None
    mtp: bool | None = None  # decode with the model's MTP drafts (True), without (False), either (None)

    def __post_init__(self):
        disaggregated = self.prefill is not None and self.decode is not None
        alone = self.prefill is None and self.decode is None
        if not (disaggregated and self.aggregated is None or alone and self.aggregated is not None):
            raise ValueError("pin an aggregated layout, or a prefill and a decode layout")

    def layout(self, role: Role) -> Layout | None:
        return {Role.AGGREGATED: self.aggregated, Role.PREFILL: self.prefill, Role.DECODE: self.decode}[role]

    @property
    def instance_sizes(self) -> list[int]:
        return sorted({x.devices for x in (self.aggregated, self.prefill, self.decode) if x is not None})


@dataclass(frozen=True)
class ReplayCheck:
    """One option replayed in the simulator before it is recommended: what the planner predicted against what the
    replay measured, both at the SLO percentile. holds: every request completed and both SLOs were met."""

    mode: Mode
    devices: int
    usd_per_hour: float | None
    planned_ttft_s: float
    planned_tpot_s: float
    replayed_ttft_s: float
    replayed_tpot_s: float  # NaN where no request generated two tokens
    requests: int
    completed: int
    holds: bool  # every request completed, and both replayed percentiles within the SLOs
    traffic: str  # what was replayed: the trace (its first N requests) or the synthetic traffic and its seed
    wall_s: float

    def describe(self) -> str:
        tpot = "n/a" if math.isnan(self.replayed_tpot_s) else f"{self.replayed_tpot_s * 1e3:,.1f}"
        verdict = "holds" if self.holds else "does not hold"
        missed = "" if self.completed == self.requests else f", {self.requests - self.completed:,} requests not served"
        return (f"{self.mode}, {self.devices} device{'s' * (self.devices > 1)}: TTFT {self.planned_ttft_s:,.2f} s planned / "
                f"{self.replayed_ttft_s:,.2f} s replayed, TPOT {self.planned_tpot_s * 1e3:,.1f} / {tpot} ms{missed}: "
                f"{verdict}")


@dataclass(frozen=True, eq=False)
class Plan:
    """What the planner recommends for `deployment`, and how it got there."""

    deployment: Deployment
    recommendation: Recommendation | None
    frontier: tuple[Candidate, ...]  # decode candidates: output tokens/s per device vs tokens/s per user
    candidates_scored: int
    infeasible: str  # why nothing was recommended ("" when something was)
    assumptions: tuple[str, ...]
    seconds: float
    alternatives: tuple[Recommendation, ...] = field(default=())
    infeasible_field: str = ""  # the spec field to change when nothing was recommended
    source: str = "moeplan plan"  # where it came from: the search, or the plan.json it was read from
    replays: tuple[ReplayCheck, ...] = ()  # the cheapest options replayed, in the order tried (empty: not checked)

    @property
    def pools(self) -> tuple[Pool, ...]:
        """The recommendation's pools (prefill first when disaggregated); empty when nothing was recommended."""
        r = self.recommendation
        if r is None:
            return ()
        chunk = self.deployment.serving.tokens_per_step
        decode = Pool(r.decode, r.decode_instances, chunk)
        return (decode,) if r.prefill is None else (Pool(r.prefill, r.prefill_instances, r.prefill.work_per_device), decode)

    @property
    def devices(self) -> int:
        return self.recommendation.devices if self.recommendation else 0

    def __repr__(self) -> str:
        """At most a dozen lines: the answer or why there is none; the detail is in the fields and tables."""
        d = self.deployment
        head = (f"Plan({d.model_display_name} on {d.cluster.num_devices} x {d.cluster.device.name}: "
                f"{self.candidates_scored:,} candidates scored in {self.seconds:,.1f} s, {self.source})")
        if self.recommendation is None:
            fix = f" (change {self.infeasible_field})" if self.infeasible_field else ""
            body = [f"  no deployment: {self.infeasible}{fix}"]
        else:
            body = ["  " + line for line in repr(self.recommendation).splitlines()]
        tail = (f"  {len(self.frontier)} frontier candidates (.frontier), {len(self.alternatives)} alternatives "
                f"(.alternatives), {len(self.assumptions)} assumptions (.assumptions)")
        return "\n".join([head, *body, tail])

    def describe(self) -> str:
        """The recommendation in one line: mode, devices, and every pool."""
        if self.recommendation is None:
            return f"no deployment: {self.infeasible}"
        is_moe = self.deployment.model.is_moe
        parts = [f"{p.instances} x {p.role} [{p.instance_devices} devices, {p.layout.name(is_moe)}"
                 + (f", batch {p.batch_per_device}/{p.layout.batch_device}" if p.batch_per_device else "")
                 + (f", {p.chunk_tokens_per_device} prompt tokens/device/step" if p.role != Role.DECODE else "") + "]"
                 for p in self.pools]
        d = self.deployment
        where = (f"{self.recommendation.prefill_devices} x {d.prefill_cluster.device.name} + "
                 f"{self.recommendation.decode_devices} x {d.cluster.device.name}") if d.mixed else \
            f"{self.devices} x {d.cluster.device.name}"
        return f"{self.recommendation.mode}, {where}: " + " + ".join(parts)


def _usd(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.2f}"


def pool_utilization(decode: Candidate, decode_instances: int, prefill: Candidate | None, prefill_instances: int,
                     requests_per_s: float, input_tokens: int, output_tokens: int) -> tuple[float, float | None]:
    """(decode, prefill) utilisation: the tokens/s the traffic asks of each pool over what the pool does at its
    planned operating point (an aggregated instance's output tokens/s already counts its prefill time)."""
    decode_util = requests_per_s * output_tokens / (decode.tokens_per_s_per_device * decode.instance_devices * decode_instances)
    if prefill is None:
        return decode_util, None
    return decode_util, requests_per_s * input_tokens / (prefill.tokens_per_s_per_device * prefill.instance_devices
                                                         * prefill_instances)
