"""Step times of one expert-parallel group, memoised on a quantised key for the simulator.

A group steps in lockstep: every DP attention group ("rank") runs attention on its own batch and the
all-to-all waits for the slowest, while the routed experts process the tokens of every rank, so a step
costs hwmodels.step.lockstep_time_s of its busiest rank's batch and the group's mean batch.

A step evaluation (StepContext.step) takes about 0.2 ms (uniform load) to 10 ms (a skewed per-layer load)
and a replay takes hundreds of thousands of steps, so the simulator evaluates it on a grid and
interpolates. The key is (phase, work grid point, context grid point, routing window):
- work x (sequences per DP attention group for decode, prompt tokens per group for prefill): exact up
  to X_SEGMENT, then segments (32 j, 32 (j + 1)] interpolated linearly between their end points
  32 j + 1 and 32 (j + 1). GEMM tiles (64 or 128 rows, hwmodels.efficiency) make step time jump where
  a batch crosses a multiple of 32, 64 or 128 rows, so segments aligned to them, evaluated just past
  the jump, hold no jump of the dense GEMMs; a full prefill chunk (a multiple of 32) is exact;
- context y (decode: mean KV length of the batch; prefill: the context step_cost takes): a geometric
  grid of ratio Y_RATIO, linear in between. Attention reads the KV once per step, so step time is affine
  in the context (exactly so without two-batch overlap, whose max() of overlapped stages bends it);
- the routing window: exact.
Error against the exact step: decode steps of up to 32 sequences per group and full prefill chunks are exact
in x. On random points of Kimi K2 layouts with a skewed load (tests/test_sim_steps.py) the mean error is
0.002-0.04% and the worst 0.5% (decode) and 3% (prefill): a skewed layer's routed-expert GEMM gains a
tile at a batch size of its own, inside a segment. benchmarks/bench_sim.py measures it over the steps
of its replay.

Shape legend: W = routing windows, L = MoE layers, D = devices of the EP group.
"""

from __future__ import annotations

import math

from hwmodels.roles import Phase
from hwmodels.speculation import Speculation
from hwmodels.step import StepContext, StepCost, lockstep_time_s

X_SEGMENT = 32  # work exact up to here, then interpolated over segments of this many
Y_RATIO = 2 ** (1 / 4)  # context grid every 19%
MEAN_STEPS = 64  # a group's mean work per rank is kept to 1/64 of a token for its routed experts
_LOG_Y = math.log(Y_RATIO)


