"""The one interface the step model asks for operator times (DESIGN.md section 4).

`OperatorCosts` holds the parameters of every operator model and prices operators with them: GEMMs and the
memory-bound kernels around them (the DeepGEMM fit, hwmodels.efficiency), MLA attention (FlashMLA's published
rates), tensor-parallel all-reduce and the MoE all-to-all (the DeepEP fit of the device's family,
hwmodels.collectives), and how much of each overlapped pair two-batch overlap hides. Every cost it returns
names its source: the fit or published figure, and how it was scaled to the device.

`fitted_costs()` builds it from the fits hwmodels.calibrate stored in catalogs/fits/ and the published kernel
rates in catalogs/published/kernels.yaml, once per process; a study of another source (a refit, a what-if
overlap efficiency) replaces fields with dataclasses.replace.

With `measured` set (`costs_for(device, engine, version)`, the optional `moeplan[measured]` extra), GEMMs, the
routed experts of a MoE layer, MLA attention and the TP all-reduce are priced first from NVIDIA's measured
kernel tables for that GPU and engine (hwmodels.calibrate.measured_costs); a shape the tables do not cover
falls back to the fitted model, whose label then says which table missed and by how much. A measured time is
never below the operator's pure roofline (it is raised to it, as a measurement cannot beat the hardware). Every
OpCost says which source priced it and `beyond_coverage`, how far outside measured coverage it lay.

With `profile` set (a device profile: a kernels_ref CSV, hwmodels.calibrate.kernel_profile; `with_profile`), the
operators that CSV measured (routed experts, router, activation quantisation, absorbed MLA decode) are priced
first from its per-kernel fits, on the machine that measured them; every other operator keeps its engine-table or
fitted price, and its label says the profile does not measure it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from hwmodels import catalog, collectives, efficiency
from hwmodels.calibrate import measured_tables as tables
from hwmodels.calibrate.kernel_profile import KernelProfile
from hwmodels.calibrate.measured_costs import Measured, MeasuredSource, nccl, source_for
from hwmodels.collectives import CollectiveFit, CommCost
from hwmodels.efficiency import GQA_KV_DTYPES, AttentionRates, GemmEfficiency, GqaDecodeFit, GqaDecodeTerms
from hwmodels.hardware import Cluster, Device
from hwmodels.precision import DTYPES
from hwmodels.roofline import OpCost, roofline_cost
from hwmodels.units import GB, TB, TFLOPS

_KV_FORMATS = {DTYPES[name].bytes_per_element: name for name in ("fp8", "bf16")}  # KV cache bytes -> format
# engines whose experts behind a DeepEP all-to-all are DeepGEMM's grouped GEMMs (SGLang --moe-a2a-backend deepep,
# vLLM VLLM_ALL2ALL_BACKEND=deepep_*), not the fused kernel their moe_perf tables measured
DEEPGEMM_BEHIND_DEEPEP = ("sglang", "vllm")
# engines whose MoE under attention DP gathers every rank's tokens to every rank and reduce-scatters the outputs, with
# no all-to-all, unless the group outnumbers a token's experts on a multi-node NVLink system: TensorRT-LLM's CUTLASS
# MoE (tensorrt_llm/_torch/modules/fused_moe/fused_moe_cutlass.py, `select_alltoall_method_type`: NotEnabled where
# moe_ep_size <= top_k, MNNVL where MnnvlMemory.supports_mnnvl(), DeepEP only where TRTLLM_CAN_USE_DEEP_EP is set,
# else NotEnabled; NotEnabled runs `allgather` before the experts and `reducescatter` after). A group wider than one
# NVLink domain is priced as an all-to-all still: there a deployment sets TRTLLM_CAN_USE_DEEP_EP or the wide-EP
# backend rather than gather every token over the NICs
GATHER_EXCHANGE_ENGINES = ("trtllm",)


@dataclass(frozen=True, eq=False)  # identity equality: it keys the step model's operator caches cheaply
class OperatorCosts:
    gemm_fit: GemmEfficiency  # GEMMs, and the HBM efficiency and launch overhead of memory-bound kernels
    attention: AttentionRates  # MLA decode (and, assumed, prefill) attention
    deepep: CollectiveFit  # all-to-all and ring collectives of NVIDIA (and unknown) devices
    deepep_ascend: CollectiveFit  # those of Huawei NPUs
    overlap_efficiency: float  # two-batch overlap hides this fraction of the shorter of each overlapped pair
    overlap_source: str
    measured: MeasuredSource | None = None  # NVIDIA's measured tables for one GPU and engine; None: fits only
    gqa_decode_fit: GqaDecodeFit | None = None  # grouped-query decode attention (None: the KV read, as elementwise)
    profile: KernelProfile | None = None  # a kernels_ref CSV pricing the kernels it measured, before the above

    def collective_fit(self, device: Device) -> CollectiveFit:
        """The fit measured on the device's own family: DeepEP-Ascend for Huawei NPUs, DeepEP on H800 otherwise."""
        return self.deepep_ascend if device.vendor == "huawei" else self.deepep

    def gemm(self, device: Device, m: int, n: int, k: int, dtype: str = "fp8", groups: int = 1, layout: str = "dense",
             weight_bytes_per_element: float | None = None, name: str = "gemm", quant: str | None = None) -> OpCost:
        """quant: the weight's number format (hwmodels.precision.SCHEMES), which picks the measured table."""
        fitted = efficiency.gemm_cost(device, m, n, k, self.gemm_fit, dtype, groups, layout,
                                      weight_bytes_per_element=weight_bytes_per_element, name=name)
        cost = fitted
        if not (self.measured is None or groups != 1 or quant is None or m == 0):
            cost = _priced(fitted, self.measured.gemm(m, n, k, quant))  # grouped GEMMs have no dense-GEMM table
        if self.profile is None:
            return cost
        if name == "router":  # the router's GEMM, with its top-k, is one kernels_ref kernel
            return _profiled(cost, self.profile.router(cost.flops, cost.bytes, m))
        return _profiled(cost, Measured(None, self.profile.missing("grouped GEMMs" if groups != 1 else "dense GEMMs")))

    def moe_experts(self, device: Device, num_tokens: float, hidden: int, inter: int, top_k: int, num_experts: int,
                    moe_tp: int, moe_ep: int, quant: str, weight_bytes_per_element: float,
                    name: str = "routed_experts", deepep_phase: str | None = None) -> OpCost | None:
        """The routed experts of one MoE layer on one device from a measured table, or None where no table covers
        them (the step model then prices its grouped GEMMs with the fitted model). num_tokens: tokens entering
        the layer's expert group; the device holds num_experts / moe_ep experts, each 1 / moe_tp of its width.
        deepep_phase: "generation" or "context" where the tokens arrive by DeepEP's all-to-all (None: they do
        not); SGLang's and vLLM's experts then are their DeepEP MoE layer (MeasuredSource.deepep_moe),
        TensorRT-LLM's the CUTLASS kernel its moe_perf table measured, which computes only a rank's own pairs."""
        if self.measured is None and self.profile is None:
            return None
        pairs = num_tokens * top_k / moe_ep  # (token, expert) pairs on this device's experts
        width = inter / moe_tp
        experts_read = min(num_experts / moe_ep, pairs)  # an expert no token chose is not read
        flops = 2.0 * 3 * hidden * width * pairs
        bytes_moved = experts_read * 3 * hidden * width * weight_bytes_per_element
        peak = efficiency.peak_flops(device, quant_dtype(quant))
        floor = roofline_cost(name, flops, bytes_moved, peak, device.hbm_bytes_per_s)
        missed = None  # what the profile lacked, said in the label of whatever prices the experts instead
        if self.profile is not None and experts_read > 0:
            hit = self.profile.experts(flops, bytes_moved, pairs / experts_read, quant)
            if hit.latency_s is not None:
                return _priced(floor, hit)
            missed = hit
        if self.measured is None:
            return None  # the step model prices the grouped GEMMs, labelled as the profile's miss
        def table(tokens: float) -> Measured:
            if deepep_phase and moe_tp == 1 and self.measured.engine in DEEPGEMM_BEHIND_DEEPEP:
                # their moe_perf kernel runs on every gathered token (the masked pairs cost it time: vLLM's EP128 row
                # at 8,192 tokens takes 1/8 of its EP1 row, not 1/128); behind DeepEP they run DeepGEMM's grouped
                # GEMMs on the pairs a rank receives: SGLang's DeepEP MoE table, else the fitted DeepGEMM model
                return self.measured.deepep_moe(tokens, hidden, inter, top_k, num_experts, moe_ep, quant, deepep_phase)
            return self.measured.moe(tokens, hidden, inter, top_k, num_experts, moe_tp, moe_ep, quant)

        hit = table(num_tokens)
        if hit.latency_s is None:
            return None
        hit = _randomly_routed(hit, lambda pairs: table(pairs * moe_ep / top_k).latency_s, pairs, num_experts / moe_ep,
                               3 * hidden * width * weight_bytes_per_element / device.hbm_bytes_per_s)
        cost = _priced(floor, hit)
        return cost if missed is None else replace(cost, source=f"{cost.source} [{missed.label}]")

    def elementwise(self, device: Device, bytes_moved: float, name: str = "elementwise") -> OpCost:
        cost = efficiency.elementwise_cost(device, bytes_moved, self.gemm_fit, name)
        return cost if self.profile is None else _profiled(cost, Measured(None, self.profile.missing("elementwise kernels")))

    def quantize(self, device: Device, rows: float, cols: int, in_bytes_per_element: float,
                 out_bytes_per_element: float) -> OpCost:
        cost = efficiency.quantize_activations_cost(device, rows, cols, in_bytes_per_element, out_bytes_per_element,
                                                    self.gemm_fit)
        if self.profile is None:
            return cost
        return _profiled(cost, self.profile.quantize(cost.bytes, rows, in_bytes_per_element, out_bytes_per_element))

    def delta_rule(self, family: str, part: int, fitted: OpCost, prompts: float, prompt_tokens: float, k_heads: int,
                   v_heads: int, key_dim: int, value_dim: int) -> OpCost:
        """A linear-attention layer's short convolution (`part` 0) or delta rule (1), `fitted` the fitted model's: the
        engine's measured kernel where its table holds the family and the heads per device (MeasuredSource.delta_rule:
        decode of `prompts` sequences with prompt_tokens 0, else prefill), else `fitted` labelled with the miss."""
        if self.measured is None or prompts <= 0:
            return fitted
        cost = _priced(fitted, self.measured.delta_rule(family, part, prompts, prompt_tokens, k_heads, v_heads, key_dim,
                                                         value_dim))
        return cost if self.profile is None else _profiled(cost, Measured(None, self.profile.missing("linear attention")))

    def mla_decode(self, device: Device, batch: int, context_tokens: float, num_heads: int, kv_lora_rank: int,
                   qk_rope_head_dim: int, kv_bytes_per_element: float) -> OpCost:
        fitted = efficiency.mla_decode_cost(device, batch, context_tokens, num_heads, self.attention,
                                            self.gemm_fit.launch_overhead_s, kv_lora_rank, qk_rope_head_dim,
                                            kv_bytes_per_element)
        kv = _KV_FORMATS.get(kv_bytes_per_element)
        cost = fitted
        if not (self.measured is None or kv is None or batch < 1):
            cost = _priced(fitted, self.measured.mla_decode(batch, context_tokens, num_heads, kv))
        if self.profile is None:
            return cost
        return _profiled(cost, self.profile.mla_decode(cost.flops, cost.bytes, batch * context_tokens, kv_bytes_per_element))

    def attention_prefill(self, device: Device, tokens: int, context_tokens: float, num_heads: int, qk_head_dim: int,
                          v_head_dim: int, mla: bool = False, kv_heads: int | None = None) -> OpCost:
        """context_tokens: the causal average, (prompt + 1) / 2; mla: the MLA kernel (the measured table's);
        kv_heads: grouped-query attention over the whole context with this many KV heads per device (the measured
        table's, whose heads have equal key and value widths); neither: the fitted model alone (a sliding window, a
        vision tower)."""
        fitted = efficiency.attention_prefill_cost(device, tokens, context_tokens, num_heads, qk_head_dim, v_head_dim,
                                                   self.attention, self.gemm_fit.launch_overhead_s)
        cost = fitted
        if not (self.measured is None or not (mla or kv_heads) or tokens < 1
                or (kv_heads and qk_head_dim != v_head_dim)):
            def lookup(prompts: float, prompt_tokens: float) -> Measured:
                if mla:  # the table's bf16-cache rows: prefill attention reads the fresh keys, not the cache
                    return self.measured.mla_prefill(prompts, prompt_tokens, num_heads, "bf16")
                return self.measured.gqa_prefill(prompts, prompt_tokens, num_heads, kv_heads, qk_head_dim)

            prompt = max(2.0 * context_tokens - 1.0, 1.0)
            hit = lookup(tokens / prompt, prompt)
            if hit.latency_s is None and hit.beyond > 1.0:  # a prompt past the table's longest
                hit = self._longer_prompt(device, tokens, prompt, prompt / hit.beyond, num_heads, qk_head_dim,
                                          v_head_dim, fitted, hit, lookup)
            cost = _priced(fitted, hit)
        return cost if self.profile is None else _profiled(cost, Measured(None, self.profile.missing("prefill attention")))

    def gqa_decode(self, device: Device, batch: float, keys: float, num_heads: int, kv_heads: int, head_dim: int,
                   kv_bytes_per_element: float, name: str = "gqa_decode_kv_read") -> OpCost:
        """Decode attention of `batch` sequences over `keys` cached tokens each (a sliding layer's window at most):
        the read of their K and V at the fitted HBM efficiency, or the engine's measured kernel where its table holds
        the layer's heads per device."""
        kv_bytes = batch * keys * 2 * kv_heads * head_dim * kv_bytes_per_element
        kv = _KV_FORMATS.get(kv_bytes_per_element)
        fitted = (self.elementwise(device, kv_bytes, name) if self.gqa_decode_fit is None else
                  efficiency.gqa_decode_cost(device, batch, kv_bytes, kv_bytes_per_element, self.gqa_decode_fit, name))
        if self.measured is None or kv is None or batch < 1 or keys < 1:
            return fitted
        cost = _priced(fitted, self.measured.gqa_decode(batch, keys, num_heads, kv_heads, head_dim, kv))
        return cost if self.profile is None else _profiled(cost, Measured(None, self.profile.missing("decode attention")))

    def _longer_prompt(self, device: Device, tokens: int, prompt: float, longest: float, num_heads: int,
                       qk_head_dim: int, v_head_dim: int, fitted: OpCost, miss: Measured, lookup) -> Measured:
        """Prefill attention of a prompt longer than the table's longest: the measured time at the longest, grown
        as the fitted model grows from there to this prompt (the fitted model alone jumps at the table's edge,
        as far as the two disagree there). lookup(prompts, prompt_tokens): the table's."""
        edge = lookup(tokens / longest, longest)
        if edge.latency_s is None:
            return miss
        at_edge = efficiency.attention_prefill_cost(device, tokens, (longest + 1.0) / 2.0, num_heads, qk_head_dim,
                                                    v_head_dim, self.attention, self.gemm_fit.launch_overhead_s)
        grown = fitted.total_s / at_edge.total_s if at_edge.total_s > 0 else prompt / longest
        return Measured(edge.latency_s * grown, f"{edge.label}, its longest prompt ({longest:,.0f}) grown by the "
                        "fitted model", prompt / longest)

    def allreduce(self, cluster: Cluster, group_devices: int, bytes_per_device: float) -> CommCost:
        return _cached_allreduce(self, cluster, group_devices, bytes_per_device)

    def _allreduce(self, cluster: Cluster, group_devices: int, bytes_per_device: float) -> CommCost:
        fitted = collectives.allreduce_cost(cluster, group_devices, bytes_per_device, fit=self.collective_fit(cluster.device))
        if self.measured is None or group_devices > cluster.scaleup_domain_devices or bytes_per_device <= 0:
            return fitted  # the measured all-reduce ran inside one NVLink domain (GB300's: 16 GPUs, over 4 trays)
        hit = self.measured.allreduce(group_devices, bytes_per_device / DTYPES["bf16"].bytes_per_element)
        if hit.latency_s is None:
            return replace(fitted, source=f"{fitted.source} [{hit.label}, {hit.beyond:.2g}x outside]")
        return replace(fitted, time_s=hit.latency_s, latency_s=0.0, source=hit.label, beyond=hit.beyond)

    def send_recv(self, cluster: Cluster, first_device: int, peer_device: int, bytes_per_device: float) -> CommCost:
        """A pipeline stage's activations to the next stage (collectives.send_recv_cost)."""
        return self._unprofiled(collectives.send_recv_cost(cluster, first_device, peer_device, bytes_per_device,
                                                           fit=self.collective_fit(cluster.device)))

    def dispatch(self, cluster: Cluster, ep_devices: int, tokens_per_device: float, hidden: int, top_k: int,
                 num_experts: int, bytes_per_element: float, scale_bytes_per_token: float,
                 dest_probability: np.ndarray | None, mode: str, rank_copies=None) -> CommCost:
        if self.gathers(cluster, ep_devices, top_k):
            token_bytes = hidden * bytes_per_element + scale_bytes_per_token
            return _cached_gather(self, cluster, ep_devices, "all_gather", "dispatch", tokens_per_device * token_bytes, 1.0)
        return self._alltoall(collectives.dispatch_cost, (cluster, ep_devices, tokens_per_device, hidden, top_k,
                              num_experts, bytes_per_element, scale_bytes_per_token, mode), dest_probability, rank_copies)

    def combine(self, cluster: Cluster, ep_devices: int, tokens_per_device: float, hidden: int, top_k: int,
                num_experts: int, bytes_per_element: float, dest_probability: np.ndarray | None, mode: str,
                rank_copies=None) -> CommCost:
        if self.gathers(cluster, ep_devices, top_k):
            return _cached_gather(self, cluster, ep_devices, "reduce_scatter", "combine",
                                  tokens_per_device * hidden * bytes_per_element, bytes_per_element)
        return self._alltoall(collectives.combine_cost, (cluster, ep_devices, tokens_per_device, hidden, top_k,
                              num_experts, bytes_per_element, 0.0, mode), dest_probability, rank_copies)

    def gathers(self, cluster: Cluster, ep_devices: int, top_k: int) -> bool:
        """Whether the engine priced exchanges an attention-DP group's tokens by all-gather and reduce-scatter rather
        than an all-to-all (GATHER_EXCHANGE_ENGINES); a multi-node NVLink system is one whose NVLink domain spans
        more than one node (GB200 NVL72's trays)."""
        if (self.measured is None or self.measured.engine not in GATHER_EXCHANGE_ENGINES or ep_devices < 2
                or ep_devices > cluster.scaleup_domain_devices):
            return False
        multi_node_nvlink = cluster.unit.scaleup_domain_devices > cluster.unit.devices_per_node
        return ep_devices <= top_k or not multi_node_nvlink

    def _gather(self, cluster: Cluster, ep_devices: int, op: str, name: str, bytes_per_device: float,
                bytes_per_element: float) -> CommCost:
        """NCCL's all-gather (dispatch: each device's tokens to every device) or reduce-scatter (combine: every
        device's partial outputs summed onto the device that owns the tokens) of `bytes_per_device` per device, from
        the system's measured NCCL table (its message: the whole buffer, every device's share), else a ring."""
        fitted = collectives.allgather_cost(cluster, ep_devices, bytes_per_device, name, fit=self.collective_fit(cluster.device))
        dtype = "half" if op == "reduce_scatter" and bytes_per_element == 2 else "int8"
        elements = ep_devices * bytes_per_device / (2.0 if dtype == "half" else 1.0)
        hit = nccl(self.measured.system, op, dtype, ep_devices, elements)
        if hit.latency_s is None:
            return self._unprofiled(replace(fitted, source=f"{fitted.source} [{hit.label}]"))
        return self._unprofiled(replace(fitted, time_s=hit.latency_s, latency_s=0.0, source=hit.label, beyond=hit.beyond))

    def _alltoall(self, cost_of, question: tuple, dest_probability: np.ndarray | None, rank_copies) -> CommCost:
        """cost_of: collectives' dispatch_cost or combine_cost; question: (cluster, ep_devices, tokens_per_device,
        hidden, top_k, num_experts, bytes_per_element, scale_bytes_per_token, mode). Without a destination array (the
        usual question; an array is no cache key), once per distinct question: a layout search asks the same ones
        across layouts and batches."""
        if dest_probability is None:
            return _cached_alltoall(self, cost_of, question, None if rank_copies is None else tuple(rank_copies.items()))
        return _alltoall_cost(self, cost_of, question, dest_probability, rank_copies)

    def _unprofiled(self, cost: CommCost) -> CommCost:
        """A collective keeps its fit; with a profile, its label says the profile measured none."""
        if self.profile is None:
            return cost
        return replace(cost, source=f"{cost.source} [{self.profile.missing('collectives')}]")


