"""Operator time on a device as a function of shape: the models, whose parameters hwmodels.calibrate fits.

GEMM model (a persistent tiled fp8 kernel as in DeepGEMM, on a device with S SMs). Shape legend:
m = rows (tokens) per group, n = output features, k = input features, G = groups.

  tile       BM = 128 for the contiguous layout, else 64 if m <= 64 else 128; BK = 128;
             BN in 16, 24, ..., 128: the fewest waves, then the fullest last wave, then the smallest BN
             (DeepGEMM's own rule, so the model sees the tile the kernel would run)
  tiles      = ceil(m / BM) x ceil(n / BN) x G;   waves = ceil(tiles / S);   k_blocks = ceil(k / BK)
  t_mma_s    = 2 BM BN BK / (peak / S x eta_c x (eta_split if 128 mod BN != 0 else 1))
  t_feed_s   = (BM a + BN w) BK / (rho x HBM / S)                  operands of one k-block, L2 -> one SM
  T_sm_s     = waves x (k_blocks x max(t_mma_s, t_feed_s) + t_fill_s)
  T_hbm_s    = G (m k a + n k w + m n o) / (HBM x eta_m)           a, w, o = bytes per element
  T_s        = (T_sm_s^p + T_hbm_s^p)^(1/p) + t_launch_s

Seven parameters, each a physical quantity: eta_c (the MMA pipeline's fraction of peak inside a tile),
eta_split (its relative rate when a BN-wide tile straddles two 128-wide blocks of weight scales and
promotes with two scales per k-block), t_fill_s (per-tile pipeline fill and epilogue), rho (on-chip
operand feed bandwidth in units of HBM bandwidth), eta_m (fraction of HBM bandwidth), p (how well SM
work overlaps HBM traffic: 1 is serial, infinity perfect) and t_launch_s. hwmodels.calibrate.gemm_fit
fits them by least squares on log time to the DeepGEMM fp8 table (H800) and stores them as data
(catalogs/fits/deepgemm-h800.yaml); this module only evaluates the model. Other devices and dtypes reuse
them with their own peaks: eta_c, eta_split and eta_m as fractions of the device's peak FLOP/s and HBM bandwidth, rho as a
multiple of its HBM bandwidth (assumed to scale alike), t_fill_s and t_launch_s in seconds (latencies,
which do not shrink with peak FLOP/s), and the same tile menu, an assumption the sources record.
Every modelled time is >= the pure roofline: T_sm_s >= FLOPs / peak because the tiles cover the GEMM
and eta <= 1, and T_hbm_s >= bytes / HBM because eta_m <= 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Sequence

import numpy as np

from hwmodels.errors import InputError
from hwmodels.hardware import Device
from hwmodels.precision import DTYPES, dtype as lookup_dtype
from hwmodels.roofline import OpCost, roofline_cost

# SMs per device come from the catalog (devices.yaml num_sms, cited); a device without one is assumed to have
# Hopper's count (NVIDIA H100 Tensor Core GPU Architecture whitepaper, 2022: 132 SMs), and its cost's source says so.
HOPPER_NUM_SMS = 132

# DeepGEMM's tile menu (deepseek-ai/DeepGEMM deep_gemm/jit_kernels/config.py, get_best_configs, as of
# ba142b8, early 2025): BM 64 or 128, BN 16..128 in steps of 8, BK 128; the contiguous layout aligns
# each group to 128 rows.
BLOCK_K = 128
BLOCK_N_CHOICES = np.arange(16, 129, 8)
_BLOCK_N_LIST = BLOCK_N_CHOICES.tolist()
SCALE_BLOCK = 128  # weight scales cover 128 x 128 blocks; a BN that does not divide it needs two per k-block

# A compute dtype whose peak a device lacks runs at the next wider peak it has.
WIDER_PEAK = {"fp4": "fp8", "int4": "int8", "fp8": "bf16", "int8": "bf16"}

LAYOUTS = ("dense", "contiguous", "masked")

_BF16_BYTES = DTYPES["bf16"].bytes_per_element
_SCALE_BYTES = DTYPES["fp32"].bytes_per_element  # one fp32 scale per SCALE_BLOCK channels


@dataclass(frozen=True)
class GemmEfficiency:
    """Fitted GEMM efficiency parameters (the module docstring gives the equations)."""

    compute_efficiency: float  # eta_c: MMA rate inside a tile, fraction of the dtype's peak
    split_scale_efficiency: float  # eta_split: relative MMA rate when BN does not divide 128
    tile_fill_s: float  # t_fill_s: per-tile pipeline fill + epilogue
    feed_to_hbm_bandwidth: float  # rho: L2 -> SM operand bandwidth over HBM bandwidth
    memory_efficiency: float  # eta_m: fraction of HBM bandwidth
    overlap_exponent: float  # p: 1 = SM work and HBM traffic serial, infinity = fully overlapped
    launch_overhead_s: float  # t_launch_s: kernel launch and tail
    hardware: str  # device the table was measured on
    source: str

    @property
    def params(self) -> tuple[float, ...]:
        """The seven parameters in field order (what _gemm_times takes)."""
        return _params_of(self)


@lru_cache(maxsize=64)
def _params_of(fit: GemmEfficiency) -> tuple[float, ...]:
    return tuple(getattr(fit, f.name) for f in fields(GemmEfficiency) if f.name not in ("hardware", "source"))


@dataclass(frozen=True)
class AttentionRates:
    """The attention kernels' rates as fractions of a device's nominal bf16 peak and HBM bandwidth, from one
    published kernel on `hardware` (FlashMLA decode on H800: catalogs/published/kernels.yaml)."""

    compute_efficiency: float
    memory_efficiency: float
    hardware: str
    source: str


# ---------------------------------------------------------------------------------------------------
# The model, elementwise over numpy arrays or plain numbers

def _tile_shape(m, n, groups, contiguous, num_sms: int):
    """(BM, BN, waves) of DeepGEMM's tile choice; m, n, groups, contiguous broadcast together."""
    m, n, groups = np.asarray(m), np.asarray(n), np.asarray(groups)
    block_m = np.where(contiguous, 128, np.where(m <= 64, 64, 128))
    tiles = (-(-m // block_m) * groups)[..., None] * -(-n[..., None] // BLOCK_N_CHOICES)  # [..., BN choices]
    waves = -(-tiles // num_sms)
    last_wave = tiles - (waves - 1) * num_sms
    # fewest waves, then fullest last wave; argmin keeps the first (smallest) BN on ties
    best = np.argmin(waves * (num_sms + 1) - last_wave, axis=-1)
    return block_m, BLOCK_N_CHOICES[best], np.take_along_axis(waves, best[..., None], axis=-1)[..., 0]


@lru_cache(maxsize=1 << 16)
def _tile_for(m: int, n: int, groups: int, layout: str, num_sms: int) -> tuple[int, int, int]:
    """_tile_shape of one GEMM, in plain Python: on scalars numpy's per-call cost is most of the time."""
    block_m = 128 if layout == "contiguous" or m > 64 else 64
    tiles_m = -(-m // block_m) * groups
    best = None  # (score, BN, waves); the first (smallest) BN wins ties, as argmin does
    for block_n in _BLOCK_N_LIST:
        tiles = tiles_m * -(-n // block_n)
        waves = -(-tiles // num_sms)
        score = waves * (num_sms + 1) - (tiles - (waves - 1) * num_sms)
        if best is None or score < best[0]:
            best = (score, block_n, waves)
    return block_m, best[1], int(best[2])


def _max_min(a, b):
    """(elementwise max, min) of arrays; plain numbers skip numpy's per-call overhead on the hot path."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.maximum(a, b), np.minimum(a, b)
    return (a, b) if a >= b else (b, a)


def _gemm_times(params: Sequence[float], num_sms, peak_flops_per_s, hbm_bytes_per_s, m, n, k, groups,
                block_m, block_n, waves, a_bytes, w_bytes, o_bytes):
    """(T_sm_s, T_hbm_s, T_s) of the module docstring; `params` in GemmEfficiency field order."""
    eta_c, eta_split, fill_s, rho, eta_m, p, launch_s = params
    eta = eta_c * eta_split ** (SCALE_BLOCK % block_n > 0)
    mma_s = 2.0 * block_m * block_n * BLOCK_K * num_sms / (peak_flops_per_s * eta)
    feed_s = (block_m * a_bytes + block_n * w_bytes) * BLOCK_K * num_sms / (rho * hbm_bytes_per_s)
    sm_s = waves * (-(-k // BLOCK_K) * _max_min(mma_s, feed_s)[0] + fill_s)
    hbm_s = groups * (m * k * a_bytes + n * k * w_bytes + m * n * o_bytes) / (hbm_bytes_per_s * eta_m)
    hi, lo = _max_min(sm_s, hbm_s)
    # the p-norm written around its larger term so that a large p cannot overflow
    total_s = hi * (1.0 + (lo / hi) ** p) ** (1.0 / p) + launch_s
    return sm_s, hbm_s, total_s


# ---------------------------------------------------------------------------------------------------
# Costs


def peak_flops(device: Device, dtype: str) -> float:
    """The peak FLOP/s a `dtype` computation runs at on `device` (its own peak, else the next wider one)."""
    return _peak(device, dtype)[1]


def _peak(device: Device, dtype: str) -> tuple[str, float, str]:
    """(peak class used, its FLOP/s, note): the dtype's own peak, else the next wider one the device has."""
    want = lookup_dtype(dtype, "dtype").peak
    used = want
    while used not in device.peak_flops_per_s:
        if used not in WIDER_PEAK:
            raise InputError("dtype", f"{device.name} has no {want} peak nor a wider one to run {dtype} at",
                             f"add peak_flops_per_s.{want} for {device.name} to catalogs/devices.yaml with its source")
        used = WIDER_PEAK[used]
    note = "" if used == want else f"; no {want} peak on {device.name}, ran at its {used} peak"
    return used, device.peak_flops_per_s[used], note


def _scaled(device: Device, hardware: str) -> str:
    return "" if device.name == hardware else f", scaled to {device.name} peaks"


@lru_cache(maxsize=1024)  # a handful of (device, dtype, layout, weight format, fit) per search
def _gemm_setup(device: Device, dtype: str, layout: str, weight_bytes_per_element: float | None,
                fit: GemmEfficiency) -> tuple[float, int, float, float, str]:
    """(peak FLOP/s, SMs, activation and weight bytes per element, source) of a GEMM, validated."""
    if layout not in LAYOUTS:
        raise InputError("layout", f"unknown GEMM layout '{layout}'", f"use one of {', '.join(LAYOUTS)}")
    used, peak, note = _peak(device, dtype)
    source = f"DeepGEMM {fit.hardware} fit{_scaled(device, fit.hardware)}{note}" + (
        "" if device.num_sms else f"; {HOPPER_NUM_SMS} SMs assumed (Hopper's)")
    w_bytes = DTYPES[dtype].bytes_per_element if weight_bytes_per_element is None else weight_bytes_per_element
    return peak, device.num_sms or HOPPER_NUM_SMS, DTYPES[used].bytes_per_element, w_bytes, source


def gemm_cost(device: Device, m: int, n: int, k: int, fit: GemmEfficiency, dtype: str = "fp8", groups: int = 1,
              layout: str = "dense", out_bytes_per_element: float = _BF16_BYTES,
              weight_bytes_per_element: float | None = None, name: str = "gemm") -> OpCost:
    """`groups` GEMMs [m, k] x [k, n] -> [m, n], each group with its own weight, as the fitted model.

    dtype is the compute dtype; activations are read in the dtype of the peak actually used (fp4 on
    Hopper runs as fp8), weights at `weight_bytes_per_element` (default: dtype's bytes, as stored).
    compute_s is T_sm_s (MMA or operand feed, whichever binds), memory_s is T_hbm_s, and overhead_s
    holds the launch plus the part of the smaller term that does not overlap the larger.
    """
    if m < 0 or n < 1 or k < 1 or groups < 1:
        raise InputError(name, f"bad GEMM shape m={m}, n={n}, k={k}, groups={groups}", "m >= 0; n, k, groups >= 1")
    peak, num_sms, a_bytes, w_bytes, source = _gemm_setup(device, dtype, layout, weight_bytes_per_element, fit)
    if m == 0:  # no rows: no tile runs
        return OpCost(name, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, source)
    block_m, block_n, waves = _tile_for(m, n, groups, layout, num_sms)
    sm_s, hbm_s, total_s = _gemm_times(fit.params, num_sms, peak, device.hbm_bytes_per_s, m, n, k, groups,
                                       block_m, block_n, waves, a_bytes, w_bytes, out_bytes_per_element)
    sm_s, hbm_s, total_s = float(sm_s), float(hbm_s), float(total_s)
    flops = 2.0 * groups * m * n * k
    bytes_moved = groups * (m * k * a_bytes + n * k * w_bytes + m * n * out_bytes_per_element)
    return roofline_cost(name, flops, bytes_moved, peak, device.hbm_bytes_per_s,
                         compute_efficiency=flops / (peak * sm_s), memory_efficiency=fit.memory_efficiency,
                         overhead_s=total_s - max(sm_s, hbm_s), source=source)


def mla_decode_cost(device: Device, batch: int, context_tokens: float, num_heads: int, rates: AttentionRates,
                    launch_overhead_s: float, kv_lora_rank: int = 512, qk_rope_head_dim: int = 64,
                    kv_bytes_per_element: float = _BF16_BYTES, name: str = "mla_decode") -> OpCost:
    """Absorbed MLA decode attention (FlashMLA-style) of one query token per sequence over the latent cache.

    bytes = B ctx (R + r) kv_bytes + B H (R + r) q_bytes + B H R o_bytes     (cache, q in, out; bf16 q/out)
    flops = 2 B H ctx (2 R + r)                                              (q k^T over R + r, p v over R)
    at the published kernel's `rates` as fractions of the device's bf16 peak and HBM bandwidth, plus a
    kernel launch. B = batch, H = heads, R = kv_lora_rank, r = qk_rope_head_dim.
    """
    latent = kv_lora_rank + qk_rope_head_dim
    bytes_moved = batch * context_tokens * latent * kv_bytes_per_element + batch * num_heads * (latent + kv_lora_rank) * _BF16_BYTES
    flops = 2.0 * batch * num_heads * context_tokens * (2 * kv_lora_rank + qk_rope_head_dim)
    _, peak, note = _peak(device, "bf16")
    return roofline_cost(name, flops, bytes_moved, peak, device.hbm_bytes_per_s,
                         compute_efficiency=rates.compute_efficiency, memory_efficiency=rates.memory_efficiency,
                         overhead_s=launch_overhead_s, source=f"{rates.source}{_scaled(device, rates.hardware)}{note}")


def attention_prefill_cost(device: Device, tokens: int, context_tokens: float, num_heads: int,
                           qk_head_dim: int, v_head_dim: int, rates: AttentionRates, launch_overhead_s: float,
                           dtype: str = "bf16", name: str = "attention_prefill") -> OpCost:
    """Non-absorbed (FlashAttention-style) prefill attention of `tokens` queries over `context_tokens`
    keys each (the caller passes the causal average).

    flops = 2 T H ctx (d_qk + d_v);  bytes = H (d_qk + d_v) (T + ctx) x dtype bytes  (q and out once, k and
    v once over the average context: a floor, as the kernel is compute-bound). No published prefill
    table: the decode kernel's `rates` are assumed, and the source says so.
    """
    _, peak, note = _peak(device, dtype)
    flops = 2.0 * tokens * num_heads * context_tokens * (qk_head_dim + v_head_dim)
    bytes_moved = num_heads * (qk_head_dim + v_head_dim) * (tokens + context_tokens) * DTYPES[dtype].bytes_per_element
    return roofline_cost(name, flops, bytes_moved, peak, device.hbm_bytes_per_s,
                         compute_efficiency=rates.compute_efficiency, memory_efficiency=rates.memory_efficiency,
                         overhead_s=launch_overhead_s,
                         source=f"assumed for prefill (no published prefill table): {rates.source}"
                                f"{_scaled(device, rates.hardware)}{note}")


GQA_KV_DTYPES = {"bfloat16": 2.0, "fp8": 1.0}  # the KV dtypes the GQA decode fit is made for -> bytes per element


@dataclass(frozen=True)
class GqaDecodeTerms:
    """One KV dtype's grouped-query decode attention: a kernel's launch, a cost per sequence, the KV read's fraction
    of HBM bandwidth (hwmodels.calibrate.gqa_decode_fit)."""

    launch_s: float
    per_sequence_s: float
    memory_efficiency: float


@dataclass(frozen=True)
class GqaDecodeFit:
    """GQA decode attention fitted to measured kernels, per KV bytes per element (2: bf16/fp16, 1: fp8); another
    width takes the terms of the fitted width nearest it (an NVFP4 cache FP8's)."""

    by_kv_bytes: tuple[tuple[float, GqaDecodeTerms], ...]
    source: str

    def terms(self, kv_bytes_per_element: float) -> GqaDecodeTerms:
        fitted = dict(self.by_kv_bytes)
        return fitted[min(fitted, key=lambda width: abs(math.log(width / kv_bytes_per_element)))]


def gqa_decode_cost(device: Device, batch: float, kv_bytes: float, kv_bytes_per_element: float, fit: GqaDecodeFit,
                    name: str = "gqa_decode_kv_read") -> OpCost:
    """Grouped-query decode attention of `batch` sequences reading `kv_bytes` of cache: its launch and a cost per
    sequence, plus the read at the fitted fraction of HBM bandwidth."""
    t = fit.terms(kv_bytes_per_element)
    return roofline_cost(name, 0.0, kv_bytes, 1.0, device.hbm_bytes_per_s, memory_efficiency=t.memory_efficiency,
                         overhead_s=t.launch_s + t.per_sequence_s * batch,
                         source=f"{fit.source}: HBM efficiency {t.memory_efficiency:.2f}, {t.launch_s * 1e6:.1f} us + "
                                f"{t.per_sequence_s * 1e9:.0f} ns a sequence")


def quantize_activations_cost(device: Device, rows: float, cols: int, in_bytes_per_element: float,
                              out_bytes_per_element: float, fit: GemmEfficiency,
                              name: str = "quantize_activations") -> OpCost:
    """Per-token-group quantisation of a GEMM's input (SGLang's and DeepSeek's per_token_group_quant_fp8,
    one fp32 scale per 128 channels, as DeepGEMM's fp8 kernels take their left operand): read the
    activations, write them narrow with their scales. Memory-bound."""
    bytes_moved = rows * cols * (in_bytes_per_element + out_bytes_per_element) + rows * cols / SCALE_BLOCK * _SCALE_BYTES
    return elementwise_cost(device, bytes_moved, fit, name)


def elementwise_cost(device: Device, bytes_moved: float, fit: GemmEfficiency, name: str = "elementwise") -> OpCost:
    """A memory-bound kernel (norms, activations, residual adds, rope, router top-k): bytes at the GEMM
    fit's HBM efficiency eta_m, plus its launch overhead."""
    return roofline_cost(name, 0.0, bytes_moved, 1.0, device.hbm_bytes_per_s,
                         memory_efficiency=fit.memory_efficiency, overhead_s=fit.launch_overhead_s,
                         source=f"HBM efficiency {fit.memory_efficiency:.2f} of the DeepGEMM {fit.hardware} fit"
                                f"{_scaled(device, fit.hardware)}")
