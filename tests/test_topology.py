"""Scale-up domains of 8, 72 and 384 devices laid out contiguously, and groups that do not fit the cluster."""

import numpy as np
import pytest

from hwmodels.catalog import load_unit
from hwmodels.errors import InputError
from hwmodels.hardware import make_cluster
from hwmodels.topology import domain_ids


@pytest.mark.parametrize("unit, devices, domain", [
    ("hgx-h100", 16, 8),  # two HGX nodes
    ("gb200-nvl72", 48, 48),  # a partial NVL72 rack: one domain
    ("gb200-nvl72", 144, 72),  # two racks
    ("cloudmatrix384", 384, 384),  # the whole supernode
])
def test_domains_are_contiguous_runs_of_the_unit(unit, devices, domain):
    cluster = make_cluster(load_unit(unit), devices=devices)
    ids = domain_ids(cluster)
    assert (ids[:domain] == 0).all() and (ids == np.arange(devices) // domain).all()
    assert ids.max() == devices // domain - 1
    assert not ids.flags.writeable  # shared between callers: read-only


def test_a_group_beyond_the_cluster_is_refused():
    cluster = make_cluster(load_unit("hgx-h100"), devices=8)
    assert domain_ids(cluster, 4).tolist() == [0] * 4
    with pytest.raises(InputError, match="do not fit a cluster of 8"):
        domain_ids(cluster, 16)
