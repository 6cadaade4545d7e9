"""Devices and clusters as frozen data. Figures are SI floats; each keeps its provenance."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Mapping

from hwmodels.errors import InputError


@dataclass(frozen=True)
class Figure:
    """Where one number came from: a catalog source key or text, and whether it is a third-party summary."""

    source: str
    unverified: bool = False
    note: str = ""


@dataclass(frozen=True)
class Device:
    name: str
    vendor: str
    display_name: str
    peak_flops_per_s: Mapping[str, float]  # dense peaks by dtype peak class: bf16, fp8, fp4, int8
    hbm_bytes: float
    hbm_bytes_per_s: float
    scaleup_bytes_per_s: float | None  # per direction, per device; None: not published
    scaleout_bytes_per_s: float | None
    power_w: float | None
    # ranks the software runs per device: 2 on a 910C package (one per die), whose collectives run per die
    ranks_per_device: int = 1
    num_sms: int | None = None  # streaming multiprocessors (GEMM wave quantisation); None: not in the catalog
    attainable: Mapping[str, float] = field(default_factory=dict)  # measured derates, e.g. 'scaleup_bytes_per_s'
    provenance: Mapping[str, Figure] = field(default_factory=dict)

    def __hash__(self) -> int:
        return self._hash

    @cached_property
    def _hash(self) -> int:
        # the figures that set a cost: devices key the operator-cost caches of the step model
        return hash((self.name, self.hbm_bytes, self.hbm_bytes_per_s, self.scaleup_bytes_per_s, self.scaleout_bytes_per_s, self.ranks_per_device,
                     self.num_sms,
                     tuple(sorted(self.peak_flops_per_s.items())), tuple(sorted(self.attainable.items()))))

    def unverified_fields(self) -> tuple[str, ...]:
        return tuple(k for k, f in self.provenance.items() if f.unverified)


@dataclass(frozen=True)
class ClusterUnit:
    """A node, rack or supernode that is repeated to build a cluster."""

    name: str
    display_name: str
    device: Device
    devices_per_node: int
    nodes: int
    scaleup_domain_devices: int
    scaleup_fabric: str
    scaleout_fabric: str
    source: str

    @property
    def devices(self) -> int:
        return self.devices_per_node * self.nodes


@dataclass(frozen=True)
class Cluster:
    unit: ClusterUnit
    num_devices: int

    @property
    def device(self) -> Device:
        return self.unit.device

    @property
    def num_nodes(self) -> int:
        return self.num_devices // self.unit.devices_per_node

    @property
    def scaleup_domain_devices(self) -> int:
        """Devices one scale-up domain holds in this cluster (a partial rack is a smaller domain)."""
        return min(self.unit.scaleup_domain_devices, self.num_devices)

    @property
    def num_scaleup_domains(self) -> int:
        return math.ceil(self.num_devices / self.unit.scaleup_domain_devices)

    @property
    def hbm_bytes_total(self) -> float:
        return self.num_devices * self.device.hbm_bytes

    def describe(self) -> str:
        return f"{self.num_devices} x {self.device.name} ({self.num_nodes} x {self.unit.name} node{'s' if self.num_nodes > 1 else ''})" \
            if self.unit.nodes == 1 else f"{self.num_devices} x {self.device.name} in {self.num_scaleup_domains} x {self.unit.name}"


def make_cluster(unit: ClusterUnit, units: int | None = None, devices: int | None = None, field_prefix: str = "cluster") -> Cluster:
    """A cluster of whole units, or of a device count that is a whole number of nodes (trays)."""
    if (units is None) == (devices is None):
        raise InputError(field_prefix, "give exactly one of units or devices", f"e.g. units: 2 for {2 * unit.devices} x {unit.device.name}")
    if units is not None:
        if units <= 0:
            raise InputError(f"{field_prefix}.units", f"must be positive, got {units}", "use 1 or more")
        return Cluster(unit, units * unit.devices)
    if devices <= 0:
        raise InputError(f"{field_prefix}.devices", f"must be positive, got {devices}", "use 1 or more")
    if devices % unit.devices_per_node:
        raise InputError(
            f"{field_prefix}.devices",
            f"{devices} is not a whole number of {unit.name} nodes of {unit.devices_per_node}",
            f"use a multiple of {unit.devices_per_node}",
        )
    return Cluster(unit, devices)


def instance_cluster(unit: ClusterUnit, devices: int) -> Cluster:
    """The devices one instance runs on: whole nodes, or part of one node (one B200 of eight, a 2-GPU half of a
    GB200 tray), which keeps the node's links with fewer devices on them."""
    if 0 < devices < unit.devices_per_node:
        unit = replace(unit, devices_per_node=devices, scaleup_domain_devices=min(unit.scaleup_domain_devices, devices))
    return make_cluster(unit, devices=devices)
