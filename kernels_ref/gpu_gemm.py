"""The block-scaled fp8 GEMM on a GPU: which implementations a GPU may run, and their host-side arguments.

# M = tokens, N = output features, K = input features

Two implementations, chosen per shape class by timing them at first use (kernels_ref.autotune, as on a CPU),
never by a threshold tuned on one GPU:

- "scaled_mm": PyTorch's `torch.nn.functional.scaled_mm` with the DeepSeek-V3 / Kimi K2 checkpoints' own
  scaling, 1x128 activation groups (ScalingType.BlockWise1x128) times 128x128 weight blocks (BlockWise128x128),
  fp32 accumulation in cuBLAS: one call per expert. A candidate where the GPU has fp8 tensor cores (compute
  capability 8.9 and up: Ada, Hopper, Blackwell), this PyTorch exposes the blockwise recipes, and N and K are
  whole 128-blocks (the recipes' scale shapes count whole blocks).
- "tiles": kernels_ref.fp8_gemm's dequantise-then-bf16-GEMM path, which runs anywhere.

A candidate that raises when first run (a cuBLAS without blockwise fp8 for this GPU, a shape it refuses) is
dropped before timing (`runnable`). The operands' layouts are the ones torch's own checks ask for
(torch/_meta_registrations.py, `_check_scaled_mm_sizes_v2`, the 1x128 x 128x128 case): `mat_a` row-major,
`mat_b` column-major, `scale_a` [M, K/128] with strides [1, M] and `scale_b` [L4, N/128] with strides [1, L4],
where L4 is K/128 rounded up to a multiple of 4. The tests check them against those checks on meta tensors;
no GPU ran this module when it was written (issue 24: no GPU was lent to that session).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kernels_ref.fp8 import BLOCK, ceil_div

SCALED_MM = "scaled_mm"
TILES = "tiles"
FP8_TENSOR_CORES = (8, 9)  # the first compute capability with fp8 tensor cores (Ada, sm_89)
_SCALE_ROWS_MULTIPLE = 4  # scale_b's K/128 dimension is padded to a multiple of 4 (L4)


@dataclass(frozen=True)
class GpuInfo:
    name: str
    capability: tuple[int, int]  # CUDA compute capability (major, minor)
    blockwise_scaled_mm: bool  # this PyTorch has F.scaled_mm with the BlockWise1x128 / BlockWise128x128 recipes


def blockwise_scaled_mm_available() -> bool:
    """Whether this PyTorch exposes the blockwise fp8 recipes (F.scaled_mm and ScalingType.BlockWise*)."""
    recipes = getattr(F, "ScalingType", None)
    return hasattr(F, "scaled_mm") and all(hasattr(recipes, r) for r in ("BlockWise1x128", "BlockWise128x128"))


def gpu_info(device: torch.device | str) -> GpuInfo:
    """The GPU of a CUDA device (reads the driver: call it at the edge, once per device)."""
    device = torch.device(device)
    return GpuInfo(torch.cuda.get_device_name(device), tuple(torch.cuda.get_device_capability(device)),
                   blockwise_scaled_mm_available())


def gpu_candidates(info: GpuInfo, n: int, k: int) -> list[str]:
    """The implementations worth timing for an [N, K] weight on this GPU; "tiles" always."""
    whole_blocks = n % BLOCK == 0 and k % BLOCK == 0
    scaled = info.blockwise_scaled_mm and info.capability >= FP8_TENSOR_CORES and whole_blocks
    return [SCALED_MM, TILES] if scaled else [TILES]


@dataclass(frozen=True)
class ScaledMmOperands:
    mat_a: torch.Tensor  # [M, K] fp8, row-major
    mat_b: torch.Tensor  # [K, N] fp8, column-major (the weight [N, K] transposed, no copy)
    scale_a: torch.Tensor  # [M, K/128] fp32, strides [1, M]
    scale_b: torch.Tensor  # [L4, N/128] fp32, strides [1, L4]


def scaled_mm_operands(x_q: torch.Tensor, x_scale: torch.Tensor, w_q: torch.Tensor,
                       w_scale: torch.Tensor) -> ScaledMmOperands:
    """x_q: [M, K] fp8, x_scale: [M, K/128] (1x128 groups); w_q: [N, K] fp8, w_scale: [N/128, K/128] (128x128
    blocks) -> the operands of one expert's F.scaled_mm, laid out as torch's checks ask (the module docstring)."""
    (m, k), n = x_q.shape, w_q.shape[0]
    assert n % BLOCK == 0 and k % BLOCK == 0, "the blockwise recipes count whole 128-blocks"
    assert x_scale.shape == (m, k // BLOCK) and w_scale.shape == (n // BLOCK, k // BLOCK)
    k_blocks = k // BLOCK
    l4 = ceil_div(k_blocks, _SCALE_ROWS_MULTIPLE) * _SCALE_ROWS_MULTIPLE
    # 1. scale_a column-major, strides [1, M] set outright: t().contiguous().t() keeps [K/128, 1] for M = 1, as a
    #    dimension of size 1 counts as contiguous whatever its stride, and torch's check reads the stride
    scale_a = torch.empty_strided((m, k_blocks), (1, max(m, 1)), dtype=torch.float32, device=x_scale.device)
    scale_a.copy_(x_scale)
    # 2. scale_b: each N-block's K-block scales contiguous, padded to L4 with zeros (blocks that do not exist)
    padded = torch.zeros(n // BLOCK, l4, dtype=torch.float32, device=w_scale.device)
    padded[:, :k_blocks] = w_scale
    return ScaledMmOperands(x_q.contiguous(), w_q.contiguous().t(), scale_a, padded.t())


def gemm_scaled_mm(x_q: torch.Tensor, x_scale: torch.Tensor, w_q: torch.Tensor, w_scale: torch.Tensor,
                   out_dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """One expert, [M, K] x [N, K] -> [M, N] out_dtype, through F.scaled_mm's blockwise recipes."""
    ops = scaled_mm_operands(x_q, x_scale, w_q, w_scale)
    y = F.scaled_mm(ops.mat_a, ops.mat_b, ops.scale_a, F.ScalingType.BlockWise1x128, ops.scale_b,
                    F.ScalingType.BlockWise128x128, output_dtype=torch.bfloat16)
    return y.to(out_dtype)


def runnable(calls: Mapping[str, Callable[[], object]]) -> dict[str, Callable[[], object]]:
    """The calls that run once without an error (the rest cannot run here: dropped before timing). "tiles", the
    path that runs anywhere, is kept whatever happens, so the choice is never empty."""
    kept = {}
    for name, call in calls.items():
        if name == TILES:
            kept[name] = call
            continue
        try:
            call()
        except (RuntimeError, ValueError, NotImplementedError):  # what torch raises for an unsupported recipe or GPU
            continue
        kept[name] = call
    return kept
