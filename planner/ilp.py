"""The robust expert-placement MILP (planner.placement holds the Placement type and its evaluation).

The problem (moeplan issue 5). Per MoE layer choose the replica count of every logical expert (>= 1,
summing to the slots), the device of every slot (the same number per device), and the token split of
a replicated expert. The split is not free: SGLang splits a replicated expert's tokens evenly over its
replicas at run time, so every method is fitted and evaluated with that rule (an oracle split would
look better on paper and not be deployable). A step waits for the busiest device of every layer, so
the cost is the step cost: sum over layers of the busiest device / sum of the mean device.

Placement is decided on past statistics and serves the next window, so the ILP fits several windows at
once. Each window is scaled so every layer totals D (the mean device carries 1, however many tokens
the window counted) and the robust rule (ROBUST_RULES) combines the windows' busiest devices: "mean"
(the default) minimises the expected step cost over them, which also bounds the cost of their even
mix; "worst" minimises each layer's worst window. "mean" held up better on held-out files
(benchmarks/bench_placement.py) and is the default.

Layers are independent and solved one after the other (or in parallel processes) under one time
limit. For each layer:
1. start: the better of EPLB's global policy on the summed windows and a robust greedy start
   (replicas by each expert's heaviest window, packing that keeps every window's devices level);
2. lower bound (planner.placement_bound): perfect balance (the LP relaxation's value), the replication bound and
   pigeonhole bounds on how many heavy replicas can exist, per window, combined by the rule;
3. pairwise swaps evaluated exactly (`_local_search`), then variable-neighbourhood search in which each
   step is an exact MILP over a few devices (`_solve_neighbourhood`: integer replicas per option of
   replica count, which keeps the even split linear; named constraints one_replica_count, replicas,
   slots_per_device, device_load, symmetry, worst_window, group_domain), solved by HiGHS (CBC where
   HiGHS is missing) from the incumbent with a time limit; its status is checked before any value is
   read. Every step keeps the incumbent unless the MILP found a better one, so the result is never
   worse than the start, and in sample never worse than EPLB.
HBM: every device holds the same number of slots, so the expert-weight + KV budget is one check
(`HbmBudget`). The scale-out term (`scaleout_weight`, `_spread`) counts the scale-out domains each expert
group spans, weighted by the group's share of routed pairs; with it the starts add planner.group_start's rows.

Shape legend: L = layers, E = logical experts, N = physical slots, D = devices, W = fit windows,
S = slots per device (N = D x S), R = most replicas of one expert, G = expert groups, M = domains.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pulp

from hwmodels.errors import InputError
from planner.group_start import group_aligned_rows
from planner.eplb import DeadlinePassed, Policy, eplb_placement, replicate_experts
from planner.milp_solver import solver, solver_name
from planner.placement_bound import layer_bound as _layer_bound, layer_bound_by as _layer_bound_by  # noqa: F401
from planner.placement import Placement, build_placement, check_slots


ROBUST_RULES = {
    "mean": "minimise the mean over fit windows of the step cost: the expected cost when the next window "
            "looks like one of them, and an upper bound on the cost of their even mix",
    "worst": "minimise, per layer, the busiest device of the worst fit window: an upper bound on the cost "
             "of every mixture of the windows",
}
_WORST_TIE_BREAK = 1e-3  # the worst rule also lowers the other windows' peaks, at this weight
_NEIGHBOURHOOD_SLOTS = (8, 24)  # fewest and most slots re-placed per MILP: each solves exactly in 10-100 ms
_GROW_OPTIONS = 6  # hottest free experts per MILP that may gain a replica
_PATIENCE = 6  # consecutive neighbourhoods without improvement before a layer is left as it is
_SUB_LIMIT_S = 2.0  # longest single MILP
_MAX_MILP_SLOTS = 1024  # a neighbourhood of more slots takes seconds to build before HiGHS starts: swaps only
_CHECK_EVERY = 256  # greedy or swap steps between two looks at the clock


@dataclass(frozen=True)
class HbmBudget:
    """HBM of one device for routed-expert weights and the KV cache. Every device holds the same number
    of slots, so one check covers the EP group: slots x MoE layers x expert_bytes + kv_bytes <= hbm_bytes."""

    hbm_bytes: float
    expert_bytes: float
    kv_bytes: float = 0.0

    def check(self, slots_per_device: int, moe_layers: int) -> None:
        need = slots_per_device * moe_layers * self.expert_bytes + self.kv_bytes
        if need > self.hbm_bytes:
            raise InputError("hbm_bytes", f"{slots_per_device} slots x {moe_layers} MoE layers x "
                             f"{self.expert_bytes:.4g} B + KV budget {self.kv_bytes:.4g} B = {need:.4g} B exceed "
                             f"{self.hbm_bytes:.4g} B by {need - self.hbm_bytes:.4g} B",
                             "fewer redundant slots, a larger EP group, or a smaller KV budget")


@dataclass(frozen=True)
class _Topology:
    """What the scale-out term needs: domain of each device [D], group of each expert [E], weight."""

    domain: np.ndarray
    group: np.ndarray | None
    weight: float

    @property
    def active(self) -> bool:
        return self.weight > 0 and self.group is not None and self.domain.max() > 0


def windows_of(fit_loads) -> np.ndarray:
    """fit_loads: one [L, E] array or a sequence of them -> [W, L, E], checked."""
    if isinstance(fit_loads, np.ndarray) and fit_loads.ndim == 2:
        fit_loads = [fit_loads]
    arrays = [np.asarray(x, dtype=float) for x in fit_loads]
    if not arrays:
        raise InputError("fit_loads", "no window of routing statistics", "pass at least one [layers, experts] array")
    for i, x in enumerate(arrays):
        if x.ndim != 2 or x.shape != arrays[0].shape:
            raise InputError(f"fit_loads[{i}]", f"shape {x.shape} differs from {arrays[0].shape}",
                             "every window needs the same [layers, experts]")
        if not np.isfinite(x).all() or (x < 0).any():
            raise InputError(f"fit_loads[{i}]", "has negative or non-finite counts", "pass token counts >= 0")
    return np.stack(arrays)


def _unit_loads(windows: np.ndarray, num_devices: int) -> np.ndarray:
    """[W, L, E] -> the same scaled so each window's layer totals num_devices (the mean device carries 1).
    Every window then weighs the same, however many tokens it counted, and a device load reads as an
    imbalance factor. Layers without load stay zero."""
    totals = windows.sum(axis=2, keepdims=True)
    return np.divide(windows * num_devices, totals, out=np.zeros_like(windows), where=totals > 0)


def _device_matrix(a: np.ndarray, row: np.ndarray, counts: np.ndarray, slots_per_device: int) -> np.ndarray:
    """a: [W, E] unit loads of one layer, row: [N] its phy2log, counts: [E] -> [W, D] device loads (even split)."""
    slot = (a / counts)[:, row]  # [W, N]
    return slot.reshape(a.shape[0], -1, slots_per_device).sum(axis=2)


def _spread(row: np.ndarray, top: _Topology, share: np.ndarray, slots_per_device: int) -> float:
    """Scale-out proxy of one layer: sum over expert groups of the group's share of the routed pairs times
    the scale-out domains holding its experts. DeepEP sends a token once per destination node and
    group-limited routing keeps a token's experts inside few groups, so a group spread over fewer
    domains costs fewer scale-out copies."""
    if not top.active:
        return 0.0
    domains = top.domain[np.arange(len(row)) // slots_per_device]
    pairs = np.unique(np.stack([top.group[row], domains]), axis=1)  # distinct (group, domain)
    return float(share[pairs[0]].sum())


def _objective(peaks: np.ndarray, rule: str) -> float:
    """peaks: [W] busiest device per window -> the layer's cost under the robust rule."""
    return float(peaks.mean()) if rule == "mean" else float(peaks.max() + _WORST_TIE_BREAK * peaks.mean())


