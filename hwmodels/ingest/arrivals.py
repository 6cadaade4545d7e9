"""Arrival processes: renewal processes of inter-arrival gaps with a mean rate and a coefficient of variation.

"poisson" (exponential gaps, CV 1), "gamma" and "weibull" with the given CV of the gaps; cv = 0 gives evenly
spaced arrivals (the limit of both families). Synthetic traces and length-only CSVs draw their arrivals here,
ServeGen's windows their gaps (hwmodels.ingest.servegen).
"""

from __future__ import annotations

import math

import numpy as np

from hwmodels.errors import InputError

ARRIVAL_PROCESSES = ("poisson", "gamma", "weibull")


def arrivals(n: int, rate_per_s, process: str, cv: float, rng: np.random.Generator) -> np.ndarray:
    """[n] arrival times from 0 of a renewal process with mean gap 1 / rate_per_s."""
    if rate_per_s is None or isinstance(rate_per_s, bool) or not rate_per_s > 0 or not math.isfinite(rate_per_s):
        raise InputError("rate_per_s", f"is {rate_per_s!r}; requests without times need an arrival rate",
                         "pass rate_per_s (--rate requests per second) > 0")
    family, shape = _family(process, cv)
    return np.concatenate(([0.0], np.cumsum(gaps(n - 1, 1.0 / rate_per_s, family, shape, rng))))


def _family(process: str, cv: float) -> tuple[str, float]:
    """(gap family, its shape parameter) for an arrival process and CV; family "fixed" for cv 0."""
    if process not in ARRIVAL_PROCESSES:
        raise InputError("arrival", f"is {process!r}", f"one of {', '.join(ARRIVAL_PROCESSES)}")
    if isinstance(cv, bool) or not isinstance(cv, (int, float)) or not 0 <= cv < 50:
        raise InputError("cv", f"is {cv!r}", "a coefficient of variation of the gaps in [0, 50)")
    if process == "poisson":
        if cv != 1:
            raise InputError("cv", f"is {cv:g}, but Poisson arrivals have CV 1",
                             "use arrival gamma or weibull for another CV")
        return "exponential", 1.0
    if cv == 0:
        return "fixed", 0.0
    return process, (1 / cv**2 if process == "gamma" else _weibull_shape(cv))


def _weibull_shape(cv: float) -> float:
    """Weibull shape k whose CV is `cv`: CV^2 = Gamma(1 + 2/k) / Gamma(1 + 1/k)^2 - 1, decreasing in k."""
    def cv_of(k):
        return math.sqrt(math.expm1(math.lgamma(1 + 2 / k) - 2 * math.lgamma(1 + 1 / k)))

    lo, hi = math.log(0.05), math.log(1000.0)  # CV from about 1e7 down to 0.0013
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cv_of(math.exp(mid)) > cv else (lo, mid)
    return math.exp((lo + hi) / 2)


def gaps(n: int, mean_s: float, family: str, shape: float, rng: np.random.Generator) -> np.ndarray:
    """[n] inter-arrival gaps with mean `mean_s` from the family with that shape (scale set by the mean)."""
    if family == "fixed":
        return np.full(n, mean_s)
    if family == "exponential":
        return rng.exponential(mean_s, n)
    if family == "gamma":
        return rng.gamma(shape, mean_s / shape, n)
    return mean_s / math.gamma(1 + 1 / shape) * rng.weibull(shape, n)
