"""The operators of a step, priced one by one and gathered per layer (hwmodels.step composes them into layers and
steps): each GEMM, memory-bound kernel and quantisation through the operator-cost source, memoised on its exact
shape (a layout search evaluates the same shapes across many layouts and batches), and `_Layer`, which sums one
layer's operators into compute and communication time per component and notes what priced each."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from hwmodels.calibrate.operator_costs import OperatorCosts
from hwmodels.precision import DTYPES, SCHEMES, QuantScheme
from hwmodels.roofline import OpCost

COMPONENTS = ("attention", "dense_mlp", "expert_gemm", "shared_expert", "dispatch", "combine", "other")


def _weight_bytes_per_element(scheme: QuantScheme, rows: int, cols: int) -> float:
    return scheme.matrix_bytes(rows, cols) / (rows * cols)


def served(scheme: QuantScheme, device) -> QuantScheme:
    """The format a weight runs in on `device`: 4-bit floats on a device without fp4 math run weight-only, dequantised
    to bf16 in the kernel, as every engine serves gpt-oss's MXFP4 experts on Hopper (TensorRT-LLM's and vLLM's Triton
    and Marlin MoE kernels; aiconfigurator-core measures TensorRT-LLM's as w4a16_mxfp4), not at the next wider peak
    with fp8 activations (on the measured H200 rows that priced gpt-oss's decode step 2.4x too fast)."""
    if scheme.dtype.name == "fp4" and not scheme.compute and "fp4" not in device.peak_flops_per_s:
        return SCHEMES[f"{scheme.name}_w4a16"]
    return scheme


def _gemm(ctx: Any, m, n, k, scheme: QuantScheme, name, groups=1, layout="dense") -> OpCost:
    return _gemm_cached(ctx.costs, ctx.cluster.device, max(int(math.ceil(m)), 1), n, k, scheme, name, groups, layout)


@lru_cache(maxsize=1 << 16)
def _gemm_cached(costs: OperatorCosts, device, m: int, n: int, k: int, scheme: QuantScheme, name: str, groups: int,
                 layout: str) -> OpCost:
    # a layout search evaluates the same GEMM shapes across many layouts and batch sizes
    scheme = served(scheme, device)
    return costs.gemm(device, m, n, k, scheme.compute_dtype, groups, layout,
                      weight_bytes_per_element=_weight_bytes_per_element(scheme, n, k), name=name, quant=scheme.name)


@lru_cache(maxsize=1 << 14)
def _moe_experts_op(costs: OperatorCosts, device, num_tokens: float, hidden: int, inter: int, top_k: int,
                    num_experts: int, moe_tp: int, moe_ep: int, scheme: QuantScheme,
                    deepep_phase: str | None = None) -> OpCost | None:
    scheme = served(scheme, device)
    return costs.moe_experts(device, num_tokens, hidden, inter, top_k, num_experts, moe_tp, moe_ep, scheme.name,
                             _weight_bytes_per_element(scheme, inter, hidden), deepep_phase=deepep_phase)


# memory-bound kernels recur with the same sizes across the layouts a search scores, like the GEMM shapes
@lru_cache(maxsize=1 << 16)
def _memory_op(costs: OperatorCosts, device, bytes_moved: float, name: str) -> OpCost:
    return costs.elementwise(device, bytes_moved, name)


@lru_cache(maxsize=1 << 16)
def _quantize_op(costs: OperatorCosts, device, rows: float, cols: int, in_bytes: float, out_bytes: float) -> OpCost:
    return costs.quantize(device, rows, cols, in_bytes, out_bytes)


@dataclass
class _Layer:
    """Accumulates one layer's operators into compute and communication time per component."""

    ctx: Any  # the hwmodels.step.StepContext it prices in (step imports this module, not the reverse)
    compute: dict[str, float] = field(default_factory=lambda: dict.fromkeys(COMPONENTS, 0.0))
    comm: dict[str, float] = field(default_factory=lambda: dict.fromkeys(COMPONENTS, 0.0))
    sources: set[str] = field(default_factory=set)
    operators: dict[str, tuple[str, float]] = field(default_factory=dict)  # name -> (source, beyond coverage)

    def op(self, component: str, cost: OpCost) -> None:
        self.compute[component] += cost.total_s
        self.note(cost)

    def note(self, cost: OpCost) -> None:
        self.sources.add(cost.source)
        self.operators[cost.name] = (cost.source, cost.beyond_coverage)

    def gemm(self, component: str, m, n, k, scheme: QuantScheme, name: str, groups: int = 1, layout: str = "dense") -> None:
        self.op(component, _gemm(self.ctx, m, n, k, scheme, name, groups, layout))

    def memory(self, component: str, bytes_moved: float, name: str) -> None:
        self.op(component, _memory_op(self.ctx.costs, self.ctx.cluster.device, bytes_moved, name))

    def quantize_input(self, component: str, rows: float, cols: int, scheme: QuantScheme) -> None:
        """A GEMM computing in a narrower dtype than the activations first quantises its input (a kernel of its own)."""
        act = self.ctx.precision.combine.bytes_per_element
        narrow = DTYPES[scheme.compute_dtype].bytes_per_element
        if narrow < act:
            self.op(component, _quantize_op(self.ctx.costs, self.ctx.cluster.device, rows, cols, act, narrow))

    def allreduce(self, component: str, group_devices: int, bytes_per_device: float, name: str = "") -> None:
        cost = self.ctx.costs.allreduce(self.ctx.cluster, group_devices, bytes_per_device)
        self.comm[component] += cost.time_s
        self.sources.add(cost.source)
        self.operators[name or f"{component}_allreduce"] = (cost.source, cost.beyond)

    @property
    def compute_s(self) -> float:
        return sum(self.compute.values())

    @property
    def comm_s(self) -> float:
        return sum(self.comm.values())
