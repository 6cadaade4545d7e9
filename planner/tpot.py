"""TPOT at the SLO percentile for the traffic a decode pool really carries.

A pool is sized to carry the traffic, so it runs below the batch it was scored at: its step is shorter. But its
DP attention ranks step in lockstep (hwmodels.step.lockstep_time_s), so every sequence of an instance waits for
the rank with the most sequences and the most KV to read, and a few long prompts make that rank slow for everyone.

Each rank holds a number of sequences (Poisson at its offered load, arrivals x holding time, capped at its slots),
each with a prompt drawn from the workload's lengths and part of its output generated. For snapshots of an
instance (SNAPSHOTS per rate level of the traffic, seeded), the step lasts the step model's time at the busiest
rank's sequences and KV tokens, the routed experts at the mean rank's tokens; a request sees the snapshots
weighted by the sequences in them (a busy instance holds more of the requests), and the holding time is solved
with the step it makes (a fixed point) and, in aggregated instances, the prefill stalls a sequence sits through
(Little's law: a rank that prefills holds more sequences). A request's TPOT is a mean over its steps, which this takes as one
snapshot (the instance's state changes about as slowly as the request lives: the tail is on the safe side), plus
the wait to join its rank's batch when the step under way ends (uniform over a step), which a request that
generates few tokens shares over few steps: the short answers of a real trace make the TPOT tail. The TPOT at
percentile p is the p-th percentile of that over the requests and their output lengths.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from hwmodels.deployment import Deployment
from hwmodels.roles import Phase
from hwmodels.step import StepContext
from planner.plan import Candidate

SNAPSHOTS = 512  # per rate level: the p99 rests on about five of them at one level, more over the levels
FIXED_POINT_ROUNDS = 4  # holding time <-> step time; converges in two or three (the step is nearly flat in load)
# the decode step is affine in the busiest rank's KV at a given batch: evaluated at these two mean contexts (tokens)
# and interpolated, extrapolated past them
CONTEXT_POINTS = (1024.0, 131_072.0)
DRAWS = 32  # requests drawn per snapshot (their output lengths and when they join)
SEED = 0
STALL_ROUNDS = 6  # arrivals during a stall, during the stall they add, ...: at a third of a rank stalled the sixth adds 0.14%
MAX_STALLED = 0.9  # the share of a rank's time prefill stalls its decode, at most (beyond it the rank cannot keep up)


def decode_tpot_s(d: Deployment, ctx: StepContext, dc: Candidate, instances: int, requests_per_s: float,
                  prompts: np.ndarray, outputs: np.ndarray, percentile: float,
                  prefill_stalls: tuple[np.ndarray, np.ndarray] | None = None) -> float:
    """The TPOT at `percentile` of a decode pool of `instances` x `dc` carrying `requests_per_s` (see the module's
    docstring). prompts, outputs: the workload's equally likely prompt and output lengths (planner.prompt_times).
    prefill_stalls: aggregated instances' (time a rank spends prefilling each prompt, the chunk steps it takes), per
    prompt of `prompts`; each chunk step lengthens the other ranks' step from their decode step at the load."""
    ranks = dc.layout.attention_devices // dc.layout.tp
    rng = np.random.default_rng(SEED)
    several = outputs[outputs >= 2]  # a one-token request has no TPOT
    several = several if len(several) else np.array([2.0])
    steps, weights = [], []
    for share, multiplier in d.workload.arrivals.levels:
        per_rank_per_s = requests_per_s * multiplier / (ranks * instances)
        snapshot_s, held = _snapshots(ctx, dc, per_rank_per_s, prompts, d.workload.output_tokens, rng)
        if prefill_stalls is not None:
            busy_s, chunks = prefill_stalls
            lengthen_s = _lengthen_s(dc, snapshot_s, held, busy_s, chunks)
            # a sequence holds its slot through the stalls too (Little's law): a rank's prefill takes this share of
            # its time and its group's other ranks' prefills lengthen its steps, so it holds more sequences
            stalled = min(per_rank_per_s * (float(busy_s.mean()) + (ranks - 1) * float(lengthen_s.mean())), MAX_STALLED)
            snapshot_s, held = _snapshots(ctx, dc, per_rank_per_s, prompts, d.workload.output_tokens, rng,
                                          1.0 / (1.0 - stalled))
            lengthen_s = _lengthen_s(dc, snapshot_s, held, busy_s, chunks)
        # each snapshot's step as requests of the workload's output lengths see it: a sequence joins its rank's batch
        # when the step under way ends, a wait its few steps share when it generates few tokens
        generated = rng.choice(several, (len(snapshot_s), DRAWS)) - 1
        # snapshot_s is per output token; the step under way that a joining sequence waits out is a whole step
        span_s = snapshot_s[:, None] * (generated + _advance(dc) * rng.uniform(0.0, 1.0, generated.shape))
        if prefill_stalls is not None:
            span_s = span_s + _stalls_s(rng, span_s, per_rank_per_s, ranks, busy_s, lengthen_s)
        steps.append((span_s / generated).ravel())
        weights.append(np.repeat(share * held / held.sum() / DRAWS, DRAWS))
    steps_s, w = np.concatenate(steps), np.concatenate(weights)
    order = np.argsort(steps_s)
    cumulative = np.cumsum(w[order]) / w.sum()
    return float(steps_s[order][min(np.searchsorted(cumulative, percentile / 100.0), len(order) - 1)])


