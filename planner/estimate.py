"""Score a layout the user fixes (`moeplan estimate`): the same models the search ranks options with, on one layout.

The search (planner.search.plan) runs pinned to the user's layouts: it sizes the pools for the workload's traffic
and predicts TTFT and TPOT at the SLO percentile, the throughput per device and the cost per million tokens. Where
the layout cannot meet an SLO, or its traffic needs more devices than the cluster has, the estimate says so and
predicts it anyway: it is planned again without that SLO (and on a cluster large enough), so every figure is still
the model's, at the fewest instances that carry the traffic with queues that drain.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from hwmodels.deployment import SLO, Deployment
from hwmodels.errors import InputError
from hwmodels.hardware import instance_cluster, make_cluster
from hwmodels.layouts import AFD_LIMIT, LIMITS, expressible
from hwmodels.memory import device_memory
from hwmodels.roles import Role
from planner import queueing
from planner.plan import Pinned, Plan, Recommendation
from planner.prompt_times import aggregated_prefill_s, prefill_s, prompt_lengths, rank_prefill_s
from planner.search import plan

UNBOUNDED_SLO_S = 1e6  # an SLO no prediction reaches: the estimate without that SLO
MAX_ESTIMATE_DEVICES = 100_000  # the cluster the traffic may grow a fixed layout to (spec's MAX_DEVICES)


@dataclass(frozen=True, eq=False)
class Estimate:
    """The pinned layout's prediction. plan: the pinned plan whose recommendation holds the figures (None: the
    layout cannot serve this workload at all, `why` says why); missed: the SLO fields it misses; beyond_cluster: its
    traffic needs more devices than the spec's cluster."""

    deployment: Deployment  # the spec's (the relaxed plan's has a grown cluster and no SLO it misses)
    pinned: Pinned
    plan: Plan | None
    missed: tuple[str, ...]
    beyond_cluster: bool
    why: str  # "" when it meets both SLOs within the cluster
    field: str  # the spec field or flag to change ("" when it meets)

    @property
    def unqueued_ttft_s(self) -> float | None:
        """TTFT at the SLO percentile with no queue at all: the prompts' prefill (and KV transfer) alone, the floor
        more instances of this layout approach."""
        r = self.plan.recommendation if self.plan else None
        return None if r is None else unqueued_ttft_s(self.deployment, r)

    @property
    def meets_slo(self) -> bool:
        return self.plan is not None and not self.missed and not self.beyond_cluster


def estimate(d: Deployment, pinned: Pinned) -> Estimate:
    """The pinned layouts' TTFT, TPOT, throughput and cost on `d` (module docstring)."""
    _check_fits(d, pinned)
    strict = plan(d, replayed=0, pinned=pinned)
    if strict.recommendation is not None:
        return Estimate(d, pinned, strict, (), False, "", "")
    grown = replace(d, cluster=_grown(d.cluster), prefill_cluster=d.prefill_cluster and _grown(d.prefill_cluster))
    for missed in ((), ("slo.ttft_s",), ("slo.tpot_s",), ("slo.ttft_s", "slo.tpot_s")):
        slo = SLO(UNBOUNDED_SLO_S if "slo.ttft_s" in missed else d.slo.ttft_s,
                  UNBOUNDED_SLO_S if "slo.tpot_s" in missed else d.slo.tpot_s, d.slo.percentile)
        relaxed = plan(replace(grown, slo=slo), replayed=0, pinned=pinned)
        r = relaxed.recommendation
        if r is None:
            continue
        missed = tuple(f for f, planned, asked in (("slo.ttft_s", r.ttft_s, d.slo.ttft_s),
                                                     ("slo.tpot_s", r.tpot_s, d.slo.tpot_s)) if planned > asked)
        return Estimate(d, pinned, relaxed, missed, not d.holds(r.decode_devices, r.prefill_devices),
                        *_why(d, relaxed, missed))
    return Estimate(d, pinned, None, ("slo.ttft_s", "slo.tpot_s"), False, strict.infeasible, strict.infeasible_field)


