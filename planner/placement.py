"""Expert placement as data: which logical expert each physical slot holds, and how evenly a placement
spreads a window of routing statistics over its devices under the runtime split rule.

SGLang splits a replicated expert's tokens evenly over its replicas at run time, so every method is
evaluated with that rule (an oracle split would look better on paper and not be deployable). A step
waits for the busiest device of every layer, so the cost is the step cost: sum over layers of the
busiest device / sum of the mean device. The methods that produce placements are planner.eplb
(contiguous and EPLB's greedy policy) and planner.ilp (the robust MILP).

Shape legend: L = layers, E = logical experts, N = physical slots, D = devices, R = most replicas of one expert.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hwmodels.alltoall_placement import PlacedRouting, cross_domain_copies_per_token, placed_hits
from hwmodels.errors import InputError


@dataclass(frozen=True)
class Placement:
    """Which logical expert each physical slot holds, per MoE layer, in deepseek-ai/EPLB's form.

    phy2log: [L, N], the logical expert of each slot; slot p sits on device p // slots_per_device
      (SGLang's `physical_to_logical_map` for `--init-expert-location`).
    log2phy: [L, E, R], the slots of each logical expert in increasing order, -1 padded.
    logcnt: [L, E], replicas of each logical expert.
    objective: what the method reached on its fit data (the ILP: step cost on the fit windows, combined by
      its robust rule); None for methods that optimise no stated objective.
    lp_bound: a proven lower bound on that objective, None for methods that prove none.
    gap: (objective - lp_bound) / objective.
    """

    phy2log: np.ndarray
    log2phy: np.ndarray
    logcnt: np.ndarray
    slots_per_device: int
    method: str
    seconds: float
    objective: float | None = None
    lp_bound: float | None = None
    gap: float | None = None
    solver: str = ""
    notes: str = ""

    @property
    def num_devices(self) -> int:
        return self.phy2log.shape[1] // self.slots_per_device


def build_placement(phy2log: np.ndarray, num_experts: int, slots_per_device: int, method: str, seconds: float,
                    objective: float | None = None, lp_bound: float | None = None, solver: str = "",
                    notes: str = "") -> Placement:
    """Placement from phy2log: [L, N]; derives logcnt and log2phy and checks every expert has a slot."""
    phy2log = np.asarray(phy2log, dtype=np.int64)
    num_layers, num_slots = phy2log.shape
    assert num_slots % slots_per_device == 0
    assert phy2log.min() >= 0 and phy2log.max() < num_experts
    logcnt = np.zeros((num_layers, num_experts), dtype=np.int64)
    np.add.at(logcnt, (np.arange(num_layers)[:, None], phy2log), 1)
    assert logcnt.min() >= 1, "every logical expert needs at least one slot"
    log2phy = np.full((num_layers, num_experts, int(logcnt.max())), -1, dtype=np.int64)
    for layer in range(num_layers):
        # a stable sort by expert keeps each expert's slots in increasing order
        order = np.argsort(phy2log[layer], kind="stable")
        replica = np.arange(num_slots) - np.repeat(np.cumsum(logcnt[layer]) - logcnt[layer], logcnt[layer])
        log2phy[layer, phy2log[layer, order], replica] = order
    # a bound met to the last bit can sit an ulp above the objective: the gap is then 0, not -1e-16
    gap = max(0.0, (objective - lp_bound) / objective) if objective is not None and lp_bound is not None else None
    return Placement(phy2log, log2phy, logcnt, slots_per_device, method, seconds, objective, lp_bound, gap, solver,
                     notes)


def expert_location_json(placement: Placement) -> dict:
    """SGLang's `--init-expert-location` file for `placement`: {"physical_to_logical_map": [L][N]}, every
    layer of the statistics (dense layers too, as SGLang expects one row per layer). Only this key:
    SGLang passes the file's keys to `ExpertLocationMetadata.init_by_mapping` as arguments."""
    return {"physical_to_logical_map": placement.phy2log.tolist()}


def device_tokens(placement: Placement, loads: np.ndarray) -> np.ndarray:
    """loads: [L, E] -> [L, D] tokens each device receives when a replicated expert's tokens split
    evenly over its replicas (SGLang's runtime rule), whatever split the placement was fitted with."""
    loads = np.asarray(loads, dtype=float)
    if loads.shape != placement.logcnt.shape:
        raise InputError("loads", f"shape {loads.shape} does not match the placement's {placement.logcnt.shape}",
                         "evaluate on statistics of the same model (layers x experts)")
    per_replica = loads / placement.logcnt  # [L, E]
    slot_tokens = np.take_along_axis(per_replica, placement.phy2log, axis=1)  # [L, N]
    return slot_tokens.reshape(loads.shape[0], placement.num_devices, placement.slots_per_device).sum(axis=2)


def device_loads(placement: Placement, loads: np.ndarray) -> np.ndarray:
    """[L_moe, D] share of each MoE layer's routed (token, expert) pairs that each device receives, rows
    summing to 1 (what hwmodels.step.ExpertLoad takes); layers without load (dense layers) are dropped."""
    tokens = device_tokens(placement, loads)
    tokens = tokens[tokens.sum(axis=1) > 0]
    return tokens / tokens.sum(axis=1, keepdims=True)


def evaluate(placement: Placement, loads: np.ndarray) -> dict:
    """Balance of `placement` serving `loads` ([L, E]) under the runtime even split, over layers with load.

    imbalance of a layer = busiest device / mean device; step_cost = sum over layers of the busiest
    device / sum of the mean device (a step waits for the busiest device of every layer).
    """
    tokens = device_tokens(placement, loads)
    tokens = tokens[tokens.sum(axis=1) > 0]
    if not len(tokens):
        raise InputError("loads", "no layer has any routed tokens", "pass routing statistics of MoE layers")
    busiest, mean = tokens.max(axis=1), tokens.mean(axis=1)
    imbalance = busiest / mean
    return {"mean_imbalance": float(imbalance.mean()), "worst_layer_imbalance": float(imbalance.max()),
            "step_cost": float(busiest.sum() / mean.sum()), "per_layer": imbalance.tolist()}


def check_slots(num_layers: int, num_experts: int, num_slots: int, num_devices: int) -> None:
    """The shape checks every placement method shares; raises InputError naming the field."""
    if num_layers < 1 or num_experts < 1:
        raise InputError("loads", f"need at least one layer and one expert, got [{num_layers}, {num_experts}]")
    if num_devices < 1 or num_slots % num_devices:
        raise InputError("redundant", f"{num_slots} slots do not divide evenly over {num_devices} devices",
                         "choose redundant slots so that experts + redundant is a multiple of the EP size")
    if num_slots < num_experts:
        raise InputError("redundant", f"{num_slots} slots cannot hold {num_experts} experts", "add slots or devices")


def placed_routing(placement: Placement, loads: np.ndarray, source: str = "") -> PlacedRouting:
    """The placement and the per-expert shares of `loads` ([L, E]) as plain arrays for the step model
    (hwmodels.alltoall_placement), MoE layers only (layers without load are dropped, as in device_loads)."""
    loads = np.asarray(loads, dtype=float)
    if loads.shape != placement.logcnt.shape:
        raise InputError("loads", f"shape {loads.shape} does not match the placement's {placement.logcnt.shape}",
                         "evaluate on statistics of the same model (layers x experts)")
    keep = loads.sum(axis=1) > 0
    share = loads[keep] / loads[keep].sum(axis=1, keepdims=True)
    return PlacedRouting(share, placement.phy2log[keep], placement.slots_per_device, source)


def cross_node_bytes_per_token(placement: Placement, loads: np.ndarray, nodes: int, top_k: int, token_bytes: float,
                               num_groups: int = 1, groups_per_token: int = 1, tokens: np.ndarray | None = None) -> float:
    """Bytes one token sends across node boundaries in DeepEP's normal mode (one copy per remote node its
    experts reach), summed over the MoE layers of `loads`, its attention rank spread evenly over the devices.
    token_bytes: what one copy of a token carries there and back (dispatch + combine). The assumptions are
    hwmodels.alltoall_placement's (ASSUMPTION); tokens ([T, L, E] 0/1 per-token routing of the same statistics)
    replaces its independent draws by the tokens' own expert sets."""
    routing = placed_routing(placement, loads)
    domains = np.arange(placement.num_devices) // (placement.num_devices // nodes)
    moe = np.asarray(loads).sum(axis=1) > 0
    hits = placed_hits(routing, domains, top_k, num_groups, groups_per_token,
                       tokens=None if tokens is None else np.asarray(tokens)[:, moe])
    return float(cross_domain_copies_per_token(hits, "normal", top_k).sum() * token_bytes)