# the collectives' costs, once per distinct question; callers only read the CommCost returned, which is shared
@lru_cache(maxsize=1 << 14)
def _cached_allreduce(costs: OperatorCosts, cluster: Cluster, group_devices: int, bytes_per_device: float) -> CommCost:
    return costs._unprofiled(costs._allreduce(cluster, group_devices, bytes_per_device))


@lru_cache(maxsize=1 << 14)
def _cached_gather(costs: OperatorCosts, cluster: Cluster, ep_devices: int, op: str, name: str, bytes_per_device: float,
                   bytes_per_element: float) -> CommCost:
    return costs._gather(cluster, ep_devices, op, name, bytes_per_device, bytes_per_element)


@lru_cache(maxsize=1 << 14)
def _cached_alltoall(costs: OperatorCosts, cost_of, question: tuple, rank_copies: tuple | None) -> CommCost:
    return _alltoall_cost(costs, cost_of, question, None, None if rank_copies is None else dict(rank_copies))


def _alltoall_cost(costs: OperatorCosts, cost_of, question: tuple, dest_probability, rank_copies) -> CommCost:
    *sizes, mode = question
    fit = costs.collective_fit(question[0].device)
    fitted = cost_of(*sizes, dest_probability, mode=mode, fit=fit, rank_copies=rank_copies)
    if costs.measured is None:
        return costs._unprofiled(fitted)
    cluster, ep_devices, tokens_per_device, hidden, top_k, num_experts = sizes[:6]
    phase = "dispatch" if cost_of is collectives.dispatch_cost else "combine"
    hit = costs.measured.deepep(mode, phase, ep_devices, hidden, top_k, num_experts, tokens_per_device,
                                collectives.DEEPEP_NORMAL_SMS)
    if hit is None:  # the engine measured no DeepEP kernel on this GPU
        return costs._unprofiled(fitted)
    if hit.latency_s is None:
        return costs._unprofiled(replace(fitted, source=f"{fitted.source} [{hit.label}]"))
    # the tables routed uniformly: a skewed load or a placement scales the measured time as it scales the fitted one
    uniform = fitted if dest_probability is None and rank_copies is None else cost_of(*sizes, None, mode=mode, fit=fit)
    skew = fitted.time_s / uniform.time_s if uniform.time_s > 0 else 1.0
    source = hit.label if skew == 1.0 else f"{hit.label}, x {skew:.3g} for the load (the fitted model's ratio)"
    return costs._unprofiled(replace(fitted, time_s=hit.latency_s * skew, latency_s=0.0, source=source, beyond=hit.beyond))


