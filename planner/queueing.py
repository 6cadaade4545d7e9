"""Time to first token at a percentile, for prompts of spread lengths.

A prompt's TTFT is its own prefill time (a function of its length) plus the waits it queues for: the rank
that prefills it (M/G/1: the prompts before it on that rank, each for its own length) and a free sequence
slot (M/M/c, Erlang C: the slots are the servers, a sequence's lifetime the holding time). Each wait is a
mixture of no wait and an exponential tail (`Wait`), so the tail of their sum has a closed form; the prompt
lengths are the workload's lognormal (its mean and coefficient of variation, cut at its longest prompt),
taken at equally likely quantiles. Then

    P(TTFT > x) = mean over prompt lengths L of P(waits > x - prefill_s(L)),

and the TTFT at percentile p is the least x with P(TTFT > x) <= 1 - p / 100. The waits are taken independent
of the prompt's length (a first-come first-served queue does not know it); the simulator checks the whole.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist

import numpy as np

LENGTH_POINTS = 256  # equally likely prompt lengths: the 99th percentile falls between two of them


@dataclass(frozen=True)
class Wait:
    """A wait that is 0 with probability 1 - p_wait, else exponential at rate_per_s (0: it never ends)."""
    p_wait: float
    rate_per_s: float

    @property
    def unbounded(self) -> bool:
        return self.p_wait > 0 and self.rate_per_s <= 0

    def tail(self, t: np.ndarray) -> np.ndarray:
        """P(W > t), t >= 0."""
        return self.p_wait * np.exp(-self.rate_per_s * t)


NO_WAIT = Wait(0.0, math.inf)


def mm1_wait(service_s: float, utilisation: float) -> Wait:
    """The wait for a server of an M/M/1 queue at `utilisation`: P(W > t) = rho exp(-(1 - rho) t / service)."""
    if utilisation <= 0:
        return NO_WAIT
    if utilisation >= 1:
        return Wait(1.0, 0.0)
    return Wait(utilisation, (1.0 - utilisation) / service_s)


def mg1_wait(service_s: np.ndarray, utilisation: float) -> Wait:
    """The wait for a server of an M/G/1 queue at `utilisation` whose equally likely service times are `service_s`
    (a rank prefilling prompts first-come first-served, each for its own length): waiting with probability rho,
    then exponential with the Pollaczek-Khinchine mean, E[W | W > 0] = E[S^2] / (2 E[S] (1 - rho)). Long prompts
    make the wait long for everyone behind them; exponential service gives back mm1_wait."""
    if utilisation <= 0:
        return NO_WAIT
    if utilisation >= 1:
        return Wait(1.0, 0.0)
    s = np.asarray(service_s, dtype=float)
    return Wait(utilisation, 2.0 * s.mean() * (1.0 - utilisation) / float(np.mean(s * s)))


def erlang_c(servers: int, offered: float) -> float:
    """P(an arrival waits) in M/M/c with `offered` = arrival rate x mean holding time (Erlang C), from Erlang B's
    recursion B(k) = a B(k-1) / (k + a B(k-1)), which stays in [0, 1] for any c."""
    if offered >= servers:
        return 1.0
    b = 1.0
    for k in range(1, servers + 1):
        b = offered * b / (k + offered * b)
    return servers * b / (servers - offered * (1.0 - b))


def slot_wait(slots: int, holding_s: float, arrivals_per_s: float) -> Wait:
    """The wait for a free one of `slots` sequence slots (M/M/c): P(W > t) = C(c, a) exp(-(c / h - lambda) t)."""
    if arrivals_per_s <= 0:
        return NO_WAIT
    offered = arrivals_per_s * holding_s
    if offered >= slots:
        return Wait(1.0, 0.0)
    return Wait(erlang_c(slots, offered), slots / holding_s - arrivals_per_s)


def prompt_lengths(mean: float, cv: float, longest: int | None = None, points: int = LENGTH_POINTS) -> np.ndarray:
    """Equally likely prompt lengths in tokens: the lognormal of this mean and coefficient of variation at the
    quantiles (k + 1/2) / points, cut at `longest` (the mean alone at cv 0)."""
    if cv <= 0:
        return np.array([float(mean)])
    sigma = math.sqrt(math.log1p(cv * cv))
    lengths = np.exp(math.log(mean) - sigma * sigma / 2 + sigma * _normal_quantiles(points))
    return np.maximum(1.0, np.minimum(lengths, longest) if longest else lengths)


@lru_cache(maxsize=8)
def _normal_quantiles(points: int) -> np.ndarray:
    z = np.array([NormalDist().inv_cdf((k + 0.5) / points) for k in range(points)])
    z.flags.writeable = False  # shared by every call
    return z


def _sum_tail(t: np.ndarray, waits: tuple[Wait, ...]) -> np.ndarray:
    """P(sum of the waits > t), t >= 0: one or two mixtures of no wait and an exponential."""
    waits = tuple(w for w in waits if w.p_wait > 0)
    if not waits:
        return np.zeros_like(t)
    if len(waits) == 1:
        return waits[0].tail(t)
    (a, alpha), (b, beta) = (waits[0].p_wait, waits[0].rate_per_s), (waits[1].p_wait, waits[1].rate_per_s)
    if abs(beta - alpha) <= 1e-9 * max(alpha, beta):  # Erlang-2: the limit of the hypoexponential below
        both = (1 + alpha * t) * np.exp(-alpha * t)
    else:  # hypoexponential: P(Exp(alpha) + Exp(beta) > t)
        both = (beta * np.exp(-alpha * t) - alpha * np.exp(-beta * t)) / (beta - alpha)
    return a * (1 - b) * np.exp(-alpha * t) + b * (1 - a) * np.exp(-beta * t) + a * b * both


def ttft_tail(x_s: float, prefill_s: np.ndarray, waits: tuple[Wait, ...] = ()) -> float:
    """P(TTFT > x_s) over equally likely prompts whose prefill takes `prefill_s`, each queueing for `waits`."""
    if len(waits) > 2:
        raise ValueError("at most two waits")
    if any(w.unbounded for w in waits):
        return 1.0
    slack = x_s - np.asarray(prefill_s, dtype=float)
    tail = np.ones_like(slack)
    ok = slack >= 0
    tail[ok] = _sum_tail(slack[ok], waits)
    return float(tail.mean())


def ttft_percentile_s(prefill_s: np.ndarray, waits: tuple[Wait, ...], percentile: float) -> float:
    """The TTFT at `percentile`: the least x with P(TTFT > x) <= 1 - percentile / 100 (inf if the waits never end)."""
    allowed = 1.0 - percentile / 100.0
    if any(w.unbounded for w in waits):
        return math.inf
    lo, hi = 0.0, float(np.max(prefill_s)) + 1e-9
    step = max(hi, 1e-3)
    while ttft_tail(hi, prefill_s, waits) > allowed:
        lo, hi, step = hi, hi + step, 2 * step
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if ttft_tail(mid, prefill_s, waits) <= allowed else (mid, hi)
    return hi
