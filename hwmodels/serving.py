"""Serving metrics of a layout: throughput per device, tokens/s per user, cost per million tokens.

- decode pool: B sequences per device advance one token per step: B / step_time tokens/s per device,
  1 / step_time tokens/s per user.
- prefill pool: the prompt tokens of a step per step time.
- aggregated (prefill and decode on the same devices, in-flight batching): every output token also
  carries input/output prompt tokens of prefill work, so the time per output token per device is
  decode_step / B + (input / output) x prefill_time_per_token.
Cost per million tokens = price per device-hour / (tokens/s per device x 3600) x 1e6.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hwmodels.hardware import Cluster
from hwmodels.layout import Layout
from hwmodels.memory import DeviceMemory, device_memory
from hwmodels.model_arch import ModelArch
from hwmodels.precision import PrecisionPlan
from hwmodels.step import ExpertLoad, StepCost, step_cost

SECONDS_PER_HOUR = 3600.0


def usd_per_million_tokens(usd_per_device_hour: float, tokens_per_s_per_device: float) -> float:
    return usd_per_device_hour / (tokens_per_s_per_device * SECONDS_PER_HOUR) * 1e6


@dataclass(frozen=True)
class Performance:
    role: str  # "decode", "prefill" or "aggregated"
    layout: Layout
    tokens_per_s_per_device: float  # output tokens (decode, aggregated) or input tokens (prefill)
    tokens_per_s_per_user: float  # decode speed one request sees (prefill: prompt tokens per second of one prompt)
    steps: tuple[StepCost, ...]
    memory: DeviceMemory


def decode_performance(arch: ModelArch, plan: PrecisionPlan, cluster: Cluster, layout: Layout, batch_per_device: int,
                       context_tokens: float, hbm_utilization: float, tokens_per_step: int,
                       load: ExpertLoad | None = None) -> Performance:
    step = step_cost(arch, plan, cluster, layout, "decode", batch_per_device, context_tokens, load)
    mem = device_memory(arch, plan, cluster, layout, int(context_tokens), hbm_utilization, tokens_per_step)
    return Performance("decode", layout, step.tokens_per_s_per_device, 1.0 / step.time_s, (step,), mem)


def prefill_performance(arch: ModelArch, plan: PrecisionPlan, cluster: Cluster, layout: Layout, tokens_per_device: int,
                        prompt_tokens: int, hbm_utilization: float, load: ExpertLoad | None = None) -> Performance:
    step = step_cost(arch, plan, cluster, layout, "prefill", tokens_per_device, prompt_tokens, load)
    mem = device_memory(arch, plan, cluster, layout, prompt_tokens, hbm_utilization, tokens_per_device)
    # a prompt longer than one step's tokens of its attention group takes several (chunked prefill) steps
    steps_per_prompt = math.ceil(prompt_tokens / (tokens_per_device * layout.tp))
    return Performance("prefill", layout, step.tokens_per_s_per_device, prompt_tokens / (steps_per_prompt * step.time_s), (step,), mem)


def aggregated_performance(arch: ModelArch, plan: PrecisionPlan, cluster: Cluster, layout: Layout, batch_per_device: int,
                           input_tokens: int, output_tokens: int, hbm_utilization: float, tokens_per_step: int,
                           load: ExpertLoad | None = None) -> Performance:
    # a sequence's KV grows from input to input + output while it decodes: its mean context is the middle
    decode = step_cost(arch, plan, cluster, layout, "decode", batch_per_device, input_tokens + output_tokens / 2, load)
    prefill = step_cost(arch, plan, cluster, layout, "prefill", tokens_per_step, input_tokens, load)
    per_output_token_s = decode.time_s / batch_per_device + input_tokens / output_tokens * prefill.time_s / tokens_per_step
    mem = device_memory(arch, plan, cluster, layout, input_tokens + output_tokens, hbm_utilization, tokens_per_step)
    # a user's tokens arrive once per decode step, and prefill steps interleaved with decode delay them
    per_user = 1.0 / (per_output_token_s * batch_per_device)
    return Performance("aggregated", layout, 1.0 / per_output_token_s, per_user, (decode, prefill), mem)


def largest_batch_that_fits(arch: ModelArch, plan: PrecisionPlan, cluster: Cluster, layout: Layout, context_tokens: int,
                            hbm_utilization: float, tokens_per_step: int) -> int:
    """Sequences per device the KV cache holds at `context_tokens` each (what an engine admits at most)."""
    mem = device_memory(arch, plan, cluster, layout, context_tokens, hbm_utilization, tokens_per_step)
    return mem.concurrent_sequences // layout.devices if mem.fits else 0