def quant_dtype(quant: str) -> str:
    """The compute dtype of a number format, by name (QuantScheme.compute_dtype)."""
    from hwmodels.precision import scheme
    return scheme(quant).compute_dtype


def _profiled(cost: OpCost, hit: Measured) -> OpCost:
    """A device profile's price where it measured the operator (never below the roofline), else `cost` with a label
    saying what the profile lacks."""
    if hit.latency_s is None:
        return replace(cost, source=f"{cost.source} [{hit.label}]", beyond_coverage=max(cost.beyond_coverage, hit.beyond))
    return _priced(cost, hit)


def _randomly_routed(hit: Measured, table_s, pairs: float, experts: float, expert_read_s: float) -> Measured:
    """A measured MoE time for pairs that land on a device's experts at random, as a router's choices for the
    benchmark's random prompts do, from the package's `balanced` rows, which spread the table's num_tokens x top_k
    pairs evenly (ai-dynamo/aiconfigurator collector, `balanced_logits`: token i takes the experts
    (i + j x ceil(experts / top_k)) mod experts, j < top_k), so min(experts, pairs) of them are read. Random routing
    leaves each idle with probability exp(-pairs / experts), and the grouped GEMM skips an idle expert's weights
    (hwmodels.step_moe._experts_read). The time the extra experts take is the table's own: its time at the tokens whose
    balanced pairs read as many experts as balanced routing does, less its time at the tokens whose pairs read as
    many as random routing does (both where balanced pairs each read an expert of their own). Most where pairs ~
    experts (balanced reads all, random 63%), nothing where either is far larger. A table whose time with a pair for
    every expert is below the time to read them all at the HBM peak did not read them all (SGLang's B200 table of
    DeepSeek-V3, whose flashinfer trtllm-gen kernel takes the router logits and likely routes by groups): it is kept.
    table_s(pairs): the table's seconds where one device's experts take that many pairs (None outside it); pairs:
    the table's pairs on one device (num_tokens x top_k / moe_ep); experts: the device's; expert_read_s: one
    expert's weights read at the HBM peak."""
    if hit.latency_s is None or pairs <= 0 or experts <= 0:
        return hit
    every = table_s(experts)
    if every is None or every < experts * expert_read_s:
        return hit
    balanced, random = min(experts, pairs), experts * -math.expm1(-pairs / experts)
    if balanced - random < 1e-6 * experts:
        return hit
    more, fewer = table_s(balanced), table_s(random)
    if more is None or fewer is None or more <= fewer:
        return hit
    idle_s = min(more - fewer, hit.latency_s)
    return replace(hit, latency_s=hit.latency_s - idle_s,
                   label=f"{hit.label}, less {idle_s * 1e6:.0f} us for the experts random routing leaves idle")


