"""Number formats: one dtype table, block-scaled quantisation schemes, and per-part precision plans.

Bytes per element are floats (fp4 = 0.5): never a literal 2 for bf16 anywhere else in the code.
A quantisation scheme adds one scale of `scale_bytes` per block of `block_rows x block_cols`
weight elements (block_cols = 0 means a whole row, i.e. per output channel).
"""

from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import dataclass, replace
from typing import Mapping

from hwmodels.errors import InputError, excerpt, nearest_names


@dataclass(frozen=True)
class DType:
    name: str
    bytes_per_element: float
    peak: str  # which of a device's peak FLOP/s rates a matmul in this dtype runs at


DTYPES: Mapping[str, DType] = {
    d.name: d
    for d in (
        DType("fp32", 4.0, "fp32"),
        DType("bf16", 2.0, "bf16"),
        DType("fp16", 2.0, "bf16"),
        DType("fp8", 1.0, "fp8"),
        DType("int8", 1.0, "int8"),
        DType("int4", 0.5, "int4"),
        DType("fp4", 0.5, "fp4"),
    )
}


@dataclass(frozen=True)
class QuantScheme:
    """How one weight matrix is stored: element dtype plus block scales."""

    name: str
    dtype: DType
    block_rows: int = 0  # 0 rows and 0 cols: no scales at all
    block_cols: int = 0
    scale_bytes: float = 0.0
    description: str = ""
    compute: str = ""  # the dtype its GEMMs run in, where not the stored one (W4A8: int4 weights, fp8 math)

    @property
    def compute_dtype(self) -> str:
        """The dtype its GEMMs run in: its own where it names one (W4A8, weight-only fp4), bf16 for int4 (weight-only,
        dequantised in the kernel), else its element's."""
        return self.compute or ("bf16" if self.dtype.name == "int4" else self.dtype.name)

    def matrix_bytes(self, rows: int, cols: int) -> float:
        """Bytes of a [rows, cols] matrix including its scales (partial blocks get a full scale)."""
        data = rows * cols * self.dtype.bytes_per_element
        if self.scale_bytes == 0.0:
            return data
        row_blocks = math.ceil(rows / self.block_rows) if self.block_rows else rows
        col_blocks = math.ceil(cols / self.block_cols) if self.block_cols else 1
        return data + row_blocks * col_blocks * self.scale_bytes


SCHEMES: Mapping[str, QuantScheme] = {
    s.name: s
    for s in (
        QuantScheme("fp32", DTYPES["fp32"], description="fp32, unquantised"),
        QuantScheme("bf16", DTYPES["bf16"], description="bf16, unquantised"),
        QuantScheme("fp16", DTYPES["fp16"], description="fp16, unquantised"),
        QuantScheme(
            "fp8", DTYPES["fp8"], 128, 128, 4.0,
            "fp8 e4m3 with one fp32 scale per 128x128 block (DeepSeek-V3 / Kimi K2 checkpoints)",
        ),
        QuantScheme(
            "fp8_tensor", DTYPES["fp8"], 0, 0, 0.0,
            "fp8 e4m3 with one scale per tensor (TensorRT-LLM's FP8 checkpoints; its bytes are negligible)",
        ),
        QuantScheme(
            "int8", DTYPES["int8"], 1, 0, 4.0,
            "int8 W8A8 with one fp32 scale per output channel",
        ),
        QuantScheme(
            "int4", DTYPES["int4"], 1, 32, 2.0,
            "int4 symmetric, one bf16 scale per group of 32 (compressed-tensors pack-quantized, Kimi K2.5)",
        ),
        QuantScheme(
            "w4a8", DTYPES["int4"], 1, 128, 2.0,
            "int4 weights with one bf16 scale per group of 128, fp8 activations (TensorRT-LLM W4A8 AWQ)", compute="fp8",
        ),
        QuantScheme(
            "mxfp4", DTYPES["fp4"], 1, 32, 1.0,
            "fp4 e2m1 with one e8m0 scale per group of 32 (OCP microscaling)",
        ),
        QuantScheme(
            "nvfp4", DTYPES["fp4"], 1, 16, 1.0,
            "fp4 e2m1 with one fp8 e4m3 scale per group of 16 (NVIDIA NVFP4)",
        ),
        # 4-bit floats where the device has no fp4 math (Hopper): the kernel dequantises the weights to bf16
        QuantScheme(
            "mxfp4_w4a16", DTYPES["fp4"], 1, 32, 1.0,
            "MXFP4 weights dequantised to bf16 in the kernel (weight-only)", compute="bf16",
        ),
        QuantScheme(
            "nvfp4_w4a16", DTYPES["fp4"], 1, 16, 1.0,
            "NVFP4 weights dequantised to bf16 in the kernel (weight-only)", compute="bf16",
        ),
    )
}

# Parts of a model whose weights a precision plan sets independently.
WEIGHT_PARTS = ("routed_experts", "shared_experts", "dense_mlp", "attention", "router", "embedding", "lm_head", "norms")
# Parts that are activations or caches, stored as plain dtypes.
ACTIVATION_PARTS = ("kv_cache", "dispatch", "combine")


