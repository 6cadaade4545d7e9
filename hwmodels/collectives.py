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

Global parameters, each with its source:
    DEEPEP_FIT.scaleup_efficiency, .scaleout_efficiency, .alltoall_latency_s
        least-squares fit (log error) of this model to the 20 H800 rows of the DeepEP normal and
        low-latency tables (deepseek-ai/DeepEP docs/legacy.md); `fit_deepep()` reruns it.
    DEEPEP_ASCEND_FIT (Huawei NPUs: collective_fit(device))
        least-squares fit (log error) of the handling terms to the 16 timed rows of the DeepEP-Ascend
        tables (sgl-project/sgl-kernel-npu README, A3 SuperPoD); `fit_deepep_ascend()` reruns it.
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
import yaml

from catalogs import CATALOG_DIR
from hwmodels.errors import InputError
from hwmodels.hardware import Cluster, Device, make_cluster
from hwmodels.precision import DTYPES
from hwmodels.topology import domain_ids
from hwmodels.units import GB, us

LINK_CLASSES = ("scaleup", "scaleout")
MODES = ("normal", "low_latency")

NCCL_SOURCE = "NVIDIA/nccl src/graph/tuning.cc: hwLat and baseLat, Ring algorithm, LL protocol"
HOP_LATENCY_S: Mapping[str, float] = {"scaleup": 0.6 * us, "scaleout": 2.7 * us}  # NVLink, NET
RING_BASE_LATENCY_S = 6.6 * us

DEEPEP_SOURCE = "deepseek-ai/DeepEP docs/legacy.md (H800 normal and low-latency tables)"


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


# Rounded output of fit_deepep() (rerun in tests/test_collectives.py). Over all 32 published H800 numbers
# (deepep_report) the error is 3.8% rms, 9.7% at worst (low-latency EP128 combine GB/s).
DEEPEP_FIT = CollectiveFit(
    scaleup_efficiency=0.83,
    scaleout_efficiency=0.87,
    alltoall_latency_s=24.0 * us,
    source=f"least-squares log-error fit to the 20 H800 rows of {DEEPEP_SOURCE}",
)

DEEPEP_ASCEND_SOURCE = "sgl-project/sgl-kernel-npu README (DeepEP-Ascend normal and low-latency tables, A3 SuperPoD, pure HCCS)"
# Rounded output of fit_deepep_ascend() (rerun in tests/test_collectives.py): the UB link at its catalog
# rate (no derate measured) never binds in these tables; the vector cores' handling does. Normal-mode
# times grow with the peers far faster than their dedup volume (dispatch EP8 -> EP128: x2.6 in time,
# x1.5 in copies): the per-peer terms. Scale-out is not in the tables: H800's NIC efficiency is kept.
DEEPEP_ASCEND_FIT = CollectiveFit(
    scaleup_efficiency=1.0,
    scaleout_efficiency=DEEPEP_FIT.scaleout_efficiency,
    alltoall_latency_s=0.0,
    per_token_s=0.33 * us,
    per_copy_s=0.095 * us,
    normal_per_peer_s=12.9 * us,
    notify_per_peer_s=12.8 * us,
    source=f"least-squares log-error fit to the 16 timed rows of {DEEPEP_ASCEND_SOURCE}, per rank (die)",
)


def collective_fit(device: Device) -> CollectiveFit:
    """The fit measured on the device's own family: DeepEP-Ascend for Huawei NPUs, DeepEP on H800 otherwise."""
    return DEEPEP_ASCEND_FIT if device.vendor == "huawei" else DEEPEP_FIT


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


def link_classes(device: Device, fit: CollectiveFit | None = None) -> dict[str, LinkClass]:
    """'scaleup' and 'scaleout' links of one device, derated; a class whose bandwidth is unpublished is absent."""
    fit = fit or collective_fit(device)
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


def _miss_probability(held: np.ndarray, draws: np.ndarray | float, pool: np.ndarray | float) -> np.ndarray:
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
    domain_hit = 1.0 - _miss_probability(num_experts * share, top_k, num_experts)
    if max_domains_per_token is None or max_domains_per_token >= len(share):
        return 1.0 - _miss_probability(num_experts * p, top_k, num_experts), domain_hit
    domain_hit = np.minimum(domain_hit, max_domains_per_token * share)
    draws = np.divide(top_k * share, domain_hit, out=np.zeros_like(share), where=domain_hit > 0)
    inside = 1.0 - _miss_probability(num_experts * p, draws[domains], num_experts * share[domains])
    return domain_hit[domains] * inside, domain_hit


