"""Operator latencies from NVIDIA's measured kernel database, for one device and serving engine.

`MeasuredSource(system, engine, version)` answers the operator-cost interface's questions from the tables
hwmodels.calibrate.measured_tables reads in place, interpolated by hwmodels.calibrate.measured_grid's rule.
Every answer is a `Measured`: the latency in seconds, or None where the tables do not cover the shape, with
its label (package version, GPU, engine, the engine version whose table answered, table and dtype) and how
far outside the measured range it extrapolated. The engine version is the package's queryable version nearest the
asked one, and a table that version lacks the dtype or model shape of is read from older versions, newest first
(measured_tables.versions_to_try); the label names the version that answered.

What each table's coordinates mean (NVIDIA's collectors, aiconfigurator_core/sdk/operations):
- gemm_perf: one dense GEMM [m, k] x [k, n] per device, per `gemm_dtype`.
- moe_perf: the routed experts of one MoE layer on one device (grouped GEMMs, activation, local permute),
  for `num_tokens` tokens entering the layer's expert-parallel group (each attention-DP rank's tokens,
  summed), with `moe_tp_size` x `moe_ep_size` devices sharing the experts; `distribution` balanced. The
  collectors (collector/trtllm/collect_moe.py, collector/sglang/collect_moe.py) route num_tokens over all the
  experts and time rank 0's share, num_tokens x topk / moe_ep_size pairs, and the package's own query scales an
  attention-DP rank's tokens by attention_dp_size (sdk/operations/moe_comm.py), so at equal num_tokens EP8 takes
  about an eighth of EP1's time where the kernel is compute-bound (H200 TensorRT-LLM fp8_block, DeepSeek's shape,
  16,384 tokens: 22.0 ms at EP1, 2.50 at EP8). A MoE TP x EP the tables never measured for the shape (gpt-oss's
  experts were measured under EP alone) is read from the EP table of as many devices: the same weight bytes and
  flops per device.
- wideep_generation_moe_perf / wideep_context_moe_perf (SGLang): the same, for the DeepEP MoE layer (DeepGEMM's
  masked grouped GEMM at decode, its contiguous one at prefill) that SGLang runs behind a DeepEP all-to-all.
- generation_mla_perf / context_mla_perf: the MLA attention core of one layer on one device, `num_heads`
  heads on that device, `batch_size` sequences, KV length `step` (decode) or prompt length `isl` (prefill).
- generation_attention_perf / context_attention_perf: the attention core of one layer of grouped-query (or
  multi-head) attention on one device, `num_heads` query and `num_key_value_heads` KV heads of `head_dim` on that
  device, `batch_size` sequences, KV length `step` (decode) or prompt length `isl` (prefill), over the whole
  context (`window_size` 0: a sliding layer reads at most its window, so its decode is asked at that many keys).
- nccl_perf (under comm/nccl/<NCCL version>/, one per system, not per engine): NCCL's `op_name` (all_gather,
  reduce_scatter, ...) of `message_size` elements of `nccl_dtype` in all, nccl-tests' size (the 8-GPU all-gather of
  B200 moves 268 Mi half elements in 0.76 ms, 2 GPUs in 0.61: the whole buffer, not one GPU's share), over `num_gpus`
  GPUs of one node (`nccl`).
- wideep_deepep_ll_perf / wideep_deepep_normal_perf (SGLang, under comm/): DeepEP's low-latency and normal
  all-to-all kernels, each phase (dispatch, combine) timed alone, for `num_token` tokens per rank routed uniformly
  at random over `node_num` x 8 GPUs (the package reads ep_size = node_num x 8: HGX nodes of 8 GPUs), per model
  shape (`hidden_size`, `num_topk`, `num_experts`); normal mode at each SM budget (`dispatch_sms`, `combine_sms`), its
  time transmit + notify; low-latency mode the kernels' average (`dispatch_avg_t_us`, `combine_avg_t_us`). Times in
  microseconds. One table (H200's 0.5.6.post2 normal) also holds another GPU's rows: only the system's own are read.
- custom_allreduce_perf: the engine's all-reduce of `message_size` bf16 elements over `num_gpus` GPUs
  (several kernels per point: the fastest, as CUDA graphs run it, is kept). A GPU count is a shape: the nearest
  version that measured it answers, else the NVLink twin's table where the two agree (measured_tables.NVLINK_TWINS:
  GB200's 8 GPUs from GB300's); inside one NVLink domain (GB300's NVL72 measured 16 GPUs over 4 trays).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import pandas as pd

from hwmodels.calibrate import measured_tables as tables
from hwmodels.calibrate.measured_grid import Grid
from hwmodels.units import ms

# moeplan's number formats (hwmodels.precision.SCHEMES) -> the package's dtype names; a format absent here has
# no measured table
GEMM_DTYPES = {"fp8": "fp8_block", "fp8_tensor": "fp8", "bf16": "bfloat16", "fp16": "bfloat16", "nvfp4": "nvfp4"}
MOE_DTYPES = {"fp8": "fp8_block", "fp8_tensor": "fp8", "bf16": "bfloat16", "fp16": "bfloat16", "nvfp4": "nvfp4",
              # MXFP4 where the device has fp4 math runs its MXFP4 x MXFP8 kernel; weight-only (step_ops.served) the
              # dequantise-to-bf16 one
              "int4": "int4_wo", "mxfp4": "w4a8_mxfp4_mxfp8", "mxfp4_w4a16": "w4a16_mxfp4",
              # no table measures NVFP4 weight-only; MXFP4's runs the same dequantise-to-bf16 kernel class
              "nvfp4_w4a16": "w4a16_mxfp4"}
# a format whose kernel class an engine's tables may lack -> the other kernel class of the same weights, which answers
# then (MXFP4 weights with MXFP8 activations, else with bf16)
MOE_ONLY_KERNEL = {"mxfp4": "mxfp4_w4a16"}
KV_DTYPES = {"bf16": "bfloat16", "fp16": "bfloat16", "fp8": "fp8"}
# a delta-rule linear-attention layer's table per family, and its two parts per phase, the short convolution and the
# delta rule, each by the names the engines' tables give its kernels (of those an engine measured, the fastest, as for
# duplicate points of any table; KDA's MTP-verify kernel is left out)
DELTA_RULE_KERNELS = {
    "gated_deltanet": ("gdn_perf", {
        "generation": (("causal_conv1d_update",),
                       ("fused_recurrent_gated_delta_rule_packed_decode", "fused_recurrent_gated_delta_rule")),
        "context": (("causal_conv1d_fn",), ("chunk_gated_delta_rule", "chunk_gated_delta_rule_flashinfer"))}),
    "kda": ("kda_perf", {
        "generation": (("causal_conv1d_update",),
                       ("fused_recurrent_kda_packed_decode", "kda_fused_decode", "fused_kda_decode", "fused_recurrent_kda")),
        "context": (("causal_conv1d_fn_qkv3",), ("chunk_kda", "flashkda_fwd"))}),
}
BALANCED = ("balanced", "uniform")  # the package's two names for every expert equally loaded
DEEPEP_TABLES = {"low_latency": "wideep_deepep_ll_perf", "normal": "wideep_deepep_normal_perf"}  # by DeepEP mode
# (mode, phase) -> the columns whose sum, in microseconds, is that kernel's time
DEEPEP_COLUMNS = {("low_latency", "dispatch"): ("dispatch_avg_t_us",), ("low_latency", "combine"): ("combine_avg_t_us",),
                  ("normal", "dispatch"): ("dispatch_transmit_us", "dispatch_notify_us"),
                  ("normal", "combine"): ("combine_transmit_us", "combine_notify_us")}
DEEPEP_GPUS_PER_NODE = 8  # the DeepEP tables' node: ep_size = node_num x 8 (the package's reading)


@dataclass(frozen=True)
class Measured:
    latency_s: float | None  # None: not covered, the caller falls back
    label: str
    beyond: float = 1.0  # asked over nearest measured coordinate (1.0: inside the measured range)


@dataclass(frozen=True)
class MeasuredSource:
    """The measured tables of one `system` (measured_tables.SYSTEMS) and `engine`; `version` None: the newest."""

    system: str
    engine: str
    version: str | None = None

    @property
    def name(self) -> str:
        return f"{self.engine}@{self.version}" if self.version else self.engine

    def gemm(self, m: float, n: int, k: int, quant: str) -> Measured:
        dtype = GEMM_DTYPES.get(quant)
        return self._lookup("gemm_perf", dtype, ("gemm_dtype", dtype), (("m", "n", "k"), "m"), (m, n, k))

    def moe(self, num_tokens: float, hidden: int, inter: int, topk: int, num_experts: int, moe_tp: int, moe_ep: int,
            quant: str) -> Measured:
        dtype = MOE_DTYPES.get(quant)
        shape = (("moe_dtype", dtype), ("hidden_size", hidden), ("inter_size", inter), ("topk", topk),
                 ("num_experts", num_experts), ("moe_tp_size", moe_tp), ("moe_ep_size", moe_ep))
        hit = self._lookup("moe_perf", dtype, shape, (("num_tokens",), "num_tokens"), (num_tokens,))
        if hit.latency_s is None and moe_tp > 1:
            # a model whose tables measured expert parallelism only (gpt-oss: moe_tp 1 at EP 1 to 128): the EP table
            # of as many devices holds the same weight bytes and flops per device, one narrow slice of every expert
            # traded for whole experts; a lower bound where slices that narrow run less efficiently
            other = self.moe(num_tokens, hidden, inter, topk, num_experts, 1, moe_tp * moe_ep, quant)
            if other.latency_s is not None:
                return Measured(other.latency_s, f"{other.label} at EP {moe_tp * moe_ep} standing in for MoE TP "
                                f"{moe_tp} x EP {moe_ep}", other.beyond)
        if hit.latency_s is None and quant in MOE_ONLY_KERNEL:
            # the engine measured the same weights' other kernel class only (vLLM's Blackwell tables hold MXFP4
            # experts as w4a16_mxfp4 alone): a measurement of its kernels, labelled so, before the fitted model
            other = self.moe(num_tokens, hidden, inter, topk, num_experts, moe_tp, moe_ep, MOE_ONLY_KERNEL[quant])
            return other if other.latency_s is not None else hit
        return hit

    def deepep_moe(self, num_tokens: float, hidden: int, inter: int, topk: int, num_experts: int, moe_ep: int,
                   quant: str, phase: str) -> Measured:
        """The routed experts of one layer behind DeepEP's all-to-all in `phase` (generation or context), as `moe` keys
        them: SGLang's DeepEP MoE tables (measured for DeepSeek's expert shape alone); vLLM and TensorRT-LLM measured
        none. The EP size is an axis of the interpolation, not a selection (the tables measured EP 2 to 256 but not
        every size, GB200 and B200 no EP8): at equal num_tokens a rank's pairs and its experts both go as 1 / EP, so
        the time is a power of EP whichever bounds the kernel, and log-linear interpolation between measured sizes is
        exact for it."""
        table = f"wideep_{phase}_moe_perf"
        if self.engine != "sglang":
            return Measured(None, f"no measured {table} for {self.engine}")
        dtype = MOE_DTYPES.get(quant)
        shape = (("moe_dtype", dtype), ("hidden_size", hidden), ("inter_size", inter), ("topk", topk),
                 ("num_experts", num_experts), ("moe_tp_size", 1))
        return self._lookup(table, dtype, shape, (("moe_ep_size", "num_tokens"), "num_tokens"), (moe_ep, num_tokens))

    def deepep(self, mode: str, phase: str, ep_devices: int, hidden: int, top_k: int, num_experts: int,
               tokens_per_rank: float, sms: int) -> Measured | None:
        """DeepEP's `phase` (dispatch or combine) kernel in `mode` (low_latency or normal, on `sms` SMs) over
        `ep_devices` GPUs, `tokens_per_rank` tokens each routed uniformly: the nearest version of the engine's tables
        that measured that many nodes of the shape, interpolated over tokens (measured_grid's rule). None where the
        engine measured no DeepEP table on this system (only SGLang's collector runs DeepEP)."""
        table = DEEPEP_TABLES[mode]
        if not tables.table_versions(self.system, self.engine, table):
            return None
        if ep_devices % DEEPEP_GPUS_PER_NODE:
            return Measured(None, f"no measured {table} over {ep_devices} GPUs (measured over nodes of "
                                  f"{DEEPEP_GPUS_PER_NODE})")
        select = (("node_num", ep_devices // DEEPEP_GPUS_PER_NODE), ("hidden_size", hidden), ("num_topk", top_k),
                  ("num_experts", num_experts))
        if mode == "normal":
            select += (("dispatch_sms", sms), ("combine_sms", sms))
        return _deepep_lookup(self, table, DEEPEP_COLUMNS[mode, phase], select, float(tokens_per_rank))

    def mla_decode(self, batch: float, context_tokens: float, heads_per_device: int, kv_quant: str) -> Measured:
        dtype = KV_DTYPES.get(kv_quant)
        return self._lookup("generation_mla_perf", dtype, (("kv_cache_dtype", dtype), ("num_heads", heads_per_device)),
                            (("batch_size", "step"), "batch_size"), (batch, context_tokens))

    def mla_prefill(self, prompts: float, prompt_tokens: float, heads_per_device: int, kv_quant: str) -> Measured:
        """`prompts` below 1 is a chunk of one prompt (chunked prefill of a long prompt): its share of the whole
        prompt's attention, not the table's launch floor at one prompt (rule 2 of measured_grid would charge the
        chunk the whole prompt)."""
        dtype = KV_DTYPES.get(kv_quant)
        hit = self._lookup("context_mla_perf", dtype, (("kv_cache_dtype", dtype), ("num_heads", heads_per_device)),
                           (("batch_size", "isl"), "batch_size"), (max(prompts, 1.0), prompt_tokens))
        return _share_of_one_prompt(hit, prompts)

    def gqa_decode(self, batch: float, keys: float, heads: int, kv_heads: int, head_dim: int, kv_quant: str) -> Measured:
        dtype = KV_DTYPES.get(kv_quant)
        return self._lookup("generation_attention_perf", dtype, _gqa_shape(dtype, heads, kv_heads, head_dim),
                            (("batch_size", "step"), "batch_size"), (batch, keys))

    def gqa_prefill(self, prompts: float, prompt_tokens: float, heads: int, kv_heads: int, head_dim: int) -> Measured:
        """`prompts` below 1: a chunk of one prompt, its share of the whole prompt's attention (as mla_prefill)."""
        hit = self._lookup("context_attention_perf", "bfloat16", _gqa_shape("bfloat16", heads, kv_heads, head_dim),
                           (("batch_size", "isl"), "batch_size"), (max(prompts, 1.0), prompt_tokens))
        return _share_of_one_prompt(hit, prompts)

    def delta_rule(self, family: str, part: int, prompts: float, prompt_tokens: float, k_heads: int, v_heads: int,
                   key_dim: int, value_dim: int) -> Measured:
        """One part of a linear-attention layer on one device (`family`: gated_deltanet or kda; `part` 0: the short
        convolution, 1: the delta rule), `k_heads` and `v_heads` of it there: decode of `prompts` sequences
        (prompt_tokens 0), or prefill of `prompts` prompts of `prompt_tokens` (below 1: a chunk of one prompt, its
        share, as mla_prefill)."""
        if family not in DELTA_RULE_KERNELS:
            return Measured(None, f"no measured table for {family} linear attention")
        table, kernels = DELTA_RULE_KERNELS[family]
        phase = "generation" if prompt_tokens == 0 else "context"
        axes, point = ((("batch_size",), "batch_size"), (prompts,)) if phase == "generation" else \
            ((("batch_size", "seq_len"), "batch_size"), (max(prompts, 1.0), prompt_tokens))
        shape = (("phase", phase), ("num_k_heads", k_heads), ("num_v_heads", v_heads), ("head_k_dim", key_dim),
                 ("head_v_dim", value_dim))
        found = [self._lookup(table, "bfloat16", (("kernel_source", name), *shape), axes, point)
                 for name in kernels[phase][part]]
        measured = [h for h in found if h.latency_s is not None]
        if not measured:
            return found[0]
        hit = min(measured, key=lambda h: h.latency_s)
        return _share_of_one_prompt(hit, prompts) if phase == "context" else hit

    def allreduce(self, num_gpus: int, elements: float) -> Measured:
        """The nearest version that measured this many GPUs (GB300's 8 and 16 are measured only from 1.3.0rc20
        on), else the nearest version's table across GPU counts, else the same engine's on the NVLink twin
        (measured_tables.NVLINK_TWINS) that measured this many GPUs."""
        exact = self._exact_allreduce(num_gpus, elements)
        if exact.latency_s is not None:
            return exact
        across = self._lookup("custom_allreduce_perf", "bfloat16", (("allreduce_dtype", "bfloat16"),),
                              (("num_gpus", "message_size"), "message_size"), (num_gpus, elements))
        twin = tables.NVLINK_TWINS.get(self.system)
        if across.latency_s is not None or twin is None or not _twins_agree(self, twin):
            return across
        hit = MeasuredSource(twin, self.engine, self.version)._exact_allreduce(num_gpus, elements)
        if hit.latency_s is None:
            return across
        return Measured(hit.latency_s, f"{hit.label}, for {self.system} (its NVLink twin; {self.system} measured "
                                       f"no {num_gpus}-GPU all-reduce)", hit.beyond)

    def _exact_allreduce(self, num_gpus: int, elements: float) -> Measured:
        return self._lookup("custom_allreduce_perf", "bfloat16", (("allreduce_dtype", "bfloat16"), ("num_gpus", num_gpus)),
                            (("message_size",), "message_size"), (elements,))

    def _lookup(self, table: str, dtype: str | None, select: tuple, axes: tuple, point: tuple) -> Measured:
        if isinstance(select[0], str):
            select = (select,)
        # a layout search asks the same shapes across layouts and batches: one interpolation per distinct question
        return _cached_lookup(self, table, dtype, select, axes, tuple(float(x) for x in point))

    def _uncached_lookup(self, table: str, dtype: str | None, select: tuple, axes: tuple, point: tuple) -> Measured:
        what = f"{table} {dtype}" if dtype else table
        if dtype is None:
            return Measured(None, f"no measured {table} for this number format")
        found = _nearest_grid(self, table, select, axes, what)
        if found is None:
            return Measured(None, f"no measured {what} on {self.system} {self.engine} for this shape")
        return _read(*found, point)


def _read(grid: Grid, label: str, point: tuple) -> Measured:
    """The grid's latency at `point`, labelled; outside what it covers, None with how far (measured_grid's rule)."""
    latency_ms, beyond = grid.lookup(point)
    if latency_ms is None:
        return Measured(None, f"outside {label}", beyond)
    return Measured(latency_ms * ms, label, beyond)


def _share_of_one_prompt(hit: Measured, prompts: float) -> Measured:
    """A prefill table's time for `prompts` below 1 (a chunk of one prompt): that share of the whole prompt's."""
    if prompts >= 1.0 or hit.latency_s is None:
        return hit
    return Measured(hit.latency_s * prompts, f"{hit.label}, {prompts:.2g} of one prompt", hit.beyond)


def _gqa_shape(dtype: str | None, heads: int, kv_heads: int, head_dim: int) -> tuple:
    """The rows of one layer shape: bf16 attention math (fp8 context FMHA is an engine option), the whole context."""
    return (("kv_cache_dtype", dtype), ("attn_dtype", "bfloat16"), ("num_heads", heads), ("num_key_value_heads", kv_heads),
            ("head_dim", head_dim), ("window_size", 0))


TWIN_TOLERANCE = 1.25  # the most two twins' all-reduce times may differ by, at every point both measured


@lru_cache(maxsize=64)
def _twins_agree(source: MeasuredSource, twin: str) -> bool:
    """Whether `source`'s engine all-reduce and its twin's agree within TWIN_TOLERANCE at every GPU count and
    message size both measured (in the version each answers with): TensorRT-LLM's and SGLang's on GB200 and GB300
    do (0.86-1.06x, 0.98-1.16x), vLLM's do not (0.59-2.8x)."""
    mine, theirs = _allreduce_points(source), _allreduce_points(MeasuredSource(twin, source.engine, source.version))
    shared = mine.index.intersection(theirs.index)
    ratio = mine[shared] / theirs[shared]
    return len(shared) > 0 and bool(ratio.between(1 / TWIN_TOLERANCE, TWIN_TOLERANCE).all())


def _allreduce_points(source: MeasuredSource):
    """The fastest bf16 all-reduce per (GPU count, message size) of the version the source answers with."""
    table = "custom_allreduce_perf"
    for version in _versions_in_order(source.system, source.engine, table, source.version):
        path = tables.table_path(source.system, source.engine, table, version)
        if path is not None:
            rows = tables.load_table(path)
            if "allreduce_dtype" in rows.columns:
                rows = rows[rows["allreduce_dtype"] == "bfloat16"]
            return rows.groupby(["num_gpus", "message_size"])["latency"].min()
    return pd.Series(dtype=float)


@lru_cache(maxsize=1 << 16)
def _cached_lookup(source: MeasuredSource, table: str, dtype: str | None, select: tuple, axes: tuple,
                   point: tuple) -> Measured:
    return source._uncached_lookup(table, dtype, select, axes, point)


@lru_cache(maxsize=4096)
def _nearest_grid(source: MeasuredSource, table: str, select: tuple, axes: tuple, what: str) -> tuple[Grid, str] | None:
    """The grid of the nearest measured version whose table holds the selection, with its label; None: none does."""
    for version in _versions_in_order(source.system, source.engine, table, source.version):
        grid = _grid(source.system, source.engine, table, version, select, axes)
        if grid is not None:
            return grid, (f"measured: {source.system} {source.engine} {version} {what} "
                          f"(aiconfigurator-core {tables.package_version()})")
    return None


@lru_cache(maxsize=1024)
def _versions_in_order(system: str, engine: str, table: str, asked: str | None) -> tuple[str, ...]:
    """Measured versions in the order they are tried (measured_tables.versions_to_try)."""
    current, queryable = tables.queryable_versions(system, engine)
    return tuple(tables.versions_to_try(list(tables.table_versions(system, engine, table)), asked, current, queryable))


@lru_cache(maxsize=4096)
def _grid(system: str, engine: str, table: str, version: str, select: tuple, axes: tuple) -> Grid | None:
    """The table's rows matching `select` ((column, value) pairs), as a grid over `axes` = (names, token axis)."""
    path = tables.table_path(system, engine, table, version)
    if path is None:
        return None
    rows = tables.load_table(path)
    mask = _matching(rows, select)
    if mask is None:
        return None
    names, token_axis = axes
    return Grid.from_frame(rows[mask], names, token_axis)


def _matching(rows, select: tuple):
    """The mask of a table's rows with every (column, value) of `select`, every expert equally loaded where the table
    says how they were loaded; None: the table lacks a selected column."""
    mask = None
    for column, value in select:
        if column not in rows.columns:
            return None
        hit = rows[column] == value
        mask = hit if mask is None else mask & hit
    if "distribution" in rows.columns:
        mask = mask & rows["distribution"].isin(BALANCED)
    return mask


@lru_cache(maxsize=1 << 14)
def _deepep_lookup(source: MeasuredSource, table: str, columns: tuple[str, ...], select: tuple,
                   tokens_per_rank: float) -> Measured:
    for version in _versions_in_order(source.system, source.engine, table, source.version):
        grid = _deepep_grid(source.system, source.engine, table, version, columns, select)
        if grid is not None:
            nodes = dict(select)["node_num"]
            return _read(grid, f"measured: {source.system} {source.engine} {version} {table} {'+'.join(columns)} over "
                               f"{nodes} x {DEEPEP_GPUS_PER_NODE} GPUs (aiconfigurator-core {tables.package_version()})",
                         (tokens_per_rank,))
    return Measured(None, f"no measured {table} on {source.system} {source.engine} for this shape and node count")


@lru_cache(maxsize=1024)
def _deepep_grid(system: str, engine: str, table: str, version: str, columns: tuple[str, ...],
                 select: tuple) -> Grid | None:
    """The rows of the system's own GPU (a table may hold another's) matching `select`, their `columns` summed in
    ms, as a grid over tokens per rank."""
    path = tables.table_path(system, engine, table, version)
    if path is None:
        return None
    rows = tables.load_table(path)
    gpu = system.split("_")[0].upper()  # h200_sxm -> H200, gb200 -> GB200: the GPU the table's device names
    if "device" in rows.columns:
        rows = rows[rows["device"].str.upper().str.contains(rf"\b{gpu}\b", regex=True)]
    mask = _matching(rows, select)
    if mask is None or not mask.any() or not set(columns) <= set(rows.columns):
        return None
    frame = rows[mask].assign(latency=rows[mask][list(columns)].sum(axis=1) / 1000.0)
    return Grid.from_frame(frame, ("num_token",), "num_token")


NCCL = "nccl"  # the nccl_perf tables' engine folder


@lru_cache(maxsize=4096)
def nccl(system: str, op: str, dtype: str, num_gpus: int, elements: float) -> Measured:
    """NCCL's `op` of `elements` of `dtype` (int8 or half) in all over `num_gpus` GPUs of `system`: the newest NCCL
    version that measured that many GPUs, interpolated over the message size (measured_grid's rule)."""
    select, axes = (("op_name", op), ("nccl_dtype", dtype), ("num_gpus", num_gpus)), (("message_size",), "message_size")
    for version in reversed(tables.table_versions(system, NCCL, "nccl_perf")):
        grid = _grid(system, NCCL, "nccl_perf", version, select, axes)
        if grid is not None:
            return _read(grid, f"measured: {system} NCCL {version} nccl_perf {op} {dtype} over {num_gpus} GPUs "
                               f"(aiconfigurator-core {tables.package_version()})", (max(float(elements), 1.0),))
    return Measured(None, f"no measured NCCL {op} over {num_gpus} GPUs on {system}")


@lru_cache(maxsize=64)
def source_for(device_name: str, engine: str, version: str | None) -> MeasuredSource | None:
    """The measured source of a catalog device and engine, or None where the package is absent or the device is
    not one NVIDIA measured."""
    system = tables.SYSTEMS.get(device_name)
    if system is None or tables.database_root() is None or engine not in tables.ENGINES:
        return None
    return MeasuredSource(system, engine, version)


@lru_cache(maxsize=4096)
def measured_anywhere(device_name: str, engine: str, table: str, select: tuple) -> bool:
    """Some measured version of `engine` on the device holds rows of `table` with every (column, value) of
    `select`: what the lookups above can answer at some coordinate (they try every version, nearest first)."""
    system = tables.SYSTEMS.get(device_name)
    if system is None:
        return False
    for version in tables.table_versions(system, engine, table):
        mask = _matching(tables.load_table(tables.table_path(system, engine, table, version)), select)
        if mask is not None and mask.any():
            return True
    return False