def _priced(fitted: OpCost, hit: Measured) -> OpCost:
    """The measured time where the table covers the shape (keeping the fitted model's counts and its
    compute/memory split), else the fitted cost labelled with the table that missed."""
    if hit.latency_s is None:
        return replace(fitted, source=f"{fitted.source} [fitted: {hit.label}]", beyond_coverage=hit.beyond)
    time_s = max(hit.latency_s, fitted.roofline_s)
    scale = time_s / fitted.total_s if fitted.total_s > 0 else 1.0
    label = hit.label if time_s == hit.latency_s else f"{hit.label}, raised to the roofline"
    return OpCost(fitted.name, fitted.flops, fitted.bytes, fitted.compute_s * scale, fitted.memory_s * scale,
                  fitted.overhead_s * scale, fitted.roofline_s, label, hit.beyond)  # dataclasses.replace, unrolled


@lru_cache(maxsize=64)
def costs_for(device_name: str, engine: str | None, version: str | None = None) -> OperatorCosts:
    """The operator costs for a catalog device served by `engine` (sglang, trtllm, vllm) at `version`: the
    measured tables where the package is installed and measured that GPU, else the fitted model. engine None:
    the stored fits alone."""
    measured = source_for(device_name, engine, version) if engine else None
    return fitted_costs() if measured is None else replace(fitted_costs(), measured=measured)


