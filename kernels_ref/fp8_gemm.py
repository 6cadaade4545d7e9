"""Block-scaled fp8 GEMM: y = (x_q * x_scale) @ (w_q * w_scale).T, fp32 accumulation.

Grouped over experts (a variable number of token rows each, empty experts allowed); three
implementations, named by `GemmPath`:

- TILES (any device): the activations are dequantised to bf16 once; the weight is dequantised
  to bf16 in tiles of `TILE_ROWS` rows and each tile feeds a PyTorch bf16 GEMM while it is still
  in cache. The fp8 -> bf16 step is the bit move of `fp8.fp8_e4m3_to_bf16` (three vectorised
  integer passes) and one bf16 multiply by the block scale: never the element-by-element `.to()`.
- NATIVE_CPU (AVX-512 BF16 CPUs): a fused matrix-vector kernel that reads each fp8 weight byte
  once, all experts in one call (csrc/fp8_gemm_avx512.c), with one tunable: weight rows per tile
  ("r1" or "r4").
- NATIVE_AMX (AMX BF16 CPUs): 16 x 32 tiles of converted weights times packed tokens
  (csrc/fp8_gemm_amx.c), with two tunables: chunk (token blocks of 16 per work item) and where
  the weight's block scale goes ("weights", "tokens" or "sums").

Which one runs is measured, not assumed: `gemm_choice` times the candidates this machine can run
on the first call of each shape class (N, K and tokens per expert rounded up to a power of two)
and caches the fastest (kernels_ref.autotune). A choice names the path and its tunables, e.g.
"native_amx:tokens:c2" or "native_cpu:r4". On a GPU the candidates are SCALED_MM (torch's blockwise fp8 scaled_mm, where the GPU
and PyTorch have it; kernels_ref.gpu_gemm) and TILES, timed the same way.
"""

import enum
import functools
from collections.abc import Callable

import torch

from kernels_ref import autotune, gpu_gemm, native_cpu
from kernels_ref.fp8 import BF16_BITS_UNSCALE, BLOCK, FP8_E4M3_MAX, ceil_div, fp8_e4m3_to_bf16

# Rows of weight dequantised per tile: 512 x 7168 bf16 is 7 MiB, in a server's last-level cache,
# and wide enough for an efficient GEMM.
TILE_ROWS = 512
# The AVX-512 kernel's weight rows per tile: one row streams the weight sequentially with the tokens in L1, four
# feed each loaded activation to four rows and stream four rows at once. Which is faster depends on the CPU and the
# shape (one row was the rule for a few tokens, set on a Xeon; on a Zen 4 four rows read one token's expert 1.3x
# faster), so both are timed.
_NATIVE_TILE_ROWS = (1, 4)
# Where the AMX kernel applies the weights' block scales (its scale_mode argument).
AMX_SCALE_MODES = {"weights": 0, "tokens": 1, "sums": 2}
# Shape classes round tokens per expert up to a power of two, up to this many.
MAX_CLASS_TOKENS = 2048
# The native kernels' fixed exponents: activations carry 2**100 and weights 2**-120 in the
# AVX-512 kernel and the AMX kernel's "tokens" mode (see csrc/).
_X_EXPONENT = 100
_BF16_MAX = torch.finfo(torch.bfloat16).max


class GemmPath(enum.Enum):
    TILES = "tiles"
    NATIVE_CPU = "native_cpu"
    NATIVE_AMX = "native_amx"
    SCALED_MM = gpu_gemm.SCALED_MM


def shape_class_tokens(tokens: int) -> int:
    """Tokens per expert rounded up to a power of two (at most MAX_CLASS_TOKENS): a shape class."""
    return min(MAX_CLASS_TOKENS, 1 << max(0, tokens - 1).bit_length())


