"""Which scale-up domain each device of a cluster sits in.

Domains are contiguous runs of `unit.scaleup_domain_devices` devices (an HGX node's 8, an NVL72 rack's 72, a
CloudMatrix384 supernode's 384), so a group of devices laid out from device 0 that fits inside one domain never
touches a NIC: the all-to-all and ring collectives (hwmodels.collectives) price each device's traffic by whether
its peers share its domain.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from hwmodels.errors import InputError
from hwmodels.hardware import Cluster


@lru_cache(maxsize=256)
def _domain_ids(devices: int, domain_devices: int) -> np.ndarray:
    ids = np.arange(devices) // domain_devices
    ids.flags.writeable = False
    return ids


def domain_ids(cluster: Cluster, devices: int | None = None) -> np.ndarray:
    """Scale-up domain of each of the first `devices` devices (all by default), laid out contiguously.

    domain_of[i] = i // scaleup_domain_devices   # [devices], read-only, cached
    """
    n = cluster.num_devices if devices is None else devices
    if not 1 <= n <= cluster.num_devices:
        raise InputError("devices", f"{n} devices do not fit a cluster of {cluster.num_devices}",
                         f"use 1 to {cluster.num_devices}")
    return _domain_ids(n, cluster.unit.scaleup_domain_devices)
