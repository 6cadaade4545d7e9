"""Does a model fit a cluster? Weights per device for each layout the planner prices (hwmodels.layouts), HBM left
for KV cache, and how many sequences of the workload's context length fit at once."""

from __future__ import annotations

from dataclasses import dataclass, replace

from hwmodels.arithmetic import weight_bytes
from hwmodels.deployment import Deployment
from hwmodels.hardware import Cluster, make_cluster
from hwmodels.layouts import layout_space
from hwmodels.memory import DeviceMemory, device_memory
from hwmodels.units import format_bytes


@dataclass(frozen=True)
class FitReport:
    deployment: Deployment
    model_weight_bytes: float
    layouts: tuple[DeviceMemory, ...]  # best first: most concurrent sequences, then least weight per device
    smallest_fitting_cluster: Cluster | None  # when nothing fits: the fewest devices of this unit that would

    @property
    def fits(self) -> bool:
        return bool(self.layouts) and self.layouts[0].fits

    @property
    def best(self) -> DeviceMemory | None:
        return self.layouts[0] if self.layouts else None

    def headline(self) -> str:
        d = self.deployment
        c = d.cluster
        need = f"{d.model_display_name} {d.precision.label()} needs {format_bytes(self.model_weight_bytes)} of weights"
        hold = f"{c.num_devices} x {c.device.name} hold {format_bytes(c.hbm_bytes_total)} ({format_bytes(c.device.hbm_bytes)} each)"
        if self.fits:
            b = self.best
            return (f"{need}; {hold}. Best layout {b.layout_name}: {format_bytes(b.weight_bytes)} of weights per device, "
                    f"{format_bytes(b.kv_capacity_bytes)} left for KV cache, {b.concurrent_sequences:,} concurrent "
                    f"sequences of {b.context_tokens:,} tokens")
        return f"{need}; {hold}"

    def __repr__(self, shown: int = 5) -> str:
        """The verdict, the best layouts (at most `shown`; all of them are in `layouts`), and the fix if it does not fit."""
        lines = [f"FitReport({'fits' if self.fits else 'does not fit'}: {self.headline()})"]
        for m in self.layouts[:shown]:
            room = (f"{format_bytes(m.kv_capacity_bytes)} KV room, {m.concurrent_sequences:,} sequences"
                    if m.fits else "weights do not fit")
            lines.append(f"  {m.layout_name}: {format_bytes(m.weight_bytes)} weights per device, {room}")
        if len(self.layouts) > shown:
            lines.append(f"  ... {len(self.layouts) - shown} more layouts (.layouts)")
        if not self.fits:
            lines.append(f"  fix: {self.fix()}")
        return "\n".join(lines)

    def fix(self) -> str:
        d = self.deployment
        options = []
        if self.smallest_fitting_cluster is not None:
            s = self.smallest_fitting_cluster
            options.append(f"use at least {s.num_devices} x {s.device.name} (cluster.devices: {s.num_devices})")
        if d.model.is_moe and d.precision.of("routed_experts").dtype.bytes_per_element > 0.5:
            options.append("or 4-bit experts (precision.routed_experts: int4 or nvfp4)")
        options.append("or a device with more HBM")
        return ", ".join(options)


def fit(deployment: Deployment) -> FitReport:
    layouts = _rank(deployment, deployment.cluster)
    smallest = None
    if not (layouts and layouts[0].fits):
        smallest = _smallest_fitting(deployment)
    return FitReport(deployment, weight_bytes(deployment.model, deployment.precision), layouts, smallest)


def _rank(d: Deployment, cluster: Cluster) -> tuple[DeviceMemory, ...]:
    """The memory of each layout the planner prices on `cluster` (overlap changes no memory: one of each)."""
    rows = [
        device_memory(d.model, d.precision, cluster, layout, d.workload.context_tokens,
                      d.serving.hbm_utilization, d.serving.tokens_per_step, sliding_kv_share=d.serving.sliding_kv_share)
        for layout in layout_space(d.model, cluster, d.serving.engine) if not layout.two_batch_overlap
    ]
    return tuple(sorted(rows, key=lambda m: (-m.concurrent_sequences, -m.kv_capacity_bytes)))


def _smallest_fitting(d: Deployment, max_nodes: int = 512) -> Cluster | None:
    unit = d.cluster.unit
    needed = weight_bytes(d.model, d.precision)
    for nodes in range(d.cluster.num_nodes + 1, max_nodes + 1):
        cluster = make_cluster(unit, devices=nodes * unit.devices_per_node)
        if cluster.hbm_bytes_total * d.serving.hbm_utilization < needed:
            continue
        ranked = _rank(replace(d, cluster=cluster), cluster)
        if ranked and ranked[0].fits:
            return cluster
    return None
