"""A node-aware start for the placement MILP: expert groups to nodes first, then replicas, then devices.

Node-limited routing (DeepSeek-V3: a token's experts lie in 4 of 8 groups) bounds the nodes a token reaches
only where each group sits in one node. EPLB's global policy scatters every group over the EP group; its
hierarchical policy packs groups to nodes but needs the groups to divide evenly over the nodes (8 groups on
9 nodes do not). This start keeps each group whole in one scale-out domain wherever the slots allow, like
the hierarchical policy's first step, and then spends the free slots on replicas:
1. groups in decreasing load, each to the domain with the least load among those with room for it;
2. the free slots to replicas, each to the expert with the largest load per replica, placed in its group's
   domain when that has room, else in the domain with room and the least load (a new group-domain pair,
   which the MILP's scale-out term then prices);
3. within each domain, replicas in decreasing load to the device with room and the least load.

Shape legend: E = logical experts, N = slots, D = devices, M = domains, G = expert groups.
"""

from __future__ import annotations

import numpy as np


def group_aligned_rows(load: np.ndarray, group: np.ndarray, domain: np.ndarray, slots_per_device: int) -> list[np.ndarray]:
    """Candidate phy2log rows [N] for one layer: free slots outside the groups' home domains go to replicas of
    any expert, or of one group's experts only (one row per group: a single group then spans a second domain,
    as contiguous placement's second copies do). [] where a group does not fit one domain's slots.

    load: [E] expected load of each expert (any scale), group: [E] expert group 0..G-1, domain: [D] domain of
    each device 0..M-1 (equal domains).
    """
    rows = [group_aligned_row(load, group, domain, slots_per_device, spill) for spill in (None, *range(group.max() + 1))]
    return [r for r in rows if r is not None]


def group_aligned_row(load: np.ndarray, group: np.ndarray, domain: np.ndarray, slots_per_device: int,
                      spill: int | None = None) -> np.ndarray | None:
    """One candidate of group_aligned_rows: replicas outside their group's home domain only of group `spill`'s
    experts (None: of any expert). None where a group does not fit one domain's slots."""
    num_experts, num_devices = len(load), len(domain)
    num_domains = int(domain.max()) + 1
    slots_per_domain = slots_per_device * num_devices // num_domains
    size = np.bincount(group)
    if size.max() > slots_per_domain:
        return None
    group_load = np.bincount(group, weights=load)
    # 1. groups to domains: largest first onto the lightest domain that has room
    room = np.full(num_domains, slots_per_domain)
    domain_load = np.zeros(num_domains)
    home = np.empty(len(size), dtype=np.int64)
    for g in np.argsort(-group_load, kind="stable"):
        fits = room >= size[g]
        if not fits.any():
            return None
        m = int(np.argmin(np.where(fits, domain_load, np.inf)))
        home[g], room[m], domain_load[m] = m, room[m] - size[g], domain_load[m] + group_load[g]
    copies = [[int(home[group[e]])] for e in range(num_experts)]  # the domain of each replica of each expert
    # 2. free slots to the experts with the largest load per replica
    for _ in range(int(room.sum())):
        at_home = room[home[group]] > 0  # [E] experts whose group's domain still has room
        allowed = at_home if at_home.any() else (group == spill if spill is not None else np.ones(num_experts, bool))
        e = int(np.argmax(np.where(allowed, load / np.array([len(c) for c in copies]), -np.inf)))
        m = int(home[group[e]]) if room[home[group[e]]] > 0 else int(np.argmin(np.where(room > 0, domain_load, np.inf)))
        share = load[e] / (len(copies[e]) + 1)
        for old in copies[e]:  # the existing replicas each give up part of their load
            domain_load[old] -= load[e] / len(copies[e]) - share
        copies[e].append(m)
        room[m] -= 1
        domain_load[m] += share
    # 3. within each domain, replicas onto its devices, heaviest first to the lightest device with room
    device_load = np.zeros(num_devices)
    device_room = np.full(num_devices, slots_per_device)
    held: list[list[int]] = [[] for _ in range(num_devices)]
    items = sorted(((load[e] / len(c), e, m) for e, c in enumerate(copies) for m in c), key=lambda t: (-t[0], t[1]))
    for weight, e, m in items:
        options = (domain == m) & (device_room > 0)
        d = int(np.argmin(np.where(options, device_load, np.inf)))
        held[d].append(e)
        device_load[d] += weight
        device_room[d] -= 1
    return np.concatenate([sorted(h) for h in held]).astype(np.int64)