def _lengthen_s(dc: Candidate, snapshot_s: np.ndarray, held: np.ndarray, busy_s: np.ndarray,
                chunks: np.ndarray) -> np.ndarray:
    """What each prompt's prefill adds to the other ranks of its group: its chunk steps over the decode steps they
    would have run meanwhile, at the load the snapshots hold (a light load's step is far shorter than the full
    batch's where the step reads only the experts its tokens chose)."""
    decode_s = float((snapshot_s * held).sum() / max(held.sum(), 1)) * _advance(dc)
    return np.maximum(busy_s - chunks * decode_s, 0.0)


def _stalls_s(rng: np.random.Generator, span_s: np.ndarray, per_rank_per_s: float, ranks: int, busy_s: np.ndarray,
              lengthen_s: np.ndarray) -> np.ndarray:
    """The prefill stalls of sequences decoding for `span_s` (see the module's docstring): the prompts queued behind
    each one's own (those that arrived while it waited for its rank and while its own prefilled), then those that
    arrive while it decodes and stalls. The wait is M/G/1's at the rank's prefill load: none with probability
    1 - rho, else exponential with the mean that makes Pollaczek-Khinchine's overall mean."""
    rho = min(per_rank_per_s * float(busy_s.mean()), MAX_STALLED)
    mean_wait_s = per_rank_per_s * float(np.mean(busy_s ** 2)) / (2 * (1 - rho))
    waiting = rng.uniform(size=span_s.shape) < rho
    wait_s = np.where(waiting, rng.exponential(mean_wait_s / max(rho, 1e-9), span_s.shape), 0.0)
    own = rng.poisson(per_rank_per_s * (wait_s + rng.choice(busy_s, span_s.shape)))
    window_s, total_s = span_s, np.zeros_like(span_s)
    for _ in range(STALL_ROUNDS):
        own = own + rng.poisson(per_rank_per_s * window_s)
        window_s = _compound(rng, own, busy_s) + _compound(rng, rng.poisson(per_rank_per_s * (ranks - 1) * window_s),
                                                           lengthen_s)
        total_s, own = total_s + window_s, np.zeros_like(own)
    return total_s


EXACT_DRAWS = 64  # a count up to this is summed draw by draw; beyond it, the central limit (memory stays bounded)


def _compound(rng: np.random.Generator, counts: np.ndarray, values: np.ndarray) -> np.ndarray:
    """For each count, the sum of that many draws of `values`: drawn one by one up to EXACT_DRAWS, beyond it the
    normal of the same mean and variance (a long decode on a busy group sees thousands of prompts)."""
    small = np.minimum(counts, EXACT_DRAWS)
    draws = rng.choice(values, int(small.sum()))
    owner = np.repeat(np.arange(counts.size), small.ravel())
    out = np.bincount(owner, weights=draws, minlength=counts.size).reshape(counts.shape)
    big = counts > EXACT_DRAWS
    if big.any():
        n = counts[big].astype(float)
        out[big] = np.maximum(n * values.mean() + np.sqrt(n * values.var()) * rng.standard_normal(n.shape), 0.0)
    return out