def _x_grid(x: int) -> tuple[int, int, float]:
    """Grid points around work x and the interpolation weight of the upper one."""
    if x <= X_SEGMENT:
        return x, x, 0.0
    hi = -(-x // X_SEGMENT) * X_SEGMENT
    lo = hi - X_SEGMENT + 1
    return lo, hi, (x - lo) / (hi - lo)


class StepTimes:
    """Memoised, interpolated step times of one instance (mutable: it fills its cache as the replay asks).

    contexts: the instance's StepContext in each routing window, in time order (the windows differ in expert load).
    speculation: a decode pool's MTP speculative decoding. Its decode steps verify the drafts, and each is counted
    per output token (the step over the tokens it advances a sequence on average): the replay moves sequences a
    token at a time, so it keeps their throughput and KV growth and leaves out the spread of accepted drafts.
    """

    def __init__(self, contexts: tuple[StepContext, ...], speculation: Speculation | None = None):
        self.contexts = contexts
        self.draft = speculation.draft_tokens if speculation else 0
        self.advance = speculation.tokens_per_step if speculation else 1.0
        self._cache: dict[tuple[str, int, int, int], tuple[float, float, float]] = {}
        self._expert: dict[tuple[str, int, int], float] = {}

    @property
    def evaluations(self) -> int:
        """Step evaluations made so far."""
        return len(self._cache)

    def exact(self, phase: str, work: float, context: float, window: int) -> StepCost:
        """The step of `work` sequences (decode) or prompt tokens (prefill) on every DP attention group."""
        ctx = self.contexts[window]
        return ctx.step(phase, work / ctx.layout.rank_devices, context, self.draft if phase == Phase.DECODE else 0)

    def exact_s(self, phase: str, work: float, context: float, window: int, mean_work: float | None = None) -> float:
        """time_s evaluated without the grid: the lockstep step of a group whose busiest rank has `work` and whose
        ranks have `mean_work` on average (None: all equal)."""
        ctx = self.contexts[window]
        tp, decode = ctx.layout.rank_devices, phase == Phase.DECODE
        return ctx.lockstep_s(phase, work / tp, work / tp if mean_work is None else mean_work / tp, context,
                              self.draft if decode else 0) / (self.advance if decode else 1.0)

    def _at(self, phase: str, x: int, j: int, window: int) -> tuple[float, float, float]:
        """(step time, routed-expert GEMM time, overlap ratio) at grid point (x, Y_RATIO ** j)."""
        key = (phase, x, j, window)
        cell = self._cache.get(key)
        if cell is None:
            cost = self.exact(phase, x, Y_RATIO ** j, window)
            per = self.advance if phase == Phase.DECODE else 1.0
            cell = self._cache[key] = (cost.time_s / per, cost.breakdown_s["expert_gemm"] / per, cost.overlap_ratio)
        return cell

    def _interpolate(self, phase: str, work: int, context: float, window: int) -> tuple[float, float, float]:
        x0, x1, fx = _x_grid(work)
        y = context if context > 1.0 else 1.0
        j = int(math.log(y) / _LOG_Y)
        fy = (y - Y_RATIO ** j) / (Y_RATIO ** j * (Y_RATIO - 1))
        if fx == 1.0:  # the top of a segment: a grid point
            x0, fx = x1, 0.0
        a, b = self._at(phase, x0, j, window), self._at(phase, x0, j + 1, window)
        low = [a[i] + fy * (b[i] - a[i]) for i in range(3)]
        if fx == 0.0:
            return low[0], low[1], low[2]
        a, b = self._at(phase, x1, j, window), self._at(phase, x1, j + 1, window)
        return tuple(low[i] + fx * (a[i] + fy * (b[i] - a[i]) - low[i]) for i in range(3))

    def _expert_s(self, phase: str, work: float, window: int) -> float:
        """Routed-expert GEMM time at `work` per rank, the mean over a group's ranks: a fraction of a token where
        most ranks are idle (a step reads only the experts its tokens chose, so one sequence among 24 ranks is
        far cheaper than one on each), kept per 1 / MEAN_STEPS of a token. It does not depend on the context,
        so it is read on the context grid's first row: exactly below X_SEGMENT, linear between grid points."""
        steps = max(round(work * MEAN_STEPS), 1)
        key = (phase, steps, window)
        t = self._expert.get(key)
        if t is None:
            x = steps / MEAN_STEPS
            if x < X_SEGMENT:
                per = self.advance if phase == Phase.DECODE else 1.0
                t = self.exact(phase, x, 1.0, window).breakdown_s["expert_gemm"] / per
            else:
                lo = math.floor(x)
                a, b = (self._interpolate(phase, w, 1.0, window)[1] for w in (lo, lo + 1))
                t = a + (x - lo) * (b - a)
            self._expert[key] = t
        return t

    def time_s(self, phase: str, work: int, context: float, window: int, mean_work: float | None = None) -> float:
        """Step time of a group whose busiest rank runs `work` sequences (decode) or prompt tokens (prefill)
        with `context` its mean KV length (decode) or step_cost's prompt context (prefill), and whose ranks run
        `mean_work` on average (None: all equal), in routing window `window`."""
        time, expert, ratio = self._interpolate(phase, work, context, window)
        if mean_work is None or mean_work >= work:
            return time
        return lockstep_time_s(time, expert, ratio, self._expert_s(phase, mean_work, window))
