"""Baseline expert placements: contiguous, and the greedy replicate-then-pack policy of deepseek-ai/EPLB.

Written from EPLB's published description (its README and the docstrings of `rebalance_experts`), not
from its code:
- hierarchical policy: pack the expert groups onto nodes so node loads balance, replicate the hot
  experts within each node, then pack each node's replicas onto its GPUs;
- global policy: replicate the hot experts over the whole EP group, then pack all replicas onto GPUs.
Replication is greedy: each redundant slot goes to the expert with the largest load per replica.
Packing is greedy: items in decreasing load, each to the lightest pack that still has room, every
pack taking the same number of items.
EPLB picks the policy from `num_groups % num_nodes == 0`; here the caller names it (`Policy`), and the
hierarchical one raises when its divisibility conditions do not hold.
Both greedy loops keep a heap (O(n log n) per row, a tie going to the lowest index, as an argmin over the
array would) and check an optional deadline: a loop past it raises `DeadlinePassed`, which a caller with a
time limit turns into a fallback or an InputError naming its limit.

Shape legend: L = layers, E = logical experts, N = physical slots, G = expert groups, M = nodes.
"""

from __future__ import annotations

import enum
import heapq
import time

import numpy as np

from hwmodels.errors import InputError
from planner.placement import Placement, build_placement, check_slots


_CHECK_EVERY = 4096  # greedy steps between two looks at the clock


class DeadlinePassed(Exception):
    """A greedy loop ran past the deadline its caller gave (time.perf_counter() seconds)."""


def check_deadline(deadline: float | None) -> None:
    if deadline is not None and time.perf_counter() > deadline:
        raise DeadlinePassed


class Policy(enum.Enum):
    """EPLB's two policies, named by the caller (EPLB itself infers one from the group and node counts)."""

    GLOBAL = "global"
    HIERARCHICAL = "hierarchical"


