"""How long a prompt takes on the ranks of a scored candidate: each prompt of the workload's lengths timed at its own
context (a long prompt's chunks attend to everything before them), on one attention rank of a prefill pool or of an
aggregated instance (where a short prompt's partial chunk pays a whole step), and what the prefill of an aggregated
instance does to its decode. planner.search sizes pools with these; planner.tpot draws the stalls.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from hwmodels.arithmetic import kv_bytes_per_token, linear_state_bytes_per_sequence, window_bytes_per_sequence
from hwmodels.calibrate.operator_costs import costs_of
from hwmodels.deployment import Deployment
from hwmodels.hardware import Cluster, instance_cluster
from hwmodels.layout import Layout
from hwmodels.memory import device_memory, kv_bytes_per_token_per_device
from hwmodels.roles import Phase
from hwmodels.serving import one_rank_prefill_step
from hwmodels.step import StepContext
from planner import queueing
from planner.plan import Candidate


def sub_cluster(d: Deployment, devices: int, role: str = "decode") -> Cluster:
    """The devices of one instance of a pool of `role` (the prefill cluster's, where prefill has its own)."""
    return instance_cluster(d.cluster_of(role).unit, devices)


def instance_context(d: Deployment, c: Candidate) -> StepContext:
    """The step model of one instance of the candidate, with the load it was scored at."""
    return StepContext(d.model, d.precision, sub_cluster(d, c.instance_devices, c.role), c.layout, c.load,
                       costs_of(d, c.role), images=d.workload.images, **d.serving.engine_terms())


def prompt_lengths(d: Deployment) -> np.ndarray:
    """The workload's prompt lengths, equally likely: its trace's where it was measured from one, else its lognormal
    (planner.queueing.lognormal_lengths); none past its longest prompt or the model's context."""
    w, longest = d.workload, d.longest_prompt_tokens
    if w.prompt_lengths:
        prompts = np.asarray(w.prompt_lengths, dtype=float)
        return np.minimum(prompts, longest) if longest else prompts
    return queueing.lognormal_lengths(w.input_tokens, w.input_cv, longest)


def output_lengths(d: Deployment) -> np.ndarray:
    """The workload's output lengths, equally likely: its trace's, else its lognormal."""
    w = d.workload
    return np.asarray(w.output_lengths, dtype=float) if w.output_lengths else queueing.lognormal_lengths(w.output_tokens, w.output_cv)


def step_s_at_context(d: Deployment, c: Candidate, prompts: np.ndarray,
                       step_at: Callable[[StepContext, float], float]) -> np.ndarray:
    """The candidate's prefill step time for each prompt at its own length: its attention grows with the context
    (a long prompt's chunks attend to everything before them). `step_at(ctx, prompt_tokens)` is the step; taken at
    the shortest and longest prompts and, between them, interpolated through the mean's (the candidate's own)."""
    lo, hi, mean = float(prompts.min()), float(prompts.max()), float(d.workload.input_tokens)
    if hi - lo < 1.0:
        return np.full_like(prompts, c.perf.steps[-1].time_s, dtype=float)
    ctx = instance_context(d, c)
    xs, ys = [lo, hi], [step_at(ctx, lo), step_at(ctx, hi)]
    if lo < mean < hi:
        xs.insert(1, mean)
        ys.insert(1, c.perf.steps[-1].time_s)
    return np.interp(prompts, xs, ys)


def rank_prefill_s(d: Deployment, c: Candidate, prompts: np.ndarray) -> np.ndarray:
    """Each prompt's prefill time on one rank of a prefill instance: a prompt is chunked on the rank it is routed to
    (its TP devices), first-come first-served, the step's time (at the prompt's own context) shared by the tokens it
    carries (a prompt's last, partial chunk is part of a step that carries the next prompt's first). Context
    parallel (layout.cp > 1) splits each prompt over cp attention groups (context_parallel_s)."""
    step_s = step_s_at_context(d, c, prompts, lambda ctx, tokens: ctx.step(Phase.PREFILL, c.work_per_device, tokens).time_s)
    alone_s = prompts / (c.work_per_device * c.layout.tp) * step_s
    return alone_s if c.layout.cp == 1 else context_parallel_s(d, c, prompts, alone_s, step_s)


def context_parallel_s(d: Deployment, c: Candidate, prompts: np.ndarray, alone_s: np.ndarray,
                       step_s: np.ndarray) -> np.ndarray:
    """Each prompt's prefill over the cp attention groups of a context-parallel rank (SGLang's prefill CP, zigzag:
    every group takes 1 / cp of the prompt's tokens, balanced over the causal mask, and all-gathers the others' KV):
    its time on one group over cp, but never less than the one step it ends in (a step finishes its tokens together,
    so splitting a prompt that fits one group's step gains nothing), plus the all-gather (cp_gather_s_per_token),
    added, not overlapped with the attention it feeds: on the safe side."""
    gather_s = prompts * cp_gather_s_per_token(d, c.layout)
    return np.maximum(alone_s / c.layout.cp, np.minimum(alone_s, step_s)) + gather_s


def cp_gather_s_per_token(d: Deployment, layout: Layout) -> float:
    """The all-gather of a context-parallel prefill rank per prompt token: (cp - 1) / cp of its KV per device, over
    the scale-up links where the rank fits one scale-up domain, else the scale-out NIC (0 without context parallel)."""
    if layout.cp == 1:
        return 0.0
    cluster = d.cluster_of("prefill")
    device, domain = cluster.device, cluster.unit.scaleup_domain_devices
    link = (device.scaleup_bytes_per_s if layout.rank_devices <= domain else device.scaleout_bytes_per_s) \
        or device.scaleup_bytes_per_s
    return kv_bytes_per_token_per_device(d.model, d.precision, layout) * (layout.cp - 1) / layout.cp / link


def prefill_s(d: Deployment, prompts: np.ndarray, rank_prefill_s: np.ndarray) -> np.ndarray:
    """Each prompt's TTFT before any wait: its prefill steps on its rank, moving its cache to the decode pool over the
    NIC (the slower end's, where prefill runs on other hardware): its KV, and a hybrid model's sliding windows and
    linear-attention state (fixed per sequence), and the engine's per-request overhead (Serving.request_overhead_s)."""
    nic = d.kv_link_bytes_per_s
    fixed = window_bytes_per_sequence(d.model, d.precision, max(float(prompts.max()), 1.0)) if len(prompts) else 0.0
    fixed += linear_state_bytes_per_sequence(d.model)
    return rank_prefill_s + (prompts * kv_bytes_per_token(d.model, d.precision) + fixed) / nic + d.serving.request_overhead_s


def prefill_stalls_s(d: Deployment, c: Candidate, prompts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An aggregated instance's prefill, per prompt: (the time its rank spends prefilling it, decoding nothing; the
    chunk steps it takes, each of which the other ranks of its group wait out instead of a decode step of theirs:
    planner.tpot prices that against the decode step at the load the instance carries)."""
    return aggregated_prefill_s(d, c, prompts), np.ceil(prompts / (d.serving.tokens_per_step * c.layout.tp))


PARTIAL_CHUNK_POINTS = 10  # token counts (log-spaced, per device) a partial chunk's step is interpolated between


def aggregated_prefill_s(d: Deployment, c: Candidate, prompts: np.ndarray) -> np.ndarray:
    """Each prompt's time on one attention rank of an aggregated instance, prefilled alone in chunks of
    serving.tokens_per_step per device: its full chunks at the chunk's step at the prompt's context, its last,
    partial chunk at that chunk's own step. A step pays for its weights and fixed costs whatever its tokens, so a
    short prompt costs far more than its share of a full chunk."""
    per_device, tp = d.serving.tokens_per_step, c.layout.tp
    full = np.floor(prompts / (per_device * tp))
    rest_per_device = prompts / tp - full * per_device
    chunk_s = step_s_at_context(d, c, prompts, lambda ctx, tokens: one_rank_prefill_step(ctx, per_device, tokens).time_s)
    ctx = instance_context(d, c)
    grid = np.unique(np.geomspace(1, per_device, PARTIAL_CHUNK_POINTS).round())
    grid_s = [one_rank_prefill_step(ctx, int(g), int(g) * tp).time_s for g in grid]
    return full * chunk_s + np.where(rest_per_device > 0, np.interp(rest_per_device, grid, grid_s), 0.0)


def admits_longest(d: Deployment, cluster: Cluster, layout: Layout, output_tokens: int) -> bool:
    """Every attention group's KV cache holds the workload's longest prompt (plus `output_tokens`), when it is known."""
    longest = d.workload.max_input_tokens
    if longest is None:
        return True
    mem = device_memory(d.model, d.precision, cluster, layout, longest + output_tokens, d.serving.hbm_utilization,
                        d.serving.tokens_per_step, sliding_kv_share=d.serving.sliding_kv_share)
    return mem.concurrent_sequences >= layout.dp