def _layer_cost(a, row, counts, rule, top, share, slots_per_device) -> float:
    peaks = _device_matrix(a, row, counts, slots_per_device).max(axis=1)
    return _objective(peaks, rule) + top.weight * _spread(row, top, share, slots_per_device)


# -- starting point

def _robust_start(a: np.ndarray, num_slots: int, slots_per_device: int, deadline: float | None = None) -> np.ndarray | None:
    """phy2log row for one layer (a: [W, E] unit loads): greedy replication on each expert's heaviest
    window (headroom for an expert hot in any window), then packing in decreasing order, each replica to
    the device with room whose load in its worst window stays lowest. None if the deadline
    (time.perf_counter()) passes first."""
    try:
        phy2log, cnt = replicate_experts(a.max(axis=0)[None], num_slots, deadline)
    except DeadlinePassed:
        return None
    phy2log, cnt = phy2log[0], cnt[0]
    items = a[:, phy2log] / cnt[phy2log]  # [W, N]
    num_devices = num_slots // slots_per_device
    load = np.zeros((a.shape[0], num_devices))
    room = np.full(num_devices, slots_per_device)
    device = np.empty(num_slots, dtype=np.int64)
    for k, i in enumerate(np.argsort(-items.max(axis=0), kind="stable")):
        if deadline is not None and k % _CHECK_EVERY == 0 and time.perf_counter() > deadline:
            return None
        score = np.where(room > 0, (load + items[:, i:i + 1]).max(axis=0), np.inf)
        d = int(np.argmin(score))
        device[i] = d
        load[:, d] += items[:, i]
        room[d] -= 1
    return phy2log[np.argsort(device, kind="stable")]


