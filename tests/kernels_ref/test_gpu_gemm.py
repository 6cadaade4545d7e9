"""The GPU path's host-side logic (kernels_ref.gpu_gemm), on a CPU: which candidates a GPU gets, the operands'
layouts against torch's own shape and stride checks (meta tensors run them without a GPU), and that a candidate
which cannot run here is dropped before timing. No GPU ran these: issue 24's session had none."""

import pytest
import torch
import torch.nn.functional as F

from kernels_ref import GemmPath, fp8_grouped_gemm
from kernels_ref.fp8 import quantize_activation_groups, quantize_weight_blocks
from kernels_ref.gpu_gemm import (
    SCALED_MM,
    TILES,
    GpuInfo,
    blockwise_scaled_mm_available,
    gemm_scaled_mm,
    gpu_candidates,
    runnable,
    scaled_mm_operands,
)

H100 = GpuInfo("NVIDIA H100 80GB HBM3", (9, 0), True)
KIMI_HIDDEN, KIMI_EXPERT_WIDTH = 7168, 2048


def _operands(m: int, n: int, k: int, device: str = "cpu"):
    g = torch.Generator().manual_seed(0)
    x_q, x_scale = quantize_activation_groups(torch.randn(m, k, generator=g))
    w_q, w_scale = quantize_weight_blocks(torch.randn(n, k, generator=g) * 0.02)
    return [t.to(device) for t in (x_q, x_scale, w_q, w_scale)]


def test_candidates_follow_the_gpu_and_the_shape():
    assert gpu_candidates(H100, 2 * KIMI_EXPERT_WIDTH, KIMI_HIDDEN) == [SCALED_MM, TILES]
    assert gpu_candidates(GpuInfo("L40S", (8, 9), True), 4096, 7168) == [SCALED_MM, TILES]  # Ada: fp8 tensor cores
    assert gpu_candidates(GpuInfo("A100", (8, 0), True), 4096, 7168) == [TILES]  # no fp8 tensor cores
    assert gpu_candidates(GpuInfo("H100, old torch", (9, 0), False), 4096, 7168) == [TILES]
    assert gpu_candidates(H100, 4096, 7168 + 64) == [TILES]  # a ragged K block: the recipes count whole blocks


@pytest.mark.skipif(not blockwise_scaled_mm_available(), reason="this PyTorch has no blockwise scaled_mm")
@pytest.mark.parametrize("m", [1, 5, 128])
def test_operands_pass_torchs_own_checks(m):
    x_q, x_scale, w_q, w_scale = _operands(m, 256, KIMI_HIDDEN, "meta")
    ops = scaled_mm_operands(x_q, x_scale, w_q, w_scale)
    k_blocks, l4 = KIMI_HIDDEN // 128, 56  # 56 is already a multiple of 4
    assert ops.scale_a.shape == (m, k_blocks) and ops.scale_a.stride()[0] == 1
    assert ops.scale_b.shape == (l4, 2) and ops.scale_b.stride() == (1, l4)
    assert ops.mat_b.shape == (KIMI_HIDDEN, 256) and ops.mat_b.stride() == (1, KIMI_HIDDEN)
    y = gemm_scaled_mm(x_q, x_scale, w_q, w_scale, torch.float32)
    assert y.shape == (m, 256) and y.dtype == torch.float32
    # the same call with a row-major activation scale is refused by those checks (they are not vacuous)
    with pytest.raises(RuntimeError, match="blockwise scaling"):
        F.scaled_mm(ops.mat_a, ops.mat_b, ops.scale_a.contiguous() if m > 1 else ops.scale_a.t(),
                    F.ScalingType.BlockWise1x128, ops.scale_b, F.ScalingType.BlockWise128x128)


@pytest.mark.skipif(not blockwise_scaled_mm_available(), reason="this PyTorch has no blockwise scaled_mm")
def test_weight_scales_pad_to_a_multiple_of_four_blocks():
    k = 5 * 128  # 5 K-blocks: padded to 8
    x_q, x_scale, w_q, w_scale = _operands(3, 128, k)
    ops = scaled_mm_operands(x_q, x_scale, w_q, w_scale)
    assert ops.scale_b.shape == (8, 1) and ops.scale_b.stride() == (1, 8)
    assert torch.equal(ops.scale_b[:5, 0], w_scale[0]) and not ops.scale_b[5:].any()
    assert torch.equal(ops.scale_a, x_scale)  # the same values, column-major
    meta = [t.to("meta") for t in (x_q, x_scale, w_q, w_scale)]
    assert gemm_scaled_mm(*meta).shape == (3, 128)


def test_a_candidate_that_cannot_run_here_is_dropped_before_timing():
    """On a CPU, torch refuses the blockwise recipes (a real refusal, as an older cuBLAS gives on a GPU)."""
    args = _operands(2, 128, 256)
    kept = runnable({SCALED_MM: lambda: gemm_scaled_mm(*args), TILES: lambda: None})
    assert list(kept) == [TILES]
    kept = runnable({SCALED_MM: lambda: None, TILES: lambda: None})
    assert list(kept) == [SCALED_MM, TILES]


def test_forcing_scaled_mm_names_the_torch_refusal_on_a_cpu():
    x_q, x_scale, w_q, w_scale = _operands(4, 128, 256)
    with pytest.raises((RuntimeError, ValueError)):
        fp8_grouped_gemm(x_q, x_scale, [0, 4], w_q[None], w_scale[None], path=GemmPath.SCALED_MM)
