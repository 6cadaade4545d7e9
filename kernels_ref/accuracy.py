"""The one error metric for every kernel, and the tolerance of each precision."""

import torch

# calc_diff bounds against an fp32 reference computed from the unquantised inputs.
TOLERANCE = {
    "fp32": 1e-10,
    "bf16": 1e-4,
    # One GEMM with fp8 activations and fp8 weights (DeepGEMM's bar): rounding to 3 mantissa
    # bits costs about 3e-4 per quantised operand.
    "fp8_gemm": 1e-3,
    # Two chained GEMMs (gate/up, SwiGLU, down) quantise four operands: x, w13, the SwiGLU
    # output and w2. fp32 arithmetic on those quantised values already measures 2.0e-3, and
    # quantising only the two weights 1.05e-3, so 1e-3 is out of reach for any fp8 kernel.
    "fp8_swiglu": 3e-3,
}


def calc_diff(x: torch.Tensor, y: torch.Tensor) -> float:
    """1 - 2 sum(x y) / sum(x x + y y), in float64: 0 for equal tensors, about half the squared
    relative error for close ones, and blind to neither scale nor sign."""
    x, y = x.double(), y.double()
    denominator = (x * x + y * y).sum()
    return float(1 - 2 * (x * y).sum() / denominator) if denominator > 0 else 0.0