def scheme(name: str, field_name: str = "precision") -> QuantScheme:
    try:
        return SCHEMES[name]
    except KeyError:
        raise InputError(field_name, f"unknown number format '{name}'", nearest_names(name, SCHEMES)) from None


def dtype(name: str, field_name: str = "precision") -> DType:
    try:
        return DTYPES[name]
    except KeyError:
        raise InputError(field_name, f"unknown dtype '{name}'", nearest_names(name, DTYPES)) from None


@dataclass(frozen=True)
class PrecisionPlan:
    """The format of each part. `source` says where the defaults came from (the config's quantization_config)."""

    weights: Mapping[str, QuantScheme]
    kv_cache: DType
    dispatch: DType
    combine: DType
    source: str = ""

    def of(self, part: str) -> QuantScheme:
        return self.weights[part]

    def label(self) -> str:
        """Short name for messages: 'fp8', or 'int4 experts + bf16' for mixed plans."""
        experts = self.weights["routed_experts"].name
        rest = {s.name for p, s in self.weights.items() if p not in ("routed_experts", "router", "norms", "embedding", "lm_head")}
        if rest == {experts}:
            return experts
        return f"{experts} experts + {'/'.join(sorted(rest))}"

    def with_overrides(self, overrides: Mapping[str, str], field_prefix: str = "precision") -> "PrecisionPlan":
        """Apply user choices like {'routed_experts': 'nvfp4', 'kv_cache': 'fp8'}."""
        weights = dict(self.weights)
        activations = {"kv_cache": self.kv_cache, "dispatch": self.dispatch, "combine": self.combine}
        for part, name in overrides.items():
            where = f"{field_prefix}.{part}"
            if part in WEIGHT_PARTS:
                weights[part] = scheme(name, where)
            elif part in ACTIVATION_PARTS:
                activations[part] = dtype(name, where)
            else:
                raise InputError(where, "not a part of a model", nearest_names(part, WEIGHT_PARTS + ACTIVATION_PARTS))
        source = self.source + (f"; overridden: {', '.join(f'{k}={v}' for k, v in overrides.items())}" if overrides else "")
        return replace(self, weights=weights, source=source, **activations)


def default_plan(quantization_config: Mapping | None, torch_dtype: str = "bfloat16") -> PrecisionPlan:
    """The precision the checkpoint ships in, read from its HuggingFace `quantization_config`.

    - `quant_method: fp8` with `weight_block_size: [128, 128]` (DeepSeek-V3, Kimi K2): every linear
      layer of the decoder in block fp8; embedding, LM head, router and norms stay in `torch_dtype`.
    - `quant_method: mxfp4` (gpt-oss): the routed experts in MXFP4, everything else in `torch_dtype`.
    - `quant_method: compressed-tensors` (Kimi K2.5 / K2-Thinking int4 QAT, Kimi K3 mxfp4-pack-quantized, NVFP4):
      the weight format of its config group applies to every linear layer not matched by its `ignore` list.
    - no quantization_config: everything in `torch_dtype`.
    KV cache defaults to the unquantised dtype; dispatch fp8 and combine bf16 as DeepEP does when
    the experts are fp8, else both unquantised.
    """
    base_name = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}.get(torch_dtype or "bfloat16", "bf16")
    base = SCHEMES[base_name]
    linear_parts = ("routed_experts", "shared_experts", "dense_mlp", "attention")
    weights = {p: base for p in WEIGHT_PARTS}
    dispatch = combine = DTYPES[base_name]
    if not quantization_config:
        return PrecisionPlan(weights, DTYPES[base_name], dispatch, combine, f"unquantised {base_name} checkpoint")

    method = quantization_config.get("quant_method")
    if method == "fp8":
        block = list(quantization_config.get("weight_block_size") or [])
        if block != [128, 128]:
            raise InputError(
                "config.json quantization_config.weight_block_size",
                f"fp8 block {block} is not supported (only 128x128)",
                "set the precision of each part explicitly in the spec",
            )
        for p in linear_parts:
            weights[p] = SCHEMES["fp8"]
        source = "config.json quantization_config: fp8 e4m3, 128x128 blocks"
        if quantization_config.get("moe_quant_algo") == "NVFP4":  # ModelOpt's mixed checkpoints (DeepSeek-V4-*-NVFP4)
            weights["routed_experts"] = SCHEMES["nvfp4"]
            source += "; moe_quant_algo NVFP4: nvfp4 routed experts"
        elif quantization_config.get("expert_dtype") == "fp4":  # DeepSeek-V4: routed experts in fp4, groups of 32
            weights["routed_experts"] = SCHEMES["mxfp4"]
            source += "; expert_dtype fp4: mxfp4 routed experts"
        dispatch = DTYPES["fp8"]
    elif method == "mxfp4":
        # gpt-oss: the routed experts in MXFP4; `modules_to_not_convert` (attention, router, embedding, LM head)
        # and the rest stay in the checkpoint dtype
        weights["routed_experts"] = SCHEMES["mxfp4"]
        kept = ", ".join(m for m in quantization_config.get("modules_to_not_convert") or [] if isinstance(m, str))
        source = f"config.json quantization_config: mxfp4 routed experts; {base_name} elsewhere ({kept or 'all else'})"
    elif method == "compressed-tensors":
        fmt = _compressed_tensors_scheme(quantization_config)
        ignored = _ignore_patterns(quantization_config.get("ignore"))
        # A representative module name of each part, matched against the ignore patterns.
        for p, module in _PROBES.items():
            if not any(re.fullmatch(pat, module) or pat == module for pat in ignored):
                weights[p] = fmt
        ignored_text = ", ".join(quantization_config.get("ignore") or []) or "nothing"
        source = f"config.json quantization_config: compressed-tensors {fmt.name} except {ignored_text}"
    elif method == "modelopt":
        # NVIDIA ModelOpt checkpoints (nvidia/*-NVFP4): the group's format on every linear layer whose module name
        # matches none of the `ignore` globs; the multimodal wrappers prefix the names with `language_model.`
        fmt = _compressed_tensors_scheme(quantization_config)
        globs = [g for g in quantization_config.get("ignore") or [] if isinstance(g, str)]
        for p, module in _PROBES.items():
            names = (module, f"language_model.{module}", f"model.language_model.{module.removeprefix('model.')}")
            if not any(fnmatch.fnmatchcase(n, g) for n in names for g in globs):
                weights[p] = fmt
        source = f"config.json quantization_config: modelopt {fmt.name} except {len(globs)} ignored module globs"
    else:
        raise InputError(
            "config.json quantization_config.quant_method",
            f"'{method}' is not a format moeplan reads",
            "set the precision of each part explicitly in the spec (precision.routed_experts: fp8, ...)",
        )
    return PrecisionPlan(weights, DTYPES[base_name], dispatch, combine, source)


