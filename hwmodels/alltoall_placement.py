"""Where a placement sends each token: the destinations of the all-to-all priced from where every expert's
replicas sit, not from a hot device over evenly loaded others (moeplan issue 19).

Inputs are plain arrays (hwmodels does not import the planner): per MoE layer, the share of routed (token,
expert) pairs each logical expert draws and the placement's `phy2log` row (slot p on device p // slots per
device). planner.placement passes them from a Placement and routing statistics.

The routing model, and what it assumes where no per-token routing data exists:
  * attention ranks: a token enters the all-to-all from any device of the EP group with the same
    probability (attention DP spreads sequences evenly), independently of the experts it picks;
  * replicas: a replicated expert's pairs split evenly over its replicas (the runtime rule every placement
    here is evaluated with; SGLang's static dispatch also prefers a replica on the sender's own GPU or
    node, which is not modelled, so replicas never lower the traffic here);
  * node-limited routing (config.json `n_group` / `topk_group`, DeepSeek-V3: 4 of 8 groups): a token first
    picks topk_group of the n_group contiguous expert groups, a set S with probability proportional to the
    product of the groups' load shares (conditional Poisson sampling), then draws its top-k experts from
    the experts of S in proportion to their load shares;
  * co-activation: beyond the group limit, a token's top-k experts are independent draws given the
    per-expert load shares. Where a device holds share r of S's pairs it is treated as holding r x |S|
    equally likely experts of S (hwmodels.collectives.destination_hits' approximation, exact for uniform
    routing), so P(token hits it | S) = 1 - C(|S| - r |S|, k) / C(|S|, k).
Where per-token routing exists (../shared/data/routing/mixtral-8x7b-per-token, SGLang's per-token dumps),
`token_hits` replaces the last two assumptions with the tokens' own expert sets: a token reaches a device or
domain unless none of its experts' replicas drawn there (each replica in proportion to the even split), averaged
over the observed tokens, so experts that are chosen together and sit together cost one copy.

Outputs per layer: the device share p [D] (what ExpertLoad.shares holds), the probability that a token
reaches each device [D] and each domain [G]; hwmodels.collectives turns them into bytes per link class.

Shape legend: L = MoE layers, E = logical experts, N = physical slots, D = devices (or ranks), G = domains,
S = candidate group sets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property, lru_cache
from itertools import combinations

import numpy as np

from hwmodels.collectives import alltoall_bytes, miss_probability
from hwmodels.errors import InputError

ASSUMPTION = ("all-to-all priced by placement: attention ranks spread evenly over the EP group, a replicated "
              "expert's pairs split evenly over its replicas, node-limited routing picks topk_group of n_group "
              "groups in proportion to their load, and a token's experts are independent draws given the "
              "per-expert load shares (no per-token co-activation data)")
MAX_GROUP_SETS = 20_000  # C(n_group, topk_group) sets enumerated; DeepSeek-V3 has C(8, 4) = 70


@dataclass(frozen=True, eq=False)
class PlacedRouting:
    """A placement of routing statistics as plain arrays.

    expert_share: [L, E], each MoE layer's share of routed pairs per logical expert (rows sum to 1; a layer
      without data is uniform).
    phy2log: [L, N], the logical expert of each physical slot; slot p sits on device p // slots_per_device.
    """

    expert_share: np.ndarray
    phy2log: np.ndarray
    slots_per_device: int
    source: str = ""

    def __post_init__(self):
        share, row = np.asarray(self.expert_share, float), np.asarray(self.phy2log)
        if share.ndim != 2 or row.ndim != 2 or share.shape[0] != row.shape[0]:
            raise InputError("phy2log", f"shapes {share.shape} and {row.shape} are not [L, E] and [L, N]",
                             "one row of expert shares and one phy2log row per MoE layer")
        if row.shape[1] % self.slots_per_device or row.min() < 0 or row.max() >= share.shape[1]:
            raise InputError("phy2log", "slots do not divide over the devices or name an unknown expert",
                             "pass a placement of the same experts")

    @property
    def num_devices(self) -> int:
        return self.phy2log.shape[1] // self.slots_per_device

    @cached_property
    def expert_device(self) -> np.ndarray:
        """[L, E, D]: the share of each expert's pairs each device serves (even split over its replicas)."""
        num_layers, num_experts = self.expert_share.shape
        out = np.zeros((num_layers, num_experts, self.num_devices))
        device = np.arange(self.phy2log.shape[1]) // self.slots_per_device
        for layer in range(num_layers):
            np.add.at(out[layer], (self.phy2log[layer], device), 1.0)
        return out / out.sum(axis=2, keepdims=True)

    def with_ranks(self, ranks_per_device: int) -> np.ndarray:
        """[L, E, D x r]: a device of r ranks (a 910C's two dies) as r ranks, each with 1/r of its pairs."""
        return np.repeat(self.expert_device, ranks_per_device, axis=2) / ranks_per_device


