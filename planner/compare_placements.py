"""The placement methods side by side (`moeplan place`): contiguous, EPLB and the robust ILP (and, with per-token
routing on several nodes, the ILP's placement with co-activated experts moved together: planner.coactivation),
fitted on earlier windows of routing statistics and evaluated on the next, under the runtime even split.

With the model's routing (`AllToAll`: top-k, the bytes of one token there and back, node-limited groups) each
method also reports `cross_node_bytes_per_token`: the bytes one token sends across node boundaries through
every MoE layer in DeepEP's normal mode, given where the replicas sit (planner.placement.cross_node_bytes_per_token;
its assumptions are hwmodels.alltoall_placement.ASSUMPTION). `scaleout_weight` > 0 gives the ILP its
scale-out term (planner.ilp: expert groups spread over nodes, with the node-aware group-aligned start).

The time limit bounds the whole comparison: EPLB's greedy placement (fast, and the floor every method falls
back on) counts against it, and the ILP gets what is left, keeping the best placement found so far (at worst
that greedy start) when it runs out.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from hwmodels.errors import InputError, excerpt
from planner.coactivation import coactivation_placement
from planner.eplb import Policy, contiguous_placement, eplb_placement
from planner.ilp import ilp_placement, windows_of
from planner.placement import cross_node_bytes_per_token, evaluate, expert_location_json

MAX_TIME_LIMIT_S = 3600.0  # an hour: the search meets its bound or stalls long before on any published model
# The placements' tables, estimated at their worst (an expert may hold every redundant slot: log2phy is
# [L, E, R + 1] per method); more than this would swap or be killed rather than answer.
MAX_PLACEMENT_BYTES = 2 * 2**30
PARAMETERS = {"ep": "ep", "redundant": "redundant", "nodes": "nodes", "time_limit_s": "time_limit_s",
              "eval_loads": "eval_loads", "fit_windows": "fit_windows"}


@dataclass(frozen=True)
class AllToAll:
    """What prices a placement's all-to-all for one model: top-k, the bytes of one token's dispatch plus combine
    copy (DeepSeek-V3: 7,168 fp8 + 56 fp32 scales + 7,168 bf16 = 21,728 B) and its node-limited routing."""

    top_k: int
    token_bytes: float
    num_groups: int = 1
    groups_per_token: int = 1


def _whole(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def placement_bytes(num_layers: int, num_experts: int, redundant: int) -> int:
    """Worst-case bytes of the three placements' tables (int64): log2phy [L, E, R + 1] for EPLB and the ILP,
    [L, E, 2] for contiguous, and the [L, N] rows the methods and their evaluation hold."""
    return 8 * num_layers * (num_experts * (2 * (redundant + 1) + 2) + 8 * (num_experts + redundant))


def check_arguments(num_layers: int, num_experts: int, ep, redundant, nodes, time_limit_s,
                    names: Mapping[str, str] = PARAMETERS) -> None:
    """The arguments of compare_placements for [num_layers, num_experts] loads, checked before any work; an
    InputError names the argument as `names` spells it (the CLI passes its options)."""
    n = {**PARAMETERS, **names}
    if not _whole(ep) or ep < 1:
        raise InputError(n["ep"], f"is {excerpt(ep)}", "give the devices of the EP group, a whole number >= 1")
    if not _whole(redundant) or not 0 <= redundant <= num_experts:
        raise InputError(n["redundant"], f"must be from 0 to {num_experts:,} (the experts' count), got {excerpt(redundant)}",
                         f"give 0 to {num_experts:,} redundant slots (at most one per expert)")
    if (num_experts + redundant) % ep:
        fits = -num_experts % ep
        problem = f"{num_experts:,} experts + {redundant:,} slots do not divide over {ep:,} devices"
        if fits > num_experts:  # no redundant count within bounds helps: the EP group is too large
            raise InputError(n["ep"], problem, f"give an EP size that divides {num_experts:,} experts + 0 to "
                             f"{num_experts:,} redundant slots (at most {2 * num_experts:,})")
        raise InputError(n["redundant"], problem, f"use {n['redundant']} {fits} (or that plus a multiple of {ep})")
    if not _whole(nodes) or nodes < 1 or ep % nodes:
        raise InputError(n["nodes"], f"{excerpt(nodes)} nodes do not divide the EP group of {ep:,} devices",
                         f"give a number of nodes that divides {ep:,} (1 for one node)")
    if not (isinstance(time_limit_s, (int, float, np.integer, np.floating)) and not isinstance(time_limit_s, bool)
            and math.isfinite(time_limit_s) and 0 < time_limit_s <= MAX_TIME_LIMIT_S):
        raise InputError(n["time_limit_s"], f"is {excerpt(time_limit_s)}",
                         f"a finite number of seconds > 0 and <= {MAX_TIME_LIMIT_S:g}")
    need = placement_bytes(num_layers, num_experts, redundant)
    if need > MAX_PLACEMENT_BYTES:
        raise InputError(n["redundant"], f"{num_layers:,} layers x {num_experts:,} experts with {redundant:,} redundant "
                         f"slots need up to {need / 2**30:.1f} GiB for the placements (limit "
                         f"{MAX_PLACEMENT_BYTES / 2**30:g} GiB)", "fewer redundant slots, or the statistics of fewer layers")


def compare_placements(fit_windows: Sequence[np.ndarray] | np.ndarray, eval_loads: np.ndarray, ep: int, redundant: int,
            nodes: int = 1, policy: Policy = Policy.GLOBAL, num_groups: int | None = None, time_limit_s: float = 60.0,
            robust: str = "mean", workers: int | None = None, progress: Callable[[str], None] | None = None,
            alltoall: AllToAll | None = None, scaleout_weight: float = 0.0,
            fit_tokens: Sequence[np.ndarray | None] | np.ndarray | None = None, eval_tokens: np.ndarray | None = None) -> dict:
    """Place with each method on `fit_windows` (one [L, E] array or several) and evaluate on `eval_loads`
    ([L, E]; the same data for an in-sample figure, the next window for an honest one), all under the
    runtime even split. EPLB is fitted on the windows' summed counts, as a deployment aggregates them.
    time_limit_s bounds the whole call (check_arguments: in (0, MAX_TIME_LIMIT_S]); past it the ILP keeps
    the best placement found so far and its notes say so.
    Returns what `moeplan place --json` prints, with the ILP placement as SGLang's `--init-expert-location`
    mapping under `expert_location`. progress, if given, is called with each step's name as it starts.
    alltoall: the model's all-to-all; with it each method reports cross_node_bytes_per_token (else None).
    scaleout_weight: the ILP's scale-out term (planner.ilp_placement), in units of the mean device's load per
      unit of group-share-weighted (group, node) pairs; > 0 needs alltoall with the model's expert groups.
    fit_tokens, eval_tokens: [T, L, E] 0/1 per-token routing behind the fit windows (one array, or one per fit
      window, used where every window has them) and eval_loads, where the files hold it. With fit_tokens on
      several nodes a fourth method, "coactivation", moves the ILP's slots between nodes where the tokens'
      co-activation saves copies (planner.coactivation; the ILP then gets 80% of the time left); with eval_tokens
      every method's cross_node_bytes_per_token counts the evaluated tokens' own expert sets."""
    started = time.perf_counter()
    step = progress or (lambda name: None)
    windows = windows_of(fit_windows)
    num_windows, num_layers, num_experts = windows.shape
    check_arguments(num_layers, num_experts, ep, redundant, nodes, time_limit_s)
    deadline = started + float(time_limit_s)
    eval_loads = np.asarray(eval_loads, dtype=float)
    if eval_loads.shape != (num_layers, num_experts):
        raise InputError("eval_loads", f"shape {eval_loads.shape} differs from the fit windows' {(num_layers, num_experts)}",
                         "evaluate on statistics of the same model (layers x experts)")
    num_slots = num_experts + redundant
    step(f"EPLB on {num_layers:,} layers x {num_slots:,} slots")
    placements = {"contiguous": contiguous_placement(num_layers, num_experts, num_slots, ep)}
    # EPLB runs whole: it is a method compared here and the ILP's greedy start, the placement every time
    # limit falls back on (a heap per layer: 200,000 slots in about half a second); its time counts
    placements["eplb"] = eplb_placement(windows.sum(axis=0), num_slots, ep, nodes, policy, num_groups)
    # the ILP starts from EPLB's rows with one window (on several it starts from EPLB on the summed unit
    # windows, falling back on these rows when that cannot finish in time)
    step(f"ILP on {num_layers:,} layers, until it meets its bound or the time limit")
    if scaleout_weight and (alltoall is None or alltoall.num_groups < 2):
        raise InputError("scaleout_weight", "needs a model whose experts route in groups (n_group > 1)",
                         "pass the model (DeepSeek-V3: n_group 8) or a weight of 0")
    if isinstance(fit_tokens, (list, tuple)):
        fit_tokens = np.concatenate(fit_tokens) if fit_tokens and all(
            t is not None and np.shape(t)[1:] == eval_loads.shape for t in fit_tokens) else None
    coactivation = fit_tokens is not None and nodes > 1
    ilp_share = 0.8 if coactivation else 1.0
    placements["ilp"] = ilp_placement(list(windows), num_slots, ep, nodes,
                                      time_limit_s=max(1e-3, ilp_share * (deadline - time.perf_counter())),
                                      robust=robust, workers=workers, start=placements["eplb"].phy2log,
                                      scaleout_weight=scaleout_weight,
                                      num_groups=alltoall.num_groups if scaleout_weight else None)
    if coactivation:
        step("moving co-activated experts together")
        placements["coactivation"] = coactivation_placement(placements["ilp"], windows.sum(axis=0), fit_tokens, nodes,
                                                            time_limit_s=max(1e-3, deadline - time.perf_counter()))
    step("scoring the placements")
    methods = {}
    for name, p in placements.items():
        result = evaluate(p, eval_loads)
        cross = None if alltoall is None else cross_node_bytes_per_token(
            p, eval_loads, nodes, alltoall.top_k, alltoall.token_bytes, alltoall.num_groups, alltoall.groups_per_token,
            tokens=eval_tokens)
        methods[name] = {k: result[k] for k in ("mean_imbalance", "worst_layer_imbalance", "step_cost")} | {
            "cross_node_bytes_per_token": cross, "seconds": p.seconds, "method": p.method}
    ilp = placements["ilp"]
    return {"ep": ep, "redundant": redundant, "slots_per_device": num_slots // ep, "nodes": nodes,
            "fit_windows": num_windows, "eplb_policy": policy.value, "robust": robust, "scaleout_weight": scaleout_weight,
            "cross_node_from": None if alltoall is None else
            "the evaluated tokens' own expert sets (per-token routing)" if eval_tokens is not None else
            "independent draws given each expert's share (no per-token routing)",
            "methods": methods,
            "objective": ilp.objective, "lp_bound": ilp.lp_bound, "gap": ilp.gap, "solver": ilp.solver,
            "notes": ilp.notes, "expert_location": expert_location_json(ilp)}
