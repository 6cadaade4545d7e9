"""Where every request of a replay is and what happened to it, by its index in the trace."""

from __future__ import annotations

import enum
import math

from hwmodels.ingest.requests import RequestTrace


class State(enum.IntEnum):
    QUEUED = 0  # arrived, waiting for its first prefill chunk
    PREFILL = 1
    AWAIT_DECODE = 2  # prefilled on a prefill rank, waiting for a decode rank's slot
    TRANSFER = 3  # its KV moving to the decode rank
    READY = 4  # KV in place, joins the running batch at the next step
    RUNNING = 5
    RECOMPUTE = 6  # preempted: its KV is being computed again
    DONE = 7
    REJECTED = 8  # longer than a rank's whole KV cache: no engine could serve it


class Requests:
    """Per request r (lists, for the replay's hot loops): its lengths and prompt blocks, its state and ranks, its
    prefill progress and the decode step it was admitted at, and the times the results are made of."""

    def __init__(self, trace: RequestTrace, prefix_cache: bool):
        n = len(trace)
        self.arrival = trace.arrival_s.tolist()
        self.inp = trace.input_tokens.tolist()
        self.out = trace.output_tokens.tolist()
        self.blocks = trace.prefix_blocks if prefix_cache else None
        self.final = [i + o for i, o in zip(self.inp, self.out)]
        self.state = [State.QUEUED] * n
        self.prefill_rank: list = [None] * n
        self.decode_rank: list = [None] * n
        self.todo = [0] * n  # prompt tokens still to compute
        self.pos = [0] * n  # position of the next prompt token to compute
        self.cached = [0] * n  # prompt tokens served from the prefix cache
        self.generated = [0] * n  # output tokens so far (at the last admission or preemption)
        self.k_admit = [0] * n  # the rank's decode step count when it joined the running batch
        self.kv_admit = [0] * n  # and its KV tokens then
        self.epoch = [0] * n  # admissions so far: a finish scheduled by an earlier admission is stale
        self.preempted = [0] * n
        self.started = [False] * n  # its current prefill has reserved KV
        self.first_token = [math.nan] * n
        self.finish = [math.nan] * n
        self.queue_start = [math.nan] * n  # left the waiting queue (first prefill chunk scheduled)
