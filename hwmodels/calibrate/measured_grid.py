"""Interpolation over a measured table's own coordinates.

A `Grid` is one table cut to its numeric axes (e.g. GEMM: m, n, k for one dtype), every axis the sorted
distinct values the table measured, the latency at each grid point (NaN where that combination was not
measured). The rule, the same for every table:

1. Inside the measured range of every axis: multilinear interpolation of log(latency) in log(coordinate)
   between the 2^d surrounding grid points. Kernel latency is close to a power law of each size between two
   measured sizes (flat where launch-bound, linear where bound by work), which log-log interpolation follows
   exactly at both ends; it never leaves the range of the surrounding measurements.
2. The token axis (GEMM m, MoE tokens, attention batch) past its largest measured value: the latency at the
   largest value scaled linearly in tokens (the work-bound limit, where time is proportional to tokens);
   below its smallest: the latency at the smallest (the launch-bound floor). `beyond` records the ratio.
   The same holds within each slice of the other axes: a table measured only up to a token count that falls
   with another axis (NVIDIA's attention tables stop at about 2^18 batch x KV tokens, so 2,048 sequences only at
   short contexts) has its unmeasured points past a slice's largest measured token count filled from that
   largest point, linearly in tokens, and `beyond` records that ratio where a lookup uses such a point.
3. Any other axis outside its measured range, or a surrounding grid point that was not measured: not
   covered (`lookup` returns None with `beyond`), and the caller falls back to the fitted model, labelled.
"""

from __future__ import annotations

import itertools
import math
from bisect import bisect_left
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd


@dataclass(frozen=True, eq=False)
class Grid:
    """axes: per axis, its sorted measured values; log_latency: [len(axis) for axis in axes], NaN = not measured.
    token_axis: the index of the axis rule 2 extrapolates along (None: none)."""

    names: tuple[str, ...]
    axes: tuple[np.ndarray, ...]
    log_latency: np.ndarray
    token_axis: int | None

    @classmethod
    def from_frame(cls, rows: pd.DataFrame, axes: tuple[str, ...], token_axis: str | None,
                   value: str = "latency") -> Grid | None:
        """The grid of `rows` over `axes`; duplicate points (several kernels of one dtype) keep the fastest,
        the kernel an engine's autotuner would pick. None when `rows` is empty or holds a non-positive time."""
        rows = rows[rows[value] > 0]
        if rows.empty:
            return None
        best = rows.groupby(list(axes), sort=True)[value].min()
        values = tuple(np.array(sorted(rows[a].unique()), dtype=float) for a in axes)
        table = np.full(tuple(len(v) for v in values), np.nan)
        index = tuple(np.searchsorted(v, np.asarray(best.index.get_level_values(i), dtype=float))
                      for i, v in enumerate(values))
        table[index] = np.log(best.to_numpy(dtype=float))
        return cls(tuple(axes), values, table, axes.index(token_axis) if token_axis in axes else None)

    def lookup(self, point: tuple[float, ...]) -> tuple[float | None, float]:
        """(latency in the table's unit or None where not covered, beyond): beyond is how far the point lies
        outside the measured range, as the largest ratio of asked to nearest measured coordinate (1.0 inside).
        Plain Python over lists (`_flat`): a point is a handful of scalars, where numpy's per-call cost dominates."""
        axes, log_axes, strides, values, filled_beyond = self._flat
        corners = [(0, 1.0)]  # (flat index, weight) of the surrounding grid points, the last axis varying fastest
        scale, beyond = 1.0, 1.0
        for i, x in enumerate(point):
            x, axis, logs, stride = float(x), axes[i], log_axes[i], strides[i]
            lo, hi = axis[0], axis[-1]
            if x > hi or x < lo:
                ratio = x / hi if x > hi else lo / max(x, 1e-30)
                beyond = max(beyond, ratio)
                if i != self.token_axis:
                    return None, float(beyond)
                if x > hi:
                    scale = x / hi  # rule 2: linear in tokens past the largest measurement
                x = min(max(x, lo), hi)
            j = bisect_left(axis, x)
            if j < len(axis) and axis[j] == x:
                corners = [(f + j * stride, cw) for f, cw in corners]
                continue
            w = (math.log(x) - logs[j - 1]) / (logs[j] - logs[j - 1])
            below, above = (j - 1) * stride, j * stride
            corners = [c for f, cw in corners for c in ((f + below, cw * (1.0 - w)), (f + above, cw * w))]
        total = 0.0
        for f, weight in corners:
            v = values[f]
            if v != v:  # NaN: a surrounding point not measured
                return None, float(beyond)
            total += weight * v
            if filled_beyond[f] > beyond:
                beyond = filled_beyond[f]
        return math.exp(total) * scale, float(beyond)

    @cached_property
    def _flat(self) -> tuple[tuple[list[float], ...], tuple[list[float], ...], tuple[int, ...], list[float], list[float]]:
        """(each axis, its logs, its stride in the flattened table, the flattened log latencies with each slice
        filled past its largest measured token count (rule 2), how far each filled point lies past it (1.0 where
        measured)) as Python lists."""
        shape = self.log_latency.shape
        strides = tuple(math.prod(shape[i + 1:]) for i in range(len(shape)))  # C order, as ravel() flattens
        filled, beyond = self._filled()
        return (tuple(a.tolist() for a in self.axes), tuple([math.log(v) for v in a.tolist()] for a in self.axes),
                strides, filled.ravel().tolist(), beyond.ravel().tolist())

    def _filled(self) -> tuple[np.ndarray, np.ndarray]:
        table, beyond = self.log_latency.copy(), np.ones_like(self.log_latency)
        if self.token_axis is None:
            return table, beyond
        t = np.moveaxis(table, self.token_axis, -1)  # views: writing them fills `table` and `beyond`
        b = np.moveaxis(beyond, self.token_axis, -1)
        tokens = self.axes[self.token_axis]
        for index in np.ndindex(t.shape[:-1]):
            measured = np.flatnonzero(~np.isnan(t[index]))
            if not len(measured):
                continue
            last = measured[-1]
            past = np.arange(last + 1, len(tokens))
            t[index][past] = t[index][last] + np.log(tokens[past] / tokens[last])
            b[index][past] = tokens[past] / tokens[last]
        return table, beyond
