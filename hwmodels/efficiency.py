"""Operator time on a device as a function of shape, fitted to published kernel tables.

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
work overlaps HBM traffic: 1 is serial, infinity perfect) and t_launch_s. They are fitted by least
squares on log time to the DeepGEMM fp8 table (H800). Other devices and dtypes reuse them with their own
peaks: eta_c, eta_split and eta_m as fractions of the device's peak FLOP/s and HBM bandwidth, rho as a
multiple of its HBM bandwidth (assumed to scale alike), t_fill_s and t_launch_s in seconds (latencies,
which do not shrink with peak FLOP/s), and the same tile menu, an assumption the sources record.
Every modelled time is >= the pure roofline: T_sm_s >= FLOPs / peak because the tiles cover the GEMM
and eta <= 1, and T_hbm_s >= bytes / HBM because eta_m <= 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Callable, Sequence

import numpy as np
import yaml

from catalogs import CATALOG_DIR
from hwmodels.catalog import load_device
from hwmodels.errors import InputError
from hwmodels.hardware import Device
from hwmodels.precision import DTYPES, dtype as lookup_dtype
from hwmodels.roofline import OpCost, roofline_cost
from hwmodels.units import GB, TB, TFLOPS, us

# SMs per device, for wave quantisation. NVIDIA H100 Tensor Core GPU Architecture whitepaper (2022):
# H100 SXM5 has 132 SMs; H200 SXM is the same GH100 configuration with HBM3e; H800 SXM also has 132
# (DeepSeek-V3 technical report, arXiv 2412.19437, section 3.2.2: "20 SMs out of 132"). Devices not
# listed are assumed to have Hopper's count, and their cost's source says so.
HOPPER_NUM_SMS = 132
NUM_SMS = {"h100-sxm": HOPPER_NUM_SMS, "h200-sxm": HOPPER_NUM_SMS, "h800-sxm": HOPPER_NUM_SMS}

# DeepGEMM's tile menu (deepseek-ai/DeepGEMM deep_gemm/jit_kernels/config.py, get_best_configs, as of
# ba142b8, early 2025): BM 64 or 128, BN 16..128 in steps of 8, BK 128; the contiguous layout aligns
# each group to 128 rows.
BLOCK_K = 128
BLOCK_N_CHOICES = np.arange(16, 129, 8)
SCALE_BLOCK = 128  # weight scales cover 128 x 128 blocks; a BN that does not divide it needs two per k-block

# FlashMLA (deepseek-ai/FlashMLA README and deep-dive doc, restated in catalogs/published/kernels.yaml,
# flashmla_decode) on H800 SXM5: memory-bound up to 3000 GB/s of its 3.35 TB/s; compute-bound 660
# TFLOP/s bf16 of its 989 nominal (the part throttles to ~865 attainable, so 660 is 76% of what the
# clocks allow). Both are used as fractions of nominal peaks, since every device's catalog peak is nominal.
FLASHMLA_MEMORY_EFFICIENCY = 3000 * GB / (3.35 * TB)
FLASHMLA_COMPUTE_EFFICIENCY = 660 * TFLOPS / (989 * TFLOPS)
_FLASHMLA = (f"FlashMLA h800-sxm decode rates: {FLASHMLA_COMPUTE_EFFICIENCY:.3f} of bf16 peak (660 of 989 TFLOP/s), "
             f"{FLASHMLA_MEMORY_EFFICIENCY:.3f} of HBM (3000 GB/s of 3.35 TB/s)")

# A compute dtype whose peak a device lacks runs at the next wider peak it has.
WIDER_PEAK = {"fp4": "fp8", "int4": "int8", "fp8": "bf16", "int8": "bf16"}

LAYOUTS = ("dense", "contiguous", "masked")
_TABLE_LAYOUT = {"dense": "dense", "grouped_contiguous": "contiguous", "grouped_masked": "masked"}


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


@dataclass(frozen=True)
class GemmRow:
    """One published GEMM measurement."""

    table: str  # dense, grouped_contiguous or grouped_masked
    groups: int
    m: int  # rows per group
    n: int
    k: int
    flops_per_s: float

    @property
    def layout(self) -> str:
        return _TABLE_LAYOUT[self.table]

    @property
    def time_s(self) -> float:
        return 2.0 * self.groups * self.m * self.n * self.k / self.flops_per_s


@lru_cache(maxsize=None)
def load_deepgemm_table() -> tuple[tuple[GemmRow, ...], str, str]:
    """(rows, hardware, source) of the DeepGEMM fp8 table in catalogs/published/kernels.yaml, in SI units."""
    with open(CATALOG_DIR / "published" / "kernels.yaml", encoding="utf-8") as f:
        table = yaml.safe_load(f)["deepgemm_fp8_gemm"]
    rows = [GemmRow("dense", 1, m, n, k, tflops * TFLOPS) for m, n, k, tflops, _ in table["dense"]]
    for name in ("grouped_contiguous", "grouped_masked"):
        rows += [GemmRow(name, g, m, n, k, tflops * TFLOPS) for g, m, n, k, tflops, _ in table[name]]
    return tuple(rows), table["hardware"], table["source"]


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
    block_m, block_n, waves = _tile_shape(m, n, groups, layout == "contiguous", num_sms)
    return int(block_m), int(block_n), int(waves)


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
# Fitting


def _to_params(x: np.ndarray) -> tuple[float, ...]:
    """Unconstrained optimiser coordinates -> parameters in their physical ranges."""
    logistic = lambda v: 1.0 / (1.0 + math.exp(-v))
    return (logistic(x[0]), logistic(x[1]), math.exp(x[2]) * us, math.exp(x[3]), logistic(x[4]),
            1.0 + math.exp(x[5]), math.exp(x[6]) * us)


def _from_params(params: Sequence[float]) -> np.ndarray:
    logit = lambda v: math.log(v / (1.0 - v))
    eta_c, eta_split, fill_s, rho, eta_m, p, launch_s = params
    return np.array([logit(eta_c), logit(eta_split), math.log(fill_s / us), math.log(rho), logit(eta_m),
                     math.log(p - 1.0), math.log(launch_s / us)])


# Physical first guesses: ~75% of peak, a 1 us fill, L2 feeding at a few times HBM, ~85% of HBM.
_FIRST_GUESS = (0.75, 0.9, 1.0 * us, 3.0, 0.85, 2.0, 2.0 * us)


def _nelder_mead(f: Callable[[np.ndarray], float], x0: np.ndarray, step: float = 0.5,
                 tol: float = 1e-10, max_evals: int = 20000) -> np.ndarray:
    """Minimise f from x0 (Nelder-Mead, standard coefficients), restarting until a restart gains nothing."""
    best_x, best_f = np.asarray(x0, float), f(np.asarray(x0, float))
    evals = 1
    while evals < max_evals:
        # 1. a fresh simplex around the best point so far
        simplex = np.vstack([best_x, best_x + step * np.eye(len(best_x))])
        values = np.array([f(v) for v in simplex])
        evals += len(simplex)
        while evals < max_evals and values.max() - values.min() > tol:
            order = np.argsort(values)
            simplex, values = simplex[order], values[order]
            centroid = simplex[:-1].mean(axis=0)
            # 2. reflect the worst point; expand if that is the new best, contract if it is still the worst
            reflected = centroid + (centroid - simplex[-1])
            f_reflected = f(reflected)
            evals += 1
            if f_reflected < values[0]:
                expanded = centroid + 2.0 * (centroid - simplex[-1])
                f_expanded = f(expanded)
                evals += 1
                simplex[-1], values[-1] = (expanded, f_expanded) if f_expanded < f_reflected else (reflected, f_reflected)
            elif f_reflected < values[-2]:
                simplex[-1], values[-1] = reflected, f_reflected
            else:
                contracted = centroid + 0.5 * (simplex[-1] - centroid)
                f_contracted = f(contracted)
                evals += 1
                if f_contracted < values[-1]:
                    simplex[-1], values[-1] = contracted, f_contracted
                else:
                    # 3. shrink towards the best point
                    simplex[1:] = simplex[0] + 0.5 * (simplex[1:] - simplex[0])
                    values[1:] = [f(v) for v in simplex[1:]]
                    evals += len(simplex) - 1
        # 4. stop when the restart did not improve on the previous best
        improved = values.min() < best_f - tol
        if values.min() < best_f:
            best_x, best_f = simplex[np.argmin(values)], values.min()
        if not improved:
            return best_x
    return best_x


def fit_gemm_efficiency(rows: Sequence[GemmRow], device: Device, source: str,
                        start: GemmEfficiency | None = None) -> GemmEfficiency:
    """Least squares on log(modelled time / published time) over `rows`, measured on `device` in fp8."""
    num_sms = NUM_SMS.get(device.name, HOPPER_NUM_SMS)
    m, n, k, groups = (np.array([getattr(r, a) for r in rows]) for a in ("m", "n", "k", "groups"))
    block_m, block_n, waves = _tile_shape(m, n, groups, np.array([r.layout == "contiguous" for r in rows]), num_sms)
    log_published_s = np.log([r.time_s for r in rows])
    fp8 = DTYPES["fp8"].bytes_per_element
    out = DTYPES["bf16"].bytes_per_element  # DeepGEMM writes bf16

    def loss(x: np.ndarray) -> float:
        _, _, total_s = _gemm_times(_to_params(x), num_sms, device.peak_flops_per_s["fp8"], device.hbm_bytes_per_s,
                                    m, n, k, groups, block_m, block_n, waves, fp8, fp8, out)
        return float(np.sum((np.log(total_s) - log_published_s) ** 2))

    x0 = _from_params(_FIRST_GUESS if start is None else _params_of(start))
    params = _to_params(_nelder_mead(loss, x0))
    return GemmEfficiency(*params, hardware=device.name, source=source)


@lru_cache(maxsize=64)
def _params_of(fit: GemmEfficiency) -> tuple[float, ...]:
    return tuple(getattr(fit, f.name) for f in fields(GemmEfficiency) if f.name not in ("hardware", "source"))


@lru_cache(maxsize=None)
def hopper_gemm_fit() -> GemmEfficiency:
    """The fit to the DeepGEMM H800 table (cached: the planner calls it on every GEMM)."""
    rows, hardware, source = load_deepgemm_table()
    return fit_gemm_efficiency(rows, load_device(hardware), f"fit to {source}")


@lru_cache(maxsize=None)
def _fit_report_rows() -> tuple[tuple, ...]:
    rows, hardware, source = load_deepgemm_table()
    device, full = load_device(hardware), hopper_gemm_fit()
    out = []
    for i, row in enumerate(rows):
        held_out = fit_gemm_efficiency(rows[:i] + rows[i + 1:], device, source, start=full)
        predicted, loo = (2.0 * row.groups * row.m * row.n * row.k / _row_time_s(f, row, device) for f in (full, held_out))
        out.append((("table", row.table), ("m", row.m), ("n", row.n), ("k", row.k), ("groups", row.groups),
                    ("published_tflops", row.flops_per_s / TFLOPS), ("predicted_tflops", predicted / TFLOPS),
                    ("error", predicted / row.flops_per_s - 1.0), ("loo_error", loo / row.flops_per_s - 1.0)))
    return tuple(out)


def _row_time_s(fit: GemmEfficiency, row: GemmRow, device: Device) -> float:
    return gemm_cost(device, row.m, row.n, row.k, "fp8", row.groups, row.layout, fit=fit).total_s


def fit_report() -> list[dict]:
    """Per DeepGEMM row: the fit's predicted TFLOP/s and its error, and the leave-one-out error
    (refit without the row, then predict it). error = predicted / published - 1."""
    return [dict(r) for r in _fit_report_rows()]


def fit_report_table(report: list[dict] | None = None) -> str:
    """fit_report() as a text table with its summary, e.g. for `print`."""
    report = fit_report() if report is None else report
    lines = [f"{'table':<19}{'G':>3}{'m':>6}{'n':>7}{'k':>7}{'published':>11}{'predicted':>11}{'error':>8}{'LOO':>8}",
             f"{'':<42}{'TFLOP/s':>11}{'TFLOP/s':>11}"]
    lines += [f"{r['table']:<19}{r['groups']:>3}{r['m']:>6}{r['n']:>7}{r['k']:>7}{r['published_tflops']:>11.0f}"
              f"{r['predicted_tflops']:>11.0f}{r['error']:>+8.1%}{r['loo_error']:>+8.1%}" for r in report]
    for table in dict.fromkeys(r["table"] for r in report):
        err = [abs(r["error"]) for r in report if r["table"] == table]
        loo = [abs(r["loo_error"]) for r in report if r["table"] == table]
        lines.append(f"{table}: |error| max {max(err):.1%}, median {float(np.median(err)):.1%}; "
                     f"|LOO| max {max(loo):.1%}, median {float(np.median(loo)):.1%}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# Costs


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


def _gemm_setup(device: Device, dtype: str, layout: str, weight_bytes_per_element: float | None,
                fit: GemmEfficiency | None) -> tuple[GemmEfficiency, float, int, float, float, str]:
    """(fit, peak FLOP/s, SMs, activation and weight bytes per element, source) of a GEMM, validated."""
    if layout not in LAYOUTS:
        raise InputError("layout", f"unknown GEMM layout '{layout}'", f"use one of {', '.join(LAYOUTS)}")
    fit = hopper_gemm_fit() if fit is None else fit
    used, peak, note = _peak(device, dtype)
    known_sms = NUM_SMS.get(device.name)
    source = f"DeepGEMM {fit.hardware} fit{_scaled(device, fit.hardware)}{note}" + (
        "" if known_sms else f"; {HOPPER_NUM_SMS} SMs assumed (Hopper's)")
    w_bytes = DTYPES[dtype].bytes_per_element if weight_bytes_per_element is None else weight_bytes_per_element
    return fit, peak, known_sms or HOPPER_NUM_SMS, DTYPES[used].bytes_per_element, w_bytes, source


def gemm_cost(device: Device, m: int, n: int, k: int, dtype: str = "fp8", groups: int = 1,
              layout: str = "dense", out_bytes_per_element: float = 2.0,
              weight_bytes_per_element: float | None = None,
              fit: GemmEfficiency | None = None, name: str = "gemm") -> OpCost:
    """`groups` GEMMs [m, k] x [k, n] -> [m, n], each group with its own weight, as the fitted model.

    dtype is the compute dtype; activations are read in the dtype of the peak actually used (fp4 on
    Hopper runs as fp8), weights at `weight_bytes_per_element` (default: dtype's bytes, as stored).
    compute_s is T_sm_s (MMA or operand feed, whichever binds), memory_s is T_hbm_s, and overhead_s
    holds the launch plus the part of the smaller term that does not overlap the larger.
    """
    if m < 0 or n < 1 or k < 1 or groups < 1:
        raise InputError(name, f"bad GEMM shape m={m}, n={n}, k={k}, groups={groups}", "m >= 0; n, k, groups >= 1")
    fit, peak, num_sms, a_bytes, w_bytes, source = _gemm_setup(device, dtype, layout, weight_bytes_per_element, fit)
    if m == 0:  # no rows: no tile runs
        return OpCost(name, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, source)
    block_m, block_n, waves = _tile_for(m, n, groups, layout, num_sms)
    sm_s, hbm_s, total_s = _gemm_times(_params_of(fit), num_sms, peak, device.hbm_bytes_per_s, m, n, k, groups,
                                       block_m, block_n, waves, a_bytes, w_bytes, out_bytes_per_element)
    sm_s, hbm_s, total_s = float(sm_s), float(hbm_s), float(total_s)
    flops = 2.0 * groups * m * n * k
    bytes_moved = groups * (m * k * a_bytes + n * k * w_bytes + m * n * out_bytes_per_element)
    return roofline_cost(name, flops, bytes_moved, peak, device.hbm_bytes_per_s,
                         compute_efficiency=flops / (peak * sm_s), memory_efficiency=fit.memory_efficiency,
                         overhead_s=total_s - max(sm_s, hbm_s), source=source)


def gemm_time_s(device: Device, m: np.ndarray, n: int, k: int, dtype: str = "fp8", groups: int = 1,
                layout: str = "dense", out_bytes_per_element: float = 2.0,
                weight_bytes_per_element: float | None = None, fit: GemmEfficiency | None = None) -> np.ndarray:
    """gemm_cost(...).total_s for an array of m (rows per group) at once; 0 where m is 0."""
    fit, peak, num_sms, a_bytes, w_bytes, _ = _gemm_setup(device, dtype, layout, weight_bytes_per_element, fit)
    m = np.asarray(m, dtype=np.int64)
    block_m, block_n, waves = _tile_shape(m, n, groups, layout == "contiguous", num_sms)
    _, _, total_s = _gemm_times(_params_of(fit), num_sms, peak, device.hbm_bytes_per_s, m, n, k, groups,
                                block_m, block_n, waves, a_bytes, w_bytes, out_bytes_per_element)
    return np.where(m > 0, total_s, 0.0)


def mla_decode_cost(device: Device, batch: int, context_tokens: float, num_heads: int,
                    kv_lora_rank: int = 512, qk_rope_head_dim: int = 64,
                    kv_bytes_per_element: float = 2.0, name: str = "mla_decode") -> OpCost:
    """Absorbed MLA decode attention (FlashMLA-style) of one query token per sequence over the latent cache.

    bytes = B ctx (R + r) kv_bytes + B H (R + r) q_bytes + B H R o_bytes     (cache, q in, out; bf16 q/out)
    flops = 2 B H ctx (2 R + r)                                              (q k^T over R + r, p v over R)
    at FlashMLA's H800 efficiencies as fractions of the device's bf16 peak and HBM bandwidth, plus the
    GEMM fit's launch overhead. B = batch, H = heads, R = kv_lora_rank, r = qk_rope_head_dim.
    """
    act = DTYPES["bf16"].bytes_per_element
    latent = kv_lora_rank + qk_rope_head_dim
    bytes_moved = batch * context_tokens * latent * kv_bytes_per_element + batch * num_heads * (latent + kv_lora_rank) * act
    flops = 2.0 * batch * num_heads * context_tokens * (2 * kv_lora_rank + qk_rope_head_dim)
    _, peak, note = _peak(device, "bf16")
    return roofline_cost(name, flops, bytes_moved, peak, device.hbm_bytes_per_s,
                         compute_efficiency=FLASHMLA_COMPUTE_EFFICIENCY, memory_efficiency=FLASHMLA_MEMORY_EFFICIENCY,
                         overhead_s=hopper_gemm_fit().launch_overhead_s,
                         source=f"{_FLASHMLA}{_scaled(device, 'h800-sxm')}{note}")


def attention_prefill_cost(device: Device, tokens: int, context_tokens: float, num_heads: int,
                           qk_head_dim: int, v_head_dim: int, dtype: str = "bf16",
                           name: str = "attention_prefill") -> OpCost:
    """Non-absorbed (FlashAttention-style) prefill attention of `tokens` queries over `context_tokens`
    keys each (the caller passes the causal average).

    flops = 2 T H ctx (d_qk + d_v);  bytes = H (d_qk + d_v) (T + ctx) x dtype bytes  (q and out once, k and
    v once over the average context: a floor, as the kernel is compute-bound). No published prefill
    table: FlashMLA's compute-bound efficiency (660 of 989 TFLOP/s) is assumed, and the source says so.
    """
    _, peak, note = _peak(device, dtype)
    flops = 2.0 * tokens * num_heads * context_tokens * (qk_head_dim + v_head_dim)
    bytes_moved = num_heads * (qk_head_dim + v_head_dim) * (tokens + context_tokens) * DTYPES[dtype].bytes_per_element
    return roofline_cost(name, flops, bytes_moved, peak, device.hbm_bytes_per_s,
                         compute_efficiency=FLASHMLA_COMPUTE_EFFICIENCY, memory_efficiency=FLASHMLA_MEMORY_EFFICIENCY,
                         overhead_s=hopper_gemm_fit().launch_overhead_s,
                         source=f"assumed for prefill (no published prefill table): {_FLASHMLA}"
                                f"{_scaled(device, 'h800-sxm')}{note}")


def quantize_activations_cost(device: Device, rows: float, cols: int, in_bytes_per_element: float,
                              out_bytes_per_element: float, name: str = "quantize_activations") -> OpCost:
    """Per-token-group quantisation of a GEMM's input (SGLang's and DeepSeek's per_token_group_quant_fp8,
    one fp32 scale per 128 channels, as DeepGEMM's fp8 kernels take their left operand): read the
    activations, write them narrow with their scales. Memory-bound."""
    bytes_moved = rows * cols * (in_bytes_per_element + out_bytes_per_element) + rows * cols / SCALE_BLOCK * 4
    return elementwise_cost(device, bytes_moved, name)


def elementwise_cost(device: Device, bytes_moved: float, name: str = "elementwise") -> OpCost:
    """A memory-bound kernel (norms, activations, residual adds, rope, router top-k): bytes at the GEMM
    fit's HBM efficiency eta_m, plus its launch overhead."""
    fit = hopper_gemm_fit()
    return roofline_cost(name, 0.0, bytes_moved, 1.0, device.hbm_bytes_per_s,
                         memory_efficiency=fit.memory_efficiency, overhead_s=fit.launch_overhead_s,
                         source=f"HBM efficiency {fit.memory_efficiency:.2f} of the DeepGEMM {fit.hardware} fit"
                                f"{_scaled(device, fit.hardware)}")
