"""A request trace as the traffic a plan is sized for: mean lengths and their spread, the prompt lengths at equally
likely quantiles, the arrival rate, its swings from minute to minute and the burstiness within a minute.

The planner's queueing (planner.queueing) takes a prompt's TTFT over the prompt lengths as the trace has them (not a
lognormal fitted to them: real prompt tails are heavier) and over the trace's minutes, each at its own rate: the
requests of a busy minute queue as a queue at that minute's rate would (the pointwise-stationary approximation,
Green & Kolesar, Management Science 37(1), 1991). Within a minute, requests that arrive together (Mooncake's
conversation trace stamps them on a 3 s beat, ten at a time) wait for each other: the clumps' size is kept for the
batch-arrival queue (M^X/G/1), and the clumps' own burstiness (the index of dispersion of their counts at the
SLO's time scale) scales the waits (Allen-Cunneen).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hwmodels.deployment import Arrivals, POISSON
from hwmodels.ingest.requests import RequestTrace

LENGTH_POINTS = 256  # equally likely prompt lengths: the 99th percentile falls between two of them
WINDOW_S = 60.0  # a rate level's span: long against a TTFT's queueing (seconds), short against a day's swings
RATE_LEVELS = 8  # the minutes grouped into this many levels of equal request share (the planner's work grows with it)
MIN_BIN_S = 1.0  # the burstiness is counted over bins of the TTFT SLO, at least this and at most a quarter window
CLUMP_S = 1e-3  # requests this close arrive together: a millisecond, the finest stamp of the public traces


@dataclass(frozen=True)
class Traffic:
    """What a trace says about its traffic, in the Workload's terms."""
    requests: int
    duration_s: float
    requests_per_s: float
    input_tokens: int  # means, rounded
    output_tokens: int
    max_input_tokens: int
    input_cv: float
    output_cv: float
    prompt_lengths: tuple[float, ...]  # tokens, at LENGTH_POINTS equally likely quantiles
    output_lengths: tuple[float, ...]
    arrivals: Arrivals

    def describe(self) -> str:
        levels = self.arrivals.levels
        busiest = max(m for _, m in levels)
        clumps = f"in clumps of {self.arrivals.clump_size:.1f}, " if self.arrivals.clump_size > 1.05 else ""
        return (f"{self.requests:,} requests over {self.duration_s:,.0f} s ({self.requests_per_s:.3g}/s; its busiest "
                f"{100 / len(levels):.0f}% of requests arrive at {busiest:.2f}x that, {clumps}burstiness "
                f"{self.arrivals.scv:.2g}), "
                f"mean {self.input_tokens:,} in (cv {self.input_cv:.2f}, longest {self.max_input_tokens:,}) / "
                f"{self.output_tokens:,} out (cv {self.output_cv:.2f})")


def traffic(trace: RequestTrace, timescale_s: float) -> Traffic:
    """The traffic of a trace of at least two requests over a positive span; `timescale_s`: the TTFT SLO, the
    span over which clumped arrivals make a prompt wait."""
    inputs, outputs = trace.input_tokens.astype(float), trace.output_tokens.astype(float)
    return Traffic(len(trace), trace.duration_s, trace.rate_per_s, round(inputs.mean()), round(outputs.mean()),
                   int(inputs.max()), _cv(inputs), _cv(outputs), quantiles(inputs), quantiles(outputs),
                   arrivals(trace.arrival_s, timescale_s))


def _cv(x: np.ndarray) -> float:
    return float(x.std() / x.mean())


def quantiles(lengths: np.ndarray, points: int = LENGTH_POINTS) -> tuple[float, ...]:
    """Lengths at the quantiles (k + 1/2) / points: what the planner's queueing and TPOT average over."""
    q = (np.arange(points) + 0.5) / points
    return tuple(float(x) for x in np.quantile(lengths, q))


def arrivals(arrival_s: np.ndarray, timescale_s: float) -> Arrivals:
    """Rate levels over WINDOW_S windows and the burstiness within them (see the module's docstring). A trace
    shorter than two windows is one level."""
    span = float(arrival_s[-1] - arrival_s[0])
    windows = int(span // WINDOW_S)
    first = np.r_[True, np.diff(arrival_s) > CLUMP_S]  # the first request of each clump
    sizes = np.bincount(np.cumsum(first))[1:].astype(float)
    clump_size = float((sizes * sizes).sum() / sizes.sum())
    clumps = arrival_s[first]
    if windows < 2:
        return Arrivals(((1.0, 1.0),), _dispersion(clumps, float(arrival_s[0]), span, timescale_s),
                        clump_size, "measured over the whole trace")
    # whole windows; the remainder joins the last one
    edges = arrival_s[0] + WINDOW_S * np.arange(windows + 1, dtype=float)
    edges[-1] = arrival_s[-1] + 1e-9
    counts = np.histogram(arrival_s, edges)[0].astype(float)
    rates = counts / np.diff(edges)
    mean_rate = counts.sum() / (edges[-1] - edges[0])
    # a window's count varies around its rate by Poisson noise (variance = count), which the queueing within a level
    # already holds: shrink the windows' rates toward the mean by the share of their spread that noise explains
    multiplier = rates / mean_rate
    noise = 1.0 / counts.mean()
    spread = float(multiplier.var())
    rates = mean_rate * (1.0 + math.sqrt(max(0.0, 1.0 - noise / spread)) * (multiplier - 1.0)) if spread > 0 else rates
    order = np.argsort(rates)
    share = np.cumsum(counts[order]) / counts.sum()
    level = np.minimum((share * RATE_LEVELS - 1e-9).astype(int), RATE_LEVELS - 1)  # equal shares of the requests
    levels = []
    for k in np.unique(level):
        inside = order[level == k]
        n = counts[inside].sum()
        if n > 0:  # the requests' view: a window weighs by its requests
            levels.append((float(n / counts.sum()), float((counts[inside] * rates[inside]).sum() / n / mean_rate)))
    scv = [(_dispersion(inside, lo, hi - lo, timescale_s), len(inside)) for lo, hi in zip(edges[:-1], edges[1:])
           if len(inside := clumps[(clumps >= lo) & (clumps < hi)]) > 1]
    mean_scv = sum(s * n for s, n in scv) / sum(n for _, n in scv) if scv else POISSON.scv
    return Arrivals(tuple(levels), mean_scv, clump_size, f"measured over {windows} windows of {WINDOW_S:g} s")


def _dispersion(arrival_s: np.ndarray, start_s: float, span_s: float, timescale_s: float) -> float:
    """The index of dispersion (variance / mean) of the counts in bins of the time scale from start_s over
    span_s (Poisson: 1)."""
    bin_s = min(max(timescale_s, MIN_BIN_S), span_s / 4) if span_s > 0 else 0.0
    if bin_s <= 0 or len(arrival_s) < 2:
        return POISSON.scv
    bins = max(1, math.floor(span_s / bin_s))
    counts = np.histogram(arrival_s, bins=bins, range=(start_s, start_s + bins * bin_s))[0]
    return float(counts.var() / counts.mean()) if counts.mean() > 0 else POISSON.scv