def candidates(tokens: int) -> list[str]:
    """The choices this machine can run for a shape class of `tokens` tokens per expert.
    The AVX-512 matrix-vector kernel recomputes its weights per 4 tokens, so it is tried up to 256;
    the tile path pays a dequantised copy of the weight per call, so it is tried from 128. Where both
    are tried, which wins depends on the CPU: on the 2-thread Xeon without AMX the kernel ran 104-112
    GFLOP/s from 4 to 64 tokens per expert and the tiles 99 at 128 (PyTorch's bf16 matmul: 126-157)."""
    m = shape_class_tokens(tokens)
    names = [f"native_cpu:r{rows}" for rows in _NATIVE_TILE_ROWS] if m <= 256 and native_cpu.library("gemm_avx512") is not None else []
    if native_cpu.library("gemm_amx") is not None:
        chunks = (2,) if m <= 32 else (2, 4, 8) if m <= 128 else (4, 8)
        names += [f"native_amx:{scale}:c{c}" for scale in AMX_SCALE_MODES for c in chunks]
    return names + ["tiles"] if m >= 128 or not names else names


def _tuning_calls(tokens: int, n: int, k: int) -> dict[str, Callable[[], object]]:
    """Each candidate on one expert of random codes with checkpoint-like scales."""
    generator = torch.Generator().manual_seed(0)
    # codes 0..0x7E: every finite non-negative e4m3 value (the sign does not change the speed)
    w_q = torch.randint(0, 0x7F, (1, n, k), dtype=torch.uint8, generator=generator).view(torch.float8_e4m3fn)
    x_q = torch.randint(0, 0x7F, (tokens, k), dtype=torch.uint8, generator=generator).view(torch.float8_e4m3fn)
    w_scale = torch.rand(1, ceil_div(n, BLOCK), ceil_div(k, BLOCK), generator=generator) * 1e-4
    x_scale = torch.rand(tokens, ceil_div(k, BLOCK), generator=generator) * 1e-2
    offsets = [0, tokens]
    return {
        name: (lambda name=name: _run_choice(name, x_q, x_scale, offsets, [0], w_q, w_scale, torch.float32))
        for name in candidates(tokens)
    }


def gemm_choice(tokens: int, n: int, k: int, device: torch.device | str) -> str:
    """The implementation for one expert's tokens x an [N, K] weight: "tiles" off the CPU, else
    the fastest candidate of its shape class on this machine (timed at first use, then cached)."""
    if torch.device(device).type == "cuda":
        return _gpu_choice(tokens, n, k, torch.device(device))
    if torch.device(device).type != "cpu":
        return GemmPath.TILES.value
    names = candidates(tokens)
    if len(names) == 1:
        return names[0]
    m = shape_class_tokens(tokens)
    # cold: a decode step reads each expert's weight from memory, and the tuning's one expert fits in a large L3
    return autotune.choose(f"fp8_gemm:{n}x{k}:m{m}", lambda: _tuning_calls(m, n, k), cold=True)


@functools.cache
def _gpu(device: torch.device) -> gpu_gemm.GpuInfo:
    return gpu_gemm.gpu_info(device)


def _gpu_choice(tokens: int, n: int, k: int, device: torch.device) -> str:
    """The fastest of the GPU's candidates for this shape class, those that run at all (gpu_gemm.runnable)."""
    info = _gpu(device)
    names = gpu_gemm.gpu_candidates(info, n, k)
    if len(names) == 1:
        return names[0]
    m = shape_class_tokens(tokens)

    def calls() -> dict[str, Callable[[], object]]:
        generator = torch.Generator().manual_seed(0)
        w_q = torch.randint(0, 0x7F, (n, k), dtype=torch.uint8, generator=generator).view(torch.float8_e4m3fn)
        x_q = torch.randint(0, 0x7F, (m, k), dtype=torch.uint8, generator=generator).view(torch.float8_e4m3fn)
        w_scale = torch.rand(ceil_div(n, BLOCK), ceil_div(k, BLOCK), generator=generator) * 1e-4
        x_scale = torch.rand(m, ceil_div(k, BLOCK), generator=generator) * 1e-2
        args = [a.to(device) for a in (x_q, x_scale, w_q, w_scale)]
        run = {gpu_gemm.SCALED_MM: lambda: gpu_gemm.gemm_scaled_mm(*args, torch.float32),
               gpu_gemm.TILES: lambda: _gemm_tiles(*args, torch.float32)}
        return gpu_gemm.runnable({name: run[name] for name in names})
    return autotune.choose(f"fp8_gemm:{info.name}:{n}x{k}:m{m}", calls)


