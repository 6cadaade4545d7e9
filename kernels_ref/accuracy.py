"""The one error metric for every kernel, and the tolerance of each precision."""

import torch

# calc_diff bounds against an fp32 reference.
TOLERANCE = {
    "fp32": 1e-10,
    "bf16": 1e-4,
    # One GEMM with fp8 activations and fp8 weights, against x @ w.T of the unquantised fp32
    # tensors (DeepGEMM's bar): rounding to 3 mantissa bits costs about 3e-4 per operand.
    "fp8_gemm": 1e-3,
    # Experts (gate/up, SwiGLU, down) and the MoE layer, against fp32 arithmetic on the
    # checkpoint's weights: a DeepSeek-V3 / Kimi K2 checkpoint stores its experts as fp8 blocks,
    # so those dequantised blocks are the model and the kernel's own error is its two activation
    # quantisations (x, and the SwiGLU output before the down projection): 9.5e-4 measured at
    # Kimi K2's shapes.
    "fp8_swiglu": 1e-3,
    # The same against weights never rounded to fp8 (what quantising a bf16 model would cost):
    # four operands rounded, 2.0e-3 measured.
    "fp8_swiglu_with_weight_rounding": 3e-3,
}


def calc_diff(x: torch.Tensor, y: torch.Tensor) -> float:
    """1 - 2 sum(x y) / sum(x x + y y), in float64: 0 for equal tensors, about half the squared
    relative error for close ones, and blind to neither scale nor sign."""
    x, y = x.double(), y.double()
    denominator = (x * x + y * y).sum()
    return float(1 - 2 * (x * y).sum() / denominator) if denominator > 0 else 0.0
