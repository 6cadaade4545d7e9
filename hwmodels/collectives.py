"""Alpha-beta cost of the collectives of MoE serving: expert-parallel dispatch/combine, TP all-reduce/all-gather.

Shapes: N = devices of the group, G = scale-up domains it spans, E = routed experts, K = top-k,
T = tokens per device, b = bytes per token on the wire.

Link model (per device, per path class c in {"scaleup", "scaleout"}):
    bytes_per_s[c] = efficiency[c] x catalog bandwidth   (scale-up: device.attainable derate if measured)
    latency_s[c]   = NCCL's per-hop latency of that link type
A collective's time is that of its busiest rank on its busiest link class:
    time = overhead + fixed + max(copies x per_copy_s, max_c (latency_s[c] + bytes[c] / bytes_per_s[c]))
`overhead` is the all-to-all kernel's fixed cost (fitted) or NCCL's ring base latency; `fixed` and
the per-copy term are the handling of kernels that move tokens on the device's own cores (zero on
H800, where the tables are explained by the links alone). A device of r ranks (a 910C: two dies, each
its own rank) is r ranks of the group, each with 1/r of its tokens and of its links.

Parameters, each with its source:
    CollectiveFit (efficiencies, kernel overhead, handling terms): fitted per device family by
        hwmodels.calibrate.deepep_fit to the published DeepEP (H800) and DeepEP-Ascend (A3 SuperPoD)
        tables and stored as data (catalogs/fits/deepep-*.yaml); every cost here takes the fit it runs on.
    HOP_LATENCY_S, RING_BASE_LATENCY_S
        NVIDIA/nccl src/graph/tuning.cc, Ring algorithm, LL protocol (the one NCCL picks for
        latency-bound sizes): hwLat NVLink 0.6 us, NET 2.7 us per hop; baseLat 6.6 us.

DeepEP's algorithm (deepseek-ai/DeepEP docs/legacy.md, csrc/kernels/internode.cu):
  * normal mode (prefill): a token goes once to each destination DEVICE holding any of its top-k
    experts (dedup per device). Across domains it crosses RDMA once per destination DOMAIN, landing
    on the device with the sender's local rank, which forwards it over NVLink to the destination
    devices of that domain. DeepSeek-V3 routing limits a token to M = 4 domains (node-limited groups).
  * low-latency mode (decode): each (token, expert) pair is sent directly to the expert's device,
    no dedup and no forwarding; within a domain over NVLink (DeepEP PR #173), else RDMA.
Combine is the exact reverse of dispatch (the same bytes per class, bf16 instead of fp8).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Mapping

import numpy as np

from hwmodels.errors import InputError
from hwmodels.hardware import Cluster, Device
from hwmodels.precision import DTYPES
from hwmodels.topology import domain_ids
from hwmodels.units import us

LINK_CLASSES = ("scaleup", "scaleout")
MODES = ("normal", "low_latency")

NCCL_SOURCE = "NVIDIA/nccl src/graph/tuning.cc: hwLat and baseLat, Ring algorithm, LL protocol"
HOP_LATENCY_S: Mapping[str, float] = {"scaleup": 0.6 * us, "scaleout": 2.7 * us}  # NVLink, NET
RING_BASE_LATENCY_S = 6.6 * us
DEEPEP_NORMAL_SMS = 20  # deepseek-ai/DeepEP deep_ep/buffer.py: Buffer.num_sms, SMs its normal kernels occupy
_FP8_BYTES, _BF16_BYTES = DTYPES["fp8"].bytes_per_element, DTYPES["bf16"].bytes_per_element

@dataclass(frozen=True)
class CollectiveFit:
    """The global fitted parameters of one device family's all-to-all kernels.

    Every fit has one bandwidth efficiency per link class and one fixed kernel overhead. Kernels that
    handle tokens on the device's own cores (DeepEP-Ascend: quantise, lay out and copy each token on
    the vector cores) also pay per token and per token copy, and normal-mode kernels pay per peer rank:
    both synchronise with every peer, and dispatch first tells every peer how many tokens to expect
    (combine reuses that layout). Low-latency kernels write into fixed-size buffers and skip both.
    """

    scaleup_efficiency: float  # of device.attainable['scaleup_bytes_per_s'], else of the nominal figure
    scaleout_efficiency: float  # of the NIC's nominal bytes/s
    alltoall_latency_s: float  # fixed cost of one dispatch or combine kernel (launch, signalling)
    source: str
    per_token_s: float = 0.0  # per token a rank sends from
    per_copy_s: float = 0.0  # per token copy a rank sends or receives
    normal_per_peer_s: float = 0.0  # per rank of the group, normal-mode dispatch and combine
    notify_per_peer_s: float = 0.0  # per rank of the group, normal-mode dispatch on top


@dataclass(frozen=True)
class LinkClass:
    name: str
    bytes_per_s: float
    latency_s: float
    source: str


@dataclass(frozen=True)
class CommCost:
    """One collective on its busiest device: bytes per path class ('device' = local copies, not timed)."""

    name: str
    bytes_by_class: dict[str, float]
    time_s: float
    latency_s: float  # the fixed part of time_s
    bottleneck: str  # the link class that sets time_s ('device' when nothing leaves the device)
    source: str
    beyond: float = 1.0  # a measured table's asked over nearest measured coordinate (1.0: inside it, or fitted)


@lru_cache(maxsize=256)
def _link_classes(scaleup_bytes_per_s: float | None, scaleup_derate: bool, scaleout_bytes_per_s: float | None,
                  fit: CollectiveFit) -> dict[str, LinkClass]:
    links = {}
    if scaleup_bytes_per_s is not None:
        what = "device.attainable['scaleup_bytes_per_s']" if scaleup_derate else "device.scaleup_bytes_per_s (nominal)"
        links["scaleup"] = LinkClass("scaleup", fit.scaleup_efficiency * scaleup_bytes_per_s, HOP_LATENCY_S["scaleup"],
                                     f"{fit.scaleup_efficiency} x {what} ({fit.source}); latency {NCCL_SOURCE}")
    if scaleout_bytes_per_s is not None:
        links["scaleout"] = LinkClass("scaleout", fit.scaleout_efficiency * scaleout_bytes_per_s, HOP_LATENCY_S["scaleout"],
                                      f"{fit.scaleout_efficiency} x device.scaleout_bytes_per_s ({fit.source}); latency {NCCL_SOURCE}")
    return links


def link_classes(device: Device, fit: CollectiveFit) -> dict[str, LinkClass]:
    """'scaleup' and 'scaleout' links of one device, derated; a class whose bandwidth is unpublished is absent."""
    attainable = device.attainable.get("scaleup_bytes_per_s")
    scaleup = attainable if attainable is not None else device.scaleup_bytes_per_s
    return dict(_link_classes(scaleup, attainable is not None, device.scaleout_bytes_per_s, fit))


def _link(links: Mapping[str, LinkClass], cls: str, device: Device) -> LinkClass:
    if cls not in links:
        raise InputError(f"device.{cls}_bytes_per_s", f"not published for {device.name}, needed for this collective",
                         f"add {cls}_bytes_per_s for {device.name} to catalogs/devices.yaml with its source")
    return links[cls]


def ep_group_domains(cluster: Cluster, ep_devices: int) -> np.ndarray:
    """Domain id of each device of an EP group laid out contiguously from device 0: [ep_devices]."""
    return domain_ids(cluster, ep_devices)


# ---------------------------------------------------------------------------------------------
# Which destinations a token reaches


def miss_probability(held: np.ndarray, draws: np.ndarray | float, pool: np.ndarray | float) -> np.ndarray:
    """P(k draws without replacement from `pool` equally likely experts miss all `held` of them).

    C(pool - held, k) / C(pool, k) = prod_{i<k} (pool - held - i) / (pool - i); `held`, `pool` may be
    fractional (expert-equivalents) and so may k (per-domain draws): factor i is raised to
    clip(k - i, 0, 1), which is exact for whole k and continuous in between.
    """
    draws = np.asarray(draws, float)
    i = np.arange(math.ceil(float(draws.max(initial=0.0))))[:, None]  # [k, 1]: one row per draw
    left = np.maximum(np.asarray(pool, float) - i, 1e-300)  # [k, N]; an exhausted pool misses nothing more
    factor = np.clip(1.0 - np.asarray(held, float) / left, 0.0, 1.0)
    if draws.ndim == 0 and draws == i.shape[0]:
        return factor.prod(axis=0)
    return (factor ** np.clip(draws - i, 0.0, 1.0)).prod(axis=0)


def destination_hits(dest_probability: np.ndarray, domains: np.ndarray, top_k: int, num_experts: int,
                     max_domains_per_token: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Probability that one token's top-k experts include one on each device / in each domain.

    dest_probability: [N], the share of routed (token, expert) pairs landing on each device
    domains: [N], domain id of each device (0..G-1)
    returns (device_hit [N], domain_hit [G]); their sums are E[distinct devices], E[distinct domains].

    A device holding share p is treated as holding m = E p equally likely experts, so with uniform
    routing this is exact: E[distinct of G equal groups] = G (1 - C(E - E/G, K) / C(E, K)).
    Skewed loads (hot experts, EPLB replicas) enter only through p: a first-order approximation that
    keeps the right means and the dedup saturation of hot devices.
    With a domain limit M < G (DeepSeek-V3 node-limited routing) a token first picks M domains, each
    of which it then hits (groups are ranked by their best experts), so
        domain_hit[d] = min(1 - miss(E q_d, K, E), M q_d)            q_d = share of domain d
    and its K draws spread over them, K q_d / domain_hit[d] landing in domain d:
        device_hit[j] = domain_hit[d] (1 - miss(E p_j, K q_d / domain_hit[d], E q_d)).
    Checked against a Monte Carlo of DeepEP's test routing in tests/test_collectives.py.
    """
    p = np.asarray(dest_probability, float)
    share = np.bincount(domains, weights=p)  # [G]
    domain_hit = 1.0 - miss_probability(num_experts * share, top_k, num_experts)
    if max_domains_per_token is None or max_domains_per_token >= len(share):
        return 1.0 - miss_probability(num_experts * p, top_k, num_experts), domain_hit
    domain_hit = np.minimum(domain_hit, max_domains_per_token * share)
    draws = np.divide(top_k * share, domain_hit, out=np.zeros_like(share), where=domain_hit > 0)
    inside = 1.0 - miss_probability(num_experts * p, draws[domains], num_experts * share[domains])
    return domain_hit[domains] * inside, domain_hit