# -- local search: pairwise swaps, each evaluated exactly and vectorised over every partner

def _peak_without(load: np.ndarray, first: int, second: np.ndarray) -> np.ndarray:
    """load: [W, D]; the busiest load of each window over the devices other than `first` and second[j],
    for each j: [W, len(second)] (from each window's three heaviest devices)."""
    top3 = np.argsort(-load, axis=1)[:, :3]  # [W, 3]
    values = np.take_along_axis(load, top3, axis=1)
    out = np.full((load.shape[0], len(second)), -np.inf)
    for k in range(top3.shape[1] - 1, -1, -1):  # heaviest last, so it wins where allowed
        allowed = (top3[:, k:k + 1] != first) & (top3[:, k:k + 1] != second[None, :])
        out = np.where(allowed, values[:, k:k + 1], out)
    return out


def _costs(peaks: np.ndarray, rule: str) -> np.ndarray:
    """peaks: [W, ...] -> the cost of each candidate under the robust rule (vectorised `_objective`)."""
    return peaks.mean(axis=0) if rule == "mean" else peaks.max(axis=0) + _WORST_TIE_BREAK * peaks.mean(axis=0)


def _best_swap(a, row, counts, load, rule, top, slots_per_device, deadline=None):
    """Best swap of a replica on a busiest device with a replica elsewhere: ((cost, flatness), slot, slot) or None.
    Flatness is the change in the sum of squared device loads; with the scale-out term, swaps stay
    inside a domain so it cannot change. Past the deadline (time.perf_counter()) the best swap seen so far."""
    items = (a / counts)[:, row]  # [W, N] load of each slot
    device = np.arange(len(row)) // slots_per_device
    best = None
    for c in np.unique(np.nonzero(load >= load.max(axis=1, keepdims=True) * (1 - 1e-12))[1]):
        reachable = (top.domain[device] == top.domain[c]) if top.active else True
        partners = np.nonzero((device != c) & reachable)[0]
        if not len(partners):  # one device (or one per domain): nothing to swap with
            continue
        partner_dev = device[partners]
        rest = _peak_without(load, c, partner_dev)  # [W, P]
        for k, i in enumerate(np.nonzero(device == c)[0]):
            if deadline is not None and k % 16 == 15 and time.perf_counter() > deadline:  # each step: O(W x N)
                return best
            delta = items[:, partners] - items[:, i:i + 1]  # [W, P] change on c
            new_c = load[:, c:c + 1] + delta
            new_d = load[:, partner_dev] - delta
            costs = _costs(np.maximum(np.maximum(new_c, new_d), rest), rule)
            flat = (new_c ** 2 + new_d ** 2 - load[:, c:c + 1] ** 2 - load[:, partner_dev] ** 2).sum(axis=0)
            costs[row[partners] == row[i]] = np.inf  # same expert: no move
            j = np.lexsort((flat, costs))[0]
            if costs[j] < np.inf and (best is None or (costs[j], flat[j]) < best[0]):
                best = ((costs[j], flat[j]), i, partners[j])
    return best


