"""What a plan says about context parallelism in its prefill pools: that it was scored, and where the recommendation
splits its prompts over several attention groups, what that does to its long prompts, in figures."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from hwmodels.deployment import Deployment
from planner import queueing
from planner.plan import Candidate, Recommendation
from planner.prompt_times import prefill_s, prompt_lengths, rank_prefill_s

SCOPE = ("context parallel (CP2, CP4, CP8: SGLang's prefill CP) scored in prefill pools: a rank of cp attention "
         "groups prefills each prompt together, each group 1 / cp of its tokens, all-gathering the others' KV "
         "(planner.prompt_times.context_parallel_s); a prompt that fits one group's step gains nothing, so it wins "
         "for long prompts under a tight TTFT, and costs the ranks a prompt queues for (dp / cp per stage)")


def context_parallel_assumptions(d: Deployment, prefill: list[Candidate], best: Recommendation | None) -> list[str]:
    """The scope line where context parallelism was scored, and why the recommendation's prefill pool uses it."""
    if not any(c.layout.cp > 1 for c in prefill):
        return []
    out = [SCOPE]
    pc = best.prefill if best is not None else None
    if pc is not None and pc.layout.cp > 1:
        prompts = prompt_lengths(d)
        p = d.slo.percentile
        split, alone = (queueing.ttft_percentile_s(prefill_s(d, prompts, rank_prefill_s(d, c, prompts)), (), p)
                        for c in (pc, replace(pc, layout=replace(pc.layout, cp=1))))
        longest = float(np.max(prompts))
        out.append(f"the recommended prefill pool splits each prompt over {pc.layout.cp} attention groups "
                   f"(CP{pc.layout.cp}, {pc.layout.rank_devices} devices per rank): a p{p:g} prompt prefills and "
                   f"moves its KV in {split:.2f} s before any wait, against {alone:.2f} s on one group "
                   f"(prompts up to {longest:,.0f} tokens)")
    return out
