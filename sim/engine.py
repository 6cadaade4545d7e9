"""The SimPy replay of a request trace through a Plan (DESIGN.md section 6). Time in seconds.

Processes and events:
- arrivals: one process walks the trace in time order and hands each request to the router;
- router: picks a DP attention group ("rank") of the prefill pool (or of the aggregated instances):
  round-robin, least-loaded, or prefix-cache-aware (`Router`); a finished prompt picks a decode rank;
- instances: each expert-parallel group is one process that steps in lockstep (the all-to-all
  synchronises its devices): one SimPy event per step per group, whose duration is
  hwmodels.step.step_cost for the actual batch: attention at its busiest rank's batch, the routed
  experts at the group's mean (sim.steps memoises it), with the MoE load of the routing window the
  step falls in (sim.loads);
- KV transfer: a prompt's KV moves from its prefill rank to its decode rank over the prefill rank's
  NIC (the device's scale-out bytes/s; transfers from one rank queue), as one timed event.

Prefill (chunked): each step every rank computes up to `chunk_tokens_per_device x tp` prompt tokens,
first-come first-served, a prompt spanning several steps. Prefix cache: Mooncake hash ids name
512-token prompt blocks; a rank keeps the blocks of the prompts it served in the HBM its KV cache
does not otherwise use (the KV capacity from hwmodels.memory less the KV its sequences hold), least
recently used first out, like SGLang's radix cache; a prompt skips its leading cached blocks (at least
one token is always computed). Mooncake's DRAM/SSD KV pool would hold more, so the hit rate is a lower
bound of what Mooncake reaches.

Decode (continuous batching): a rank runs at most the plan's batch per device x tp sequences (the
engine's max-running-requests, `SimConfig.max_batch_per_device` overrides it) and at most what its KV
capacity holds, under a `KVPolicy`: QUEUE admits a sequence only when its final length (prompt +
output) fits, so nothing is ever evicted; PREEMPT admits on the current length (leaving one decode
step of growth and a PREEMPT_WATERMARK of the capacity free) and, when growth would overflow, evicts
the most recently admitted sequence, which recomputes its KV (prompt and tokens so far) as prefill
work on that rank before it decodes again.

Each step every rank runs its own forward mode, as SGLang's DP attention does (MLPSyncBatchInfo
carries each rank's local_forward_mode; ranks without work run an idle batch): a rank with prompt work
it can start prefills a chunk (prefill first, SGLang's default; no mixed chunks), otherwise it decodes
its running batch one token. The step lasts the longer of the prefill part (busiest prefilling rank)
and the decode part (busiest decoding rank), the routed experts sized by all ranks' tokens.

Same-time events are ordered by `Priority`: a finished step frees slots and KV, then KV transfers land,
then arrivals are routed, and only then does an idle or finished instance form its next batch, so a
batch formed at time t sees everything that happened at t. SimPy breaks remaining ties by creation
order, which follows the trace order; nothing is random, so a replay is a pure function of its inputs.
"""

from __future__ import annotations

import enum
import heapq
import math
import time
from collections import OrderedDict, deque
from dataclasses import dataclass

import numpy as np
import simpy
import simpy.events

from hwmodels.arithmetic import kv_bytes_per_token
from hwmodels.errors import InputError
from hwmodels.hardware import make_cluster
from hwmodels.memory import device_memory, kv_bytes_per_token_per_device
from hwmodels.step import StepContext
from sim.loads import IMBALANCE_DECIMALS, PlacementFallback, RoleLoads, role_loads
from sim.plan import Plan, RolePlan
from sim.results import RoleStats, SimResult
from hwmodels.ingest.routing import RoutingTrace
from sim.steps import StepTimes
from hwmodels.ingest.requests import PREFIX_BLOCK_TOKENS, RequestTrace


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
    PREFIX_AWARE = "prefix-aware"  # fewest queued + uncached prompt tokens (Mooncake's conductor: cache hits vs queue)


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