# ---------------------------------------------------------------------------------------------
# All-to-all (dispatch / combine)


def alltoall_bytes(p: np.ndarray, domains: np.ndarray, tokens_per_device: float, top_k: int, num_experts: int,
                   token_bytes: float, max_domains_per_token: int | None, mode: str,
                   hits: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, float]:
    """Bytes each path class carries on its busiest device (max of what a device sends and receives).

    hits: (device_hit [N], domain_hit [G]) where a placement sets them (hwmodels.alltoall_placement);
    None: destination_hits from the device shares p alone.

    j = a device, d = its domain of D_d devices, P = hit probabilities (destination_hits), p = shares.
    normal:       scaleup[j]  = T N P_j (1 - 1/D_d) b      received via the D_d forwarders of d, one of them j
                  scaleout[j] = T b max(sum_{d' != d} P_d',    sent: once per remote domain hit
                                        (N - D_d) P_d / D_d)   received: spread over d's D_d devices
    low_latency:  scaleup[j]  = T K b max(p_j (D_d - 1), q_d - p_j)
                  scaleout[j] = T K b max(p_j (N - D_d), 1 - q_d)
    """
    n = len(p)
    size = np.bincount(domains)[domains]  # [N] devices in each device's domain
    if mode == "normal":
        device_hit, domain_hit = hits if hits is not None else destination_hits(p, domains, top_k, num_experts,
                                                                                max_domains_per_token)
        received = tokens_per_device * n * device_hit * token_bytes
        local, scaleup = received / size, received * (1.0 - 1.0 / size)
        sent_out = tokens_per_device * (domain_hit.sum() - domain_hit[domains]) * token_bytes
        received_in = tokens_per_device * (n - size) * domain_hit[domains] / size * token_bytes
        scaleout = np.maximum(sent_out, received_in)
    else:
        pair_bytes = tokens_per_device * top_k * token_bytes
        domain_share = np.bincount(domains, weights=p)
        share = domain_share[domains]
        local = pair_bytes * p
        scaleup = pair_bytes * np.maximum(p * (size - 1), share - p)
        # sum - share, not 1 - share: exactly zero for a single domain, whatever the rounding of p
        scaleout = pair_bytes * np.maximum(p * (n - size), domain_share.sum() - share)
    return {"device": float(local.max()), "scaleup": float(scaleup.max()), "scaleout": float(scaleout.max())}