def choose_gemm_path(tokens: int, n: int, k: int, device: torch.device | str) -> GemmPath:
    """The GemmPath of gemm_choice."""
    return GemmPath(gemm_choice(tokens, n, k, device).split(":")[0])


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


def fits_exponent_range(x_scale_amax: float, w_scale_amax: float) -> bool:
    """Whether activations with group scales up to x_scale_amax (codes up to 448) times weight
    scales up to w_scale_amax stay finite in the native kernels' pre-scaled bf16."""
    return FP8_E4M3_MAX * x_scale_amax * w_scale_amax * 2.0**_X_EXPONENT < _BF16_MAX


def _native(choice, x_q, x_scale, w_q, w_scale, expert_ids, starts) -> torch.Tensor | None:
    """One native call over the groups; None where the scales are out of the kernel's range.

    # G = groups, T = token rows, E = experts, N = output features, K = input features
    x_q: [T, K] float8_e4m3fn, x_scale: [T, ceil(K/128)] float32; w_q: [E, N, K] float8_e4m3fn;
    w_scale: [E, ceil(N/128), ceil(K/128)] float32; expert_ids: [G] int64; starts: [G + 1] int64
    row offsets into T. Returns [T, N] float32."""
    path, *tunables = choice.split(":")
    x_amax, w_amax = float(x_scale.amax()), float(w_scale.amax())
    in_range = fits_exponent_range(x_amax, w_amax)
    if path == GemmPath.NATIVE_AMX.value and not in_range:
        tunables[0] = "weights"  # exact for any scale below 2**7 (its factor w_scale * 2**120 is fp32)
        in_range = w_amax < 2.0**7
    if not in_range:
        return None
    (t, k), (experts, n, _) = x_q.shape, w_q.shape
    # The C code trusts these bounds: check them before handing it raw pointers.
    assert int(starts[0]) == 0 and int(starts[-1]) == t and bool((starts[1:] >= starts[:-1]).all())
    assert 0 <= int(expert_ids.min()) <= int(expert_ids.max()) < experts and w_q.device.type == "cpu"
    x_q, x_scale, w_q, w_scale = (a.contiguous() for a in (x_q, x_scale, w_q, w_scale))
    y = torch.empty(t, n, dtype=torch.float32)
    pointers = (w_q.data_ptr(), w_scale.data_ptr(), expert_ids.data_ptr(), starts.data_ptr(), expert_ids.numel(),
                x_q.data_ptr(), x_scale.data_ptr(), y.data_ptr(), t, n, k, torch.get_num_threads())
    if path == GemmPath.NATIVE_AMX.value:
        scale, chunk = tunables
        status = native_cpu.library("gemm_amx").fp8_grouped_gemm_amx(*pointers, int(chunk[1:]), AMX_SCALE_MODES[scale])
    else:
        (rows,) = tunables or ["r4"]
        status = native_cpu.library("gemm_avx512").fp8_grouped_gemm(*pointers, int(rows[1:]))
    if status:
        raise MemoryError("the native fp8 kernel could not allocate its buffers")
    return y


