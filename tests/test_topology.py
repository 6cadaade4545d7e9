"""The cluster graph: path classes, scale-up domains of 8, 72 and 384, and the vectorised shortcuts."""

import networkx as nx
import numpy as np
import pytest

from hwmodels.catalog import load_unit, unit_names
from hwmodels.errors import InputError
from hwmodels.hardware import make_cluster
from hwmodels.topology import (
    PATH_CLASSES,
    SCALEUP_FABRICS,
    cluster_graph,
    domain_ids,
    fits_scaleup,
    node_ids,
    path_bytes_per_s,
    path_class,
    path_class_matrix,
    path_nodes,
)


def _touches_nic(graph, a, b) -> bool:
    return any(graph.nodes[n]["kind"] in ("nic", "scaleout_switch") for n in path_nodes(graph, a, b))


@pytest.mark.parametrize(
    "unit, devices, group",
    [
        ("hgx-h100", 16, 8),  # one HGX node of two
        ("gb200-nvl72", 48, 48),  # a partial NVL72 rack
        ("gb200-nvl72", 72, 72),  # a full rack
        ("gb200-nvl72", 144, 72),  # one rack of two
        ("cloudmatrix384", 384, 384),  # the whole supernode
    ],
)
def test_a_group_inside_one_domain_never_touches_a_nic(unit, devices, group):
    cluster = make_cluster(load_unit(unit), devices=devices)
    graph = cluster_graph(cluster)
    assert fits_scaleup(cluster, group)
    # Every source for groups up to 72; for 384, 13 sources spread over the group, each to every device.
    sources = range(group) if group <= 72 else range(0, group, 32)
    for a in sources:
        for b in range(group):
            assert not _touches_nic(graph, a, b), (a, b)
            assert path_class(graph, a, b) == ("device" if a == b else "scaleup")
    assert (path_class_matrix(cluster, group) < 2).all()


@pytest.mark.parametrize("unit, devices", [("hgx-h800", 32), ("gb200-nvl72", 144), ("atlas-800-a2", 16)])
def test_matrix_agrees_with_graph_for_every_pair(unit, devices):
    cluster = make_cluster(load_unit(unit), devices=devices)
    graph = cluster_graph(cluster)
    step = max(1, devices // 24)
    matrix = path_class_matrix(cluster)
    for a in range(0, devices, step):
        for b in range(devices):
            assert PATH_CLASSES[matrix[a, b]] == path_class(graph, a, b), (a, b)


def test_crossing_domains_goes_through_both_nics():
    cluster = make_cluster(load_unit("hgx-h100"), units=2)
    graph = cluster_graph(cluster)
    assert path_nodes(graph, 0, 8) == [("device", 0), ("nic", 0), ("fabric",), ("nic", 8), ("device", 8)]
    assert path_class(graph, 0, 8) == "scaleout"
    assert not fits_scaleup(cluster, 9)


@pytest.mark.parametrize("unit", ["hgx-h100", "gb200-nvl72", "cloudmatrix384"])
def test_path_bandwidth_is_the_catalog_figure_of_the_path_class(unit):
    u = load_unit(unit)
    cluster = make_cluster(u, units=2)
    graph = cluster_graph(cluster)
    far = u.scaleup_domain_devices  # first device of the second domain
    assert path_bytes_per_s(graph, 0, 1) == pytest.approx(u.device.scaleup_bytes_per_s)  # planes add up
    assert path_bytes_per_s(graph, 0, far) == pytest.approx(u.device.scaleout_bytes_per_s)
    planes = SCALEUP_FABRICS[unit].planes
    assert graph.edges[("device", 0), ("scaleup", 0, 0)]["bytes_per_s"] == pytest.approx(u.device.scaleup_bytes_per_s / planes)


def test_graph_shape_and_link_attributes():
    cluster = make_cluster(load_unit("gb200-nvl72"), units=1)
    graph = cluster_graph(cluster)
    kinds = [graph.nodes[n]["kind"] for n in graph]
    assert kinds.count("device") == 72 and kinds.count("nic") == 72
    assert kinds.count("scaleup_switch") == 9  # NVLink switch trays
    assert {graph.edges[e]["link_class"] for e in graph.edges} == {"scaleup", "scaleout"}
    assert graph.nodes[("device", 5)]["node"] == 1  # 4 GPUs per compute tray
    with pytest.raises(nx.NetworkXError):
        graph.add_node("x")  # frozen: shared through the cache
    assert cluster_graph(make_cluster(load_unit("gb200-nvl72"), units=1)) is graph


def test_domain_and_node_ids_are_contiguous_and_read_only():
    cluster = make_cluster(load_unit("gb200-nvl72"), units=3)
    dom, node = domain_ids(cluster), node_ids(cluster)
    assert dom.tolist() == [i // 72 for i in range(216)]
    assert node.tolist() == [i // 4 for i in range(216)]
    for n in np.unique(node):  # a node (tray) never spans two domains
        assert len(np.unique(dom[node == n])) == 1
    assert not dom.flags.writeable
    assert domain_ids(cluster, 10).tolist() == [0] * 10


def test_every_catalog_unit_has_an_explicit_scaleup_fabric():
    assert set(unit_names()) <= set(SCALEUP_FABRICS)


def test_group_larger_than_cluster_is_an_input_error():
    cluster = make_cluster(load_unit("hgx-h100"), units=1)
    with pytest.raises(InputError, match="devices"):
        domain_ids(cluster, 9)
