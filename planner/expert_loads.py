"""The per-device expert load of each layout the layout search scores.

With routing statistics for a phase, the spec's placement method (the robust ILP by default, or EPLB's greedy
policy) places the experts of every EP size and slot count on the `fit` windows, and the candidate is scored with
that placement's per-device loads measured on the `evaluate` statistics under the runtime even split. Without:
the measured held-out EPLB skew of the catalog where one is published, else uniform load; always labelled.
"""

from __future__ import annotations

from typing import NamedTuple

from hwmodels import catalog
from hwmodels.deployment import Deployment, PhaseRouting
from hwmodels.expert_load import ExpertLoad
from hwmodels.layout import Layout
from planner.eplb import Policy, eplb_placement
from planner.ilp import ilp_placement
from planner.placement import Placement, device_loads, placed_routing
from planner.plan import PlacementSummary


class ScoredLoad(NamedTuple):
    """The load a candidate is scored with, the placement behind it and how that placement was made (None and
    None without routing statistics)."""

    load: ExpertLoad | None
    placement: Placement | None
    summary: PlacementSummary | None


class ExpertLoads:
    """Per-device expert load of each layout the search scores, one placement per (phase, EP size, slots).

    With routing statistics for the phase: the spec's placement method (the robust ILP by default) fitted on
    the `fit` windows, its per-device loads measured on the `evaluate` statistics under the runtime even
    split. Without: the measured held-out EPLB skew of the catalog where published, else uniform (labelled).
    Placements are solved once and shared by every candidate with the same EP size and slots.
    """

    def __init__(self, d: Deployment):
        self.d = d
        self.placements: dict[tuple[str, int, int], Placement] = {}
        self.scored: dict[tuple[str, int, int], ScoredLoad] = {}

    def __call__(self, layout: Layout, phase: str) -> ScoredLoad:
        d = self.d
        if not d.model.is_moe:
            return ScoredLoad(None, None, None)
        routing = d.routing.for_phase(phase) if d.routing else None
        if routing is None:
            skew = catalog.routing_skew(d.model.name)
            if skew is None:
                return ScoredLoad(ExpertLoad.uniform(layout.ep, len(d.model.moe_layers)), None, None)
            return ScoredLoad(ExpertLoad.measured_eplb(skew, phase, layout.ep, len(d.model.moe_layers)), None, None)
        key = (routing.phase, layout.ep, layout.redundant_experts)
        if key not in self.scored:  # one load per placement: the step model caches its all-to-all per load
            self.scored[key] = self._scored(routing, self.placement(routing, layout.ep, layout.redundant_experts))
        return self.scored[key]

    def _scored(self, routing: PhaseRouting, placement: Placement) -> ScoredLoad:
        shares = device_loads(placement, routing.evaluate)
        fitted = "fitted on it (in sample)" if routing.in_sample else f"fitted on {', '.join(routing.fit_on)}"
        source = f"{placement.method} placement {fitted}, loads of {routing.evaluated_on}" + \
            (f"; {routing.mapping}" if routing.mapping else "")
        # the placement itself rides along, so the step prices dispatch and combine by where the replicas sit
        load = ExpertLoad(shares, source, placed_routing(placement, routing.evaluate, source))
        imbalance = load.imbalance
        summary = PlacementSummary(placement.method, placement.slots_per_device, placement.num_devices, routing.fit_on,
                                   routing.evaluated_on, routing.mapping, source, float(imbalance.mean()),
                                   float(imbalance.max()), placement.objective, placement.lp_bound, placement.gap,
                                   placement.solver, placement.seconds)
        return ScoredLoad(load, placement, summary)

    def placement(self, routing: PhaseRouting, ep: int, redundant: int) -> Placement:
        key = (routing.phase, ep, redundant)
        if key not in self.placements:
            d, slots = self.d, self.d.model.moe.num_experts + redundant
            if d.routing.placement == "eplb":
                found = eplb_placement(sum(routing.fit), slots, ep, 1, Policy.GLOBAL)
            else:
                found = ilp_placement(list(routing.fit), slots, ep, time_limit_s=d.routing.time_limit_s)
            self.placements[key] = found
        return self.placements[key]
