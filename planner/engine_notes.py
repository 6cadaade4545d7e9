"""What a plan says about its serving engine: the layouts it can run, and the constants fitted to the measured closed
loops it served (catalogs/fits/closed-loop.yaml) that price every TTFT and step, with how far those loops say to trust
the plan."""

from __future__ import annotations

from hwmodels import catalog
from hwmodels.attention_kinds import Kind
from hwmodels.deployment import Deployment
from hwmodels.layouts import LIMITS
from hwmodels.memory import sliding_kv_note

FIT = "catalogs/fits/closed-loop.yaml"


def engine_assumptions(d: Deployment) -> list[str]:
    """One line per engine constant the plan applies (none without an engine)."""
    s, out = d.serving, []
    if s.engine in LIMITS:
        out.append(f"only layouts {s.engine} can run: {LIMITS[s.engine]}")
    if s.request_overhead_s:
        out.append(f"every TTFT includes {s.engine}'s per-request overhead, {s.request_overhead_s * 1e3:.0f} ms (HTTP, "
                   f"tokenisation, scheduling, KV hand-off; fitted to measured closed loops, {FIT})")
    out += catalog.step_constant_notes(s.engine, d.model, s.step_overhead_s, s.shared_expert_overlap)
    held_out = catalog.closed_loop_held_out(s.engine) if s.engine else None
    if held_out:
        out.append(f"how far to trust it: on the measured closed loops {s.engine} served (aic-silicon-moe.csv), "
                   f"moeplan's TPOT misses by a median {held_out[0]:.1%} and its TTFT by {held_out[1]:.1%}, each row "
                   f"held out of the fit that priced it (5-fold by configuration, {FIT})")
    if s.sliding_kv_share and d.model.layers_of(Kind.SLIDING):
        out.append(sliding_kv_note(s.engine, s.sliding_kv_share))
    return out