def group_sets(group_share: np.ndarray, per_token: int) -> tuple[np.ndarray, np.ndarray]:
    """The sets of `per_token` groups a token may pick and their probabilities.

    group_share: [n_group] share of routed pairs per group. Returns (member [S, n_group] 0/1, probability [S]),
    P(set) proportional to the product of its groups' shares (conditional Poisson sampling: DeepSeek-V3 ranks
    groups by their best experts' scores, which this stands for without per-token data).
    """
    n = len(group_share)
    if per_token >= n:
        return np.ones((1, n)), np.ones(1)
    if math.comb(n, per_token) > MAX_GROUP_SETS:
        raise InputError("topk_group", f"C({n}, {per_token}) group sets are past the {MAX_GROUP_SETS:,} enumerated",
                         "price the all-to-all without node-limited routing (groups_per_token = n_group)")
    sets = np.array(list(combinations(range(n), per_token)))  # [S, per_token]
    weight = np.prod(np.asarray(group_share, float)[sets], axis=1)
    if weight.sum() <= 0:  # fewer than per_token groups carry load: every set that holds them all weighs the same
        weight = np.prod(np.asarray(group_share)[sets] > 0, axis=1).astype(float) + 1e-300
    member = np.zeros((len(sets), n))
    np.put_along_axis(member, sets, 1.0, axis=1)
    return member, weight / weight.sum()


