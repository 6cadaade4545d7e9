"""Reference fp8 MoE kernels in PyTorch (CPU always, CUDA when present), their fp32 references
and a benchmark harness. Standalone: imports nothing from the rest of the project.

Modules: fp8 (block-scaled e4m3 quantisation), fp8_gemm (block-scaled grouped GEMM: PyTorch
tiles, or native CPU kernels), native_cpu (builds the C kernels of csrc/ for this CPU's ISA),
autotune (picks an implementation per shape class by timing it, cached per machine),
grouped_gemm (SwiGLU experts), glue_calls and expert_calls (the glue kernels and the experts' MLP as
prepared calls: native kernels bound once on buffers sized once), dispatch (permute and combine), mla_decode (absorbed MLA),
moe_layer (router and the full layer), accuracy (calc_diff and tolerances), generators (inputs
and fp32 references), roofline and timing, and bench (`kernels_ref.bench.run_benchmarks`,
`write_csv`, `python -m kernels_ref.bench`).
"""

from kernels_ref import autotune, native_cpu
from kernels_ref.accuracy import TOLERANCE, calc_diff
from kernels_ref.dispatch import DispatchPlan, combine, dispatch, plan_dispatch
from kernels_ref.fp8 import (
    BLOCK,
    FP8_E4M3_MAX,
    dequantize_activation_groups,
    dequantize_weight_blocks,
    fp8_e4m3_to_bf16,
    quantize_activation_groups,
    quantize_weight_blocks,
)
from kernels_ref.fp8_gemm import GemmPath, choose_gemm_path, fp8_block_gemm, fp8_grouped_gemm, gemm_choice
from kernels_ref.grouped_gemm import (
    ExpertWeights,
    Fp8ExpertWeights,
    dequantize_expert_weights,
    grouped_swiglu_fp8,
    grouped_swiglu_reference,
    masked_swiglu_fp8,
    quantize_expert_weights,
    swiglu_reference,
)
from kernels_ref.mla_decode import MlaDecodeInputs, mla_decode_absorbed, mla_decode_reference
from kernels_ref.moe_layer import Router, moe_layer_fp8, moe_layer_reference, route_noaux_tc

__all__ = [
    "BLOCK",
    "FP8_E4M3_MAX",
    "TOLERANCE",
    "DispatchPlan",
    "ExpertWeights",
    "Fp8ExpertWeights",
    "dequantize_expert_weights",
    "GemmPath",
    "MlaDecodeInputs",
    "Router",
    "autotune",
    "calc_diff",
    "choose_gemm_path",
    "combine",
    "dequantize_activation_groups",
    "dequantize_weight_blocks",
    "dispatch",
    "fp8_block_gemm",
    "fp8_e4m3_to_bf16",
    "fp8_grouped_gemm",
    "gemm_choice",
    "grouped_swiglu_fp8",
    "grouped_swiglu_reference",
    "masked_swiglu_fp8",
    "mla_decode_absorbed",
    "mla_decode_reference",
    "moe_layer_fp8",
    "native_cpu",
    "moe_layer_reference",
    "plan_dispatch",
    "quantize_activation_groups",
    "quantize_expert_weights",
    "quantize_weight_blocks",
    "route_noaux_tc",
    "swiglu_reference",
]