def _grown(cluster):
    return make_cluster(cluster.unit, units=max(1, MAX_ESTIMATE_DEVICES // cluster.unit.devices))


def _check_fits(d: Deployment, pinned: Pinned) -> None:
    """An InputError naming the layout's option where it cannot run on this hardware and model at all."""
    for role in Role:
        layout = pinned.layout(role)
        if layout is None:
            continue
        option = "--layout" if role == Role.AGGREGATED else f"--{role}"
        unit = d.cluster_of(role).unit
        if layout.devices >= unit.devices_per_node and layout.devices % unit.devices_per_node or \
                layout.devices < unit.devices_per_node and unit.devices_per_node % layout.devices:
            raise InputError(option, f"{layout.devices} devices are neither whole {unit.name} nodes of "
                             f"{unit.devices_per_node} nor a part of one that divides it",
                             f"use a layout over a divisor or a multiple of {unit.devices_per_node} devices")
        if layout.pp > 1 and role != Role.DECODE:
            raise InputError(option, f"pipeline stages (pp={layout.pp}) are planned for decode pools only",
                             "give pp=1 here, or pin the stages on --decode of a disaggregated estimate")
        if layout.ffn_devices and role != Role.DECODE:
            raise InputError(option, "attention-FFN disaggregation (afd=on) is planned for decode pools only",
                             "give afd=off here, or pin it on --decode of a disaggregated estimate")
        if layout.cp > 1 and role != Role.PREFILL:
            raise InputError(option, f"context parallelism (cp={layout.cp}) splits a prefill pool's prompts",
                             "give cp=1 here, or pin it on --prefill of a disaggregated estimate")
        if layout.cp > 1 and not expressible(layout, d.serving.engine):
            raise InputError(option, f"{d.serving.engine} has no prefill context parallelism at its pinned flags "
                             "(catalogs/engine_flags.yaml)", "give cp=1, or --backend sglang")
        if layout.pp > d.model.num_layers:
            raise InputError(option, f"{layout.pp} pipeline stages exceed {d.model_display_name}'s "
                             f"{d.model.num_layers} layers", "give fewer stages")
        if layout.ffn_devices and d.serving.engine is not None:
            raise InputError(option, f"{AFD_LIMIT}, {d.serving.engine} included", "give afd=off, or estimate "
                             "without an engine (no serving.engine, no --backend) to price it engine-agnostically")
        if not expressible(layout, d.serving.engine):
            raise InputError(option, f"{d.serving.engine} cannot run {layout.name(d.model.is_moe)}: "
                             + LIMITS[d.serving.engine], "give a layout it can run, or another --backend")
        cluster = instance_cluster(unit, layout.devices)
        if layout.tp > cluster.scaleup_domain_devices:
            raise InputError(option, f"attention TP{layout.tp} spans more than one scale-up domain of "
                             f"{cluster.scaleup_domain_devices} devices", "use a smaller attention TP and more DP")
        context = d.workload.context_tokens if role != Role.PREFILL else d.workload.input_tokens
        mem = device_memory(d.model, d.precision, cluster, layout, context, d.serving.hbm_utilization,
                            d.serving.tokens_per_step, sliding_kv_share=d.serving.sliding_kv_share)
        if not mem.fits or (role != Role.PREFILL and mem.concurrent_sequences < layout.attention_devices):
            gb = 1e9
            problem = (f"its routed experts and their workspace take {mem.ffn_device_bytes / gb:,.1f} of the "
                       f"{mem.usable_bytes / gb:,.1f} usable GB of each of its {layout.ffn_devices} FFN devices"
                       if mem.ffn_device_bytes > mem.usable_bytes else
                       f"weights and workspace take {(mem.weight_bytes + mem.workspace_bytes) / gb:,.1f} of its "
                       f"{mem.usable_bytes / gb:,.1f} usable GB per device" if mem.kv_capacity_bytes <= 0 else
                       f"its KV cache holds {mem.concurrent_sequences} sequences of {context:,} tokens, fewer than "
                       f"one per device")
            raise InputError(option, f"{d.model_display_name} does not fit {layout.devices} x {unit.device.name} "
                             f"in {layout.name(d.model.is_moe)}: {problem}",
                             "use more devices, or store weights or KV in fewer bytes (precision)")
        most = mem.concurrent_sequences // layout.attention_devices
        if role != Role.PREFILL and pinned.batch_per_device is not None and pinned.batch_per_device > most:
            raise InputError("--batch", f"{pinned.batch_per_device} sequences per device do not fit the KV cache of "
                             f"{layout.name(d.model.is_moe)} at {context:,}-token contexts (at most {most})",
                             f"give --batch {most} or less")


def unqueued_ttft_s(d: Deployment, r: Recommendation) -> float:
    """The recommendation's TTFT at the SLO percentile without waiting for a rank or a slot."""
    prompts = prompt_lengths(d)
    times = aggregated_prefill_s(d, r.decode, prompts) + d.serving.request_overhead_s if r.prefill is None else \
        prefill_s(d, prompts, rank_prefill_s(d, r.prefill, prompts))
    return queueing.ttft_percentile_s(times, (), d.slo.percentile)


def _why(d: Deployment, relaxed: Plan, missed: tuple[str, ...]) -> tuple[str, str]:
    """(why the pinned layout does not meet the spec, the field to change first), in the relaxed plan's figures."""
    r, p = relaxed.recommendation, f"p{d.slo.percentile:g}"
    parts = [f"{p} TTFT {r.ttft_s:,.2f} s > slo.ttft_s {d.slo.ttft_s:g} s ({unqueued_ttft_s(d, r):,.2f} s of it the "
             "prefill itself, without a queue)" for f in missed if f == "slo.ttft_s"]
    parts += [f"{p} TPOT {r.tpot_s * 1e3:,.1f} ms > slo.tpot_s {d.slo.tpot_s * 1e3:g} ms" for f in missed if f == "slo.tpot_s"]
    if not d.holds(r.decode_devices, r.prefill_devices):
        parts.append(f"the traffic needs {r.devices:,} devices, the cluster has {d.cluster.num_devices:,}"
                     + (f" (and {d.prefill_cluster.num_devices:,} for prefill)" if d.mixed else ""))
    return "; ".join(parts), (missed[0] if missed else "cluster.units")
