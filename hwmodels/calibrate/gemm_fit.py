"""The GEMM efficiency model (hwmodels.efficiency) fitted to DeepGEMM's published fp8 table (H800).

Least squares on log(modelled time / published time) over the 28 rows of catalogs/published/kernels.yaml
`deepgemm_fp8_gemm`, by Nelder-Mead from physical first guesses. The fit and its report (every row's
predicted TFLOP/s and error, and the leave-one-out error: refit without the row, then predict it) are stored
as data in catalogs/fits/deepgemm-h800.yaml, which the step model reads; `python -m hwmodels.calibrate`
refits and rewrites it, and tests/test_gemm_fit.py checks the stored fit is what this module fits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Callable, Sequence

import numpy as np

from hwmodels import catalog
from hwmodels.efficiency import HOPPER_NUM_SMS, GemmEfficiency, _gemm_times, _tile_shape, gemm_cost
from hwmodels.hardware import Device
from hwmodels.precision import DTYPES
from hwmodels.units import TFLOPS, us

_TABLE_LAYOUT = {"dense": "dense", "grouped_contiguous": "contiguous", "grouped_masked": "masked"}
PARAMETERS = tuple(f.name for f in fields(GemmEfficiency) if f.name not in ("hardware", "source"))


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
    table = catalog.published_kernels()["deepgemm_fp8_gemm"]
    rows = [GemmRow("dense", 1, m, n, k, tflops * TFLOPS) for m, n, k, tflops, _ in table["dense"]]
    for name in ("grouped_contiguous", "grouped_masked"):
        rows += [GemmRow(name, g, m, n, k, tflops * TFLOPS) for g, m, n, k, tflops, _ in table[name]]
    return tuple(rows), table["hardware"], table["source"]


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
    num_sms = device.num_sms or HOPPER_NUM_SMS
    m, n, k, groups = (np.array([getattr(r, a) for r in rows]) for a in ("m", "n", "k", "groups"))
    block_m, block_n, waves = _tile_shape(m, n, groups, np.array([r.layout == "contiguous" for r in rows]), num_sms)
    log_published_s = np.log([r.time_s for r in rows])
    fp8 = DTYPES["fp8"].bytes_per_element
    out = DTYPES["bf16"].bytes_per_element  # DeepGEMM writes bf16

    def loss(x: np.ndarray) -> float:
        _, _, total_s = _gemm_times(_to_params(x), num_sms, device.peak_flops_per_s["fp8"], device.hbm_bytes_per_s,
                                    m, n, k, groups, block_m, block_n, waves, fp8, fp8, out)
        return float(np.sum((np.log(total_s) - log_published_s) ** 2))

    x0 = _from_params(_FIRST_GUESS if start is None else start.params)
    params = _to_params(_nelder_mead(loss, x0))
    return GemmEfficiency(*params, hardware=device.name, source=source)


def fit_deepgemm() -> GemmEfficiency:
    """The fit to the whole DeepGEMM H800 table (what catalogs/fits/deepgemm-h800.yaml stores)."""
    rows, hardware, source = load_deepgemm_table()
    return fit_gemm_efficiency(rows, catalog.load_device(hardware), f"fit to {source}")


def fit_report(fit: GemmEfficiency) -> list[dict]:
    """Per DeepGEMM row: `fit`'s predicted TFLOP/s and its error, and the leave-one-out error (refit without
    the row, starting from `fit`, then predict it). error = predicted / published - 1."""
    rows, hardware, source = load_deepgemm_table()
    device = catalog.load_device(hardware)
    out = []
    for i, row in enumerate(rows):
        held_out = fit_gemm_efficiency(rows[:i] + rows[i + 1:], device, source, start=fit)
        predicted, loo = (2.0 * row.groups * row.m * row.n * row.k / _row_time_s(f, row, device) for f in (fit, held_out))
        out.append({"table": row.table, "m": row.m, "n": row.n, "k": row.k, "groups": row.groups,
                    "published_tflops": row.flops_per_s / TFLOPS, "predicted_tflops": predicted / TFLOPS,
                    "error": predicted / row.flops_per_s - 1.0, "loo_error": loo / row.flops_per_s - 1.0})
    return out


def _row_time_s(fit: GemmEfficiency, row: GemmRow, device: Device) -> float:
    return gemm_cost(device, row.m, row.n, row.k, fit, "fp8", row.groups, row.layout).total_s


def fit_report_table(report: list[dict]) -> str:
    """A fit report (the stored one, or fit_report's) as a text table with its summary, e.g. for `print`."""
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


def stored_record(fit: GemmEfficiency, report: list[dict]) -> dict:
    """What catalogs/fits/deepgemm-h800.yaml holds: the parameters, where they came from, and the report."""
    rows, _, _ = load_deepgemm_table()
    return {"schema_version": 1,
            "fitted_by": "hwmodels.calibrate.gemm_fit.fit_deepgemm (python -m hwmodels.calibrate)",
            "fitted_on": f"catalogs/published/kernels.yaml deepgemm_fp8_gemm ({len(rows)} rows)",
            "hardware": fit.hardware, "source": fit.source,
            "parameters": {name: float(getattr(fit, name)) for name in PARAMETERS},
            "report": report}