# ---------------------------------------------------------------------------------------------
# All-to-all (dispatch / combine)


def _alltoall_bytes(p: np.ndarray, domains: np.ndarray, tokens_per_device: float, top_k: int, num_experts: int,
                    token_bytes: float, max_domains_per_token: int | None, mode: str) -> dict[str, float]:
    """Bytes each path class carries on its busiest device (max of what a device sends and receives).

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
        device_hit, domain_hit = destination_hits(p, domains, top_k, num_experts, max_domains_per_token)
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
    return tuple(_alltoall_bytes(p, domains, tokens_per_device, top_k, num_experts, token_bytes, max_domains_per_token, mode).items())


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


def _rank_bytes(cluster: Cluster, ep_devices: int, tokens_per_device: float, top_k: int, num_experts: int, token_bytes: float,
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
    return _alltoall_bytes(np.repeat(p / p.sum() / r, r), domains, tokens_per_device / r, top_k, num_experts, token_bytes,
                           max_domains_per_token, mode)


def _rank_time(name: str, rank_bytes: dict[str, float], device: Device, fit: CollectiveFit, ranks: int,
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
                   max_domains_per_token: int | None, mode: str, name: str, fit: CollectiveFit | None,
                   notify: bool) -> CommCost:
    """The busiest rank's time over its share of the device's links; bytes reported per device (x ranks)."""
    if mode not in MODES:
        raise InputError("mode", f"unknown all-to-all mode '{mode}'", f"use one of {', '.join(MODES)}")
    if not 1 <= top_k <= num_experts:
        raise InputError("top_k", f"{top_k} is not in 1..num_experts ({num_experts})", "check the model config")
    device, r = cluster.device, cluster.device.ranks_per_device
    fit = fit or collective_fit(device)
    token_bytes = hidden * bytes_per_element + scale_bytes_per_token
    rank_bytes = _rank_bytes(cluster, ep_devices, tokens_per_device, top_k, num_experts, token_bytes, dest_probability,
                             max_domains_per_token, mode)
    cost = _rank_time(name, rank_bytes, device, fit, ep_devices * r, tokens_per_device / r, token_bytes, mode, notify,
                      f"alpha-beta, DeepEP {mode} algorithm; {fit.source}")
    return replace(cost, bytes_by_class={c: b * r for c, b in rank_bytes.items()})


def dispatch_cost(cluster: Cluster, ep_devices: int, tokens_per_device: float, hidden: int, top_k: int, num_experts: int,
                  bytes_per_element: float = 1.0, scale_bytes_per_token: float = 0.0,
                  dest_probability: np.ndarray | None = None, max_domains_per_token: int | None = None,
                  mode: str = "normal", name: str = "dispatch", fit: CollectiveFit | None = None) -> CommCost:
    """MoE dispatch over an EP group of `ep_devices` laid out contiguously (module docstring: the model).

    bytes on the wire per token = hidden x bytes_per_element + scale_bytes_per_token (fp8 with 1x128
    fp32 scales: 1.0 and hidden / 128 x 4). dest_probability: [ep_devices] share of routed (token,
    expert) pairs on each device (a placement + routing stats); None = uniform. The time is the busiest
    device's, so skew shows up as a hot receiver. max_domains_per_token (DeepSeek-V3: 4) sets the
    normal mode's dedup; low-latency bytes go per pair and do not depend on it. Normal mode first
    tells every peer how many tokens to expect (the fit's per-peer term, zero on H800).
    """
    return _alltoall_cost(cluster, ep_devices, tokens_per_device, hidden, top_k, num_experts, bytes_per_element,
                          scale_bytes_per_token, dest_probability, max_domains_per_token, mode, name, fit, notify=True)


def combine_cost(cluster: Cluster, ep_devices: int, tokens_per_device: float, hidden: int, top_k: int, num_experts: int,
                 bytes_per_element: float = 2.0, scale_bytes_per_token: float = 0.0,
                 dest_probability: np.ndarray | None = None, max_domains_per_token: int | None = None,
                 mode: str = "normal", name: str = "combine", fit: CollectiveFit | None = None) -> CommCost:
    """MoE combine: the reverse of dispatch (same paths and dedup, the layout dispatch set up), bf16 by default."""
    return _alltoall_cost(cluster, ep_devices, tokens_per_device, hidden, top_k, num_experts, bytes_per_element,
                          scale_bytes_per_token, dest_probability, max_domains_per_token, mode, name, fit, notify=False)


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


def allreduce_cost(cluster: Cluster, group_devices: int, bytes_per_device: float, name: str = "allreduce",
                   fit: CollectiveFit | None = None) -> CommCost:
    """Ring all-reduce of a `bytes_per_device` buffer: 2(n-1) steps, 2(n-1)/n x bytes sent per device."""
    n = group_devices
    return _ring_cost(cluster, n, 2 * (n - 1), 2.0 * (n - 1) / n * bytes_per_device, name, fit)


def allgather_cost(cluster: Cluster, group_devices: int, bytes_per_device: float, name: str = "allgather",
                   fit: CollectiveFit | None = None) -> CommCost:
    """Ring all-gather of one `bytes_per_device` shard per device: n-1 steps, (n-1) x shard sent per device."""
    n = group_devices
    return _ring_cost(cluster, n, n - 1, (n - 1) * float(bytes_per_device), name, fit)


# ---------------------------------------------------------------------------------------------
# Published DeepEP tables: reproduction and fit


@dataclass(frozen=True)
class _Bench:
    """The settings behind one published table (from its test script) and how it counts bytes."""

    unit: str
    tokens: int
    hidden: int
    top_k: int
    num_experts: int
    group_limit: int | None  # DeepSeek-V3 top-4 node-limited groups: min(domains, 4)
    mode: str
    dispatch_token_bytes: float  # what travels per token
    combine_token_bytes: float
    counting: str  # how the script turns bytes into its GB/s; see _counted_bytes
    source: str


_FP8, _BF16, _INT8 = (DTYPES[d].bytes_per_element for d in ("fp8", "bf16", "int8"))
_FP32_SCALE_BYTES = DTYPES["fp32"].bytes_per_element
_H = 7168  # DeepSeek-V3 hidden size, all four tables
_LL_HEADER_BYTES = 16  # per-message token metadata that DeepEP's low-latency test counts with each fp8 token

_BENCHES: Mapping[str, _Bench] = {
    "deepep_normal": _Bench(
        "hgx-h800", 4096, _H, 8, 256, 4, "normal",
        _H * _FP8 + _H / 128 * _FP32_SCALE_BYTES, _H * _BF16, "deepep_normal",
        "DeepEP tests/test_internode.py (num_experts 256, num_topk_groups min(nodes, 4)); GB/s = NVL receive bytes "
        "(intranode) or RDMA tokens x distinct nodes incl. its own (internode), fp8 counted with 1x128 fp32 scales"),
    "deepep_low_latency": _Bench(
        "hgx-h800", 128, _H, 8, 256, None, "low_latency",
        _H * _FP8 + _H / 128 * _FP32_SCALE_BYTES + _LL_HEADER_BYTES, _H * _BF16, "pairs",
        "DeepEP tests/test_low_latency.py: GB/s = (token, expert) pairs x (hidden + hidden/128 x 4 + 16) or hidden x 2, "
        "over the kernel time"),
    "deepep_ascend_normal": _Bench(
        "cloudmatrix384", 4096, _H, 8, 256, None, "normal",
        _H * _INT8 + _FP32_SCALE_BYTES, _H * _BF16, "received_pairs_bf16",
        "sgl-kernel-npu tests/python/deepep/test_intranode.py: GB/s = received (token, expert) rows x hidden x 2 "
        "(bf16 even for int8 dispatch) over the kernel time"),
    "deepep_ascend_low_latency": _Bench(
        "cloudmatrix384", 128, _H, 8, 256, None, "low_latency",
        _H * _INT8 + _H / 128 * _FP32_SCALE_BYTES + _LL_HEADER_BYTES, _H * _BF16, "pairs",
        "sgl-kernel-npu tests/python/deepep/test_low_latency.py: DeepEP's LL counting"),
}


def _domain_limit(bench: _Bench, domains: np.ndarray) -> int | None:
    return None if bench.group_limit is None else min(int(domains[-1]) + 1, bench.group_limit)


def _counted_bytes(bench: _Bench, cluster: Cluster, ep: int, token_bytes: float) -> float:
    """The bytes a benchmark script divides by its kernel time (uniform routing, per device)."""
    if bench.counting == "pairs":
        return bench.tokens * bench.top_k * token_bytes
    if bench.counting == "received_pairs_bf16":
        return bench.tokens * bench.top_k * bench.hidden * _BF16
    domains = ep_group_domains(cluster, ep)
    device_hit, domain_hit = destination_hits(np.full(ep, 1.0 / ep), domains, bench.top_k, bench.num_experts,
                                              _domain_limit(bench, domains))
    if len(domain_hit) == 1:  # intranode: every token a device receives over NVLink, its own included
        return bench.tokens * ep * device_hit[0] * token_bytes
    return bench.tokens * domain_hit.sum() * token_bytes  # internode: RDMA sends, its own node included


@dataclass(frozen=True)
class _Case:
    table: str
    ep: int  # ranks, as the table counts them
    kind: str  # dispatch or combine
    counted_bytes: float
    bytes_by_class: dict[str, float]  # on the busiest rank
    token_bytes: float
    cluster: Cluster
    source: str
    published_bottleneck: str  # the table's own label, where it has one


@lru_cache(maxsize=None)
def _published_tables() -> dict:
    with open(CATALOG_DIR / "published" / "kernels.yaml", encoding="utf-8") as f:
        return yaml.safe_load(f)


def _case(table: str, ep: int, kind: str, published_bottleneck: str) -> _Case:
    from hwmodels.catalog import load_unit  # lazy: the pure model never needs the catalog reader, only the report

    bench = _BENCHES[table]
    unit = load_unit(bench.unit)
    r = unit.device.ranks_per_device
    devices = ep // r  # a table's EP counts ranks: on A3, dies, two per 910C
    cluster = make_cluster(unit, devices=max(devices, unit.devices_per_node))
    token_bytes = bench.dispatch_token_bytes if kind == "dispatch" else bench.combine_token_bytes
    limit = _domain_limit(bench, ep_group_domains(cluster, devices))
    bytes_by_class = _rank_bytes(cluster, devices, bench.tokens * r, bench.top_k, bench.num_experts, token_bytes, None,
                                 limit, bench.mode)
    return _Case(table, ep, kind, _counted_bytes(bench, cluster, ep, token_bytes), bytes_by_class, token_bytes, cluster,
                 bench.source, published_bottleneck)


def _published_cases(tables: tuple[str, ...]) -> list[tuple[_Case, str, float, str]]:
    """(case, metric, published value, unit) per published number: 'gb_per_s' or 'latency_us' metrics."""
    raw = _published_tables()
    out = []
    for table in tables:
        columns = raw[table]["columns"]
        for row in raw[table]["rows"]:
            values = dict(zip(columns, row))
            for column, value in values.items():
                if column in ("ep", "bottleneck"):
                    continue
                kind = column.split("_")[0]
                case = _case(table, values["ep"], kind, values.get("bottleneck", ""))
                out.append((case, column, float(value), "us" if "latency" in column else "GB/s"))
    return out


def _predict(case: _Case, metric: str, fit: CollectiveFit | None = None) -> tuple[CommCost, float]:
    """The model's cost of one benchmark case and the published metric as its script would print it."""
    device = case.cluster.device
    bench = _BENCHES[case.table]
    cost = _rank_time(case.kind, case.bytes_by_class, device, fit or collective_fit(device), case.ep, bench.tokens,
                      case.token_bytes, bench.mode, case.kind == "dispatch", case.source)
    return cost, (cost.time_s / us if "latency" in metric else case.counted_bytes / cost.time_s / GB)


def _published_times_us(tables: tuple[str, ...]) -> list[tuple[_Case, float]]:
    """Each timed row once: its latency, or counted bytes / published GB/s (normal tables); the
    low-latency GB/s columns restate the latencies and are left out."""
    return [(c, v if "latency" in m else c.counted_bytes / (v * GB) / us)
            for c, m, v, _ in _published_cases(tables) if "latency" in m or _BENCHES[c.table].mode == "normal"]


_H800_TABLES = ("deepep_normal", "deepep_low_latency")
_ASCEND_TABLES = ("deepep_ascend_normal", "deepep_ascend_low_latency")
_ALL_TABLES = _H800_TABLES + _ASCEND_TABLES


def deepep_report(fit: CollectiveFit | None = None) -> list[dict]:
    """Per published DeepEP (and DeepEP-Ascend) number: table, ep, metric, published, predicted, error.

    error = predicted / published - 1. GB/s are predicted the way each benchmark script counts them
    (its bytes over the predicted kernel time), not as link utilisation. Each table is predicted with
    its device family's fit unless `fit` is given.
    """
    rows = []
    for case, metric, published, unit in _published_cases(_ALL_TABLES):
        cost, predicted = _predict(case, metric, fit)
        rows.append({"table": case.table, "ep": case.ep, "metric": metric, "unit": unit, "published": published,
                     "predicted": predicted, "error": predicted / published - 1.0, "bottleneck": cost.bottleneck,
                     "published_bottleneck": case.published_bottleneck, "source": _published_tables()[case.table]["source"]})
    return rows


def fit_deepep() -> CollectiveFit:
    """Refit DEEPEP_FIT: minimise sum of log(predicted / published time)^2 over the H800 rows.

    Each timed row once (_published_times_us). Grid search:
    efficiencies 0.50..1.20 by 0.01, overhead 0..60 us by 0.5 us.
    """
    cases = _published_times_us(_H800_TABLES)
    device = cases[0][0].cluster.device
    nominal = link_classes(device, CollectiveFit(1.0, 1.0, 0.0, "nominal"))
    eta = np.round(np.arange(0.50, 1.2001, 0.01), 2)
    overhead_us = np.arange(0.0, 60.001, 0.5)
    su, so, oh = np.meshgrid(eta, eta, overhead_us, indexing="ij")
    loss = np.zeros(su.shape)
    for case, published_us in cases:
        b = case.bytes_by_class
        t = np.zeros(su.shape)
        for cls, eff in (("scaleup", su), ("scaleout", so)):
            if b[cls] > 0:
                t = np.maximum(t, nominal[cls].latency_s / us + b[cls] / (eff * nominal[cls].bytes_per_s) / us)
        loss += np.log((oh + t) / published_us) ** 2
    i, j, k = np.unravel_index(np.argmin(loss), loss.shape)
    return CollectiveFit(float(eta[i]), float(eta[j]), float(overhead_us[k]) * us, DEEPEP_FIT.source)


def fit_deepep_ascend(exclude: int | None = None) -> CollectiveFit:
    """Refit DEEPEP_ASCEND_FIT: minimise sum of log(predicted / published time)^2 over the 16 timed
    DeepEP-Ascend rows (Gauss-Newton from the linear least-squares start).

    The UB link keeps its catalog rate (efficiency 1, no measured derate) and no fixed overhead is
    fitted. In every row the copy handling outlasts the wire (tests check it), so each time is linear in
    the four handling terms: per token sent from, per token copy, per peer of a normal-mode kernel, per
    peer of a normal dispatch's notify. `exclude`: index of a timed row to leave out (leave-one-out).
    """
    x, t = [], []
    for i, (case, published_us) in enumerate(_published_times_us(_ASCEND_TABLES)):
        if i == exclude:
            continue
        bench = _BENCHES[case.table]
        normal = bench.mode == "normal"
        x.append([bench.tokens, sum(case.bytes_by_class.values()) / case.token_bytes, case.ep if normal else 0.0,
                  case.ep if normal and case.kind == "dispatch" else 0.0])
        t.append(published_us)
    x, t = np.array(x), np.array(t)
    theta = np.linalg.lstsq(x / t[:, None], np.ones(len(t)), rcond=None)[0]
    for _ in range(30):
        predicted = x @ theta
        theta = theta + np.linalg.lstsq(x / predicted[:, None], -np.log(predicted / t), rcond=None)[0]
    per_token, per_copy, per_peer, notify = theta * us
    return CollectiveFit(1.0, DEEPEP_FIT.scaleout_efficiency, 0.0, DEEPEP_ASCEND_FIT.source, per_token_s=per_token,
                         per_copy_s=per_copy, normal_per_peer_s=per_peer, notify_per_peer_s=notify)
