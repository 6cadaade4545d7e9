"""Block-scaled fp8 GEMM: y = (x_q * x_scale) @ (w_q * w_scale).T, fp32 accumulation.

Grouped over experts (a variable number of token rows each, empty experts allowed); two
implementations, chosen explicitly by `GemmPath` (or per expert by `choose_gemm_path` from its
token count and the device):

- TILES (any device): the activations are dequantised to bf16 once; the weight is dequantised
  to bf16 in tiles of `TILE_ROWS` rows and each tile feeds a bf16 GEMM while it is still in
  cache. The fp8 -> bf16 step is the bit move of `fp8.fp8_e4m3_to_bf16` (three vectorised
  integer passes) and one bf16 multiply by the block scale: never the element-by-element
  `.to()`, never fp32, never the whole weight at once. With hundreds of tokens per expert the
  GEMM dominates and this runs close to the device's bf16 matmul rate (on a 2-core Zen 4, 80 to
  90% of it at 512 to 2048 tokens per expert).
- NATIVE_CPU (AVX-512 BF16 CPUs): up to NATIVE_MAX_TOKENS tokens per expert, a fused kernel
  that reads each fp8 weight byte once, all experts in one call (see `native_cpu`).
"""

import enum

import torch

from kernels_ref import native_cpu
from kernels_ref.fp8 import BF16_BITS_UNSCALE, BLOCK, ceil_div, fp8_e4m3_to_bf16

# Rows of weight dequantised per tile: 512 x 7168 bf16 is 7 MiB, in a server's last-level cache,
# and wide enough for an efficient GEMM.
TILE_ROWS = 512
# Up to this many tokens per expert the native kernel beats the tile path: on a 2-core Zen 4,
# grouped SwiGLU over 4 Kimi K2 experts ran at 281 against 178 GFLOP/s with 192 tokens each,
# 274 against 257 with 256, and 269 against 288 with 384.
NATIVE_MAX_TOKENS = 256


class GemmPath(enum.Enum):
    TILES = "tiles"
    NATIVE_CPU = "native_cpu"


def choose_gemm_path(tokens: int, device: torch.device | str) -> GemmPath:
    """NATIVE_CPU up to NATIVE_MAX_TOKENS tokens on a CPU that can run it, TILES otherwise."""
    on_cpu = torch.device(device).type == "cpu"
    if on_cpu and tokens <= NATIVE_MAX_TOKENS and native_cpu.load() is not None:
        return GemmPath.NATIVE_CPU
    return GemmPath.TILES


def dequantize_to_bf16(
    q: torch.Tensor, scale: torch.Tensor, block_rows: int, out: torch.Tensor | None = None
) -> torch.Tensor:
    """q * scale in bf16, zero-padded to whole blocks: the bit move, then one multiply.

    q: [R, K] fp8; scale: [ceil(R/block_rows), ceil(K/128)] (block_rows = 128 for a weight,
    1 for per-token activation groups). Returns [Rp, Kp] bf16 with Rp = ceil(R/block_rows) *
    block_rows and Kp = ceil(K/128) * 128. out: a bf16 buffer of at least Rp * Kp elements,
    reused across tiles (the result is then a view of it).

    The bit move gives q * 2**-120, so the multiply is by scale * 2**120, rounded to bf16 (a
    relative error near 2**-9 per block, far inside fp8's). Above scale = 2**7 that factor would
    overflow bf16; such tensors (|values| over 57,000, not seen in real weights or normalised
    activations) take one more pass that restores q first.
    """
    r, k = q.shape
    rb, kb = ceil_div(r, block_rows), ceil_div(k, BLOCK)
    rp, kp = rb * block_rows, kb * BLOCK
    if out is None:
        out = torch.empty(rp, kp, dtype=torch.bfloat16, device=q.device)
    out = out.view(-1)[: rp * kp].view(rp, kp)
    if (rp, kp) == (r, k):
        bits = fp8_e4m3_to_bf16(q, out=out)
    else:
        out.zero_()
        bits = out[:r, :k]
        bits.copy_(fp8_e4m3_to_bf16(q))
    factor = scale * BF16_BITS_UNSCALE
    if float(scale.amax()) >= 2.0**7:
        bits.mul_(BF16_BITS_UNSCALE)
        factor = scale
    out.view(rb, block_rows, kb, BLOCK).mul_(factor.to(torch.bfloat16).view(rb, 1, kb, 1))
    return out


