"""Proven lower bounds on the busiest device of one MoE layer's placement (planner.ilp's `lp_bound`), over
every replica count and packing under the runtime even split: perfect balance (the LP relaxation's value),
the replication bound and pigeonhole bounds. Each takes an optional deadline (a time.perf_counter() value):
cut short, it returns the largest bound proven so far, which is still a lower bound.

Shape legend: E = logical experts, N = physical slots, D = devices, S = slots per device (N = D x S).
"""

from __future__ import annotations

import time

import numpy as np

from planner.eplb import DeadlinePassed, replicate_experts


def _knapsack(value: np.ndarray, cost: np.ndarray, capacity: int, deadline: float | None = None) -> int | None:
    """Most total value of a subset of items (integer value, cost >= 1) within `capacity`: exact DP, with
    equal items merged by binary splitting. None when the deadline (time.perf_counter()) passes first."""
    best = np.zeros(capacity + 1, dtype=np.int64)  # best[b]: most value within cost b
    pairs, mult = np.unique(np.stack([value, cost], axis=1), axis=0, return_counts=True)
    for (v, c), m in zip(pairs, mult):
        if deadline is not None and time.perf_counter() > deadline:
            return None
        m, chunk = min(int(m), capacity // int(c)), 1
        while m > 0:
            take = min(chunk, m)
            m, chunk = m - take, chunk * 2
            cc = int(c) * take
            best[cc:] = np.maximum(best[cc:], best[:capacity + 1 - cc] + int(v) * take)
    return int(best[capacity])


def _pigeonhole_feasible(w: np.ndarray, num_slots: int, num_devices: int, j: int, t: float,
                         deadline: float | None = None) -> bool:
    """Necessary condition for a busiest device <= t: among the D(j-1)+1 heaviest replicas some device holds
    j (pigeonhole), so at most D(j-1) replicas may exceed t/j. Replica counts are free: an expert either
    takes the fewest replicas that keep each <= t, or enough to bring each under t/j; the cheapest mix
    within the slot budget is a 0-1 knapsack. Tolerances lean towards "feasible" so the bound stays valid,
    and so does a knapsack cut short by the deadline."""
    fewest = np.maximum(1, np.ceil(w / t - 1e-9)).astype(np.int64)
    budget = num_slots - int(fewest.sum())
    if budget < 0:
        return False
    big = w / fewest > (t / j) * (1 + 1e-9)
    under = np.maximum(fewest, np.ceil(j * w / t - 1e-9)).astype(np.int64)
    saved = _knapsack(fewest[big], under[big] - fewest[big], budget, deadline) if budget and big.any() else 0
    return saved is None or int(fewest[big].sum()) - saved <= num_devices * (j - 1)


def layer_bound(w: np.ndarray, num_slots: int, num_devices: int, upper: float) -> float:
    """`layer_bound_by` without a deadline: the whole bound."""
    return layer_bound_by(w, num_slots, num_devices, upper)[0]


def layer_bound_by(w: np.ndarray, num_slots: int, num_devices: int, upper: float,
                    deadline: float | None = None) -> tuple[float, bool]:
    """Proven lower bound on the busiest device of one layer and window (w: [E] unit loads), over every
    replica count and packing under the even split: the largest of perfect balance (1: also the LP
    relaxation's value), the replication bound (greedy replication minimises the heaviest replica) and
    the pigeonhole bounds for j = 2..S, found by bisection between the others and `upper` (an achieved
    load, which passes every necessary condition). Returns (bound, whether every bound was computed): past
    the deadline (time.perf_counter()) it returns the largest proven so far, still a lower bound."""
    slots_per_device = num_slots // num_devices
    try:
        _, cnt = replicate_experts(w[None], num_slots, deadline)
    except DeadlinePassed:
        return 1.0, False
    lower = max(1.0, float((w / cnt[0]).max()))
    for j in range(2, slots_per_device + 1):
        if deadline is not None and time.perf_counter() > deadline:
            return lower, False
        if _pigeonhole_feasible(w, num_slots, num_devices, j, lower, deadline):
            continue
        lo, hi = lower, max(upper, lower) * (1 + 1e-6)
        while not _pigeonhole_feasible(w, num_slots, num_devices, j, hi, deadline):  # only through rounding at `upper`
            lo, hi = hi, hi * 1.01
        while hi - lo > 1e-4 * hi:
            mid = 0.5 * (lo + hi)
            lo, hi = (lo, mid) if _pigeonhole_feasible(w, num_slots, num_devices, j, mid, deadline) else (mid, hi)
        lower = lo  # the condition fails at lo and, being monotone in t, everywhere below it
    return lower, deadline is None or time.perf_counter() <= deadline  # a cut-short bisection is not whole
