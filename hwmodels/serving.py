"""Serving metrics of a layout: throughput per device, tokens/s per user, cost per million tokens.

- decode pool: B sequences per device advance one token per step: B / step_time tokens/s per device,
  1 / step_time tokens/s per user. With MTP speculative decoding (`Speculation`) a step verifies
  1 + n tokens per sequence and advances it by the expected accepted run 1 + a + ... + a^n.
- prefill pool: the prompt tokens of a step per step time.
- aggregated (prefill and decode on the same devices, in-flight batching): every output token also
  carries input/output prompt tokens of prefill work. An instance's DP attention ranks step in lockstep
  (the all-to-all synchronises them) and each schedules on its own, so a rank prefilling a chunk holds
  the whole group for a prefill step while the other ranks decode one token in it (SGLang's DP attention;
  sim/ replays exactly this). Taking prefills on different ranks not to coincide (the rule at moderate
  load; it is exact with one rank), a chunk costs the group one step t_p1 (`one_rank_prefill_step`) in
  which (dp - 1) / dp of the sequences still advance, and per output token per device
      decode_step / B + dp x input / (output x chunk_tokens) x (t_p1 - decode_step x (dp - 1) / dp).
  A closed-loop benchmark of equal-length requests that keeps every rank's batch full (trtllm-bench,
  bench_serving at a fixed concurrency) is the opposite case: every slot frees in the same step on every
  rank, so all ranks prefill in the same steps (`lockstep_aggregated_performance`).
  An offline benchmark (trtllm-bench throughput: a fixed number of equal-length requests, all queued at the
  start) runs the same schedule from an empty engine to its last request (`offline_performance`).
  Both take the engine's captured CUDA-graph batch sizes where a run states them: a step that only decodes runs
  at the smallest that holds its batch, the rest dummy requests of one token (`padded_decode_step`).
Cost per million tokens = price per device-hour / (tokens/s per device x 3600) x 1e6.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, replace
from functools import lru_cache

from hwmodels.errors import InputError
from hwmodels.layout import Layout
from hwmodels.memory import DeviceMemory, device_memory
from hwmodels.roles import Phase, Role
from hwmodels.speculation import Speculation
from hwmodels.step import StepContext, StepCost, lockstep_time_s

SECONDS_PER_HOUR = 3600.0


def usd_per_million_tokens(usd_per_device_hour: float, tokens_per_s_per_device: float) -> float:
    return usd_per_device_hour / (tokens_per_s_per_device * SECONDS_PER_HOUR) * 1e6


@dataclass(frozen=True)
class Performance:
    role: Role
    layout: Layout
    tokens_per_s_per_device: float  # output tokens (decode, aggregated) or input tokens (prefill)
    tokens_per_s_per_user: float  # decode speed one request sees (prefill: prompt tokens per second of one prompt)
    steps: tuple[StepCost, ...]
    memory: DeviceMemory
    prefill_share: float = 0.0  # aggregated: the fraction of device time spent on prefill


@lru_cache(maxsize=1024)  # a search asks it of one context at every batch; a StepContext hashes by identity
def _memory(ctx: StepContext, context_tokens: int, hbm_utilization: float, tokens_per_step: int,
            mtp_module: bool = False) -> DeviceMemory:
    return device_memory(ctx.arch, ctx.precision, ctx.cluster, ctx.layout, context_tokens, hbm_utilization, tokens_per_step,
                         mtp_module=mtp_module, sliding_kv_share=ctx.sliding_kv_share)


def decode_performance(ctx: StepContext, batch_per_device: int, context_tokens: float, hbm_utilization: float,
                       tokens_per_step: int, speculation: Speculation | None = None) -> Performance:
    draft = speculation.draft_tokens if speculation else 0
    advance = speculation.tokens_per_step if speculation else 1.0
    step = ctx.step(Phase.DECODE, batch_per_device, context_tokens, draft)
    mem = _memory(ctx, int(context_tokens), hbm_utilization, tokens_per_step, mtp_module=bool(draft))
    return Performance(Role.DECODE, ctx.layout, step.tokens_per_s_per_device * advance, advance / step.time_s, (step,), mem)


def prefill_performance(ctx: StepContext, tokens_per_device: int, prompt_tokens: int, hbm_utilization: float) -> Performance:
    step = ctx.step(Phase.PREFILL, tokens_per_device, prompt_tokens)
    mem = _memory(ctx, prompt_tokens, hbm_utilization, tokens_per_device)
    # a prompt longer than one step's tokens of its attention group takes several (chunked prefill) steps
    steps_per_prompt = math.ceil(prompt_tokens / (tokens_per_device * ctx.layout.tp))
    return Performance(Role.PREFILL, ctx.layout, step.tokens_per_s_per_device, prompt_tokens / (steps_per_prompt * step.time_s),
                       (step,), mem)


def one_rank_prefill_step(ctx: StepContext, chunk_tokens_per_device: int, prompt_tokens: int) -> StepCost:
    """A prefill step in which one DP attention rank prefills a chunk (its devices `chunk_tokens_per_device` each)
    while the other ranks have no prompt tokens: hwmodels.step.lockstep_time_s at the group's mean tokens. With
    one rank (dp 1) this is the step itself."""
    busiest = ctx.step(Phase.PREFILL, chunk_tokens_per_device, prompt_tokens)
    layout = ctx.layout
    if layout.dp == 1 or not ctx.arch.is_moe:
        return busiest
    mean = ctx.step(Phase.PREFILL, max(1, round(chunk_tokens_per_device / layout.dp)), prompt_tokens)
    time_s = lockstep_time_s(busiest.time_s, busiest.breakdown_s["expert_gemm"], busiest.overlap_ratio,
                             mean.breakdown_s["expert_gemm"])
    breakdown = dict(busiest.breakdown_s, expert_gemm=mean.breakdown_s["expert_gemm"])
    return replace(busiest, time_s=time_s, tokens_per_device=chunk_tokens_per_device / layout.dp, breakdown_s=breakdown,
                   overlap_hidden_s=sum(breakdown.values()) - time_s)


def aggregated_performance(ctx: StepContext, batch_per_device: int, input_tokens: int, output_tokens: int,
                           hbm_utilization: float, tokens_per_step: int) -> Performance:
    """Steps: (decode step, one rank's prefill step); `prefill_share` is the fraction of device time prefill takes."""
    # a sequence's KV grows from input to input + output while it decodes: its mean context is the middle
    decode = ctx.step(Phase.DECODE, batch_per_device, input_tokens + output_tokens / 2)
    prefill = one_rank_prefill_step(ctx, tokens_per_step, input_tokens)
    dp = ctx.layout.dp
    decode_s = decode.time_s / batch_per_device
    # per device: dp x input / tokens_per_step rank chunks per output token's share of a prompt, each costing the
    # group its step less the decode tokens the other ranks still make in it
    prefill_s = dp * input_tokens / (tokens_per_step * output_tokens) * max(prefill.time_s - decode.time_s * (dp - 1) / dp, 0.0)
    per_output_token_s = decode_s + prefill_s
    mem = _memory(ctx, input_tokens + output_tokens, hbm_utilization, tokens_per_step)
    # at capacity a user's tokens arrive at the group's output rate over its sequences
    per_user = 1.0 / (per_output_token_s * batch_per_device)
    return Performance(Role.AGGREGATED, ctx.layout, 1.0 / per_output_token_s, per_user, (decode, prefill), mem,
                       prefill_s / per_output_token_s)


DUMMY_CONTEXT_TOKENS = 1  # a padding request's KV length (TensorRT-LLM's CUDA-graph dummy: one token, no drafts)


def padded_decode_step(ctx: StepContext, sequences: float, context_tokens: float,
                       graph_batches: tuple[int, ...] = ()) -> StepCost:
    """A step in which every rank only decodes `sequences` (per device), each with `context_tokens` of KV, run as the
    CUDA graph of the smallest of `graph_batches` (per rank) that holds them: the padding requests cost every
    operator their rows and attention one token each (hwmodels/calibrate/trtllm_bench.py says when an engine pads).
    No captured size holds them, or none given: the step as it is."""
    tp = ctx.layout.tp
    padded = next((b / tp for b in sorted(graph_batches) if b >= sequences * tp), sequences)
    if padded <= sequences:
        return ctx.step(Phase.DECODE, sequences, context_tokens)
    mean_context = (sequences * context_tokens + (padded - sequences) * DUMMY_CONTEXT_TOKENS) / padded
    return ctx.step(Phase.DECODE, padded, mean_context)


def lockstep_aggregated_performance(ctx: StepContext, batch_per_device: int, input_tokens: int, output_tokens: int,
                                    hbm_utilization: float, step_token_budget: int,
                                    graph_batches: tuple[int, ...] = ()) -> Performance:
    """Steady state of a closed loop of equal-length requests with every rank's batch full.

    A rank admits a request when a slot frees; a step carries at most `step_token_budget` tokens per rank,
    its decode tokens included (TensorRT-LLM's max_num_tokens). So k = (budget - B) // (input - 1) prompts
    enter per step, or, when none fits whole, prompts in chunks of what the decode tokens leave, packed back to
    back (a step holds one prompt's tail and the next one's head, as the scheduler fills max_num_tokens with
    context chunks), so the B prompts of a slot lifetime take B x input / chunk mixed steps. Slots started in
    the same step finish in the same step, and every rank runs the same schedule: per slot lifetime
    (prefill steps + output - 1 steps) the group makes `mixed` steps that prefill on every rank while the
    other sequences decode, and plain decode steps otherwise. A mixed step is priced as a prefill step
    plus a decode step of the sequences still decoding: an upper bound, as both read the expert weights. A plain
    decode step runs at the CUDA-graph batch that holds it (`graph_batches`, per attention rank; none: unpadded).
    """
    batch, budget = batch_per_device, step_token_budget
    if budget <= batch:
        raise InputError("tokens_per_device_per_step", f"a step budget of {budget} tokens per rank leaves no room to "
                         f"prefill next to {batch} decoding sequences", f"allow more than {batch} tokens per step")
    whole = min(batch, (budget - batch) // max(input_tokens - 1, 1))
    if whole:  # k whole prompts per mixed step
        prompts, chunk, steps_per_prompt = whole, whole * input_tokens, 1
        prefill_steps = math.ceil(batch / whole)
    else:  # chunks of what the decode tokens leave, prompts packed back to back
        prompts, chunk = 1, budget - (batch - 1)
        steps_per_prompt = math.ceil(input_tokens / chunk)
        prefill_steps = math.ceil(batch * input_tokens / chunk)
    lifetime = steps_per_prompt + output_tokens - 1  # steps a slot is held
    mixed = min(prefill_steps, lifetime)
    context = input_tokens + output_tokens / 2
    decode = padded_decode_step(ctx, batch, context, graph_batches)
    prefill = ctx.step(Phase.PREFILL, chunk, input_tokens)
    decode_beside = ctx.step(Phase.DECODE, batch - prompts, context) if batch > prompts else None
    mixed_s = prefill.time_s + (decode_beside.time_s if decode_beside else 0.0)
    cycle_s = mixed * mixed_s + (lifetime - mixed) * decode.time_s
    mem = _memory(ctx, input_tokens + output_tokens, hbm_utilization, budget)
    return Performance(Role.AGGREGATED, ctx.layout, batch * output_tokens / cycle_s, output_tokens / cycle_s, (decode, prefill),
                       mem, mixed * prefill.time_s / cycle_s)


def offline_performance(ctx: StepContext, requests_per_rank: int, batch_per_rank: int, input_tokens: int,
                        output_tokens: int, hbm_utilization: float, max_num_tokens: int, chunked: bool = False,
                        graph_batches: tuple[int, ...] = ()) -> Performance:
    """Output tokens per second per device over an offline run: `requests_per_rank` equal-length requests queued at
    the start on every attention rank, the whole run from the first step to the last token (trtllm-bench's "per
    GPU output throughput": total output tokens over total latency).

    Step by step, on every rank alike (their slots fill and free in the same steps): a step carries the decode
    token of each running sequence and, in the `max_num_tokens` left beside them, prompts in arrival order while
    a slot of `batch_per_rank` is free: whole prompts only, unless `chunked`. A prompt's last prefill step makes
    its first token; it decodes the rest one per step. A step that prefills is priced as a prefill step plus a
    decode step of the sequences running beside it, as in `lockstep_aggregated_performance`; a step that only
    decodes, at the CUDA-graph batch that holds it (`graph_batches`, per rank). Its ramp-up and drain count: a run
    of about one batch per rank spends a large share of its steps at part batch."""
    if batch_per_rank < 1 or requests_per_rank < 1:
        raise InputError("workload.requests", "no request or no slot to run", "give at least one request and one slot")
    if not chunked and input_tokens > max_num_tokens:
        raise InputError("tokens_per_device_per_step", f"{max_num_tokens} tokens per step cannot hold a whole "
                         f"{input_tokens}-token prompt with chunked prefill off", f"allow at least {input_tokens}")
    tp, context = ctx.layout.tp, input_tokens + output_tokens / 2

    @lru_cache(maxsize=None)
    def beside_s(running: int) -> float:  # the decode half of a step that also prefills: eager, unpadded
        return ctx.step(Phase.DECODE, running / tp, context).time_s if running else 0.0

    @lru_cache(maxsize=None)
    def step_s(prefill_tokens: int, running: int) -> float:
        if not prefill_tokens:
            return padded_decode_step(ctx, running / tp, context, graph_batches).time_s
        return ctx.step(Phase.PREFILL, prefill_tokens / tp, input_tokens).time_s + beside_s(running)

    def priced(running: int) -> int:  # within 1.6% above 64 sequences: one step price per 1/64 of an octave
        return running if running <= 64 else running >> (running.bit_length() - 7) << (running.bit_length() - 7)

    queued, partial, running, step = requests_per_rank, 0, 0, 0
    finishing: deque[tuple[int, int]] = deque()  # (the step its last token comes out of, sequences)
    elapsed_s = prefill_s = held = 0.0
    tokens = 0
    while queued or partial or running:
        room, prefilled, started = max_num_tokens - running, 0, 0
        free = batch_per_rank - running - (1 if partial else 0)
        while room > 0 and (partial or (queued and free > 0)):
            if not partial:
                if not chunked and room < input_tokens:
                    break
                queued, free, partial = queued - 1, free - 1, input_tokens
            take = min(room, partial)
            room, prefilled, partial = room - take, prefilled + take, partial - take
            started += partial == 0
        if not (prefilled or running):  # no prompt fits and nothing runs: cannot happen with the checks above
            raise InputError("tokens_per_device_per_step", "no step can make progress", "allow more tokens per step")
        # a step that admits nothing repeats, unchanged, until the next sequences finish: take those steps at once
        repeats = finishing[0][0] - step + 1 if not prefilled else 1
        s = step_s(prefilled, priced(running))
        elapsed_s += repeats * s
        prefill_s += s - beside_s(priced(running)) if prefilled else 0.0
        held += repeats * s * (running + started + (1 if partial else 0))
        tokens += repeats * running + started
        if started and output_tokens > 1:
            finishing.append((step + output_tokens - 1, started))
            running += started
        step += repeats
        while finishing and finishing[0][0] < step:
            running -= finishing.popleft()[1]
    rate = tokens / elapsed_s  # output tokens per second per rank
    mem = _memory(ctx, input_tokens + output_tokens, hbm_utilization, max(1, max_num_tokens // tp))
    steps = (ctx.step(Phase.DECODE, batch_per_rank / tp, context), ctx.step(Phase.PREFILL, input_tokens / tp, input_tokens))
    return Performance(Role.AGGREGATED, ctx.layout, rate / tp, rate / (held / elapsed_s), steps, mem, prefill_s / elapsed_s)


def largest_batch_that_fits(ctx: StepContext, context_tokens: int, hbm_utilization: float, tokens_per_step: int,
                            mtp_module: bool = False) -> int:
    """Sequences per (attention) device the KV cache holds at `context_tokens` each (what an engine admits at most); with
    `mtp_module` the MTP weights and their KV layer are held too."""
    mem = _memory(ctx, context_tokens, hbm_utilization, tokens_per_step, mtp_module=mtp_module)
    return mem.concurrent_sequences // ctx.layout.attention_devices if mem.fits else 0
