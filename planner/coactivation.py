"""Experts that tokens choose together, placed together: a pass over a balanced placement that moves slots between
nodes where per-token routing shows the move saves cross-node copies (moeplan issue 19).

DeepEP's normal mode sends a token once to every remote node its experts sit on, so two experts that the same
tokens choose cost one copy when they share a node and two when they do not. Only per-token routing says which
experts are chosen together (aggregated counts do not: hwmodels.alltoall_placement then assumes independent
draws). Given the tokens' expert sets, each MoE layer is searched by swapping two slots on different nodes, first
improvement in a random order, keeping a swap only where it lowers the layer's expected cross-node copies on the
fit tokens (hwmodels.alltoall_placement.token_hits) and leaves its busiest device no busier on the fit counts. A
swap keeps every expert's replica count, so the step cost on the fit statistics never rises.

Shape legend: L = layers, E = logical experts, N = physical slots, D = devices, T = tokens.
"""

from __future__ import annotations

import time

import numpy as np

from hwmodels.alltoall_placement import token_hits
from hwmodels.errors import InputError
from planner.placement import Placement, build_placement


def _layer_copies(tokens: np.ndarray, row: np.ndarray, counts: np.ndarray, devices: int, domains: np.ndarray,
                  own: np.ndarray, slots_per_device: int) -> float:
    """Expected cross-node copies per token of one layer (DeepEP normal mode, sources spread evenly)."""
    expert_device = np.zeros((len(counts), devices))
    np.add.at(expert_device, (row, np.arange(len(row)) // slots_per_device), 1.0)
    _, domain_hit = token_hits(tokens, expert_device / counts[:, None], domains)
    return float((domain_hit * (1.0 - own)).sum())


def _busiest(loads: np.ndarray, row: np.ndarray, counts: np.ndarray, slots_per_device: int) -> float:
    return float((loads / counts)[row].reshape(-1, slots_per_device).sum(axis=1).max())


_MAX_PAIRS = 65_536  # swaps tried per pass: every pair of a layer up to 362 slots, a random sample beyond


def _pairs(num_slots: int, rng: np.random.Generator) -> np.ndarray:
    """[P, 2] slot pairs to try, in a random order: all of them where they are few, else a random sample."""
    if num_slots * (num_slots - 1) // 2 <= _MAX_PAIRS:
        pairs = np.stack(np.triu_indices(num_slots, 1), axis=1)
        return pairs[rng.permutation(len(pairs))]
    return rng.integers(0, num_slots, size=(_MAX_PAIRS, 2))


def coactivation_placement(placement: Placement, loads: np.ndarray, tokens: np.ndarray, nodes: int,
                           time_limit_s: float = 10.0, seed: int = 0) -> Placement:
    """`placement` with slots swapped between nodes where the fit tokens' co-activation lowers cross-node copies.

    loads: [L, E] fit counts (the balance the swaps may not worsen); tokens: [T, L, E] 0/1, the experts each fit
    token chose per layer; nodes: the nodes the EP group spans (dividing its devices). Layers share the time
    limit evenly; past it a layer keeps what it has. The result's objective is the mean over the MoE layers of
    the expected cross-node copies per token on the fit tokens (the input placement's is in its notes)."""
    started = time.perf_counter()
    loads, tokens = np.asarray(loads, dtype=float), np.asarray(tokens)
    num_layers, num_experts = placement.logcnt.shape
    if loads.shape != (num_layers, num_experts) or tokens.ndim != 3 or tokens.shape[1:] != loads.shape:
        raise InputError("tokens", f"per-token routing {tokens.shape} and counts {loads.shape} do not match the "
                         f"placement's [{num_layers}, {num_experts}]", "pass per-token routing of the fit statistics")
    devices, per_device = placement.num_devices, placement.slots_per_device
    if nodes < 1 or devices % nodes:
        raise InputError("nodes", f"{nodes} nodes do not divide {devices} devices", f"give a divisor of {devices}")
    domains = np.arange(devices) // (devices // nodes)
    own = np.full(nodes, 1.0 / nodes)  # equal nodes: a token's source is in each with the same probability
    slot_node = np.repeat(domains, per_device)
    rng = np.random.default_rng(seed)
    phy2log = placement.phy2log.copy()
    layers = [i for i in range(num_layers) if loads[i].sum() > 0 and tokens[:, i].any()]
    before, after = [], []
    for n, layer in enumerate(layers):
        deadline = time.perf_counter() + (started + time_limit_s - time.perf_counter()) / (len(layers) - n)
        chosen = tokens[:, layer][tokens[:, layer].any(axis=1)]
        row, counts = phy2log[layer].copy(), placement.logcnt[layer]
        cost = _layer_copies(chosen, row, counts, devices, domains, own, per_device)
        before.append(cost)
        peak = _busiest(loads[layer], row, counts, per_device)
        improved = nodes > 1
        while improved and time.perf_counter() < deadline:
            improved = False
            for s, t in _pairs(len(row), rng):
                if slot_node[s] == slot_node[t] or row[s] == row[t]:
                    continue
                if time.perf_counter() >= deadline:
                    break
                trial = row.copy()
                trial[s], trial[t] = row[t], row[s]
                if _busiest(loads[layer], trial, counts, per_device) > peak * (1 + 1e-12):
                    continue
                trial_cost = _layer_copies(chosen, trial, counts, devices, domains, own, per_device)
                if trial_cost < cost - 1e-12:
                    row, cost, improved = trial, trial_cost, True
                    break
        phy2log[layer] = row
        after.append(cost)
    objective = float(np.mean(after)) if after else 0.0
    notes = (f"co-activation pass over {len(layers)} MoE layer(s) with per-token routing ({tokens.shape[0]:,} tokens): "
             f"expected cross-node copies per token and layer on the fit tokens {np.mean(before) if before else 0:.4f} "
             f"-> {objective:.4f}; no layer's busiest device busier on the fit counts")
    return build_placement(phy2log, num_experts, per_device, "coactivation", time.perf_counter() - started,
                           objective=objective, solver="swap search", notes=notes)
