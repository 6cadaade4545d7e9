"""What a plan says about pipeline stages: where the search scored them, and for each pipeline layout on the Pareto
frontier why it is there (its stages' all-to-all stays inside a scale-up domain, or more sequences fit a device) against
the best single-stage layout of as many devices at as fast a user rate, or, where none is on it, how near the best one came. In figures, from the candidates."""

from __future__ import annotations

from hwmodels.deployment import Deployment
from hwmodels.serving import largest_batch_that_fits
from planner.plan import Candidate
from planner.prompt_times import instance_context

SCOPE = ("pipeline stages (PP2, PP4) scored in decode pools where an instance spans several scale-up domains and each "
         "stage is whole nodes (hwmodels.layouts): a device holds its stage's layers and their KV cache, the "
         "activations cross to the next stage point to point; a sequence's step is the cycle of the pp micro-batches "
         "in flight (hwmodels.pipeline); prefill pools and aggregated instances are scored at pp = 1")


def pipeline_assumptions(d: Deployment, decode: list[Candidate], frontier: tuple[Candidate, ...]) -> list[str]:
    """The scope line and one line per pipeline layout on the frontier (or one on the nearest), where any was scored."""
    piped = [c for c in decode if c.layout.pp > 1]
    if not piped:
        return []
    out = [SCOPE]
    on_frontier = [c for c in frontier if c.layout.pp > 1]
    for c in on_frontier:
        out.append(f"on the frontier with pipeline stages: {_why(d, c, decode)}")
    if not on_frontier:
        best = max(piped, key=lambda c: c.tokens_per_s_per_device)
        beaters = [f for f in frontier if f.tokens_per_s_per_user >= best.tokens_per_s_per_user
                   and f.tokens_per_s_per_device >= best.tokens_per_s_per_device]
        beaten = f"; {_text(d, beaters[-1])} does better on both" if beaters else ""
        out.append(f"no pipeline layout on the frontier: the most productive, {_text(d, best)}{beaten}")
    return out


def _text(d: Deployment, c: Candidate) -> str:
    return (f"{c.layout.name(d.model.is_moe)} on {c.instance_devices} devices at {c.work_per_device} sequences per "
            f"device ({c.tokens_per_s_per_device:,.0f} output tokens/s per device, {c.tokens_per_s_per_user:,.1f} "
            f"tokens/s per user, step {c.step_s * 1e3:,.1f} ms)")


def _why(d: Deployment, c: Candidate, decode: list[Candidate]) -> str:
    """Why `c` (pp > 1) is on the frontier: where its stages' all-to-all runs, what each device holds, and the best
    single-stage layout of as many devices at as fast a user rate."""
    stage, unit = c.instance_devices // c.layout.pp, d.cluster_of(c.role).unit
    domain = unit.scaleup_domain_devices
    mem = c.perf.memory
    seqs = _fit(d, c)
    if stage <= domain and domain % stage == 0:
        where = "one node" if stage == unit.devices_per_node else f"one scale-up domain ({stage} devices)"
        reason = f"PP{c.layout.pp} keeps each stage's all-to-all inside {where}"
    else:
        reason = (f"PP{c.layout.pp} holds 1/{c.layout.pp} of the layers per device ({mem.weight_bytes / 1e9:,.1f} GB "
                  f"of weights, each sequence's KV for its stage's layers only): {seqs} sequences per device fit")
    text = f"{_text(d, c)}: {reason}"
    flat = [x for x in decode if x.layout.pp == 1 and x.instance_devices == c.instance_devices
            and x.tokens_per_s_per_user >= c.tokens_per_s_per_user]
    if not flat:
        return text + f", faster per user than any single-stage layout of {c.instance_devices} devices"
    best = max(flat, key=lambda x: x.tokens_per_s_per_device)
    fits = _fit(d, best)
    return text + (f"; the best single-stage layout of {c.instance_devices} devices at as fast a user rate, "
                   f"{best.layout.name(d.model.is_moe)} at {best.work_per_device} sequences per device ({fits} fit, "
                   f"{best.perf.memory.weight_bytes / 1e9:,.1f} GB of weights), makes "
                   f"{best.tokens_per_s_per_device:,.0f} output tokens/s per device")


def _fit(d: Deployment, c: Candidate) -> int:
    """The most sequences per device the search let the candidate's layout run (its KV cache at the workload's
    context)."""
    s = d.serving
    return largest_batch_that_fits(instance_context(d, c), d.workload.context_tokens, s.hbm_utilization, s.tokens_per_step,
                                   mtp_module=c.speculation is not None)