class _Timed(simpy.events.Event):
    """An event `delay` seconds from now at an explicit same-time priority (SimPy's Timeout has NORMAL only)."""

    def __init__(self, env: simpy.Environment, delay: float, priority: Priority):
        super().__init__(env)
        self._ok = True
        self._value = None
        env.schedule(self, priority, delay)


# request states
_QUEUED, _PREFILL, _AWAIT_DECODE, _TRANSFER, _READY, _RUNNING, _RECOMPUTE, _DONE, _REJECTED = range(9)


class _Rank:
    """One DP attention group: its KV budget, prefix cache, prefill queue and decoding sequences."""

    __slots__ = ("inst", "capacity", "committed", "held", "run_base", "n_run", "k", "heap", "running", "prefill_q",
                 "queued_tokens", "incoming", "ready", "residents", "cache", "nic_free_at")

    def __init__(self, inst: "_Instance", capacity: int):
        self.inst = inst
        self.capacity = capacity  # KV tokens
        self.committed = 0  # KVPolicy.QUEUE: final KV tokens of every resident sequence
        self.held = 0  # KV tokens of resident sequences that are not decoding (prefilling, waiting, transferring)
        self.run_base = 0  # decoding sequences hold run_base + n_run x k KV tokens
        self.n_run = 0
        self.k = 0  # decode steps this rank ran (a decoding sequence grows one token per decode step)
        self.heap: list[tuple[int, int, int]] = []  # (decode step it finishes at, epoch, request)
        self.running: dict[int, None] = {}  # in admission order (preemption takes the last)
        self.prefill_q: deque[int] = deque()  # prompts (and recomputes) to prefill; started ones lead
        self.queued_tokens = 0  # prompt tokens not yet computed
        self.incoming: deque[int] = deque()  # decode pool: prefilled elsewhere, waiting for a slot here
        self.ready: deque[int] = deque()  # KV in place, joins the running batch at the next step
        self.residents = 0  # sequences holding a slot (counted against max running)
        self.cache: OrderedDict = OrderedDict()  # prefix block id -> None, least recently used first
        self.nic_free_at = 0.0

    def used(self) -> int:
        return self.held + self.run_base + self.n_run * self.k


class _Instance:
    """One expert-parallel group: a lockstep process over its ranks."""

    def __init__(self, sim: "_Sim", pool: "_Pool"):
        self.sim, self.pool = sim, pool
        self.ranks = [_Rank(self, pool.capacity) for _ in range(pool.role.layout.dp)]
        self.wake: simpy.Event | None = None

    def poke(self) -> None:
        if self.wake is not None and not self.wake.triggered:
            self.wake.succeed()

    def run(self):
        env, sim = self.sim.env, self.sim
        while True:
            step = sim.plan_step(self)
            if step is None:
                self.wake = env.event()
                yield self.wake
                self.wake = None
                yield _Timed(env, 0.0, Priority.SCHEDULE)
                continue
            duration, prefilling, decoding = step
            yield _Timed(env, duration, Priority.STEP_END)
            sim.end_step(self, duration, prefilling, decoding)
            if env.peek() <= env.now:  # more happens at this instant: form the next batch after it
                yield _Timed(env, 0.0, Priority.SCHEDULE)


