"""One DP attention group's KV cache in tokens: the only place its counters change.

A rank's KV holds, besides the prefix cache that lives in the room left over (sim.engine):
- `held`: the KV of resident sequences that are not decoding (prefilling, waiting for their transfer or a slot);
- the decoding sequences: `run_base + n_run x k` tokens, where `k` counts the decode steps the rank ran (each
  decoding sequence grows one token per step), so a step costs O(1) bookkeeping however large the batch;
- `committed`: under KVPolicy.QUEUE, the final length of every resident sequence (what admission reserves);
- `state_tokens` per resident sequence: what a hybrid model keeps per sequence whatever its length (Kimi K3's
  linear-attention state, gpt-oss's sliding windows), in tokens of KV, counted in `used` and `committed`.
"""

from __future__ import annotations

import math

from sim.config import PREEMPT_WATERMARK, KVPolicy


class RankKV:
    __slots__ = ("capacity", "committed", "held", "run_base", "n_run", "k", "state_tokens", "resident")

    def __init__(self, capacity: int, state_tokens: int = 0):
        self.capacity = capacity  # KV tokens
        self.state_tokens = state_tokens  # each resident sequence's fixed state, in KV tokens
        self.resident = 0  # sequences that hold KV here (reserved and not yet left)
        self.committed = 0
        self.held = 0
        self.run_base = 0
        self.n_run = 0
        self.k = 0

    def used(self) -> int:
        return self.held + self.run_base + self.n_run * self.k + self.resident * self.state_tokens

    def busy(self, policy: KVPolicy) -> int:
        """The KV the prefix cache may not use: what is reserved (QUEUE) or what is in use (PREEMPT)."""
        return self.committed if policy is KVPolicy.QUEUE else self.used()

    def has_room(self, policy: KVPolicy, final_tokens: int, current_tokens: int) -> bool:
        """Whether a sequence of `current_tokens` now and `final_tokens` at most may be admitted."""
        if policy is KVPolicy.QUEUE:
            return self.committed + final_tokens + self.state_tokens <= self.capacity
        # room for one more decode step of the whole batch and a watermark, or the newcomer is evicted at once
        headroom = self.n_run + 1 + math.ceil(PREEMPT_WATERMARK * self.capacity)
        return self.used() + current_tokens + self.state_tokens + headroom <= self.capacity

    def overflows(self) -> bool:
        """Whether the next decode step of the running batch would not fit (PREEMPT evicts before it)."""
        return self.used() + self.n_run > self.capacity

    def reserve(self, final_tokens: int, tokens: int) -> None:
        """A sequence takes residence with `tokens` of KV now, `final_tokens` at most."""
        self.committed += final_tokens + self.state_tokens
        self.held += tokens
        self.resident += 1

    def start_decoding(self, tokens: int) -> int:
        """A resident sequence of `tokens` joins the running batch; returns the step count it joined at."""
        self.held -= tokens
        self.run_base += tokens - self.k
        self.n_run += 1
        return self.k

    def stop_decoding(self, tokens_at_start: int, step_at_start: int, final_tokens: int) -> None:
        """A running sequence leaves (finished or preempted): it held tokens_at_start + (k - step_at_start)."""
        self.run_base -= tokens_at_start - step_at_start
        self.n_run -= 1
        self.committed -= final_tokens + self.state_tokens
        self.resident -= 1

    def release(self, tokens: int, final_tokens: int) -> None:
        """A resident sequence that is not decoding leaves with its `tokens` (its KV moved on, or it is done)."""
        self.held -= tokens
        self.committed -= final_tokens + self.state_tokens
        self.resident -= 1

    def grow(self, tokens: int = 1) -> None:
        """A resident sequence that is not decoding writes `tokens` more (the first output token's KV)."""
        self.held += tokens

    def decode_step(self) -> None:
        self.k += 1