@lru_cache(maxsize=4096)
def _uniform_alltoall_bytes(n: int, domain_devices: int, tokens_per_device: float, top_k: int, num_experts: int,
                            token_bytes: float, max_domains_per_token: int | None, mode: str) -> tuple[tuple[str, float], ...]:
    domains = np.arange(n) // domain_devices
    p = np.full(n, 1.0 / n)
    return tuple(alltoall_bytes(p, domains, tokens_per_device, top_k, num_experts, token_bytes, max_domains_per_token, mode).items())


def _timed(name: str, bytes_by_class: dict[str, float], links: Mapping[str, LinkClass], device: Device,
           overhead_s: float, source: str, fixed_s: float = 0.0, copy_s: float = 0.0) -> CommCost:
    """time = overhead + fixed + max(copy handling, max over used classes of (hop latency + bytes / bandwidth)):
    the cores that copy tokens and the links that carry them work at once, the slower sets the pace."""
    terms = {c: _link(links, c, device).latency_s + bytes_by_class[c] / links[c].bytes_per_s
             for c in LINK_CLASSES if bytes_by_class.get(c, 0.0) > 0.0}
    if not terms:
        return CommCost(name, bytes_by_class, fixed_s + copy_s, 0.0, "device", source)
    bottleneck = max(terms, key=terms.get)
    wire_s = terms[bottleneck]
    return CommCost(name, bytes_by_class, overhead_s + fixed_s + max(wire_s, copy_s),
                    overhead_s + links[bottleneck].latency_s, bottleneck if wire_s >= copy_s else "copy", source)


