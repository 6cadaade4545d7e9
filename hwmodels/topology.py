"""The cluster as a graph of devices, scale-up switches, NICs and the scale-out fabric.

Graph (networkx, undirected, built once per cluster shape and frozen):
  ("device", i)            one accelerator; attributes domain, node
  ("scaleup", d, p)        plane p of the scale-up switch of domain d: an NVSwitch chip of an HGX
                           board, an NVLink switch tray of an NVL72 rack, a UB plane of CloudMatrix384
  ("nic", i)               device i's scale-out NIC
  ("fabric",)              the scale-out network, collapsed to one non-blocking switch
Every edge carries `bytes_per_s` (per direction, the catalog's nominal figure: a device's scale-up
bandwidth is split evenly over its domain's planes) and `link_class` ("scaleup" or "scaleout").

A device pair's path class is "device" (the same device), "scaleup" (same scale-up domain: the
shortest path is device -> plane -> device) or "scaleout" (device -> NIC -> fabric -> NIC -> device).
Domains are contiguous runs of `unit.scaleup_domain_devices` devices, so a group of devices that fits
inside one domain never touches a NIC. The graph is for inspection and tests; hot paths use the
vectorised `domain_ids` / `path_class_matrix`, which the tests check against the graph.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Mapping

import networkx as nx
import numpy as np

from hwmodels.errors import InputError
from hwmodels.hardware import Cluster

PATH_CLASSES = ("device", "scaleup", "scaleout")  # codes 0, 1, 2 of path_class_matrix


@dataclass(frozen=True)
class ScaleupFabric:
    """How a unit's scale-up domain is switched: `planes` switch elements, each reaching every device."""

    switch: str
    planes: int
    source: str


# Keyed by cluster unit name (catalogs/clusters.yaml); explicit, never guessed from the fabric text.
_HGX_HOPPER = ScaleupFabric("NVSwitch", 4, "NVIDIA H100 Tensor Core GPU Architecture whitepaper: HGX H100 8-GPU, 4 NVSwitch chips")
_HGX_BLACKWELL = ScaleupFabric("NVSwitch", 2, "NVIDIA DGX B200 datasheet: 2 NVLink 5 switch chips per 8-GPU board")
_NVL72 = ScaleupFabric("NVLink switch tray", 9, "NVIDIA GB200 NVL72: 9 NVLink switch trays join the rack's 72 GPUs")
SCALEUP_FABRICS: Mapping[str, ScaleupFabric] = {
    "hgx-h100": _HGX_HOPPER,
    "hgx-h200": _HGX_HOPPER,
    "hgx-h800": _HGX_HOPPER,
    "hgx-b200": _HGX_BLACKWELL,
    "hgx-b300": _HGX_BLACKWELL,
    "gb200-nvl72": _NVL72,
    "gb300-nvl72": _NVL72,
    "cloudmatrix384": ScaleupFabric(
        "Unified Bus plane", 7, "arXiv 2506.12708: 7 L1 UB switch chips per node, each the entry to one of 7 L2 sub-planes"),
    "atlas-800-a2": ScaleupFabric(
        "HCCS", 1, "sglang_ascend: HCCS within the 8-NPU server (no switch-level figure: one logical plane)"),
}
GENERIC_SCALEUP = ScaleupFabric("scale-up switch", 1, "unit not in SCALEUP_FABRICS: one logical non-blocking switch per domain")


def scaleup_fabric(cluster: Cluster) -> ScaleupFabric:
    return SCALEUP_FABRICS.get(cluster.unit.name, GENERIC_SCALEUP)


def _check_devices(cluster: Cluster, devices: int | None) -> int:
    n = cluster.num_devices if devices is None else devices
    if not 1 <= n <= cluster.num_devices:
        raise InputError("devices", f"{n} devices do not fit a cluster of {cluster.num_devices}",
                         f"use 1 to {cluster.num_devices}")
    return n


@lru_cache(maxsize=256)
def _domain_ids(devices: int, domain_devices: int) -> np.ndarray:
    ids = np.arange(devices) // domain_devices
    ids.flags.writeable = False
    return ids


