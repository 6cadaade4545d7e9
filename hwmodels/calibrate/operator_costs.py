"""The one interface the step model asks for operator times (DESIGN.md section 4).

`OperatorCosts` holds the parameters of every operator model and prices operators with them: GEMMs and the
memory-bound kernels around them (the DeepGEMM fit, hwmodels.efficiency), MLA attention (FlashMLA's published
rates), tensor-parallel all-reduce and the MoE all-to-all (the DeepEP fit of the device's family,
hwmodels.collectives), and how much of each overlapped pair two-batch overlap hides. Every cost it returns
names its source: the fit or published figure, and how it was scaled to the device.

`fitted_costs()` builds it from the fits hwmodels.calibrate stored in catalogs/fits/ and the published kernel
rates in catalogs/published/kernels.yaml, once per process; a study of another source (a refit, a what-if
overlap efficiency) replaces fields with dataclasses.replace.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from hwmodels import catalog, collectives, efficiency
from hwmodels.collectives import CollectiveFit, CommCost
from hwmodels.efficiency import AttentionRates, GemmEfficiency
from hwmodels.hardware import Cluster, Device
from hwmodels.roofline import OpCost
from hwmodels.units import GB, TB, TFLOPS


@dataclass(frozen=True, eq=False)  # identity equality: it keys the step model's operator caches cheaply
class OperatorCosts:
    gemm_fit: GemmEfficiency  # GEMMs, and the HBM efficiency and launch overhead of memory-bound kernels
    attention: AttentionRates  # MLA decode (and, assumed, prefill) attention
    deepep: CollectiveFit  # all-to-all and ring collectives of NVIDIA (and unknown) devices
    deepep_ascend: CollectiveFit  # those of Huawei NPUs
    overlap_efficiency: float  # two-batch overlap hides this fraction of the shorter of each overlapped pair
    overlap_source: str

    def collective_fit(self, device: Device) -> CollectiveFit:
        """The fit measured on the device's own family: DeepEP-Ascend for Huawei NPUs, DeepEP on H800 otherwise."""
        return self.deepep_ascend if device.vendor == "huawei" else self.deepep

    def gemm(self, device: Device, m: int, n: int, k: int, dtype: str = "fp8", groups: int = 1, layout: str = "dense",
             weight_bytes_per_element: float | None = None, name: str = "gemm") -> OpCost:
        return efficiency.gemm_cost(device, m, n, k, self.gemm_fit, dtype, groups, layout,
                                    weight_bytes_per_element=weight_bytes_per_element, name=name)

    def elementwise(self, device: Device, bytes_moved: float, name: str = "elementwise") -> OpCost:
        return efficiency.elementwise_cost(device, bytes_moved, self.gemm_fit, name)

    def quantize(self, device: Device, rows: float, cols: int, in_bytes_per_element: float,
                 out_bytes_per_element: float) -> OpCost:
        return efficiency.quantize_activations_cost(device, rows, cols, in_bytes_per_element, out_bytes_per_element,
                                                    self.gemm_fit)

    def mla_decode(self, device: Device, batch: int, context_tokens: float, num_heads: int, kv_lora_rank: int,
                   qk_rope_head_dim: int, kv_bytes_per_element: float) -> OpCost:
        return efficiency.mla_decode_cost(device, batch, context_tokens, num_heads, self.attention,
                                          self.gemm_fit.launch_overhead_s, kv_lora_rank, qk_rope_head_dim,
                                          kv_bytes_per_element)

    def attention_prefill(self, device: Device, tokens: int, context_tokens: float, num_heads: int, qk_head_dim: int,
                          v_head_dim: int) -> OpCost:
        return efficiency.attention_prefill_cost(device, tokens, context_tokens, num_heads, qk_head_dim, v_head_dim,
                                                 self.attention, self.gemm_fit.launch_overhead_s)

    def allreduce(self, cluster: Cluster, group_devices: int, bytes_per_device: float) -> CommCost:
        return collectives.allreduce_cost(cluster, group_devices, bytes_per_device, fit=self.collective_fit(cluster.device))

    def dispatch(self, cluster: Cluster, ep_devices: int, tokens_per_device: float, hidden: int, top_k: int,
                 num_experts: int, bytes_per_element: float, scale_bytes_per_token: float,
                 dest_probability: np.ndarray | None, mode: str) -> CommCost:
        return collectives.dispatch_cost(cluster, ep_devices, tokens_per_device, hidden, top_k, num_experts,
                                         bytes_per_element, scale_bytes_per_token, dest_probability, mode=mode,
                                         fit=self.collective_fit(cluster.device))

    def combine(self, cluster: Cluster, ep_devices: int, tokens_per_device: float, hidden: int, top_k: int,
                num_experts: int, bytes_per_element: float, dest_probability: np.ndarray | None, mode: str) -> CommCost:
        return collectives.combine_cost(cluster, ep_devices, tokens_per_device, hidden, top_k, num_experts,
                                        bytes_per_element, dest_probability=dest_probability, mode=mode,
                                        fit=self.collective_fit(cluster.device))


@lru_cache(maxsize=1)
def fitted_costs() -> OperatorCosts:
    """The stored fits (catalogs/fits/) and published kernel rates, as the step model uses them."""
    overlap = catalog.stored_fit("overlap")
    return OperatorCosts(stored_gemm_fit(), flashmla_rates(), stored_collective_fit("deepep-h800"),
                         stored_collective_fit("deepep-ascend"), float(overlap["parameters"]["overlap_efficiency"]),
                         overlap["source"])


def stored_gemm_fit(name: str = "deepgemm-h800") -> GemmEfficiency:
    record = catalog.stored_fit(name)
    return GemmEfficiency(**{k: float(v) for k, v in record["parameters"].items()}, hardware=record["hardware"],
                          source=record["source"])


def stored_collective_fit(name: str) -> CollectiveFit:
    record = catalog.stored_fit(name)
    return CollectiveFit(**{k: float(v) for k, v in record["parameters"].items()}, source=record["source"])


def flashmla_rates() -> AttentionRates:
    """FlashMLA's published decode rates on H800 as fractions of H800's nominal bf16 peak and HBM bandwidth (the
    part throttles to ~865 TFLOP/s attainable, so 660 is 76% of what its clocks allow; both are used as fractions
    of nominal peaks, since every device's catalog peak is nominal)."""
    published = catalog.published_kernels()["flashmla_decode"]
    device = catalog.load_device(published["hardware"])
    flops, hbm = float(published["compute_bound_flops_per_s"]), float(published["memory_bound_bytes_per_s"])
    peak = device.peak_flops_per_s["bf16"]
    compute, memory = flops / peak, hbm / device.hbm_bytes_per_s
    source = (f"FlashMLA {device.name} decode rates: {compute:.3f} of bf16 peak ({flops / TFLOPS:.0f} of {peak / TFLOPS:.0f} "
              f"TFLOP/s), {memory:.3f} of HBM ({hbm / GB:.0f} GB/s of {device.hbm_bytes_per_s / TB:.3g} TB/s)")
    return AttentionRates(compute, memory, device.name, source)