def rank_bytes(cluster: Cluster, ep_devices: int, tokens_per_device: float, top_k: int, num_experts: int, token_bytes: float,
                dest_probability: np.ndarray | None, max_domains_per_token: int | None, mode: str) -> dict[str, float]:
    """Bytes per path class on the busiest RANK: a device of r ranks (a 910C's two dies) is r ranks of the
    group, each with 1/r of its tokens and of its expert share (DeepEP dedups and routes per rank)."""
    r = cluster.device.ranks_per_device
    domains = np.repeat(ep_group_domains(cluster, ep_devices), r)  # raises if the group does not fit the cluster
    if dest_probability is None:
        return dict(_uniform_alltoall_bytes(ep_devices * r, cluster.unit.scaleup_domain_devices * r, float(tokens_per_device) / r,
                                            top_k, num_experts, token_bytes, max_domains_per_token, mode))
    p = np.asarray(dest_probability, float)
    if p.shape != (ep_devices,) or (p < 0).any() or p.sum() <= 0:
        raise InputError("dest_probability", f"need {ep_devices} non-negative shares, got shape {p.shape}", "one share per EP device")
    return alltoall_bytes(np.repeat(p / p.sum() / r, r), domains, tokens_per_device / r, top_k, num_experts, token_bytes,
                           max_domains_per_token, mode)