# A representative module name of each part, matched against a checkpoint's ignore patterns.
_PROBES = {
    "routed_experts": "model.layers.5.mlp.experts.0.gate_proj",
    "shared_experts": "model.layers.5.mlp.shared_experts.gate_proj",
    "dense_mlp": "model.layers.0.mlp.gate_proj",
    "attention": "model.layers.5.self_attn.q_a_proj",
}


def _compressed_tensors_scheme(qc: Mapping) -> QuantScheme:
    groups = qc.get("config_groups") or {}
    group = next(iter(groups.values()), None) if isinstance(groups, Mapping) and len(groups) == 1 else None
    weights = group.get("weights") if isinstance(group, Mapping) else None
    if not isinstance(weights, Mapping):
        raise InputError("config.json quantization_config.config_groups", f"expected one group with its weights, found "
                         f"{excerpt(groups)}", "set the precision of each part explicitly in the spec")
    bits, kind, group = weights.get("num_bits"), weights.get("type"), weights.get("group_size")
    inputs = (next(iter(groups.values())).get("input_activations") or {}) if groups else {}
    if (bits, kind) == (4, "int") and isinstance(inputs, Mapping) and inputs.get("num_bits") == 8:
        return SCHEMES["w4a8"]  # int4 weights, 8-bit activations: the GEMMs run in fp8
    if (bits, kind, group) == (4, "int", 32):
        return SCHEMES["int4"]
    if (bits, kind, group) == (4, "float", 32):  # Kimi K3: format mxfp4-pack-quantized, uint8 (e8m0) scales
        return SCHEMES["mxfp4"]
    if (bits, kind, group) == (4, "float", 16):  # NVIDIA ModelOpt NVFP4 checkpoints
        return SCHEMES["nvfp4"]
    if (bits, kind) == (8, "int"):
        return SCHEMES["int8"]
    if (bits, kind) == (8, "float"):  # ModelOpt FP8: one scale per tensor; compressed-tensors' block strategy: 128 x 128
        return SCHEMES["fp8" if weights.get("strategy") == "block" else "fp8_tensor"]
    raise InputError("config.json quantization_config.config_groups", f"weights {bits}-bit {kind} group {group} not supported",
                     "set the precision of each part explicitly in the spec")


def _ignore_patterns(raw) -> list[str]:
    """compressed-tensors' `ignore`: module names and "re:" patterns, checked before they run (a repeated group can
    backtrack for ever even on a short module name)."""
    field = "config.json quantization_config.ignore"
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(p, str) for p in raw) or len(raw) > 10_000:
        raise InputError(field, f"is {excerpt(raw)}", "a list of module names or 're:' patterns, or leave it out")
    patterns = [re.sub(r"^re:", "", p) for p in raw]
    for pattern in patterns:
        if len(pattern) > 500 or re.search(r"\)[*+{]", pattern):
            raise InputError(field, f"pattern {excerpt(pattern)} is too long or repeats a group",
                             "a module name or a pattern of at most 500 characters without a repeated group")
        try:
            re.compile(pattern)
        except re.error as e:
            raise InputError(field, f"pattern {excerpt(pattern)} is not a regular expression: {e}",
                             "fix the pattern, or give the module name") from None
    return patterns
