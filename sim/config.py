"""How a replay runs: the routers, the KV policy, the batch limit, the placement fallback, the timeline, and the
explicit order of same-time events; and the assumptions a run states."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sim.loads import PlacementFallback

MIN_TIMELINE_BIN_S = 1.0  # a trace whose requests arrive at once still gets a readable timeline
PREEMPT_WATERMARK = 0.01  # KV kept free when admitting under KVPolicy.PREEMPT (vLLM's block manager default)


class Priority(enum.IntEnum):
    """Order of events at the same simulated time (lower first). SimPy's own events use 0 (URGENT: process
    start) and 1 (NORMAL: wake-ups); a woken instance defers its decision to SCHEDULE."""

    STEP_END = 2
    TRANSFER_DONE = 3
    ARRIVAL = 4
    SCHEDULE = 5


class Router(enum.Enum):
    ROUND_ROBIN = "round-robin"  # ranks in turn
    LEAST_LOADED = "least-loaded"  # prefill: fewest prompt tokens queued; decode / aggregated: fewest requests
    PREFIX_AWARE = "prefix-aware"  # fewest queued + uncached prompt tokens (Mooncake's conductor: cache hits vs queue),
    # then fewest requests; every router but round-robin breaks remaining ties in turn


class KVPolicy(enum.Enum):
    QUEUE = "queue"
    PREEMPT = "preempt"


@dataclass(frozen=True)
class SimConfig:
    router: Router = Router.PREFIX_AWARE  # how a prompt picks a prefill (or aggregated) rank
    decode_router: Router = Router.LEAST_LOADED  # how a prefilled prompt picks a decode rank
    kv_policy: KVPolicy = KVPolicy.QUEUE  # what a rank does when its KV cache is full
    max_batch_per_device: int | None = None  # running sequences per device; None: the plan's batch per device
    prefix_cache: bool = True  # reuse cached prompt blocks (traces with block ids)
    placement: PlacementFallback = PlacementFallback.EPLB  # for roles whose plan has no placement
    timeline_bins: int = 60  # bins over the arrival span for the results over time

    def __post_init__(self):
        if self.decode_router is Router.PREFIX_AWARE:
            raise ValueError("decode ranks hold no prefix cache: use round-robin or least-loaded for decode_router")
        if self.max_batch_per_device is not None and self.max_batch_per_device < 1:
            raise ValueError("max_batch_per_device must be >= 1")
        if self.timeline_bins < 1:
            raise ValueError("timeline_bins must be >= 1")

    def assumptions(self, disaggregated: bool, prompt_blocks: bool) -> tuple[str, ...]:
        """What a replay under this configuration assumes; prompt_blocks: whether the trace names prompt blocks."""
        if prompt_blocks and self.prefix_cache:
            cache = ("prefix cache: 512-token blocks in the KV room a rank's sequences leave free, LRU, per DP attention "
                     "group (Mooncake's DRAM/SSD pool not modelled: a lower bound on hits)")
        else:
            cache = "prefix cache disabled" if not self.prefix_cache else "no prefix cache: the trace has no prompt block ids"
        out = [
            "one event per step per expert-parallel group; a step lasts the step model's time (hwmodels.step) of its "
            "busiest DP rank's batch (sequences and mean KV length for decode, prompt tokens and their attention context "
            "for prefill) with the routed-expert GEMMs at the group's mean batch, interpolated on a grid (sim.steps)",
            f"router {self.router.value}" + (f", decode router {self.decode_router.value}" if disaggregated else ""),
            f"KV capacity from hwmodels.memory; policy {self.kv_policy.value}"
            + (" (admit on the final length, never evict)" if self.kv_policy is KVPolicy.QUEUE
               else " (admit on the current length, evict the newest and recompute)"),
            cache,
            "max running sequences per DP rank: " + (f"{self.max_batch_per_device} per device (set)" if self.max_batch_per_device
                                                     else "the plan's batch per device") + " x attention TP",
        ]
        if disaggregated:
            out.append("KV transfer: prompt tokens x KV bytes per token over the prefill rank's NIC (scale-out bytes/s), "
                       "transfers from one rank queue; TTFT ends when the KV reaches the decode rank")
        out.append("each step a rank prefills when it has prompt work it can start (prefill first, no mixed chunks), "
                   "else decodes; the step lasts the longer part")
        return tuple(out)