def balanced_packing(weight: np.ndarray, num_packs: int, deadline: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Greedy equal-count packing of each row's items.

    weight: [X, n], the weight of each item; n must be a multiple of num_packs.
    Returns pack: [X, n], the pack of each item, and rank: [X, n], its position inside the pack.
    deadline: time.perf_counter() value past which it raises DeadlinePassed (None: none).
    """
    rows, n = weight.shape
    assert n % num_packs == 0
    per_pack = n // num_packs
    pack = np.empty((rows, n), dtype=np.int64)
    rank = np.empty((rows, n), dtype=np.int64)
    for x in range(rows):
        w = np.asarray(weight[x], dtype=float).tolist()
        # the lightest pack with room: a heap of (load, pack), a full pack leaves it; ties go to the lower pack
        heap = [(0.0, p) for p in range(num_packs)]
        count = [0] * num_packs
        pack_x, rank_x = [0] * n, [0] * n
        for k, item in enumerate(np.argsort(-weight[x], kind="stable").tolist()):
            if k % _CHECK_EVERY == 0:
                check_deadline(deadline)
            load, p = heapq.heappop(heap)
            pack_x[item], rank_x[item] = p, count[p]
            count[p] += 1
            if count[p] < per_pack:
                heapq.heappush(heap, (load + w[item], p))
        pack[x], rank[x] = pack_x, rank_x
    return pack, rank


def replicate_experts(weight: np.ndarray, num_phy: int, deadline: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Greedy replication: every extra slot goes to the expert with the largest load per replica (which
    minimises the heaviest replica over all replica counts); ties go to the lowest expert id.

    weight: [X, n], the load of each logical expert; num_phy >= n physical slots.
    Returns phy2log: [X, num_phy], the logical expert of each slot, and logcnt: [X, n], replicas per expert.
    deadline: time.perf_counter() value past which it raises DeadlinePassed (None: none).
    """
    rows, n = weight.shape
    assert num_phy >= n
    phy2log = np.empty((rows, num_phy), dtype=np.int64)
    phy2log[:, :n] = np.arange(n)
    logcnt = np.ones((rows, n), dtype=np.int64)
    for x in range(rows):
        if num_phy == n:
            break
        row = np.asarray(weight[x], dtype=float)
        # only experts at least as heavy as the (num_phy - n)-th heaviest can win a slot: while fewer slots
        # are handed out, one of that many heaviest still has a single replica (ties included, so the
        # lowest-index rule is kept)
        top = np.nonzero(row >= -np.partition(-row, num_phy - n - 1)[num_phy - n - 1])[0] if num_phy - n < n else np.arange(n)
        w = row.tolist()
        cnt = [1] * n
        heap = [(-w[e], e) for e in top.tolist()]  # (minus the load per replica, expert)
        heapq.heapify(heap)
        extra = []
        for i in range(num_phy - n):
            if i % _CHECK_EVERY == 0:
                check_deadline(deadline)
            _, e = heapq.heappop(heap)
            extra.append(e)
            cnt[e] += 1
            heapq.heappush(heap, (-(w[e] / cnt[e]), e))
        phy2log[x, n:] = extra
        logcnt[x] = cnt
    return phy2log, logcnt


def _inverse(perm: np.ndarray) -> np.ndarray:
    """perm: [X, n] permutations; returns their inverses."""
    inv = np.empty_like(perm)
    np.put_along_axis(inv, perm, np.broadcast_to(np.arange(perm.shape[1]), perm.shape), axis=1)
    return inv


def _hierarchical(weight: np.ndarray, num_phy: int, num_groups: int, num_nodes: int, num_gpus: int,
                  deadline: float | None = None) -> np.ndarray:
    """phy2log: [L, N] of the hierarchical policy (global = one group on one node)."""
    num_layers, num_log = weight.shape
    group_size = num_log // num_groups
    groups_per_node = num_groups // num_nodes
    gpus_per_node = num_gpus // num_nodes
    phy_per_gpu = num_phy // num_gpus

    # 1. pack expert groups onto nodes; relabel experts so node m holds "middle" ids m*E/M .. (m+1)*E/M - 1
    group_load = weight.reshape(num_layers, num_groups, group_size).sum(axis=2)  # [L, G]
    group_pack, group_rank = balanced_packing(group_load, num_nodes, deadline)
    log2mlog = ((group_pack * groups_per_node + group_rank) * group_size)[:, :, None] + np.arange(group_size)
    log2mlog = log2mlog.reshape(num_layers, num_log)
    mlog2log = _inverse(log2mlog)

    # 2. replicate experts within each node, rows = (layer, node)
    mlog_load = np.take_along_axis(weight, mlog2log, axis=1).reshape(-1, num_log // num_nodes)
    phy2mlog, mlogcnt = replicate_experts(mlog_load, num_phy // num_nodes, deadline)

    # 3. pack each node's replicas onto its GPUs, at the load each replica receives (even split)
    replica_load = np.take_along_axis(mlog_load / mlogcnt, phy2mlog, axis=1)
    pack, rank = balanced_packing(replica_load, gpus_per_node, deadline)
    phy2pphy = pack * phy_per_gpu + rank
    pphy2mlog = np.take_along_axis(phy2mlog, _inverse(phy2pphy), axis=1)
    node_offset = (np.arange(num_nodes) * (num_log // num_nodes))[None, :, None]
    pphy2mlog = (pphy2mlog.reshape(num_layers, num_nodes, -1) + node_offset).reshape(num_layers, -1)
    return np.take_along_axis(mlog2log, pphy2mlog, axis=1)


def eplb_placement(loads: np.ndarray, num_slots: int, num_devices: int, num_nodes: int, policy: Policy,
                   num_groups: int | None = None, deadline: float | None = None) -> Placement:
    """EPLB's placement of `loads` ([L, E], tokens per layer and logical expert) on `num_slots` slots over
    `num_devices` devices in `num_nodes` nodes. `num_groups` (the model's expert groups, DeepSeek-V3's
    n_group = 8) is needed by the hierarchical policy only. deadline: a time.perf_counter() value past which
    it raises DeadlinePassed (None: none)."""
    start = time.perf_counter()
    loads = np.asarray(loads, dtype=float)
    num_layers, num_experts = loads.shape
    check_slots(num_layers, num_experts, num_slots, num_devices)
    if policy is Policy.HIERARCHICAL:
        if not num_groups or num_experts % num_groups or num_groups % num_nodes or num_devices % num_nodes:
            raise InputError("policy", f"hierarchical placement needs experts ({num_experts}) divisible by groups "
                             f"({num_groups}), groups divisible by nodes ({num_nodes}) and devices ({num_devices}) "
                             "divisible by nodes", "use Policy.GLOBAL")
        phy2log = _hierarchical(loads, num_slots, num_groups, num_nodes, num_devices, deadline)
    else:
        phy2log = _hierarchical(loads, num_slots, 1, 1, num_devices, deadline)
    return build_placement(phy2log, num_experts, num_slots // num_devices, f"eplb-{policy.value}",
                           time.perf_counter() - start, solver="greedy")


def contiguous_placement(num_layers: int, num_experts: int, num_slots: int, num_devices: int) -> Placement:
    """No load balancing: slot p holds expert p (device i: experts i*S .. i*S + S - 1); redundant slots, if
    any, follow with second copies of experts 0, 1, ... in order, as a deployment without statistics
    would fill them."""
    check_slots(num_layers, num_experts, num_slots, num_devices)
    # each expert's first copy in order; extra copies after the originals, cycling over the experts
    row = np.concatenate([np.arange(num_experts), np.arange(num_slots - num_experts) % num_experts])
    phy2log = np.broadcast_to(row, (num_layers, num_slots)).copy()
    return build_placement(phy2log, num_experts, num_slots // num_devices, "contiguous", 0.0, solver="none")