def _run_choice(choice, x_q, x_scale, bounds, experts, w_q, w_scale, out_dtype):
    """The given experts (non-empty) with one implementation -> (their rows, y [rows, N] out_dtype).
    rows is a slice when the experts' rows are adjacent (the usual case), else an index tensor."""
    if sum(bounds[e + 1] - bounds[e] for e in experts) == bounds[experts[-1] + 1] - bounds[experts[0]]:
        rows = slice(bounds[experts[0]], bounds[experts[-1] + 1])
        xq, xs = x_q[rows], x_scale[rows]
    else:
        rows = torch.cat([torch.arange(bounds[e], bounds[e + 1]) for e in experts])
        xq, xs = x_q.view(torch.uint8)[rows].view(x_q.dtype), x_scale[rows]
    starts = [0]
    for e in experts:
        starts.append(starts[-1] + bounds[e + 1] - bounds[e])
    if choice not in (GemmPath.TILES.value, GemmPath.SCALED_MM.value):
        y = _native(choice, xq, xs, w_q, w_scale, torch.tensor(experts), torch.tensor(starts))
        if y is not None:
            return rows, y.to(out_dtype)
    y = torch.empty(starts[-1], w_q.shape[1], dtype=out_dtype, device=x_q.device)
    one_expert = gpu_gemm.gemm_scaled_mm if choice == GemmPath.SCALED_MM.value else _gemm_tiles
    for e, start, end in zip(experts, starts[:-1], starts[1:], strict=True):
        y[start:end] = one_expert(xq[start:end], xs[start:end], w_q[e], w_scale[e], out_dtype)
    return rows, y


_DEFAULT_CHOICE = {GemmPath.TILES: "tiles", GemmPath.NATIVE_CPU: "native_cpu:r4", GemmPath.NATIVE_AMX: "native_amx:weights:c4",
                   GemmPath.SCALED_MM: gpu_gemm.SCALED_MM}


def fp8_grouped_gemm(
    x_q: torch.Tensor,
    x_scale: torch.Tensor,
    offsets: torch.Tensor | list[int],
    w_q: torch.Tensor,
    w_scale: torch.Tensor,
    out_dtype: torch.dtype = torch.bfloat16,
    path: GemmPath | str | None = None,
) -> torch.Tensor:
    """y[rows of expert e] = (x_q * x_scale)[those rows] @ (w_q[e] * w_scale[e]).T.

    # T = token rows sorted by expert, E = experts, N = output features, K = input features
    x_q: [T, K] float8_e4m3fn, x_scale: [T, ceil(K/128)] float32 (1x128 groups);
    offsets: [E + 1], expert e owns rows offsets[e]:offsets[e + 1] (empty experts allowed);
    w_q: [E, N, K] float8_e4m3fn, w_scale: [E, ceil(N/128), ceil(K/128)] float32 (128x128).
    Returns [T, N] in out_dtype (bfloat16 or float32). path: None takes gemm_choice for each
    expert from its own token count; a GemmPath or a choice ("native_amx:tokens:c2") forces one.
    Experts with the same choice share one call.
    """
    (t, k), (experts, n, _) = x_q.shape, w_q.shape
    assert w_q.shape[2] == k and x_scale.shape == (t, ceil_div(k, BLOCK))
    assert w_scale.shape == (experts, ceil_div(n, BLOCK), ceil_div(k, BLOCK)) and len(offsets) == experts + 1
    bounds = offsets.tolist() if isinstance(offsets, torch.Tensor) else list(offsets)
    by_choice: dict[str, list[int]] = {}
    for e in range(experts):
        size = bounds[e + 1] - bounds[e]
        if size:
            forced = _DEFAULT_CHOICE[path] if isinstance(path, GemmPath) else path
            by_choice.setdefault(forced or gemm_choice(size, n, k, x_q.device), []).append(e)
    if len(by_choice) == 1:
        ((choice, chosen),) = by_choice.items()
        rows, y_rows = _run_choice(choice, x_q, x_scale, bounds, chosen, w_q, w_scale, out_dtype)
        if isinstance(rows, slice) and rows == slice(0, t):  # one call covered every row
            return y_rows
    y = torch.empty(t, n, dtype=out_dtype, device=x_q.device)
    for choice, chosen in by_choice.items():
        rows, y_rows = _run_choice(choice, x_q, x_scale, bounds, chosen, w_q, w_scale, out_dtype)
        y[rows] = y_rows
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
