"""The simulator in the loop: the search ranks options analytically, then the cheapest few are replayed and the
cheapest whose replay holds is recommended.

The planner does not run the simulator itself (sim depends on planner, not the reverse): the caller hands the search
a `Check`, a function from a one-option Plan to its ReplayCheck (moeplan.api.plan replays the workload's trace, or
its synthetic traffic, through sim). An option holds when its replay completes every request and meets both SLOs at
their percentile; the cheaper options that did not hold are dropped, not recommended with a caveat.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from hwmodels.deployment import Deployment
from planner.plan import Plan, Recommendation, ReplayCheck

Check = Callable[[Plan], ReplayCheck]
REPLAYED_OPTIONS = 3  # the cheapest options replayed before giving up (a Mooncake replay on 128 H200: ~7 s on 2 cores)


def checked(d: Deployment, options: list[Recommendation], check: Check,
            count: int = REPLAYED_OPTIONS) -> tuple[list[Recommendation], tuple[ReplayCheck, ...]]:
    """(the options from the cheapest of the first `count` whose replay holds, the replays in the order tried);
    no options when none of them holds."""
    replays = []
    for i, option in enumerate(options[:count]):
        replays.append(check(Plan(d, option, (), 0, "", (), 0.0, source="replay check")))
        if replays[-1].holds:
            return options[i:], tuple(replays)
    return [], tuple(replays)


def refusal(d: Deployment, replays: tuple[ReplayCheck, ...]) -> tuple[str, str]:
    """(the spec field to change, why) when no replayed option held: the nearest miss, in figures."""
    slo, p = d.slo, f"p{d.slo.percentile:g}"

    def over(r: ReplayCheck) -> tuple[float, float]:
        """How far past each SLO its replay went (TPOT: 0 where no request generated two tokens)."""
        return r.replayed_ttft_s / slo.ttft_s, 0.0 if math.isnan(r.replayed_tpot_s) else r.replayed_tpot_s / slo.tpot_s

    near = min(replays, key=lambda r: (r.requests - r.completed, max(over(r))))
    ttft_over, tpot_over = over(near)
    if near.completed < near.requests:
        field, missed = "cluster", f"{near.requests - near.completed:,} of {near.requests:,} requests were not served"
    elif ttft_over >= tpot_over:
        field, missed = "slo.ttft_s", (f"{p} TTFT {near.replayed_ttft_s:,.2f} s against the SLO's {slo.ttft_s:g} s "
                                       f"(planned {near.planned_ttft_s:,.2f} s)")
    else:
        field, missed = "slo.tpot_s", (f"{p} TPOT {near.replayed_tpot_s * 1e3:,.1f} ms against the SLO's "
                                       f"{slo.tpot_s * 1e3:g} ms (planned {near.planned_tpot_s * 1e3:,.1f} ms)")
    relax = "the SLOs" if field == "cluster" else field
    return field, (f"none of the {len(replays)} cheapest options holds in its replay of {near.traffic}; the nearest "
                   f"({near.mode}, {near.devices} devices) reaches {missed}; relax {relax}, grow the cluster, or replay "
                   "more options (moeplan plan --replay N)")