def costs_of(d, role: str = "decode") -> OperatorCosts:
    """The operator costs of a Deployment's pools of `role`: its device profile's kernels first where it has one,
    then its serving engine's measured tables on that pool's device (a prefill pool may run on other hardware),
    else the fits."""
    return with_profile(costs_for(d.cluster_of(role).device.name, d.serving.engine, d.serving.engine_version),
                        d.serving.device_profile)


@lru_cache(maxsize=64)  # one OperatorCosts per (costs, profile): the step model's caches key on its identity
def with_profile(costs: OperatorCosts, profile: KernelProfile | None) -> OperatorCosts:
    """`costs` with a device profile pricing the kernels it measured first (None: `costs` unchanged)."""
    return costs if profile is None else replace(costs, profile=profile)


def describe_costs(d) -> str:
    """Which source prices a Deployment's operators, in one phrase for its assumptions."""
    profile = d.serving.device_profile
    if profile is None:
        return _describe_engine_costs(d)
    return (f"routed experts, router, activation quantisation and MLA decode priced by the kernels measured in "
            f"{profile.name} ({profile.source}), fitted per kernel, on the machine that measured them; "
            f"{d.cluster.device.name} sets memory, links and device counts, and the operators the CSV does not "
            f"measure are priced as without it (each labelled): {_describe_engine_costs(d)}")


