"""Time to first token at a percentile, for prompts of spread lengths.

A prompt's TTFT is its own prefill time (a function of its length) plus the waits it queues for: a rank to
prefill it (M^X/G/c: the prompts before it, each for its own length, on ranks the router keeps evenly loaded,
requests that arrive together waiting for each other) and a free sequence slot (M/M/c, Erlang C: the slots are
the servers, a sequence's lifetime the holding time). Each wait is a mixture of no wait and an exponential tail
(`Wait`), so the tail of their sum has a closed form. The prompt lengths are a measured trace's
(hwmodels.ingest.traffic) or the workload's lognormal (its mean and coefficient of variation, cut at its longest
prompt), taken at equally likely quantiles. Then

    P(TTFT > x) = sum over rate levels k of share_k x mean over prompt lengths L of P(waits_k > x - prefill_s(L)),

and the TTFT at percentile p is the least x with P(TTFT > x) <= 1 - p / 100. A `Regime` is one rate level of the
traffic (a trace's busy and quiet minutes, hwmodels.deployment.Arrivals; Poisson traffic has one) with the waits
at its rate; bursty arrivals (squared coefficient of variation c_a^2 > 1) stretch the waits (Allen and Cunneen's
G/G/c approximation). The waits are taken independent of the prompt's length (a first-come first-served queue
does not know it); the simulator checks the whole.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist

import numpy as np

from hwmodels.ingest.traffic import LENGTH_POINTS


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


@dataclass(frozen=True)
class Regime:
    """A share of the requests and the waits they meet (one rate level of the traffic)."""
    share: float
    waits: tuple[Wait, ...]


def steady(*waits: Wait) -> tuple[Regime, ...]:
    """Every request meets the same waits (stationary traffic)."""
    return (Regime(1.0, waits),)


def mm1_wait(service_s: float, utilisation: float) -> Wait:
    """The wait for a server of an M/M/1 queue at `utilisation`: P(W > t) = rho exp(-(1 - rho) t / service)."""
    if utilisation <= 0:
        return NO_WAIT
    if utilisation >= 1:
        return Wait(1.0, 0.0)
    return Wait(utilisation, (1.0 - utilisation) / service_s)


@dataclass(frozen=True)
class Service:
    """The first two moments of equally likely service times (what the waits below depend on)."""
    mean_s: float
    second_s2: float

    @staticmethod
    def of(service_s: np.ndarray) -> Service:
        s = np.asarray(service_s, dtype=float)
        return Service(float(s.mean()), float(np.mean(s * s)))


def mgc_wait(service: Service | np.ndarray, utilisation: float, servers: int = 1, arrival_scv: float = 1.0,
             clump_size: float = 1.0, step_s: float = 0.0) -> Wait:
    """The wait for one of `servers` ranks that share a queue (a router sending each prompt to the rank with the
    least queued work), each at `utilisation`, whose equally likely service times are `service_s` (a prompt's
    prefill, each for its own length), for requests that arrive in clumps of size-biased mean `clump_size` per
    rank (E[X^2] / E[X]; 1: one at a time), the clumps with squared coefficient of variation `arrival_scv`
    (Poisson 1). The mean wait is the M^X/G/c one,
        E[W] = C(c, c rho) E[S] / (c (1 - rho)) x (c_a^2 + c_s^2) / 2 + E[S] (clump_size - 1) / (2 (1 - rho)),
    Erlang C's wait with Allen-Cunneen's factor (one rank: Pollaczek-Khinchine) plus the wait for the requests
    ahead in one's own clump, as a wait with probability 1 - (1 - C) / clump_size (only the first of a clump can
    find a rank idle) and an exponential tail of that mean. A rank prefills in steps of `step_s` (chunked prefill,
    several prompts to a step): a prompt that found the rank busy shares its last step with the prompts queued
    behind it and ends with that step, half a step later on average, which the mean adds. Long prompts make the
    wait long for everyone behind them; one rank, exponential service and Poisson arrivals one at a time give back
    mm1_wait."""
    if utilisation >= 1:
        return Wait(1.0, 0.0)
    service = service if isinstance(service, Service) else Service.of(service)
    mean, second = service.mean_s, service.second_s2
    ahead = max(clump_size - 1.0, 0.0)
    rho = max(utilisation, 0.0)
    if rho == 0 and ahead == 0:
        return NO_WAIT
    service_scv = second / (mean * mean) - 1.0
    busy = erlang_c(servers, servers * rho) if rho > 0 else 0.0
    mean_wait = (busy * mean / (servers * (1.0 - rho)) * (arrival_scv + service_scv) / 2.0
                 + mean * ahead / (2.0 * (1.0 - rho)))
    p_wait = 1.0 - (1.0 - busy) / max(clump_size, 1.0)
    mean_wait += p_wait * step_s / 2.0
    return Wait(p_wait, p_wait / mean_wait) if p_wait > 0 and mean_wait > 0 else NO_WAIT


def _burst(arrival_scv: float, service_scv: float) -> float:
    """Allen-Cunneen: a G/G/c wait over the M/G/c wait of the same utilisation."""
    return (arrival_scv + service_scv) / (1.0 + service_scv)


def erlang_c(servers: int, offered: float) -> float:
    """P(an arrival waits) in M/M/c with `offered` = arrival rate x mean holding time (Erlang C), from Erlang B's
    recursion B(k) = a B(k-1) / (k + a B(k-1)), which stays in [0, 1] for any c."""
    if offered >= servers:
        return 1.0
    b = 1.0
    for k in range(1, servers + 1):
        b = offered * b / (k + offered * b)
    return servers * b / (servers - offered * (1.0 - b))


def slot_wait(slots: int, holding_s: float, arrivals_per_s: float, arrival_scv: float = 1.0) -> Wait:
    """The wait for a free one of `slots` sequence slots (M/M/c): P(W > t) = C(c, a) exp(-(c / h - lambda) t), the
    tail's mean stretched for bursty arrivals (Allen-Cunneen, exponential holding times)."""
    if arrivals_per_s <= 0:
        return NO_WAIT
    offered = arrivals_per_s * holding_s
    if offered >= slots:
        return Wait(1.0, 0.0)
    return Wait(erlang_c(slots, offered), (slots / holding_s - arrivals_per_s) / _burst(arrival_scv, 1.0))