def rank_time(name: str, rank_bytes: dict[str, float], device: Device, fit: CollectiveFit, ranks: int,
               tokens_per_rank: float, token_bytes: float, mode: str, notify: bool, source: str) -> CommCost:
    """One rank's all-to-all: its share of the device's links (1 / ranks_per_device) and the fit's
    handling: per token it sends from and per peer rank (normal mode; more if it notifies), then its
    token copies, which overlap with the wire."""
    links = link_classes(device, fit)
    if device.ranks_per_device > 1:  # the step model's hot path: only multi-rank devices pay for the copy
        links = {c: replace(link, bytes_per_s=link.bytes_per_s / device.ranks_per_device) for c, link in links.items()}
    per_peer_s = (fit.normal_per_peer_s + (fit.notify_per_peer_s if notify else 0.0)) if mode == "normal" else 0.0
    fixed_s = fit.per_token_s * tokens_per_rank + per_peer_s * ranks
    copy_s = fit.per_copy_s * sum(rank_bytes.values()) / token_bytes
    return _timed(name, rank_bytes, links, device, fit.alltoall_latency_s, source, fixed_s, copy_s)


def _alltoall_cost(cluster: Cluster, ep_devices: int, tokens_per_device: float, hidden: int, top_k: int, num_experts: int,
                   bytes_per_element: float, scale_bytes_per_token: float, dest_probability: np.ndarray | None,
                   max_domains_per_token: int | None, mode: str, name: str, fit: CollectiveFit,
                   notify: bool, rank_copies: Mapping[str, float] | None = None) -> CommCost:
    """The busiest rank's time over its share of the device's links; bytes reported per device (x ranks)."""
    if mode not in MODES:
        raise InputError("mode", f"unknown all-to-all mode '{mode}'", f"use one of {', '.join(MODES)}")
    if not 1 <= top_k <= num_experts:
        raise InputError("top_k", f"{top_k} is not in 1..num_experts ({num_experts})", "check the model config")
    device, r = cluster.device, cluster.device.ranks_per_device
    token_bytes = hidden * bytes_per_element + scale_bytes_per_token
    if rank_copies is not None:  # a placement's copies per token on the busiest rank, per path class
        per_rank = {c: float(v) * tokens_per_device / r * token_bytes for c, v in rank_copies.items()}
    else:
        per_rank = rank_bytes(cluster, ep_devices, tokens_per_device, top_k, num_experts, token_bytes, dest_probability,
                              max_domains_per_token, mode)
    cost = rank_time(name, per_rank, device, fit, ep_devices * r, tokens_per_device / r, token_bytes, mode, notify,
                     f"alpha-beta, DeepEP {mode} algorithm; {fit.source}")
    return replace(cost, bytes_by_class={c: b * r for c, b in per_rank.items()})


def dispatch_cost(cluster: Cluster, ep_devices: int, tokens_per_device: float, hidden: int, top_k: int, num_experts: int,
                  bytes_per_element: float = _FP8_BYTES, scale_bytes_per_token: float = 0.0,
                  dest_probability: np.ndarray | None = None, max_domains_per_token: int | None = None,
                  mode: str = "normal", name: str = "dispatch", *, fit: CollectiveFit,
                  rank_copies: Mapping[str, float] | None = None) -> CommCost:
    """MoE dispatch over an EP group of `ep_devices` laid out contiguously (module docstring: the model).

    bytes on the wire per token = hidden x bytes_per_element + scale_bytes_per_token (fp8 with 1x128
    fp32 scales: 1.0 and hidden / 128 x 4). dest_probability: [ep_devices] share of routed (token,
    expert) pairs on each device (a placement + routing stats); None = uniform. The time is the busiest
    device's, so skew shows up as a hot receiver. max_domains_per_token (DeepSeek-V3: 4) sets the
    normal mode's dedup; low-latency bytes go per pair and do not depend on it. Normal mode first
    tells every peer how many tokens to expect (the fit's per-peer term, zero on H800).
    rank_copies: token copies per token of a rank on the group's busiest rank, per path class, where a
    placement sets them (hwmodels.alltoall_placement.layer_copies); they replace dest_probability's model.
    """
    return _alltoall_cost(cluster, ep_devices, tokens_per_device, hidden, top_k, num_experts, bytes_per_element,
                          scale_bytes_per_token, dest_probability, max_domains_per_token, mode, name, fit, notify=True,
                          rank_copies=rank_copies)