def layer_hits(expert_share: np.ndarray, expert_device: np.ndarray, domains: np.ndarray, top_k: int,
               num_groups: int = 1, groups_per_token: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One layer: (device share p [D], P(token reaches device) [D], P(token reaches domain) [G]).

    expert_share: [E] (sums to 1), expert_device: [E, D] (rows sum to 1), domains: [D] domain id 0..G-1.
    The hit probabilities' sums are the expected distinct devices and domains a token reaches: what DeepEP's
    normal mode (one copy per destination device, one RDMA copy per destination node) sends.
    """
    w = np.asarray(expert_share, float)
    w = w / w.sum() if w.sum() > 0 else np.full(len(w), 1.0 / len(w))
    num_experts = len(w)
    groups = np.arange(num_experts) // (num_experts // num_groups)
    member, prob = group_sets(np.bincount(groups, weights=w, minlength=num_groups), groups_per_token)
    in_set = member[:, groups] * w  # [S, E] pairs of each set's experts
    set_share = in_set.sum(axis=1, keepdims=True)  # [S, 1]
    # einsum, not @: these products are small, and a multithreaded BLAS on a busy machine takes 20x longer
    r_device = np.divide(np.einsum("se,ed->sd", in_set, expert_device), set_share,
                         out=np.zeros((len(prob), expert_device.shape[1])), where=set_share > 0)  # [S, D]
    onehot = np.zeros((len(domains), int(domains.max()) + 1))
    onehot[np.arange(len(domains)), domains] = 1.0
    r_domain = np.einsum("sd,dg->sg", r_device, onehot)  # [S, G]
    pool = float(num_experts * groups_per_token // num_groups)  # experts a token chooses among
    draws = min(top_k, pool)
    hit_device = 1.0 - miss_probability(pool * r_device.ravel(), draws, pool).reshape(r_device.shape)
    hit_domain = 1.0 - miss_probability(pool * r_domain.ravel(), draws, pool).reshape(r_domain.shape)
    return (np.einsum("e,ed->d", w, expert_device), np.einsum("s,sd->d", prob, hit_device),
            np.einsum("s,sg->g", prob, hit_domain))


def token_hits(tokens: np.ndarray, expert_device: np.ndarray, domains: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One layer from per-token routing: (P(token reaches device) [D], P(token reaches domain) [G]), the mean over
    the tokens that chose experts here.

    tokens: [T, E] 0/1, the experts each token chose (a token with no decision in this layer is an all-zero
    row, left out); expert_device: [E, D] (rows sum to 1); domains: [D] domain id 0..G-1. Each chosen expert
    sends the token to one of its replicas, drawn in proportion to expert_device, independently of the others.
    """
    chosen = np.asarray(tokens, dtype=float)
    chosen = chosen[chosen.sum(axis=1) > 0]
    onehot = np.zeros((len(domains), int(domains.max()) + 1))
    onehot[np.arange(len(domains)), domains] = 1.0
    expert_domain = np.einsum("ed,dg->eg", expert_device, onehot)
    if not len(chosen):
        return np.zeros(expert_device.shape[1]), np.zeros(expert_domain.shape[1])

    def reached(share: np.ndarray) -> np.ndarray:  # share [E, X] -> P(reach x) [X]
        log_miss = np.log(np.clip(1.0 - share, 1e-300, None))  # an expert held whole there misses with probability 0
        return 1.0 - np.exp(np.einsum("te,ex->tx", chosen, log_miss)).mean(axis=0)

    return reached(expert_device), reached(expert_domain)


@dataclass(frozen=True, eq=False)
class PlacedHits:
    """Every MoE layer's destinations: p [L, D], device_hit [L, D], domain_hit [L, G] (D: ranks)."""

    share: np.ndarray
    device_hit: np.ndarray
    domain_hit: np.ndarray
    domains: np.ndarray  # [D]


def placed_hits(routing: PlacedRouting, domains: np.ndarray, top_k: int, num_groups: int = 1,
                groups_per_token: int = 1, ranks_per_device: int = 1, tokens: np.ndarray | None = None) -> PlacedHits:
    """layer_hits of every layer of `routing`; domains: [D x ranks_per_device], the domain of each rank.
    tokens: [T, L, E] 0/1 per-token routing of the same layers, whose token_hits replace the drawn hits."""
    expert_device = routing.with_ranks(ranks_per_device) if ranks_per_device > 1 else routing.expert_device
    if expert_device.shape[2] != len(domains):
        raise InputError("domains", f"{len(domains)} ranks, the placement has {expert_device.shape[2]}",
                         "price the placement on the EP group it was made for")
    if tokens is not None and np.shape(tokens)[1:] != routing.expert_share.shape:
        raise InputError("tokens", f"per-token routing of shape {np.shape(tokens)[1:]} (layers, experts), the "
                         f"statistics {routing.expert_share.shape}", "pass per-token routing of the same MoE layers")
    rows = [layer_hits(routing.expert_share[i], expert_device[i], domains, top_k, num_groups, groups_per_token)
            if tokens is None else
            (np.einsum("e,ed->d", routing.expert_share[i], expert_device[i]),
             *token_hits(tokens[:, i], expert_device[i], domains))
            for i in range(len(routing.expert_share))]
    share, device_hit, domain_hit = (np.stack(x) for x in zip(*rows))
    return PlacedHits(share, device_hit, domain_hit, np.asarray(domains))


def cross_domain_copies_per_token(hits: PlacedHits, mode: str, top_k: int) -> np.ndarray:
    """[L] token copies one token sends out of its domain per layer, its source spread evenly over the devices.

    normal (DeepEP prefill): one RDMA copy per remote domain reached: sum_g hit_g (1 - D_g / N).
    low_latency (decode): one copy per (token, expert) pair outside the sender's domain: K (1 - sum_g q_g D_g / N),
      which no placement changes while sources spread evenly (only the hot receiver moves).
    """
    size = np.bincount(hits.domains).astype(float)  # [G]
    own = size / size.sum()  # P(the sender's domain is g)
    if mode == "normal":
        return (hits.domain_hit * (1.0 - own)).sum(axis=1)
    domain_share = np.stack([np.bincount(hits.domains, weights=p, minlength=len(size)) for p in hits.share])
    return top_k * (1.0 - (domain_share * own).sum(axis=1))


def layer_copies(hits: PlacedHits, mode: str, top_k: int, num_experts: int) -> list[dict[str, float]]:
    """Per layer, token copies per token of a rank on the busiest rank of each path class ('device', 'scaleup',
    'scaleout'): hwmodels.collectives.alltoall_bytes at one token of one byte, from the placement's hits.
    dispatch_cost / combine_cost(rank_copies=...) scale them by the tokens and the bytes of a token."""
    return [alltoall_bytes(hits.share[i], hits.domains, 1.0, top_k, num_experts, 1.0, None, mode,
                           hits=(hits.device_hit[i], hits.domain_hit[i]))
            for i in range(len(hits.share))]


def scaleout_weight(token_bytes: float, scaleout_bytes_per_s: float, peak_flops_per_s: float, top_k: int,
                    flops_per_pair: float, groups_per_token: int) -> float:
    """The placement MILP's scale-out weight (planner.ilp) from the hardware: what one unit of its proxy costs
    in units of its balance term.

    The balance term counts the busiest device's routed pairs over the mean device's; its unit is the mean
    device's routed-expert time per token, top_k x flops_per_pair / peak (the roofline). The proxy is the
    group-share-weighted count of (expert group, node) pairs; a token picks groups_per_token groups, so one
    unit of it is about groups_per_token more node copies per token, each token_bytes over the NIC:
        weight = groups_per_token x (token_bytes / scaleout_bytes_per_s) / (top_k x flops_per_pair / peak)
    DeepSeek-V3 on H800 (one 50 GB/s NIC per GPU, 1,979 TFLOP/s fp8): 4 x 0.43 us / 0.36 us = 4.9 at the
    nominal NIC, 5.6 at the DeepEP fit's scale-out efficiency (moeplan.api.placement_scaleout_weight). It is
    the weight of traffic not hidden behind compute; two-batch overlap hides some of it (then the weight is
    an upper bound).
    """
    copy_s = token_bytes / scaleout_bytes_per_s
    expert_s = top_k * flops_per_pair / peak_flops_per_s
    return groups_per_token * copy_s / expert_s


@lru_cache(maxsize=64)
def copies_by_mode(routing: PlacedRouting, domains: tuple[int, ...], top_k: int, num_experts: int, num_groups: int,
                   groups_per_token: int, ranks_per_device: int, decimals: int) -> dict[str, tuple[tuple, ...]]:
    """Per all-to-all mode ('normal', 'low_latency'), per layer, layer_copies as ((class, copies), ...) rounded to
    `decimals`: what the step model keys its dispatch and combine on. Cached per placement (a routing is hashed by
    identity), as a layout search prices one placement in many step contexts."""
    hits = placed_hits(routing, np.array(domains), top_k, num_groups, groups_per_token, ranks_per_device)
    return {mode: tuple(tuple((c, round(v, decimals)) for c, v in layer.items())
                        for layer in layer_copies(hits, mode, top_k, num_experts))
            for mode in ("normal", "low_latency")}