def _gemm_tiles(x_q, x_scale, w_q, w_scale, out_dtype):
    """One expert: [M, K] x [N, K] -> [M, N] out_dtype."""
    m, n = x_q.shape[0], w_q.shape[0]
    x = dequantize_to_bf16(x_q, x_scale, block_rows=1)  # [M, Kp]
    # one buffer for every tile, with room for a ragged last row block
    tile = torch.empty(min(n, TILE_ROWS) + BLOCK, x.shape[1], dtype=torch.bfloat16, device=x.device)
    y = torch.empty(m, n, dtype=out_dtype, device=x_q.device)
    for n0 in range(0, n, TILE_ROWS):
        n1 = min(n, n0 + TILE_ROWS)
        scale = w_scale[n0 // BLOCK : ceil_div(n1, BLOCK)]
        w_tile = dequantize_to_bf16(w_q[n0:n1], scale, BLOCK, out=tile)  # [>= n1 - n0, Kp]
        y[:, n0:n1] = (x @ w_tile.T)[:, : n1 - n0]
    return y


def _grouped_native(x_q, x_scale, bounds, experts, w_q, w_scale):
    """The given experts in one native call -> (their rows, y [rows, N] float32), or None if
    their scales could overflow the kernel's fixed exponents. rows is a slice when the experts'
    rows are adjacent (the usual case), else an index tensor."""
    starts = [0]
    for e in experts:
        starts.append(starts[-1] + bounds[e + 1] - bounds[e])
    if starts[-1] == bounds[experts[-1] + 1] - bounds[experts[0]]:
        rows = slice(bounds[experts[0]], bounds[experts[-1] + 1])
        x_q, x_scale = x_q[rows], x_scale[rows]
    else:
        rows = torch.cat([torch.arange(bounds[e], bounds[e + 1]) for e in experts])
        x_q, x_scale = x_q.view(torch.uint8)[rows].view(x_q.dtype), x_scale[rows]
    if not native_cpu.fits_exponent_range(float(x_scale.amax()), float(w_scale.amax())):
        return None
    y = native_cpu.fp8_grouped_gemm_native(x_q, x_scale, w_q, w_scale, torch.tensor(experts), torch.tensor(starts))
    return rows, y


def fp8_grouped_gemm(
    x_q: torch.Tensor,
    x_scale: torch.Tensor,
    offsets: torch.Tensor | list[int],
    w_q: torch.Tensor,
    w_scale: torch.Tensor,
    out_dtype: torch.dtype = torch.bfloat16,
    path: GemmPath | None = None,
) -> torch.Tensor:
    """y[rows of expert e] = (x_q * x_scale)[those rows] @ (w_q[e] * w_scale[e]).T.

    # T = token rows sorted by expert, E = experts, N = output features, K = input features
    x_q: [T, K] float8_e4m3fn, x_scale: [T, ceil(K/128)] float32 (1x128 groups);
    offsets: [E + 1], expert e owns rows offsets[e]:offsets[e + 1] (empty experts allowed);
    w_q: [E, N, K] float8_e4m3fn, w_scale: [E, ceil(N/128), ceil(K/128)] float32 (128x128).
    Returns [T, N] in out_dtype (bfloat16 or float32). path: None picks choose_gemm_path for
    each expert from its own token count; the native experts share one call.
    """
    (t, k), (experts, n, _) = x_q.shape, w_q.shape
    assert w_q.shape[2] == k and x_scale.shape == (t, ceil_div(k, BLOCK))
    assert w_scale.shape == (experts, ceil_div(n, BLOCK), ceil_div(k, BLOCK)) and len(offsets) == experts + 1
    bounds = offsets.tolist() if isinstance(offsets, torch.Tensor) else list(offsets)
    sizes = [end - start for start, end in zip(bounds[:-1], bounds[1:], strict=True)]
    paths = [path or choose_gemm_path(size, x_q.device) for size in sizes]
    tiled = [e for e in range(experts) if sizes[e] and paths[e] is GemmPath.TILES]
    native = [e for e in range(experts) if sizes[e] and paths[e] is GemmPath.NATIVE_CPU]
    native_result = _grouped_native(x_q, x_scale, bounds, native, w_q, w_scale) if native else None
    if native_result is None:  # no native experts, or scales too large for the kernel's exponents
        tiled = sorted(tiled + native)
    elif not tiled and native_result[1].shape[0] == t:  # the native call covered every row
        return native_result[1].to(out_dtype)
    y = torch.empty(t, n, dtype=out_dtype, device=x_q.device)
    if native_result is not None:
        rows, y_native = native_result
        y[rows] = y_native.to(out_dtype)
    for e in tiled:
        start, end = bounds[e], bounds[e + 1]
        y[start:end] = _gemm_tiles(x_q[start:end], x_scale[start:end], w_q[e], w_scale[e], out_dtype)
    return y


def fp8_block_gemm(
    x_q: torch.Tensor,
    x_scale: torch.Tensor,
    w_q: torch.Tensor,
    w_scale: torch.Tensor,
    out_dtype: torch.dtype = torch.bfloat16,
    path: GemmPath | None = None,
) -> torch.Tensor:
    """y = (x_q * x_scale) @ (w_q * w_scale).T: one expert of fp8_grouped_gemm.

    # M = tokens, N = output features, K = input features
    x_q: [M, K] float8_e4m3fn, x_scale: [M, ceil(K/128)]; w_q: [N, K] float8_e4m3fn,
    w_scale: [ceil(N/128), ceil(K/128)]. Returns [M, N] in out_dtype.
    """
    return fp8_grouped_gemm(x_q, x_scale, [0, x_q.shape[0]], w_q[None], w_scale[None], out_dtype, path)
