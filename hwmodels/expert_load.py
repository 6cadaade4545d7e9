"""The per-device expert load of an expert-parallel group: each MoE layer's share of routed (token, expert)
pairs on each device, and where it came from (a placement of routing statistics, a published skew, or the
uniform no-data assumption). It flows as vectors from the planner and the simulator into the step model.

Shape legend: L = MoE layers, D = devices of the EP group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from hwmodels.alltoall_placement import PlacedRouting


@dataclass(frozen=True, eq=False)
class ExpertLoad:
    """Share of routed (token, expert) pairs each device of the EP group receives, per MoE layer.

    shares: [moe_layers, ep] rows summing to 1. `source` says where it came from (a placement of
    which routing statistics). `uniform(ep, layers)` is the no-data assumption.
    routing: where each expert's replicas sit and its share of the pairs (a placement of routing statistics);
      with it the step model prices dispatch and combine by placement (hwmodels.alltoall_placement), without
      it as the busiest device's share over evenly loaded others.
    """

    shares: np.ndarray
    source: str
    routing: PlacedRouting | None = None

    @staticmethod
    def uniform(ep: int, moe_layers: int) -> "ExpertLoad":
        return ExpertLoad(np.full((moe_layers, ep), 1.0 / ep), "uniform load (no routing data)")

    @staticmethod
    def from_imbalance(factor: float, ep: int, moe_layers: int, source: str) -> "ExpertLoad":
        """Every layer's busiest device receives `factor` times the mean; the others share the rest evenly."""
        factor = min(max(factor, 1.0), float(ep))
        busiest = factor / ep
        rest = (1.0 - busiest) / (ep - 1) if ep > 1 else 0.0
        shares = np.full((moe_layers, ep), rest)
        shares[:, 0] = busiest
        return ExpertLoad(shares, source)

    @staticmethod
    def measured_contiguous(skew: Mapping, phase: str, ep: int, moe_layers: int) -> "ExpertLoad":
        """Contiguous placement (no EPLB) at the imbalance measured on real routing statistics (a
        catalogs/routing_skew.yaml entry), interpolated log-log in the EP size."""
        table = sorted((int(k), float(v)) for k, v in skew["contiguous_imbalance"][phase].items())
        sizes, factors = np.log([t[0] for t in table]), np.log([t[1] for t in table])
        factor = float(np.exp(np.interp(np.log(ep), sizes, factors)))
        return ExpertLoad.from_imbalance(factor, ep, moe_layers,
                                         f"contiguous placement at the measured {phase} imbalance {factor:.2f} ({skew['source']})")

    @staticmethod
    def measured_eplb(skew: Mapping, phase: str, ep: int, moe_layers: int) -> "ExpertLoad":
        """EPLB placement serving traffic it was not fitted on, at the measured held-out imbalance; the
        excess over perfect balance follows a power law in the EP size through the measured points
        (more devices, fewer experts each, less room to even out)."""
        held_out = skew["eplb_held_out_imbalance"]
        points = sorted((int(k), float(v)) for k, v in held_out[phase].items())
        (e0, f0), (e1, f1) = points[0], points[-1]
        slope = np.log((f1 - 1) / (f0 - 1)) / np.log(e1 / e0)
        factor = 1 + (f0 - 1) * (ep / e0) ** slope
        return ExpertLoad.from_imbalance(factor, ep, moe_layers,
                                         f"EPLB on earlier statistics at the measured held-out {phase} imbalance {factor:.2f} ({held_out['source']})")

    @property
    def imbalance(self) -> np.ndarray:
        """Per layer: the busiest device's load over the mean (1.0 is perfect balance)."""
        return self.shares.max(axis=1) * self.shares.shape[1]