class _Pool:
    """The instances of one role and what they share: step times, KV capacity, caps, router state."""

    def __init__(self, sim: "_Sim", role: RolePlan, loads: RoleLoads, config: SimConfig):
        p = sim.plan
        d = p.deployment
        self.role, self.loads = role, loads
        lay = role.layout
        cluster = make_cluster(d.cluster.unit, devices=role.instance_devices)
        self.steps = StepTimes(tuple(StepContext(d.model, d.precision, cluster, lay, load, imbalance_decimals=IMBALANCE_DECIMALS)
                                     for load in loads.loads))
        workspace_tokens = role.chunk_tokens_per_device if role.role == "prefill" else d.serving.tokens_per_step
        mem = device_memory(d.model, d.precision, cluster, lay, d.workload.context_tokens, d.serving.hbm_utilization,
                            workspace_tokens)
        if not mem.fits:
            raise InputError(f"{p.source}: recommendation.{'prefill' if role.role == 'prefill' else 'decode'}.layout",
                             f"{lay.name(d.model.is_moe)} on {role.instance_devices} x {cluster.device.name} leaves no KV cache",
                             "plan again for this spec")
        # every device of a TP group holds its share of each token (MLA: the whole latent), so a group holds
        # as many tokens as one device
        self.capacity = int(mem.kv_capacity_bytes // kv_bytes_per_token_per_device(d.model, d.precision, lay))
        # running sequences per rank; None for a prefill pool, which runs no sequences
        self.cap = None if role.role == "prefill" else (config.max_batch_per_device or role.batch_per_device) * lay.tp
        self.chunk = role.chunk_tokens_per_device * lay.tp  # prompt tokens per rank per step
        self.instances = [_Instance(sim, self) for _ in range(role.instances)]
        self.ranks = [r for inst in self.instances for r in inst.ranks]
        self.rr = 0
        self.step_count = 0
        self.busy_s = 0.0
        self.occupancy_s = 0.0  # sum over steps of occupancy x duration
        self.peak_occupancy = 0.0
        self.busy_bins: list[float] = []  # per timeline bin: step seconds, and occupancy x step seconds
        self.occupancy_bins: list[float] = []


class _Sim:
    def __init__(self, plan: Plan, trace: RequestTrace, config: SimConfig, decode_loads: RoleLoads,
                 prefill_loads: RoleLoads | None):
        d = plan.deployment
        self.plan, self.trace, self.config = plan, trace, config
        self.env = simpy.Environment()
        n = len(trace)
        self.arrival = trace.arrival_s.tolist()
        self.inp = trace.input_tokens.tolist()
        self.out = trace.output_tokens.tolist()
        self.blocks = trace.prefix_blocks if config.prefix_cache else None
        self.final = [i + o for i, o in zip(self.inp, self.out)]
        nan = math.nan
        self.state = [_QUEUED] * n
        self.prefill_rank: list[_Rank | None] = [None] * n
        self.decode_rank: list[_Rank | None] = [None] * n
        self.todo = [0] * n  # prompt tokens still to compute
        self.pos = [0] * n  # position of the next prompt token to compute
        self.cached = [0] * n
        self.generated = [0] * n  # output tokens so far (at the last admission or preemption)
        self.k_admit = [0] * n
        self.kv_admit = [0] * n
        self.epoch = [0] * n
        self.preempted = [0] * n
        self.started = [False] * n
        self.first_token = [nan] * n
        self.finish = [nan] * n
        self.queue_start = [nan] * n  # left the waiting queue (first prefill chunk scheduled)

        self.decode = _Pool(self, plan.decode, decode_loads, config)
        self.prefill = _Pool(self, plan.prefill, prefill_loads, config) if plan.prefill else None
        self.front = self.prefill or self.decode  # where requests arrive
        self.disaggregated = self.prefill is not None
        nic = d.cluster.device.scaleout_bytes_per_s or d.cluster.device.scaleup_bytes_per_s
        self.transfer_s_per_token = kv_bytes_per_token(d.model, d.precision) / nic if self.disaggregated else 0.0
        self.span_s = max(trace.duration_s, 1e-9)  # routing windows are spread evenly over the arrival span
        # the timeline splits the arrival span into timeline_bins (of at least MIN_TIMELINE_BIN_S); the drain after
        # the last arrival adds bins of the same width
        self.bin_s = max(self.span_s / config.timeline_bins, MIN_TIMELINE_BIN_S)
        self.tokens_bins: list[float] = []
        self.series = [self.tokens_bins] + [b for pool in self.pools for b in (pool.busy_bins, pool.occupancy_bins)]
        # Little's law bookkeeping: time integrals of the waiting queue and of requests in the system
        self.waiting = self.in_system = 0
        self.waiting_area = self.system_area = 0.0
        self.last_change = 0.0

    @property
    def pools(self) -> list[_Pool]:
        return [self.decode] if self.prefill is None else [self.prefill, self.decode]

    # ------------------------------------------------------------------ bookkeeping helpers
    def _count(self, waiting: int = 0, in_system: int = 0) -> None:
        now = self.env.now
        dt = now - self.last_change
        self.waiting_area += self.waiting * dt
        self.system_area += self.in_system * dt
        self.last_change = now
        self.waiting += waiting
        self.in_system += in_system

    def _bin(self, t: float) -> int:
        b = int(t / self.bin_s)
        if b >= len(self.tokens_bins):
            for series in self.series:
                series.extend([0.0] * (b + 1 - len(series)))
        return b

    def _window(self, pool: _Pool) -> int:
        w = len(pool.loads.loads)
        return min(int(self.env.now * w / self.span_s), w - 1) if w > 1 else 0

    def _evict(self, rank: _Rank) -> None:
        """Shrink the prefix cache to the KV the rank's sequences leave free."""
        busy = rank.committed if self.config.kv_policy is KVPolicy.QUEUE else rank.used()
        room = max(rank.capacity - busy, 0) // PREFIX_BLOCK_TOKENS
        cache = rank.cache
        while len(cache) > room:
            cache.popitem(last=False)

    def _remember(self, rank: _Rank, r: int) -> None:
        """The prompt's blocks enter the rank's prefix cache (most recently used)."""
        if self.blocks is None:
            return
        cache = rank.cache
        for b in self.blocks[r]:
            cache[b] = None
            cache.move_to_end(b)
        self._evict(rank)

    def _hits(self, rank: _Rank, r: int) -> int:
        """Leading prompt blocks of r in the rank's prefix cache."""
        if self.blocks is None:
            return 0
        n, cache = 0, rank.cache
        for b in self.blocks[r]:
            if b not in cache:
                break
            n += 1
        return n

    def _final(self, rank: _Rank, r: int) -> int:
        """KV tokens r holds on the rank at most: a prefill rank keeps the prompt, a decode rank the whole sequence."""
        return self.final[r] if rank.inst.pool.cap is not None else self.inp[r]

    def _room(self, rank: _Rank, r: int, current: int) -> bool:
        if self.config.kv_policy is KVPolicy.QUEUE:
            return rank.committed + self._final(rank, r) <= rank.capacity
        # room for one more decode step of the whole batch and a watermark, or the newcomer is evicted at once
        headroom = rank.n_run + 1 + math.ceil(PREEMPT_WATERMARK * rank.capacity)
        return rank.used() + current + headroom <= rank.capacity

    # ------------------------------------------------------------------ arrivals and routing
    def arrivals(self):
        env = self.env
        front = self.front
        limit = front.capacity if self.disaggregated else None
        for r, t in enumerate(self.arrival):
            yield _Timed(env, t - env.now, Priority.ARRIVAL)
            if (limit is not None and self.inp[r] > limit) or self.final[r] > self.decode.capacity:
                self.state[r] = _REJECTED  # longer than a rank's whole KV cache: no engine could serve it
                continue
            self._count(waiting=1, in_system=1)
            rank = self._route(front, r)
            self.prefill_rank[r] = rank
            rank.prefill_q.append(r)
            rank.queued_tokens += self.inp[r]
            rank.inst.poke()

    def _route(self, pool: _Pool, r: int) -> _Rank:
        ranks, policy = pool.ranks, self.config.router
        if policy is Router.ROUND_ROBIN:
            pool.rr += 1
            return ranks[(pool.rr - 1) % len(ranks)]
        if policy is Router.LEAST_LOADED:
            if pool is self.prefill:
                return min(ranks, key=lambda k: k.queued_tokens)
            return min(ranks, key=lambda k: len(k.running) + len(k.ready) + len(k.prefill_q))
        # prefix-aware: the rank that finishes this prompt soonest, counting its cache hits against its queue
        inp = self.inp[r]
        return min(ranks, key=lambda k: k.queued_tokens + inp - min(self._hits(k, r) * PREFIX_BLOCK_TOKENS, inp - 1))

    def _route_decode(self, r: int) -> _Rank:
        ranks = self.decode.ranks
        if self.config.decode_router is Router.ROUND_ROBIN:
            self.decode.rr += 1
            return ranks[(self.decode.rr - 1) % len(ranks)]
        return min(ranks, key=lambda k: k.residents + len(k.incoming))

    # ------------------------------------------------------------------ forming a step
    def plan_step(self, inst: _Instance):
        """The next step of `inst`: (duration, [(rank, [(request, prompt tokens)])] prefilling,
        [rank] decoding), or None when no rank has work it can run."""
        pool = inst.pool
        preempt = self.config.kv_policy is KVPolicy.PREEMPT
        prefilling, decoding = [], []
        busiest, keys_busiest, n_best, kv_best, total = 0, 0.0, 0, 0, 0
        for rank in inst.ranks:
            if pool.cap is not None and (rank.incoming or rank.ready):
                self._admit(rank, pool)
            if rank.prefill_q:
                items, tokens, keys = self._chunk(rank, pool)
                if items:
                    prefilling.append((rank, items))
                    total += tokens
                    if tokens > busiest:
                        busiest, keys_busiest = tokens, keys
                    continue
            n = rank.n_run
            if not n:
                continue
            # the last running sequence stays, so a rank always makes progress
            while preempt and n > 1 and rank.used() + n > rank.capacity:
                self._preempt(rank)
                n = rank.n_run
            decoding.append(rank)
            total += n
            kv = rank.run_base + n * rank.k
            if n > n_best or (n == n_best and kv > kv_best):
                n_best, kv_best = n, kv
        if not prefilling and not decoding:
            return None
        window, mean = self._window(pool), total / len(inst.ranks)
        duration = 0.0
        if prefilling:
            # step_cost's prefill context c gives its tokens a mean attention context (c + 1) / 2
            context = 2 * keys_busiest / busiest - 1
            duration = pool.steps.time_s("prefill", busiest, context, window, mean)
        if decoding:
            duration = max(duration, pool.steps.time_s("decode", n_best, kv_best / n_best, window, mean))
        return duration, prefilling, decoding

    def _admit(self, rank: _Rank, pool: _Pool) -> None:
        """Decode side of a rank at a step boundary: start KV transfers for prompts waiting for a slot, and
        move sequences whose KV is in place into the running batch."""
        cap = pool.cap
        while rank.incoming and rank.residents < cap:
            r = rank.incoming[0]
            if not self._room(rank, r, self.inp[r]):
                break
            rank.incoming.popleft()
            self._reserve(rank, r, self.inp[r])
            self._transfer(r, rank)
        k = rank.k
        while rank.ready:
            r = rank.ready.popleft()
            kv = self.inp[r] + self.generated[r]
            rank.held -= kv
            rank.run_base += kv - k
            rank.n_run += 1
            rank.running[r] = None
            self.state[r] = _RUNNING
            self.k_admit[r], self.kv_admit[r] = k, kv
            heapq.heappush(rank.heap, (k + self.out[r] - self.generated[r], self.epoch[r], r))

    def _reserve(self, rank: _Rank, r: int, tokens: int) -> None:
        rank.committed += self._final(rank, r)
        rank.held += tokens
        rank.residents += 1
        self._evict(rank)

    def _chunk(self, rank: _Rank, pool: _Pool) -> tuple[list[tuple[int, int]], int, float]:
        """The rank's chunk of prompt tokens for this step: [(request, tokens)], their count, and the sum over them
        of the keys each attends to."""
        budget, tokens, keys, items = pool.chunk, 0, 0.0, []
        for r in rank.prefill_q:
            if not self.started[r] and not self._start_prefill(rank, r, pool):
                break  # first come, first served: a prompt that does not fit holds the ones behind it
            t = min(budget - tokens, self.todo[r])
            p0 = self.pos[r]
            keys += t * (p0 + (t + 1) / 2)  # the tokens at positions p0 .. p0 + t - 1 attend to p + 1 keys each
            items.append((r, t))
            tokens += t
            if tokens >= budget:
                break
        return items, tokens, keys

    def _start_prefill(self, rank: _Rank, r: int, pool: _Pool) -> bool:
        """Reserve KV for r's prompt (or recompute) on the rank and look up its cached prefix."""
        recompute = self.state[r] == _RECOMPUTE
        tokens = self.inp[r] + self.generated[r]
        if pool.cap is not None and rank.residents >= pool.cap:
            return False
        if not self._room(rank, r, tokens):
            return False
        blocks = self._hits(rank, r)
        for b in self.blocks[r][:blocks] if blocks else ():
            rank.cache.move_to_end(b)  # a hit makes the blocks recently used
        hit = min(blocks * PREFIX_BLOCK_TOKENS, tokens - 1)
        self._reserve(rank, r, tokens)
        self.started[r] = True
        self.todo[r], self.pos[r] = tokens - hit, hit
        rank.queued_tokens -= hit
        if not recompute:
            self.cached[r] = hit
            self.state[r] = _PREFILL
            self.queue_start[r] = self.env.now
            self._count(waiting=-1)
        return True

    # ------------------------------------------------------------------ finishing a step
    def end_step(self, inst: _Instance, duration: float, prefilling, decoding) -> None:
        pool, now = inst.pool, self.env.now
        b = self._bin(now - duration)
        pool.step_count += 1
        pool.busy_s += duration
        pool.busy_bins[b] += duration
        used = 0
        for rank in inst.ranks:
            used += rank.used()
        occupancy = used / (pool.capacity * len(inst.ranks))
        pool.occupancy_s += occupancy * duration
        pool.occupancy_bins[b] += occupancy * duration
        pool.peak_occupancy = max(pool.peak_occupancy, occupancy)
        for rank, items in prefilling:
            for r, t in items:
                self.todo[r] -= t
                self.pos[r] += t
                rank.queued_tokens -= t
                if self.todo[r] == 0:
                    rank.prefill_q.popleft()
                    self._prefill_done(rank, r)
        tokens = 0
        for rank in decoding:
            tokens += rank.n_run
            rank.k += 1
            k, heap = rank.k, rank.heap
            while heap and heap[0][0] <= k:
                _, epoch, r = heapq.heappop(heap)
                if epoch == self.epoch[r] and self.state[r] == _RUNNING:
                    rank.run_base -= self.kv_admit[r] - self.k_admit[r]
                    rank.n_run -= 1
                    del rank.running[r]
                    rank.committed -= self.final[r]
                    rank.residents -= 1
                    self._complete(r)
        if tokens:
            self.tokens_bins[self._bin(now)] += tokens

    def _prefill_done(self, rank: _Rank, r: int) -> None:
        self.started[r] = False
        if self.state[r] == _RECOMPUTE:  # KV rebuilt: it decodes again
            rank.ready.append(r)
            self.state[r] = _READY
            return
        if self.disaggregated:
            self.state[r] = _AWAIT_DECODE
            dr = self._route_decode(r)
            self.decode_rank[r] = dr
            dr.incoming.append(r)
            dr.inst.poke()
            return
        self._remember(rank, r)
        self.decode_rank[r] = rank
        self._first_token(r, rank)

    def _transfer(self, r: int, dest: _Rank) -> None:
        """Move r's prompt KV from its prefill rank to `dest` over the prefill rank's NIC."""
        src = self.prefill_rank[r]
        now = self.env.now
        begin = max(now, src.nic_free_at)
        src.nic_free_at = begin + self.inp[r] * self.transfer_s_per_token
        self.state[r] = _TRANSFER
        done = _Timed(self.env, src.nic_free_at - now, Priority.TRANSFER_DONE)
        done.callbacks.append(lambda _event: self._transfer_done(r, src, dest))

    def _transfer_done(self, r: int, src: _Rank, dest: _Rank) -> None:
        src.held -= self.inp[r]
        src.committed -= self.inp[r]
        src.residents -= 1
        self._remember(src, r)
        src.inst.poke()
        self._first_token(r, dest)

    def _first_token(self, r: int, rank: _Rank) -> None:
        self.first_token[r] = self.env.now
        self.generated[r] = 1
        self.tokens_bins[self._bin(self.env.now)] += 1
        if self.out[r] == 1:
            rank.held -= self.inp[r]
            rank.committed -= self.final[r]
            rank.residents -= 1
            self._complete(r)
            return
        rank.held += 1  # the first token's KV is written by its first decode step
        rank.ready.append(r)
        self.state[r] = _READY
        rank.inst.poke()

    def _preempt(self, rank: _Rank) -> None:
        """Evict the most recently admitted sequence; it recomputes its KV before decoding on."""
        r = next(reversed(rank.running))
        k = rank.k
        del rank.running[r]
        rank.run_base -= self.kv_admit[r] - self.k_admit[r]
        rank.n_run -= 1
        rank.committed -= self.final[r]
        rank.residents -= 1
        self.generated[r] += k - self.k_admit[r]
        self.epoch[r] += 1
        self.preempted[r] += 1
        self.state[r] = _RECOMPUTE
        tokens = self.inp[r] + self.generated[r]
        rank.queued_tokens += tokens
        # behind the prompts already being prefilled, ahead of those waiting to start
        ahead = 0
        for q in rank.prefill_q:
            if not self.started[q]:
                break
            ahead += 1
        rank.prefill_q.insert(ahead, r)

    def _complete(self, r: int) -> None:
        self.finish[r] = self.env.now
        self.state[r] = _DONE
        self._count(in_system=-1)

    # ------------------------------------------------------------------ the run
    def run(self) -> None:
        env = self.env
        for pool in self.pools:
            for inst in pool.instances:
                env.process(inst.run())
        env.process(self.arrivals())
        env.run()

    def result(self, wall_seconds: float) -> SimResult:
        d = self.plan.deployment
        self._count()
        arrival = np.asarray(self.arrival)
        first = np.asarray(self.first_token)
        finish = np.asarray(self.finish)
        out = np.asarray(self.out)
        rejected = np.asarray(self.state) == _REJECTED
        served = ~rejected
        makespan = float(np.nanmax(finish) - arrival[0]) if served.any() else 0.0
        ttft = first - arrival
        with np.errstate(invalid="ignore", divide="ignore"):
            tpot = np.where(out > 1, (finish - first) / (out - 1), math.nan)
        waits = np.asarray(self.queue_start)[served] - arrival[served]
        self._bin(makespan)  # every series as long as the replay
        roles, util_t, occ_t = [], {}, {}
        for pool in self.pools:
            role = pool.role
            wall = makespan * role.instances
            roles.append(RoleStats(
                role=role.role, instances=role.instances, devices=role.devices, steps=pool.step_count, busy_s=pool.busy_s,
                utilisation=pool.busy_s / wall if wall > 0 else 0.0,
                mean_kv_occupancy=pool.occupancy_s / pool.busy_s if pool.busy_s > 0 else 0.0,
                peak_kv_occupancy=pool.peak_occupancy, kv_capacity_tokens_per_group=pool.capacity,
                max_running_per_group=pool.cap, mean_imbalance=float(np.mean(pool.loads.mean_imbalance)),
                expert_load=pool.loads.label, step_cost_evaluations=pool.steps.evaluations, routing_mapping=pool.loads.mapping))
            per_bin = self.bin_s * role.instances
            util_t[role.role] = np.asarray(pool.busy_bins) / per_bin
            busy = np.asarray(pool.busy_bins)
            occ_t[role.role] = np.divide(pool.occupancy_bins, busy, out=np.zeros(len(busy)), where=busy > 0)
        price = d.price.usd_per_device_hour if d.price else None
        observed = max(makespan, 1e-12)
        return SimResult(
            plan=self.plan.describe(), trace=self.trace.source, slo=d.slo, arrival_s=arrival,
            input_tokens=np.asarray(self.inp), output_tokens=out, cached_tokens=np.asarray(self.cached),
            ttft_s=np.where(served, ttft, math.nan), tpot_s=np.where(served, tpot, math.nan),
            e2e_s=np.where(served, finish - arrival, math.nan), preemptions=np.asarray(self.preempted), rejected=rejected,
            makespan_s=makespan, devices=self.plan.devices, usd_per_device_hour=price, roles=tuple(roles),
            timeline_bin_s=self.bin_s, output_tokens_per_s_over_time=np.asarray(self.tokens_bins) / self.bin_s,
            utilisation_over_time=util_t, kv_occupancy_over_time=occ_t,
            mean_queue_length=self.waiting_area / observed,
            mean_queue_wait_s=float(waits.mean()) if len(waits) else 0.0,
            mean_in_system=self.system_area / observed,
            assumptions=self.assumptions(), wall_seconds=wall_seconds)

    def _prefix_cache_assumption(self) -> str:
        if self.blocks is not None:
            return ("prefix cache: 512-token blocks in the KV room a rank's sequences leave free, LRU, per DP attention "
                    "group (Mooncake's DRAM/SSD pool not modelled: a lower bound on hits)")
        if not self.config.prefix_cache:
            return "prefix cache disabled"
        return "no prefix cache: the trace has no prompt block ids"

    def assumptions(self) -> tuple[str, ...]:
        c = self.config
        out = [
            "one event per step per expert-parallel group; a step lasts hwmodels.step.step_cost of its busiest DP rank's "
            "batch (sequences and mean KV length for decode, prompt tokens and their attention context for prefill) with "
            "the routed-expert GEMMs at the group's mean batch, interpolated on a grid (sim.steps)",
            f"router {c.router.value}" + (f", decode router {c.decode_router.value}" if self.disaggregated else ""),
            f"KV capacity from hwmodels.memory; policy {c.kv_policy.value}"
            + (" (admit on the final length, never evict)" if c.kv_policy is KVPolicy.QUEUE
               else " (admit on the current length, evict the newest and recompute)"),
            self._prefix_cache_assumption(),
            "max running sequences per DP rank: " + (f"{c.max_batch_per_device} per device (set)" if c.max_batch_per_device
                                                     else "the plan's batch per device") + " x attention TP",
        ]
        if self.disaggregated:
            out.append("KV transfer: prompt tokens x KV bytes per token over the prefill rank's NIC (scale-out bytes/s), "
                       "transfers from one rank queue; TTFT ends when the KV reaches the decode rank")
        out.append("each step a rank prefills when it has prompt work it can start (prefill first, no mixed chunks), "
                   "else decodes; the step lasts the longer part")
        return tuple(out)


def simulate(plan: Plan, trace: RequestTrace, config: SimConfig = SimConfig(),
             decode_routing: RoutingTrace | None = None, prefill_routing: RoutingTrace | None = None) -> SimResult:
    """Replay `trace` through `plan`. decode_routing / prefill_routing: routing windows (in time order, spread
    evenly over the trace's arrival span) of each phase; prefill falls back to decode's, and no routing data
    means uniform expert load, labelled. An aggregated plan uses decode_routing for both of its phases."""
    if len(trace) == 0:
        raise InputError("trace", "has no requests", "give a trace with at least one request")
    start = time.perf_counter()
    arch = plan.deployment.model
    decode_loads = role_loads(arch, plan.decode.layout, decode_routing, plan.decode.placement, plan.decode.placement_label,
                              config.placement)
    prefill_loads = None
    if plan.prefill is not None:
        prefill_loads = role_loads(arch, plan.prefill.layout, prefill_routing or decode_routing, plan.prefill.placement,
                                   plan.prefill.placement_label, config.placement)
    sim = _Sim(plan, trace, config, decode_loads, prefill_loads)
    sim.run()
    return sim.result(time.perf_counter() - start)

