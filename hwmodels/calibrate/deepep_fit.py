"""The all-to-all model (hwmodels.collectives) against the published DeepEP tables: reproduction and fits.

Each published table is rebuilt from the settings of the test script that produced it (`_BENCHES`): the
cluster unit, tokens, hidden size, top-k, the bytes each token carries and how the script turns bytes into
its GB/s. `deepep_report` predicts every published number with the stored fit of the table's device family;
`fit_deepep` (H800: two link efficiencies and a kernel overhead, by grid search) and `fit_deepep_ascend`
(A3 SuperPoD: the handling terms, by Gauss-Newton) refit them. The fits are stored, rounded, in
catalogs/fits/deepep-h800.yaml and deepep-ascend.yaml; tests/test_deepep_fit.py checks they are what these
functions fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from hwmodels import catalog
from hwmodels.calibrate.operator_costs import fitted_costs
from hwmodels.collectives import (CollectiveFit, CommCost, destination_hits, ep_group_domains, link_classes, rank_bytes,
                                  rank_time)
from hwmodels.efficiency import SCALE_BLOCK
from hwmodels.hardware import Cluster, make_cluster
from hwmodels.precision import DTYPES
from hwmodels.units import GB, us

DEEPEP_SOURCE = "deepseek-ai/DeepEP docs/legacy.md (H800 normal and low-latency tables)"
DEEPEP_ASCEND_SOURCE = "sgl-project/sgl-kernel-npu README (DeepEP-Ascend normal and low-latency tables, A3 SuperPoD, pure HCCS)"
H800_FIT_SOURCE = f"least-squares log-error fit to the 20 H800 rows of {DEEPEP_SOURCE}"
ASCEND_FIT_SOURCE = f"least-squares log-error fit to the 16 timed rows of {DEEPEP_ASCEND_SOURCE}, per rank (die)"


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
        _H * _FP8 + _H / SCALE_BLOCK * _FP32_SCALE_BYTES, _H * _BF16, "deepep_normal",
        "DeepEP tests/test_internode.py (num_experts 256, num_topk_groups min(nodes, 4)); GB/s = NVL receive bytes "
        "(intranode) or RDMA tokens x distinct nodes incl. its own (internode), fp8 counted with 1x128 fp32 scales"),
    "deepep_low_latency": _Bench(
        "hgx-h800", 128, _H, 8, 256, None, "low_latency",
        _H * _FP8 + _H / SCALE_BLOCK * _FP32_SCALE_BYTES + _LL_HEADER_BYTES, _H * _BF16, "pairs",
        "DeepEP tests/test_low_latency.py: GB/s = (token, expert) pairs x (hidden + hidden/128 x 4 + 16) or hidden x 2, "
        "over the kernel time"),
    "deepep_ascend_normal": _Bench(
        "cloudmatrix384", 4096, _H, 8, 256, None, "normal",
        _H * _INT8 + _FP32_SCALE_BYTES, _H * _BF16, "received_pairs_bf16",
        "sgl-kernel-npu tests/python/deepep/test_intranode.py: GB/s = received (token, expert) rows x hidden x 2 "
        "(bf16 even for int8 dispatch) over the kernel time"),
    "deepep_ascend_low_latency": _Bench(
        "cloudmatrix384", 128, _H, 8, 256, None, "low_latency",
        _H * _INT8 + _H / SCALE_BLOCK * _FP32_SCALE_BYTES + _LL_HEADER_BYTES, _H * _BF16, "pairs",
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


def _case(table: str, ep: int, kind: str, published_bottleneck: str) -> _Case:
    bench = _BENCHES[table]
    unit = catalog.load_unit(bench.unit)
    r = unit.device.ranks_per_device
    devices = ep // r  # a table's EP counts ranks: on A3, dies, two per 910C
    cluster = make_cluster(unit, devices=max(devices, unit.devices_per_node))
    token_bytes = bench.dispatch_token_bytes if kind == "dispatch" else bench.combine_token_bytes
    limit = _domain_limit(bench, ep_group_domains(cluster, devices))
    bytes_by_class = rank_bytes(cluster, devices, bench.tokens * r, bench.top_k, bench.num_experts, token_bytes, None,
                                 limit, bench.mode)
    return _Case(table, ep, kind, _counted_bytes(bench, cluster, ep, token_bytes), bytes_by_class, token_bytes, cluster,
                 bench.source, published_bottleneck)


def _published_cases(tables: tuple[str, ...]) -> list[tuple[_Case, str, float, str]]:
    """(case, metric, published value, unit) per published number: 'gb_per_s' or 'latency_us' metrics."""
    raw = catalog.published_kernels()
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
    cost = rank_time(case.kind, case.bytes_by_class, device, fit or fitted_costs().collective_fit(device), case.ep, bench.tokens,
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
                     "published_bottleneck": case.published_bottleneck, "source": catalog.published_kernels()[case.table]["source"]})
    return rows


def fit_deepep() -> CollectiveFit:
    """Fit the H800 all-to-all (catalogs/fits/deepep-h800.yaml stores it rounded): minimise sum of log(predicted / published time)^2 over the H800 rows.

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
    return CollectiveFit(float(eta[i]), float(eta[j]), float(overhead_us[k]) * us, H800_FIT_SOURCE)


def fit_deepep_ascend(exclude: int | None = None) -> CollectiveFit:
    """Fit the DeepEP-Ascend handling terms (catalogs/fits/deepep-ascend.yaml stores them rounded): minimise sum of log(predicted / published time)^2 over the 16 timed
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
    h800 = fitted_costs().deepep
    return CollectiveFit(1.0, h800.scaleout_efficiency, 0.0, ASCEND_FIT_SOURCE, per_token_s=float(per_token),
                         per_copy_s=float(per_copy), normal_per_peer_s=float(per_peer), notify_per_peer_s=float(notify))