def _snapshots(ctx: StepContext, dc: Candidate, per_rank_per_s: float, prompts: np.ndarray, output: int,
               rng: np.random.Generator, stretch: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(each snapshot's step, the sequences it holds) of an instance whose ranks each take `per_rank_per_s`
    requests, the holding time solved with the step it makes; `stretch`: the holding time over the decode steps
    alone (prefill stalls lengthen it)."""
    tp, slots = dc.layout.tp, dc.work_per_device * dc.layout.tp
    ranks = dc.layout.attention_devices // tp
    step_s = dc.tpot_s
    for _ in range(FIXED_POINT_ROUNDS):
        offered = min(per_rank_per_s * output * step_s * stretch, slots)
        sequences = np.minimum(rng.poisson(offered, (SNAPSHOTS, ranks)), slots)
        held = sequences.sum(axis=1)
        if held.sum() == 0:  # so light a load that no snapshot holds a sequence: one alone on its rank
            return _steps_s(ctx, dc, np.ones((1, 1), int), np.array([[_mean_kv(prompts, output)]])), np.ones(1)
        snapshot_s = _steps_s(ctx, dc, sequences, _kv_tokens(rng, sequences, prompts, output))
        new_step_s = float((snapshot_s * held).sum() / held.sum())
        converged = abs(new_step_s - step_s) <= 1e-3 * step_s
        step_s = new_step_s
        if converged:
            break
    return snapshot_s, held


def _mean_kv(prompts: np.ndarray, output: int) -> float:
    return float(prompts.mean()) + output / 2


def _kv_tokens(rng: np.random.Generator, sequences: np.ndarray, prompts: np.ndarray, output: int) -> np.ndarray:
    """Each rank's KV tokens: its sequences' prompts (drawn from the workload's lengths) plus the part of the
    output each has generated (uniform: a sequence is anywhere in its life)."""
    total = int(sequences.sum())
    lengths = rng.choice(prompts, total) + rng.uniform(0.0, output, total)
    owner = np.repeat(np.arange(sequences.size), sequences.ravel())
    return np.bincount(owner, weights=lengths, minlength=sequences.size).reshape(sequences.shape)


def _advance(dc: Candidate) -> float:
    """Tokens a decode step advances a sequence (more than one with MTP speculative decoding, on average)."""
    return dc.speculation.tokens_per_step if dc.speculation else 1.0


def _steps_s(ctx: StepContext, dc: Candidate, sequences: np.ndarray, kv: np.ndarray) -> np.ndarray:
    """Each snapshot's lockstep decode step per output token: attention at its busiest rank (most sequences, most KV
    tokens), the experts at its mean rank, the step verifying the MTP drafts where the candidate speculates, over
    the tokens it advances. The step is affine in the context at a given batch (its attention reads the KV), so it
    is evaluated at two contexts per distinct busiest batch and interpolated."""
    tp, draft = dc.layout.tp, dc.speculation.draft_tokens if dc.speculation else 0
    busiest, most_kv, mean = sequences.max(axis=1), kv.max(axis=1), sequences.mean(axis=1)
    out = np.zeros(len(busiest))
    for b in np.unique(busiest):
        if b == 0:
            continue
        at = busiest == b
        lo, hi = CONTEXT_POINTS
        mean_tokens = float(max(mean[at].mean(), 1.0 / tp)) / tp
        t_lo, t_hi = (ctx.lockstep_s(Phase.DECODE, b / tp, mean_tokens, c, draft) / _advance(dc) for c in (lo, hi))
        context = most_kv[at] / b  # the busiest rank's KV as b sequences of equal length
        out[at] = t_lo + (t_hi - t_lo) * (context - lo) / (hi - lo)
    return out


def instances_for_tpot(tpot_at: Callable[[int], float], start: int, most: int, slo_s: float) -> int | None:
    """The fewest decode instances from `start` up to `most` whose TPOT (tpot_at(instances)) meets the SLO, or None;
    tried in steps of a quarter, as each try is a sampled TPOT."""
    n = start
    while n <= most:
        if tpot_at(n) <= slo_s:
            return n
        n = n + max(1, math.ceil(n / 4))
    return None