def pricing_source(d) -> str:
    """What priced a Deployment's operators: "ENGINE[@VERSION]" where that engine's tables measure its device, else
    "fitted"."""
    s = d.serving
    if s.engine is None or source_for(d.cluster.device.name, s.engine, s.engine_version) is None:
        return "fitted"
    return s.engine + (f"@{s.engine_version}" if s.engine_version else "")


def _describe_engine_costs(d) -> str:
    s, device = d.serving, d.cluster.device.name
    measured_devices = ", ".join(tables.SYSTEMS)
    if s.engine is None:
        return ("operators priced by the fitted kernel models (DeepGEMM, FlashMLA, DeepEP fits; no serving engine's "
                "measured tables: serving.engine or --backend names one, which needs the moeplan[measured] extra and "
                f"a device NVIDIA measured: {measured_devices})")
    asked = f"{s.engine}" + (f" {s.engine_version}" if s.engine_version else "")
    if source_for(device, s.engine, s.engine_version) is None:
        return (f"operators priced by the fitted kernel models: no measured {asked} tables for {device} (the "
                f"moeplan[measured] extra holds NVIDIA's for {measured_devices})")
    chosen = f"{s.engine_note}: " if s.engine_note else ""
    start = tables.query_version(tables.SYSTEMS[device], s.engine, s.engine_version)
    version = (f"{start}, the queryable version" + (f" nearest {s.engine_version}" if s.engine_version
                                                     and s.engine_version != start else "")
               + ", older collections filling what it lacks") if start else "the nearest measured version"
    return (f"{chosen}operators priced by {s.engine} tables measured on {device} (aiconfigurator-core: {version}), "
            "the fitted models outside them; each step names each operator's source")


@lru_cache(maxsize=1)
def fitted_costs() -> OperatorCosts:
    """The stored fits (catalogs/fits/) and published kernel rates, as the step model uses them."""
    overlap = catalog.stored_fit("overlap")
    return OperatorCosts(stored_gemm_fit(), flashmla_rates(), stored_collective_fit("deepep-h800"),
                         stored_collective_fit("deepep-ascend"), float(overlap["parameters"]["overlap_efficiency"]),
                         overlap["source"], gqa_decode_fit=stored_gqa_decode_fit())


def stored_gqa_decode_fit() -> GqaDecodeFit:
    record = catalog.stored_fit("gqa-decode")
    return GqaDecodeFit(tuple((GQA_KV_DTYPES[name], GqaDecodeTerms(**{k: float(v) for k, v in p.items()}))
                              for name, p in record["parameters"].items()), record["source"])


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