def lognormal_lengths(mean: float, cv: float, longest: int | None = None, points: int = LENGTH_POINTS) -> np.ndarray:
    """Equally likely prompt (or output) lengths in tokens: the lognormal of this mean and coefficient of variation at the
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


def ttft_tail(x_s: float, prefill_s: np.ndarray, regimes: tuple[Regime, ...] = ()) -> float:
    """P(TTFT > x_s) over equally likely prompts whose prefill takes `prefill_s`, each queueing for the waits of its
    regime (none: no waits)."""
    slack = x_s - np.asarray(prefill_s, dtype=float)
    ok = slack >= 0
    late = 1.0 - float(ok.mean())  # prompts whose prefill alone runs over
    if not regimes:
        return late
    tail = 0.0
    for regime in regimes:
        if len(regime.waits) > 2:
            raise ValueError("at most two waits")
        if any(w.unbounded for w in regime.waits):
            tail += regime.share
        else:
            tail += regime.share * (late + float(_sum_tail(slack[ok], regime.waits).sum()) / len(slack))
    return tail


def ttft_percentile_s(prefill_s: np.ndarray, regimes: tuple[Regime, ...], percentile: float) -> float:
    """The TTFT at `percentile`: the least x with P(TTFT > x) <= 1 - percentile / 100 (inf if waits that never end
    hold more than that share of the requests)."""
    allowed = 1.0 - percentile / 100.0
    if sum(r.share for r in regimes if any(w.unbounded for w in r.waits)) > allowed:
        return math.inf
    lo, hi = 0.0, float(np.max(prefill_s)) + 1e-9
    step = max(hi, 1e-3)
    while ttft_tail(hi, prefill_s, regimes) > allowed:
        lo, hi, step = hi, hi + step, 2 * step
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if ttft_tail(mid, prefill_s, regimes) <= allowed else (mid, hi)
    return hi