def domain_ids(cluster: Cluster, devices: int | None = None) -> np.ndarray:
    """Scale-up domain of each of the first `devices` devices (all by default), laid out contiguously.

    domain_of[i] = i // scaleup_domain_devices   # [devices], read-only, cached
    """
    return _domain_ids(_check_devices(cluster, devices), cluster.unit.scaleup_domain_devices)


def node_ids(cluster: Cluster, devices: int | None = None) -> np.ndarray:
    """Server (tray) of each device: i // devices_per_node. A node never spans two domains."""
    return _domain_ids(_check_devices(cluster, devices), cluster.unit.devices_per_node)


def path_class_matrix(cluster: Cluster, devices: int | None = None) -> np.ndarray:
    """[devices, devices] int8 codes into PATH_CLASSES: 0 same device, 1 scale-up, 2 scale-out."""
    dom = domain_ids(cluster, devices)
    codes = np.where(dom[:, None] == dom[None, :], 1, 2).astype(np.int8)
    np.fill_diagonal(codes, 0)
    return codes


def fits_scaleup(cluster: Cluster, devices: int) -> bool:
    """Whether a contiguous group of `devices` stays inside one scale-up domain (no NIC on any path)."""
    return _check_devices(cluster, devices) <= cluster.unit.scaleup_domain_devices


def _bandwidth(value: float | None) -> float:
    return math.nan if value is None else float(value)


@lru_cache(maxsize=32)
def _graph(num_devices: int, devices_per_node: int, domain_devices: int, planes: int, switch: str,
           scaleup_bytes_per_s: float, scaleout_bytes_per_s: float) -> nx.Graph:
    g = nx.Graph()
    g.add_node(("fabric",), kind="scaleout_switch")
    num_domains = math.ceil(num_devices / domain_devices)
    for d in range(num_domains):
        for p in range(planes):
            g.add_node(("scaleup", d, p), kind="scaleup_switch", switch=switch, domain=d)
    plane_bytes_per_s = scaleup_bytes_per_s / planes
    for i in range(num_devices):
        d = i // domain_devices
        g.add_node(("device", i), kind="device", domain=d, node=i // devices_per_node)
        g.add_node(("nic", i), kind="nic", device=i)
        for p in range(planes):
            g.add_edge(("device", i), ("scaleup", d, p), bytes_per_s=plane_bytes_per_s, link_class="scaleup")
        g.add_edge(("device", i), ("nic", i), bytes_per_s=scaleout_bytes_per_s, link_class="scaleout")
        g.add_edge(("nic", i), ("fabric",), bytes_per_s=scaleout_bytes_per_s, link_class="scaleout")
    return nx.freeze(g)


def cluster_graph(cluster: Cluster) -> nx.Graph:
    """The frozen (read-only) graph of `cluster`; cached per cluster shape."""
    fabric = scaleup_fabric(cluster)
    unit, device = cluster.unit, cluster.device
    return _graph(cluster.num_devices, unit.devices_per_node, unit.scaleup_domain_devices, fabric.planes, fabric.switch,
                  _bandwidth(device.scaleup_bytes_per_s), _bandwidth(device.scaleout_bytes_per_s))


def path_nodes(graph: nx.Graph, a: int, b: int) -> list[tuple]:
    """The shortest (fewest hops) path between devices a and b."""
    return nx.shortest_path(graph, ("device", a), ("device", b))


def path_class(graph: nx.Graph, a: int, b: int) -> str:
    """'device', 'scaleup' or 'scaleout', from the kinds of the nodes on the shortest path."""
    if a == b:
        return "device"
    kinds = {graph.nodes[n]["kind"] for n in path_nodes(graph, a, b)}
    return "scaleout" if "nic" in kinds else "scaleup"


def path_bytes_per_s(graph: nx.Graph, a: int, b: int) -> float:
    """Nominal bandwidth a -> b over the links of the pair's path class (max flow: the planes add up)."""
    cls = path_class(graph, a, b)
    if cls == "device":
        return math.inf
    links = nx.subgraph_view(graph, filter_edge=lambda u, v: graph.edges[u, v]["link_class"] == cls)
    return nx.maximum_flow_value(links, ("device", a), ("device", b), capacity="bytes_per_s")
