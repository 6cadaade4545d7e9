"""The three placement methods side by side (`moeplan place`): contiguous, EPLB and the robust ILP, fitted on
earlier windows of routing statistics and evaluated on the next, under the runtime even split."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from planner.eplb import Policy, contiguous_placement, eplb_placement
from planner.ilp import ilp_placement, windows_of
from planner.placement import evaluate, expert_location_json


def compare_placements(fit_windows: Sequence[np.ndarray] | np.ndarray, eval_loads: np.ndarray, ep: int, redundant: int,
            nodes: int = 1, policy: Policy = Policy.GLOBAL, num_groups: int | None = None, time_limit_s: float = 60.0,
            robust: str = "mean", workers: int | None = None) -> dict:
    """Place with each method on `fit_windows` (one [L, E] array or several) and evaluate on `eval_loads`
    ([L, E]; the same data for an in-sample figure, the next window for an honest one), all under the
    runtime even split. EPLB is fitted on the windows' summed counts, as a deployment aggregates them.
    Returns what `moeplan place --json` prints, with the ILP placement as SGLang's `--init-expert-location`
    mapping under `expert_location`."""
    windows = windows_of(fit_windows)
    _, num_layers, num_experts = windows.shape
    num_slots = num_experts + redundant
    placements = {
        "contiguous": contiguous_placement(num_layers, num_experts, num_slots, ep),
        "eplb": eplb_placement(windows.sum(axis=0), num_slots, ep, nodes, policy, num_groups),
        "ilp": ilp_placement(list(windows), num_slots, ep, nodes, time_limit_s=time_limit_s, robust=robust,
                             workers=workers),
    }
    methods = {}
    for name, p in placements.items():
        result = evaluate(p, eval_loads)
        methods[name] = {k: result[k] for k in ("mean_imbalance", "worst_layer_imbalance", "step_cost")} | {
            "seconds": p.seconds, "method": p.method}
    ilp = placements["ilp"]
    return {"ep": ep, "redundant": redundant, "slots_per_device": num_slots // ep, "nodes": nodes,
            "fit_windows": len(windows), "eplb_policy": policy.value, "robust": robust, "methods": methods,
            "objective": ilp.objective, "lp_bound": ilp.lp_bound, "gap": ilp.gap, "solver": ilp.solver,
            "notes": ilp.notes, "expert_location": expert_location_json(ilp)}
