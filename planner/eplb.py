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

Shape legend: L = layers, E = logical experts, N = physical slots, G = expert groups, M = nodes.
"""

from __future__ import annotations

import enum
import time

import numpy as np

from hwmodels.errors import InputError
from planner.placement import Placement, build_placement, check_slots


class Policy(enum.Enum):
    """EPLB's two policies, named by the caller (EPLB itself infers one from the group and node counts)."""

    GLOBAL = "global"
    HIERARCHICAL = "hierarchical"


def balanced_packing(weight: np.ndarray, num_packs: int) -> tuple[np.ndarray, np.ndarray]:
    """Greedy equal-count packing of each row's items.

    weight: [X, n], the weight of each item; n must be a multiple of num_packs.
    Returns pack: [X, n], the pack of each item, and rank: [X, n], its position inside the pack.
    """
    rows, n = weight.shape
    assert n % num_packs == 0
    per_pack = n // num_packs
    pack = np.empty((rows, n), dtype=np.int64)
    rank = np.empty((rows, n), dtype=np.int64)
    for x in range(rows):
        load = np.zeros(num_packs)
        count = np.zeros(num_packs, dtype=np.int64)
        for item in np.argsort(-weight[x], kind="stable"):
            # full packs are masked out with +inf so argmin picks the lightest one with room
            p = int(np.argmin(np.where(count < per_pack, load, np.inf)))
            pack[x, item], rank[x, item] = p, count[p]
            load[p] += weight[x, item]
            count[p] += 1
    return pack, rank


def replicate_experts(weight: np.ndarray, num_phy: int) -> tuple[np.ndarray, np.ndarray]:
    """Greedy replication: every extra slot goes to the expert with the largest load per replica (which
    minimises the heaviest replica over all replica counts).

    weight: [X, n], the load of each logical expert; num_phy >= n physical slots.
    Returns phy2log: [X, num_phy], the logical expert of each slot, and logcnt: [X, n], replicas per expert.
    """
    rows, n = weight.shape
    assert num_phy >= n
    phy2log = np.empty((rows, num_phy), dtype=np.int64)
    phy2log[:, :n] = np.arange(n)
    logcnt = np.ones((rows, n), dtype=np.int64)
    row_ids = np.arange(rows)
    for i in range(n, num_phy):
        hot = np.argmax(weight / logcnt, axis=1)
        phy2log[:, i] = hot
        logcnt[row_ids, hot] += 1
    return phy2log, logcnt


def _inverse(perm: np.ndarray) -> np.ndarray:
    """perm: [X, n] permutations; returns their inverses."""
    inv = np.empty_like(perm)
    np.put_along_axis(inv, perm, np.broadcast_to(np.arange(perm.shape[1]), perm.shape), axis=1)
    return inv


def _hierarchical(weight: np.ndarray, num_phy: int, num_groups: int, num_nodes: int, num_gpus: int) -> np.ndarray:
    """phy2log: [L, N] of the hierarchical policy (global = one group on one node)."""
    num_layers, num_log = weight.shape
    group_size = num_log // num_groups
    groups_per_node = num_groups // num_nodes
    gpus_per_node = num_gpus // num_nodes
    phy_per_gpu = num_phy // num_gpus

    # 1. pack expert groups onto nodes; relabel experts so node m holds "middle" ids m*E/M .. (m+1)*E/M - 1
    group_load = weight.reshape(num_layers, num_groups, group_size).sum(axis=2)  # [L, G]
    group_pack, group_rank = balanced_packing(group_load, num_nodes)
    log2mlog = ((group_pack * groups_per_node + group_rank) * group_size)[:, :, None] + np.arange(group_size)
    log2mlog = log2mlog.reshape(num_layers, num_log)
    mlog2log = _inverse(log2mlog)

    # 2. replicate experts within each node, rows = (layer, node)
    mlog_load = np.take_along_axis(weight, mlog2log, axis=1).reshape(-1, num_log // num_nodes)
    phy2mlog, mlogcnt = replicate_experts(mlog_load, num_phy // num_nodes)

    # 3. pack each node's replicas onto its GPUs, at the load each replica receives (even split)
    replica_load = np.take_along_axis(mlog_load / mlogcnt, phy2mlog, axis=1)
    pack, rank = balanced_packing(replica_load, gpus_per_node)
    phy2pphy = pack * phy_per_gpu + rank
    pphy2mlog = np.take_along_axis(phy2mlog, _inverse(phy2pphy), axis=1)
    node_offset = (np.arange(num_nodes) * (num_log // num_nodes))[None, :, None]
    pphy2mlog = (pphy2mlog.reshape(num_layers, num_nodes, -1) + node_offset).reshape(num_layers, -1)
    return np.take_along_axis(mlog2log, pphy2mlog, axis=1)


def eplb_placement(loads: np.ndarray, num_slots: int, num_devices: int, num_nodes: int, policy: Policy,
                   num_groups: int | None = None) -> Placement:
    """EPLB's placement of `loads` ([L, E], tokens per layer and logical expert) on `num_slots` slots over
    `num_devices` devices in `num_nodes` nodes. `num_groups` (the model's expert groups, DeepSeek-V3's
    n_group = 8) is needed by the hierarchical policy only."""
    start = time.perf_counter()
    loads = np.asarray(loads, dtype=float)
    num_layers, num_experts = loads.shape
    check_slots(num_layers, num_experts, num_slots, num_devices)
    if policy is Policy.HIERARCHICAL:
        if not num_groups or num_experts % num_groups or num_groups % num_nodes or num_devices % num_nodes:
            raise InputError("policy", f"hierarchical placement needs experts ({num_experts}) divisible by groups "
                             f"({num_groups}), groups divisible by nodes ({num_nodes}) and devices ({num_devices}) "
                             "divisible by nodes", "use Policy.GLOBAL")
        phy2log = _hierarchical(loads, num_slots, num_groups, num_nodes, num_devices)
    else:
        phy2log = _hierarchical(loads, num_slots, 1, 1, num_devices)
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
