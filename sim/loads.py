"""Per-layer expert load of each routing window on one pool's EP group: the replayed routing statistics
mapped through the expert placement under SGLang's runtime rule (a replicated expert's tokens split
evenly over its replicas: planner.placement.device_loads).

The placement is the plan's where it has one for the role. Otherwise the simulator places the experts
itself, as named by `PlacementFallback`: EPLB's global policy (planner.eplb) fitted on the first
window only (what a deployment would have measured before it started; later windows are held out),
or contiguous (no balancing). Without routing data every window is uniform load, labelled so.
Each window's statistics are the expected load over its traffic: the sampling noise of a small batch's
actual top-k choices is not replayed.

The loads go to the step model as they are (per device, per layer), with the placement itself, so dispatch and
combine cost the bytes each link class carries given where the replicas sit (hwmodels.alltoall_placement); it
reads each MoE layer at its busiest device (and its copies per token) and costs every distinct value once. The simulator's step contexts read that figure to
IMBALANCE_DECIMALS (the planner's to 3), which leaves a window a handful of distinct layer loads and makes a
step evaluation about three times cheaper, for at most 0.4% of step time (tests/test_sim_steps.py).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hwmodels.errors import InputError
from hwmodels.layout import Layout
from hwmodels.model_arch import ModelArch
from hwmodels.expert_load import ExpertLoad
from planner.eplb import Policy, contiguous_placement, eplb_placement
from planner.placement import Placement, device_loads, placed_routing
from hwmodels.ingest.routing import RoutingTrace


IMBALANCE_DECIMALS = 2


class PlacementFallback(enum.Enum):
    """How experts are placed when the plan carries no placement for a role."""

    EPLB = "eplb"
    CONTIGUOUS = "contiguous"


@dataclass(frozen=True, eq=False)
class RoleLoads:
    """loads: per routing window (in time order) the ExpertLoad [MoE layers, EP] of the role's EP group; (None,) for a
    dense model.
    mean_imbalance: per window, the mean over MoE layers of the busiest device's load over the mean device's
    (1.0 is perfect balance), before rounding. label: where the load came from, for every report; mapping: how
    another model's statistics were mapped onto this model ("" for its own, or no routing data)."""

    loads: tuple[ExpertLoad | None, ...]
    mean_imbalance: tuple[float, ...]
    label: str
    mapping: str = ""


def role_loads(arch: ModelArch, layout: Layout, routing: RoutingTrace | None, placement: Placement | None,
               placement_label: str, fallback: PlacementFallback) -> RoleLoads:
    if not arch.is_moe:
        return RoleLoads((None,), (1.0,), "dense model")
    n_moe, ep = len(arch.moe_layers), layout.ep
    if routing is None:
        return RoleLoads((ExpertLoad.uniform(ep, n_moe),), (1.0,), "uniform load (no routing data)")
    expected = (arch.num_layers, arch.moe.num_experts)
    if routing.windows.shape[1:] != expected:
        raise InputError("routing", f"{routing.source} has [layers, experts] {list(routing.windows.shape[1:])}, "
                         f"{arch.name} needs {list(expected)}", "load it for this model (hwmodels.ingest.routing maps other models)")
    slots = arch.moe.num_experts + layout.redundant_experts
    if placement is None:
        if slots % ep:
            raise InputError("layout.redundant_experts", f"{slots} expert slots do not divide over EP {ep}",
                             "plan a layout whose experts + redundant slots are a multiple of the EP size")
        if fallback is PlacementFallback.EPLB:
            placement = eplb_placement(routing.windows[0], slots, ep, 1, Policy.GLOBAL)
            w = len(routing.windows)
            held_out = " (in sample)" if w == 1 else "; window 1 held out" if w == 2 else f"; windows 1-{w - 1} held out"
            placement_label = f"EPLB global policy fitted on window 0{held_out}"
        else:
            placement = contiguous_placement(arch.num_layers, arch.moe.num_experts, slots, ep)
            placement_label = "contiguous placement (no balancing)"
    elif placement.num_devices != ep:
        raise InputError("placement", f"spreads experts over {placement.num_devices} devices, the layout has EP {ep}",
                         "plan again so the placement matches the layout")
    loads = []
    for w, window in enumerate(routing.windows):
        shares = device_loads(placement, window)
        if shares.shape != (n_moe, ep):
            raise InputError("routing", f"window {w} of {routing.source} has load on {shares.shape[0]} layers, "
                             f"{arch.name} has {n_moe} MoE layers", "give statistics with load on every MoE layer")
        label = f"{placement_label}, window {w} of {routing.source}"
        # the placement rides along: the step prices the window's dispatch and combine by where the replicas sit
        loads.append(ExpertLoad(shares, label, placed_routing(placement, window, label)))
    imbalance = tuple(float(load.imbalance.mean()) for load in loads)
    label = f"{routing.source} ({len(loads)} window{'s' if len(loads) > 1 else ''} in time order) through {placement_label}"
    return RoleLoads(tuple(loads), imbalance, label, routing.note)


def concat_routing(traces: list[RoutingTrace]) -> RoutingTrace:
    """Several routing traces of one model replayed one after the other: their windows in the given order."""
    if not traces:
        raise InputError("routing", "no routing files given", "pass one or more routing statistics files")
    shapes = {t.windows.shape[1:] for t in traces}
    if len(shapes) > 1 or len({t.top_k for t in traces}) > 1:
        raise InputError("routing", f"files of different shapes or top-k: {', '.join(t.source for t in traces)}",
                         "give statistics of one model")
    if len(traces) == 1:
        return traces[0]
    notes = list(dict.fromkeys(t.note for t in traces if t.note))
    return RoutingTrace(np.concatenate([t.windows for t in traces]), traces[0].top_k, _sources(traces), "; ".join(notes))


def _sources(traces: list[RoutingTrace]) -> str:
    """"folder/{a, b}.json (kind)" for files of one folder, suffix and kind (hwmodels.ingest.routing names a file
    "path (kind)"); the sources joined by "; " otherwise."""
    parts = [t.source.rpartition(" (") for t in traces]
    paths = [Path(path) for path, _, _ in parts]
    if len({(p.parent, p.suffix) for p in paths}) == 1 and len({kind for _, _, kind in parts}) == 1 and all(paths):
        names = ", ".join(p.stem for p in paths)
        return f"{paths[0].parent / ('{' + names + '}' + paths[0].suffix)} ({parts[0][2]}"
    return "; ".join(t.source for t in traces)