def _local_search(a, row, counts, rule, top, slots_per_device, deadline):
    """Apply the best swap while it lowers the layer's cost, or keeps it and flattens the device loads
    (which breaks ties between peaks so the next swap can lower one). Returns the new row."""
    row = row.copy()
    load = _device_matrix(a, row, counts, slots_per_device)
    for _ in range(50 * len(row)):  # far above what a layer needs; a guard, not a budget
        if time.perf_counter() > deadline:
            break
        move = _best_swap(a, row, counts, load, rule, top, slots_per_device, deadline)
        cost = _objective(load.max(axis=1), rule)
        if move is None or not (move[0][0] < cost - 1e-12 or (move[0][0] <= cost + 1e-12 and move[0][1] < -1e-12)):
            break
        _, i, j = move
        row[i], row[j] = row[j], row[i]
        load = _device_matrix(a, row, counts, slots_per_device)
    return row


# -- large-neighbourhood search: each step an exact MILP over a few devices

def _neighbourhood(load: np.ndarray, row: np.ndarray, slots_per_device: int, size: int,
                   rng: np.random.Generator) -> np.ndarray:
    """Devices to re-place together (load: [W, D]): the busiest device of each window (only moving their
    slots can lower a peak), the lightest devices (room to take load), the devices holding other
    replicas of the busiest devices' experts (so those experts may change their replica count), then
    random devices (to escape local optima)."""
    num_devices = load.shape[1]
    device = np.arange(len(row)) // slots_per_device
    busiest = np.unique(np.nonzero(load >= load.max(axis=1, keepdims=True) * (1 - 1e-9))[1])
    lightest = np.argsort(load.max(axis=0))[: max(1, size // 4)]
    partners = np.unique(device[np.isin(row, row[np.isin(device, busiest)])])
    chosen = list(dict.fromkeys([*busiest, *lightest, *rng.permutation(partners), *rng.permutation(num_devices)]))
    return np.sort(np.array(chosen[:size], dtype=np.int64))


def _solve_neighbourhood(a, row, counts, devices, rule, top, share, slots_per_device, time_limit_s):
    """Re-place the slots of `devices` optimally, all else fixed. Experts whose every replica is on
    `devices` may drop a replica or (the hottest few) gain one; the others keep their count.
    Returns (new (row, counts) or None, the solver's outcome: "optimal", "time limit" or "no solution").

    Variables: y[e,k,d] replicas of expert e on device d when e has k replicas (each then carries
    a[w,e]/k, the runtime even split, which is linear because k is fixed per variable); z[e,k] picks k;
    peak[w] >= every device load in window w (and the fixed devices' peak); u[g,m] marks group g
    present in domain m (scale-out term only)."""
    num_windows = a.shape[0]
    device_of = np.arange(len(row)) // slots_per_device
    inside = np.isin(device_of, devices)
    inside_count = np.bincount(row[inside], minlength=len(counts))
    present = np.nonzero(inside_count)[0]
    free = present[inside_count[present] == counts[present]]
    hottest = free[np.argsort(-(a[:, free] / counts[free]).max(axis=0))][:_GROW_OPTIONS]
    options = {int(e): [int(counts[e])] for e in present}
    for e in free:
        if counts[e] > 1:
            options[int(e)].append(int(counts[e]) - 1)
    for e in hottest:
        options[int(e)].append(int(counts[e]) + 1)

    load = _device_matrix(a, row, counts, slots_per_device)  # [W, D]
    outside = np.setdiff1d(np.arange(load.shape[1]), devices)
    fixed_peak = load[:, outside].max(axis=1) if len(outside) else np.zeros(num_windows)
    held = {(int(e), int(d)): 0 for e in present for d in devices}
    for e, d in zip(row[inside], device_of[inside]):
        held[int(e), int(d)] += 1

    prob = pulp.LpProblem("expert_placement_neighbourhood", pulp.LpMinimize)
    y, z = {}, {}
    for e, ks in options.items():
        for k in ks:
            for d in devices:
                y[e, k, int(d)] = v = prob.add_variable(f"y_e{e}_r{k}_d{d}", 0, min(k, slots_per_device), cat="Integer")
                v.setInitialValue(held[e, int(d)] if k == counts[e] else 0)
            if len(ks) > 1:
                z[e, k] = v = prob.add_variable(f"z_e{e}_r{k}", cat="Binary")
                v.setInitialValue(1 if k == counts[e] else 0)
    peak = [prob.add_variable(f"peak_w{w}", lowBound=float(fixed_peak[w])) for w in range(num_windows)]
    for w in range(num_windows):
        peak[w].setInitialValue(float(load[w].max()))

    for e, ks in options.items():
        if len(ks) > 1:
            prob += pulp.lpSum(z[e, k] for k in ks) == 1, f"one_replica_count_e{e}"
            for k in ks:
                prob += pulp.lpSum(y[e, k, int(d)] for d in devices) == k * z[e, k], f"replicas_e{e}_r{k}"
        else:
            prob += pulp.lpSum(y[e, ks[0], int(d)] for d in devices) == int(inside_count[e]), f"replicas_e{e}_r{ks[0]}"
    terms = [(e, k) for e, ks in options.items() for k in ks]
    device_load = {(w, int(d)): pulp.lpSum(float(a[w, e]) / k * y[e, k, int(d)] for e, k in terms if a[w, e] > 0)
                   for w in range(num_windows) for d in devices}
    for d in devices:
        d = int(d)
        prob += pulp.lpSum(y[e, k, d] for e, k in terms) == slots_per_device, f"slots_per_device_d{d}"
        for w in range(num_windows):
            prob += device_load[w, d] <= peak[w], f"device_load_w{w}_d{d}"
    # Devices of one domain are interchangeable: order them by window 0's load (as they are now, so the
    # incumbent stays feasible), or the solver would prove every permutation of a solution separately.
    by_load = devices[np.argsort(-load[0, devices], kind="stable")]
    for before, after in zip(by_load[:-1], by_load[1:]):
        if not top.active or top.domain[before] == top.domain[after]:
            prob += device_load[0, int(before)] >= device_load[0, int(after)], f"symmetry_d{before}_d{after}"

    if rule == "mean":
        objective = pulp.lpSum(peak) * (1.0 / num_windows)
    else:
        worst = prob.add_variable("worst_peak")
        worst.setInitialValue(float(load.max()))
        for w in range(num_windows):
            prob += peak[w] <= worst, f"worst_window_w{w}"
        objective = worst + pulp.lpSum(peak) * (_WORST_TIE_BREAK / num_windows)
    if top.active:
        objective += top.weight * _spread_terms(prob, y, options, row, devices, top, share, slots_per_device)
    prob += objective

    prob.solve(solver(time_limit_s))
    if prob.sol_status not in (pulp.LpSolutionOptimal, pulp.LpSolutionIntegerFeasible):
        return None, "no solution"
    status = "optimal" if prob.sol_status == pulp.LpSolutionOptimal else "time limit"
    new_row, new_counts = row.copy(), counts.copy()
    for e, ks in options.items():
        if len(ks) > 1:
            new_counts[e] = max(ks, key=lambda k: z[e, k].varValue or 0.0)
    for d in devices:
        d = int(d)
        held_d = [e for e in options for _ in range(int(round(y[e, int(new_counts[e]), d].varValue or 0.0)))]
        if len(held_d) != slots_per_device:  # rounding of a time-limited solve; keep the incumbent
            return None, status
        new_row[d * slots_per_device:(d + 1) * slots_per_device] = sorted(held_d)
    if (np.bincount(new_row, minlength=len(counts)) != new_counts).any():
        return None, status
    return (new_row, new_counts), status


def _spread_terms(prob, y, options, row, devices, top, share, slots_per_device):
    """Adds the scale-out term's u[g,m] (group g present in domain m) for the domains of `devices`; a
    group already present in a domain through a fixed device costs a constant there."""
    device_of = np.arange(len(row)) // slots_per_device
    fixed = ~np.isin(device_of, devices)
    held_outside = set(zip(top.group[row[fixed]].tolist(), top.domain[device_of[fixed]].tolist()))
    held_now = set(zip(top.group[row].tolist(), top.domain[device_of].tolist()))
    terms = []
    for g in np.unique(top.group[list(options)]):
        g = int(g)
        for m in np.unique(top.domain[devices]):
            m = int(m)
            if (g, m) in held_outside:
                continue
            u = prob.add_variable(f"u_g{g}_m{m}", cat="Binary")
            u.setInitialValue(1 if (g, m) in held_now else 0)
            for d in devices[top.domain[devices] == m]:
                prob += (pulp.lpSum(v for (e, k, dd), v in y.items() if dd == int(d) and top.group[e] == g)
                         <= slots_per_device * u, f"group_domain_g{g}_m{m}_d{d}")
            terms.append(float(share[g]) * u)
    return pulp.lpSum(terms)


def _search_layer(a, row, counts, rule, top, share, slots_per_device, target, deadline, rng):
    """Improve one layer's row by variable-neighbourhood search: exact MILPs over a few devices, starting
    with the fewest (fast) and adding a device after `_PATIENCE` failures in a row, back to the fewest
    after a success. Returns (row, counts, cost, the MILPs' outcomes, why it stopped): "bound" (the cost
    met `target`, the lower bound), "stalled" (`_PATIENCE` failures at the largest size), "time", or
    "too large" (the smallest neighbourhood holds more than _MAX_MILP_SLOTS slots: swaps only)."""
    num_devices = len(row) // slots_per_device
    smallest = min(num_devices, max(2, _NEIGHBOURHOOD_SLOTS[0] // slots_per_device))
    largest = min(num_devices, max(smallest, _NEIGHBOURHOOD_SLOTS[1] // slots_per_device))
    size = smallest
    cost = _layer_cost(a, row, counts, rule, top, share, slots_per_device)
    stalls, outcomes = 0, Counter()
    while True:
        if cost <= target * (1 + 1e-4):
            return row, counts, cost, outcomes, "bound"
        if time.perf_counter() >= deadline:
            return row, counts, cost, outcomes, "time"
        if smallest * slots_per_device > _MAX_MILP_SLOTS:
            return row, counts, cost, outcomes, "too large"
        load = _device_matrix(a, row, counts, slots_per_device)
        devices = _neighbourhood(load, row, slots_per_device, size, rng)
        limit = min(_SUB_LIMIT_S, max(0.05, deadline - time.perf_counter()))
        found, status = _solve_neighbourhood(a, row, counts, devices, rule, top, share, slots_per_device, limit)
        outcomes[status] += 1
        new_cost = _layer_cost(a, *found, rule, top, share, slots_per_device) if found else math.inf
        if new_cost < cost - 1e-12:
            (row, counts), cost, stalls, size = found, new_cost, 0, smallest
        elif (stalls := stalls + 1) >= _PATIENCE:
            if size == largest:
                return row, counts, cost, outcomes, "stalled"
            size, stalls = size + 1, 0


@dataclass(frozen=True)
class _Problem:
    """What the search of every layer shares."""

    num_slots: int
    num_devices: int
    rule: str
    top: _Topology
    seed: int
    deadline: float

    @property
    def slots_per_device(self) -> int:
        return self.num_slots // self.num_devices


def _place_layers(problem: _Problem, layers: list[int], unit: np.ndarray, starts: np.ndarray) -> list[tuple]:
    """Search the given layers one after the other, each with an even share of the time left (its start and
    bound included). unit: [W, len(layers), E] unit loads, starts: [len(layers), N] EPLB's rows.
    Returns per layer (row, cost, bound, the MILPs' outcomes, why the search stopped, whether the bound is whole)."""
    p, out = problem, []
    for i, layer in enumerate(layers):
        deadline = time.perf_counter() + (p.deadline - time.perf_counter()) / (len(layers) - i)
        a = unit[:, i]  # [W, E]
        share = a.mean(axis=0) / p.num_devices  # each expert's share of the layer's routed pairs
        share = np.bincount(p.top.group, weights=share) if p.top.group is not None else share
        # 1. start from the better of EPLB's row and the robust greedy one (when there is time to build it)
        # with the scale-out term, also the node-aware start that keeps each expert group inside one domain
        aligned = group_aligned_rows(a.mean(axis=0), p.top.group, p.top.domain, p.slots_per_device) if p.top.active else []
        rows = [r for r in (starts[i], _robust_start(a, p.num_slots, p.slots_per_device, deadline), *aligned)
                if r is not None]
        with_counts = [(r, np.bincount(r, minlength=a.shape[1])) for r in rows]
        row, counts = min(with_counts, key=lambda rc: _layer_cost(a, *rc, p.rule, p.top, share, p.slots_per_device))
        # 2. lower bound: per window on the busiest device, combined by the rule; the spread term >= one
        # domain per group
        peaks = _device_matrix(a, row, counts, p.slots_per_device).max(axis=1)
        per_window = [_layer_bound_by(a[w], p.num_slots, p.num_devices, peaks[w], deadline) for w in range(a.shape[0])]
        bound = _objective(np.array([b for b, _ in per_window]), p.rule) + \
            (p.top.weight * float(share.sum()) if p.top.active else 0.0)
        # 3. swaps (cheap) then neighbourhood MILPs, until this layer's share of the time is up
        row = _local_search(a, row, counts, p.rule, p.top, p.slots_per_device, deadline)
        rng = np.random.default_rng([p.seed, layer])
        row, counts, cost, outcomes, why = _search_layer(a, row, counts, p.rule, p.top, share, p.slots_per_device,
                                                         bound, deadline, rng)
        out.append((row, cost, bound, outcomes, why, all(whole for _, whole in per_window)))
    return out


def ilp_placement(fit_loads: Sequence[np.ndarray] | np.ndarray, num_slots: int, num_devices: int, num_nodes: int = 1,
                  devices_per_domain: int | None = None, scaleout_weight: float = 0.0, time_limit_s: float = 60.0,
                  robust: str = "mean", num_groups: int | None = None, hbm: HbmBudget | None = None,
                  seed: int = 0, workers: int | None = None, start: np.ndarray | None = None) -> Placement:
    """Placement that minimises the robust step cost over one or more windows of routing statistics.

    fit_loads: [L, E] or a sequence of W such arrays (tokens per layer and logical expert, one per window).
    Each window is scaled so its layers carry the same total (every window weighs the same) and the
    cost is the runtime one: a replicated expert's tokens split evenly over its replicas.
    robust: a key of ROBUST_RULES ("mean" by default: it held up best on held-out statistics).
    num_nodes: nodes the devices span (it must divide num_devices).
    devices_per_domain: devices per scale-out domain (default: num_devices / num_nodes, one HGX node).
    scaleout_weight: cost, in units of the mean device load, of one (expert group, domain) pair per
      unit share of routed pairs: the scale-out proxy of `_spread`; needs num_groups (DeepSeek-V3: 8).
    hbm: if given, checked for the slots per device.
    workers: processes that search layers in parallel (default: the CPUs this process may use).
    start: [L, N] rows of EPLB's placement when the caller has them: with one window they stand for the EPLB
      start (the same rows up to rounding ties, not computed twice); with several, they are the fallback when
      EPLB on the summed windows cannot finish in time.

    `time_limit_s` (finite, > 0) bounds the call but for EPLB's start, which the search falls back on (it
    runs whole, in about half a second per 200,000 slots). Layers are independent and share it; each gets an
    even share of the time left for: 1. its start, the better of EPLB's global policy on the summed windows
    and a robust greedy start, 2. a proven lower bound, 3. pairwise swaps, then variable-neighbourhood
    search, each step an exact MILP (HiGHS, CBC where HiGHS is missing) over a few devices, until the bound
    is met, the search stalls, or the time is up. Every loop that can run long looks at the clock; when the
    time is up a layer keeps the best placement found so far (at worst the EPLB start, so never worse than
    EPLB on the fit windows), its bound is the largest proven so far, and the notes say how many layers so.
    """
    started = time.perf_counter()
    if not (isinstance(time_limit_s, (int, float)) and math.isfinite(time_limit_s) and time_limit_s > 0):
        raise InputError("time_limit_s", f"is {time_limit_s!r}", "a finite number of seconds > 0")
    # a margin for solver overrun, process-pool shutdown and assembly: 5%, at most 3 s (with 1 s, EP144 x 58
    # layers under a 60 s limit finished at 59.0 s on 2 shared cores: too close)
    deadline = started + time_limit_s - min(3.0, 0.05 * time_limit_s)
    if robust not in ROBUST_RULES:
        raise InputError("robust", f"unknown rule {robust!r}", f"one of {', '.join(ROBUST_RULES)}")
    windows = windows_of(fit_loads)
    num_windows, num_layers, num_experts = windows.shape
    check_slots(num_layers, num_experts, num_slots, num_devices)
    slots_per_device = num_slots // num_devices
    field, divisor = ("num_nodes", num_nodes) if devices_per_domain is None else ("devices_per_domain", devices_per_domain)
    if not 1 <= divisor <= num_devices or num_devices % divisor:
        raise InputError(field, f"{divisor} does not divide {num_devices} devices", f"give a divisor of {num_devices}")
    domain_size = devices_per_domain or num_devices // num_nodes
    if scaleout_weight < 0 or (scaleout_weight > 0 and (not num_groups or num_experts % num_groups)):
        raise InputError("scaleout_weight", "needs a weight >= 0 and, when > 0, num_groups dividing the experts",
                         "pass the model's expert groups (n_group) or a weight of 0")
    if start is not None and np.shape(start) != (num_layers, num_slots):
        raise InputError("start", f"shape {np.shape(start)} is not [layers, slots] = [{num_layers}, {num_slots}]",
                         "pass the phy2log rows of a placement of the same loads and slots")
    top = _Topology(np.arange(num_devices) // domain_size,
                    np.arange(num_experts) // (num_experts // num_groups) if num_groups else None, scaleout_weight)
    unit = _unit_loads(windows, num_devices)  # [W, L, E]
    active = np.nonzero(unit.sum(axis=(0, 2)) > 0)[0]
    if not len(active):
        raise InputError("fit_loads", "no layer has any routed tokens", "pass routing statistics of MoE layers")
    if hbm is not None:
        hbm.check(slots_per_device, len(active))

    # EPLB on the summed unit windows: each layer's first candidate start (what runs without this ILP)
    notes = []
    if start is not None and num_windows == 1:
        starts = np.array(start, dtype=np.int64)
    else:
        try:  # without rows to fall back on it runs whole: every time limit falls back on its placement
            starts = eplb_placement(unit.sum(axis=0), num_slots, num_devices, 1, Policy.GLOBAL,
                                    deadline=None if start is None else deadline).phy2log
        except DeadlinePassed:
            starts = np.array(start, dtype=np.int64)
            notes.append("the time limit ran out before EPLB's start on the summed windows: started from the given rows")
    phy2log = starts.copy()
    if num_devices == 1:  # every slot on the one device: each layer's busiest device is its mean, optimal as it is
        per_layer = [(1.0, 1.0, Counter(), "bound", True)] * len(active)
        workers = 1
    else:
        problem = _Problem(num_slots, num_devices, robust, top, seed, deadline)
        workers = max(1, min(workers or len(os.sched_getaffinity(0)), len(active)))
        chunks = [active[k::workers].tolist() for k in range(workers)]  # interleaved: early and late layers in each
        args = [(problem, c, unit[:, c], starts[c]) for c in chunks]
        if workers == 1:
            results = [_place_layers(*args[0])]
        else:
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
                results = list(pool.map(_place_layers, *zip(*args)))
        per_layer = []
        for chunk, result in zip(chunks, results):
            for layer, (row, *rest) in zip(chunk, result):
                phy2log[layer] = row
                per_layer.append(rest)
    costs, bounds, outcomes, why, whole = zip(*per_layer)
    objective, lp_bound = float(np.mean(costs)), float(np.mean(bounds))
    milps = sum(outcomes, Counter())
    stops = ", ".join(f"{why.count(k)} {k}" for k in ("bound", "stalled", "time", "too large") if why.count(k))
    if why.count("time"):
        notes.append(f"the time limit ran out before the search finished on {why.count('time')} of "
                     f"{len(why)} layer(s): they keep the best placement found so far (at worst the greedy start)")
    if not all(whole):
        notes.append(f"the lower bound of {whole.count(False)} layer(s) was cut short by the time limit (still a bound)")
    if why.count("too large"):
        notes.append(f"{why.count('too large')} layer(s) have more than {_MAX_MILP_SLOTS} slots in the smallest "
                     "neighbourhood: pairwise swaps only, no MILP")
    notes.append(f"robust rule {robust!r} over {num_windows} window(s): {ROBUST_RULES[robust]}; "
                 f"{sum(milps.values())} neighbourhood MILPs on {workers} process(es) ({milps['optimal']} optimal, "
                 f"{milps['time limit']} stopped at their time limit with a solution, {milps['no solution']} without); "
                 f"layers stopped at: {stops}; "
                 "lp_bound: per layer and window the largest of perfect balance (the LP relaxation's value), the "
                 "replication bound and the pigeonhole bounds")
    return build_placement(phy2log, num_experts, slots_per_device, "ilp", time.perf_counter() - started,
                           objective, lp_bound, solver_name(), "; ".join(notes))