def combine_cost(cluster: Cluster, ep_devices: int, tokens_per_device: float, hidden: int, top_k: int, num_experts: int,
                 bytes_per_element: float = _BF16_BYTES, scale_bytes_per_token: float = 0.0,
                 dest_probability: np.ndarray | None = None, max_domains_per_token: int | None = None,
                 mode: str = "normal", name: str = "combine", *, fit: CollectiveFit,
                 rank_copies: Mapping[str, float] | None = None) -> CommCost:
    """MoE combine: the reverse of dispatch (same paths and dedup, the layout dispatch set up), bf16 by default."""
    return _alltoall_cost(cluster, ep_devices, tokens_per_device, hidden, top_k, num_experts, bytes_per_element,
                          scale_bytes_per_token, dest_probability, max_domains_per_token, mode, name, fit, notify=False,
                          rank_copies=rank_copies)


# ---------------------------------------------------------------------------------------------
# Ring collectives for attention tensor parallelism


def _ring_cost(cluster: Cluster, group_devices: int, steps: int, bytes_moved: float, name: str, fit: CollectiveFit) -> CommCost:
    """NCCL ring: time = baseLat + steps x hop latency + bytes each device sends / bandwidth.

    A group inside one scale-up domain rides the scale-up links; one that spans domains is paced by
    its slowest ring hop, the NIC (NCCL's hierarchical algorithms are not modelled: TP stays inside).
    """
    domains = domain_ids(cluster, group_devices)
    if group_devices == 1:
        return CommCost(name, {"device": 0.0}, 0.0, 0.0, "device", "single device: no communication")
    cls = "scaleup" if domains[-1] == domains[0] else "scaleout"
    link = _link(link_classes(cluster.device, fit), cls, cluster.device)
    latency_s = RING_BASE_LATENCY_S + steps * link.latency_s
    source = f"ring alpha-beta; latencies {NCCL_SOURCE}; bandwidth {link.source}"
    return CommCost(name, {cls: bytes_moved}, latency_s + bytes_moved / link.bytes_per_s, latency_s, cls, source)


def allreduce_cost(cluster: Cluster, group_devices: int, bytes_per_device: float, name: str = "allreduce", *,
                   fit: CollectiveFit) -> CommCost:
    """Ring all-reduce of a `bytes_per_device` buffer: 2(n-1) steps, 2(n-1)/n x bytes sent per device."""
    n = group_devices
    return _ring_cost(cluster, n, 2 * (n - 1), 2.0 * (n - 1) / n * bytes_per_device, name, fit)


def send_recv_cost(cluster: Cluster, first_device: int, peer_device: int, bytes_per_device: float,
                   name: str = "pp_send_recv", *, fit: CollectiveFit) -> CommCost:
    """Point-to-point transfer of `bytes_per_device` from each device of a pipeline stage (devices from
    `first_device`) to its peer of the next stage (from `peer_device`), all pairs at once, each over its own link:
    one hop latency + bytes / bandwidth on the path class between the two (scale-up inside one domain, the NIC
    across domains). NCCL sends and receives pipeline-parallel activations point to point (torch.distributed
    isend/irecv on the PP group: vLLM and SGLang `send_tensor_dict`), no ring and no base latency of a collective."""
    domains = domain_ids(cluster, max(first_device, peer_device) + 1)
    if bytes_per_device <= 0:
        return CommCost(name, {"device": 0.0}, 0.0, 0.0, "device", "nothing to send")
    cls = "scaleup" if domains[first_device] == domains[peer_device] else "scaleout"
    link = _link(link_classes(cluster.device, fit), cls, cluster.device)
    source = f"point-to-point alpha-beta; latency {NCCL_SOURCE}; bandwidth {link.source}"
    return CommCost(name, {cls: bytes_per_device}, link.latency_s + bytes_per_device / link.bytes_per_s, link.latency_s,
                    cls, source)


def allgather_cost(cluster: Cluster, group_devices: int, bytes_per_device: float, name: str = "allgather", *,
                   fit: CollectiveFit) -> CommCost:
    """Ring all-gather of one `bytes_per_device` shard per device: n-1 steps, (n-1) x shard sent per device. A ring
    reduce-scatter of n such shards per device sends the same (n-1 steps of one shard each)."""
    n = group_devices
    return _ring_cost(cluster, n, n - 1, (n - 1) * float(bytes_per_device), name, fit)
