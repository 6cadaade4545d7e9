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

import heapq
import math
import time
from collections import OrderedDict, deque

import simpy
import simpy.events

from hwmodels.arithmetic import kv_bytes_per_token
from hwmodels.calibrate.operator_costs import costs_of
from hwmodels.errors import InputError
from hwmodels.hardware import instance_cluster
from hwmodels.memory import device_memory, kv_bytes_per_token_per_device, window_bytes_per_sequence_per_device
from hwmodels.ingest.requests import PREFIX_BLOCK_TOKENS, RequestTrace
from hwmodels.ingest.routing import RoutingTrace
from hwmodels.roles import Phase, Role
from hwmodels.step import StepContext
from planner.plan import Plan, Pool
from planner.prompt_times import cp_gather_s_per_token
from sim.config import MIN_TIMELINE_BIN_S, KVPolicy, Priority, Router, SimConfig
from sim.kv import RankKV
from sim.loads import IMBALANCE_DECIMALS, RoleLoads, role_loads
from sim.request_state import Requests, State
from sim.results import PoolTally, SimResult, assemble
from sim.steps import StepTimes


class _Timed(simpy.events.Event):
    """An event `delay` seconds from now at an explicit same-time priority (SimPy's Timeout has NORMAL only)."""

    def __init__(self, env: simpy.Environment, delay: float, priority: Priority):
        super().__init__(env)
        self._ok = True
        self._value = None
        env.schedule(self, priority, delay)


class _Rank:
    """One DP attention group: its KV cache, prefix cache, prefill queue and decoding sequences."""

    __slots__ = ("inst", "kv", "heap", "running", "prefill_q", "queued_tokens", "incoming", "ready", "residents", "cache",
                 "nic_free_at")

    def __init__(self, inst: "_Instance", capacity: int, state_tokens: int = 0):
        self.inst = inst
        self.kv = RankKV(capacity, state_tokens)
        self.heap: list[tuple[int, int, int]] = []  # (decode step it finishes at, epoch, request)
        self.running: dict[int, None] = {}  # in admission order (preemption takes the last)
        self.prefill_q: deque[int] = deque()  # prompts (and recomputes) to prefill; started ones lead
        self.queued_tokens = 0  # prompt tokens not yet computed
        self.incoming: deque[int] = deque()  # decode pool: prefilled elsewhere, waiting for a slot here
        self.ready: deque[int] = deque()  # KV in place, joins the running batch at the next step
        self.residents = 0  # sequences holding a slot (counted against max running)
        self.cache: OrderedDict = OrderedDict()  # prefix block id -> None, least recently used first
        self.nic_free_at = 0.0


class _Instance:
    """One expert-parallel group: a lockstep process over its ranks. With pipeline stages a rank is one micro-batch
    of one DP attention group (dp x pp ranks, each 1 / pp of its group's KV cache), and a step is the cycle that
    brings every micro-batch round once (hwmodels.pipeline)."""

    def __init__(self, sim: "_Sim", pool: "_Pool"):
        self.sim, self.pool = sim, pool
        lay = pool.planned.layout
        self.ranks = [_Rank(self, pool.capacity, pool.state_tokens) for _ in range(lay.dp // lay.cp * lay.pp)]
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

    def __init__(self, sim: "_Sim", planned: Pool, loads: RoleLoads, config: SimConfig):
        p = sim.plan
        d = p.deployment
        self.planned, self.loads = planned, loads
        lay = planned.layout
        cluster = instance_cluster(d.cluster_of(planned.role).unit, planned.instance_devices)
        costs = costs_of(d, planned.role)
        self.steps = StepTimes(tuple(StepContext(d.model, d.precision, cluster, lay, load, costs,
                                                 imbalance_decimals=IMBALANCE_DECIMALS, images=d.workload.images,
                                                 **d.serving.engine_terms())
                                     for load in loads.loads), planned.option.speculation)
        workspace_tokens = planned.chunk_tokens_per_device if planned.role == Role.PREFILL else d.serving.tokens_per_step
        share = d.serving.sliding_kv_share
        mem = device_memory(d.model, d.precision, cluster, lay, d.workload.context_tokens, d.serving.hbm_utilization,
                            workspace_tokens, mtp_module=planned.option.speculation is not None, sliding_kv_share=share)
        if not mem.fits:
            raise InputError(f"{p.source}: recommendation.{'prefill' if planned.role == Role.PREFILL else 'decode'}.layout",
                             f"{lay.name(d.model.is_moe)} on {planned.instance_devices} x {cluster.device.name} leaves no KV cache",
                             "plan again for this spec")
        # every device of a TP group holds its share of each token (MLA: the whole latent), so a group holds
        # as many tokens as one device
        per_token = kv_bytes_per_token_per_device(d.model, d.precision, lay, sliding_kv_share=share)
        self.capacity = int(mem.kv_capacity_bytes // per_token) // lay.pp  # per rank: pp micro-batches share a group's
        # a hybrid model's fixed cache per sequence (linear-attention state, sliding windows), in tokens of KV
        fixed = mem.linear_state_bytes_per_sequence + window_bytes_per_sequence_per_device(
            d.model, d.precision, lay, d.workload.context_tokens, share)
        self.state_tokens = math.ceil(fixed / per_token)
        # running sequences per rank; None for a prefill pool, which runs no sequences
        self.cap = None if planned.role == Role.PREFILL else (config.max_batch_per_device or planned.batch_per_device) * lay.tp
        self.chunk = planned.chunk_tokens_per_device * lay.rank_devices  # prompt tokens per rank per step
        self.instances = [_Instance(sim, self) for _ in range(planned.instances)]
        self.ranks = [r for inst in self.instances for r in inst.ranks]
        self.rr = 0
        self.tally = PoolTally(planned, self.capacity, self.cap, loads)


class _Sim:
    def __init__(self, plan: Plan, trace: RequestTrace, config: SimConfig, decode_loads: RoleLoads,
                 prefill_loads: RoleLoads | None):
        d = plan.deployment
        self.plan, self.trace, self.config = plan, trace, config
        self.env = simpy.Environment()
        self.req = Requests(trace, config.prefix_cache)

        *prefill, decode = plan.pools
        self.decode = _Pool(self, decode, decode_loads, config)
        self.prefill = _Pool(self, prefill[0], prefill_loads, config) if prefill else None
        self.front = self.prefill or self.decode  # where requests arrive
        self.disaggregated = self.prefill is not None
        self.transfer_s_per_token = kv_bytes_per_token(d.model, d.precision) / d.kv_link_bytes_per_s if self.disaggregated else 0.0
        # a context-parallel prefill rank all-gathers each prompt's KV over its groups before it moves on
        # (planner.prompt_times.context_parallel_s prices the same)
        self.gather_s_per_token = 0.0 if self.prefill is None else cp_gather_s_per_token(d, self.prefill.planned.layout)
        self.span_s = max(trace.duration_s, 1e-9)  # routing windows are spread evenly over the arrival span
        # the timeline splits the arrival span into timeline_bins (of at least MIN_TIMELINE_BIN_S); the drain after
        # the last arrival adds bins of the same width
        self.bin_s = max(self.span_s / config.timeline_bins, MIN_TIMELINE_BIN_S)
        self.tokens_bins: list[float] = []
        self.series = [self.tokens_bins] + [b for pool in self.pools for b in (pool.tally.busy_bins, pool.tally.occupancy_bins)]
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
        room = max(rank.kv.capacity - rank.kv.busy(self.config.kv_policy), 0) // PREFIX_BLOCK_TOKENS
        cache = rank.cache
        while len(cache) > room:
            cache.popitem(last=False)

    def _remember(self, rank: _Rank, r: int) -> None:
        """The prompt's blocks enter the rank's prefix cache (most recently used)."""
        if self.req.blocks is None:
            return
        cache = rank.cache
        for b in self.req.blocks[r]:
            cache[b] = None
            cache.move_to_end(b)
        self._evict(rank)

    def _hits(self, rank: _Rank, r: int) -> int:
        """Leading prompt blocks of r in the rank's prefix cache."""
        if self.req.blocks is None:
            return 0
        n, cache = 0, rank.cache
        for b in self.req.blocks[r]:
            if b not in cache:
                break
            n += 1
        return n

    def _final(self, rank: _Rank, r: int) -> int:
        """KV tokens r holds on the rank at most: a prefill rank keeps the prompt, a decode rank the whole sequence."""
        return self.req.final[r] if rank.inst.pool.cap is not None else self.req.inp[r]

    def _room(self, rank: _Rank, r: int, current: int) -> bool:
        return rank.kv.has_room(self.config.kv_policy, self._final(rank, r), current)

    # ------------------------------------------------------------------ arrivals and routing
    def arrivals(self):
        env = self.env
        front = self.front
        limit = front.capacity if self.disaggregated else None
        for r, t in enumerate(self.req.arrival):
            yield _Timed(env, t - env.now, Priority.ARRIVAL)
            if (limit is not None and self.req.inp[r] > limit) or self.req.final[r] > self.decode.capacity:
                self.req.state[r] = State.REJECTED  # longer than a rank's whole KV cache: no engine could serve it
                continue
            self._count(waiting=1, in_system=1)
            rank = self._route(front, r)
            self.req.prefill_rank[r] = rank
            rank.prefill_q.append(r)
            rank.queued_tokens += self.req.inp[r]
            rank.inst.poke()

    def _route(self, pool: _Pool, r: int) -> _Rank:
        ranks, policy = pool.ranks, self.config.router
        pool.rr += 1
        if policy is Router.ROUND_ROBIN:
            return ranks[(pool.rr - 1) % len(ranks)]
        if policy is Router.LEAST_LOADED:
            if pool is self.prefill:
                return _least(ranks, pool.rr, lambda k: k.queued_tokens)
            return _least(ranks, pool.rr, _requests_on)
        # prefix-aware: the rank that finishes this prompt soonest, counting its cache hits against its queue; among
        # equals (an idle cluster, a trace without hash ids) the one holding fewest requests, then in turn
        inp = self.req.inp[r]
        return _least(ranks, pool.rr, lambda k: (k.queued_tokens + inp - min(self._hits(k, r) * PREFIX_BLOCK_TOKENS, inp - 1),
                                                 _requests_on(k)))

    def _route_decode(self, r: int) -> _Rank:
        ranks = self.decode.ranks
        self.decode.rr += 1
        if self.config.decode_router is Router.ROUND_ROBIN:
            return ranks[(self.decode.rr - 1) % len(ranks)]
        return _least(ranks, self.decode.rr, lambda k: k.residents + len(k.incoming))

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
            kv = rank.kv
            if not kv.n_run:
                continue
            # the last running sequence stays, so a rank always makes progress
            while preempt and kv.n_run > 1 and kv.overflows():
                self._preempt(rank)
            n, in_use = kv.n_run, kv.run_base + kv.n_run * kv.k
            decoding.append(rank)
            total += n
            if n > n_best or (n == n_best and in_use > kv_best):
                n_best, kv_best = n, in_use
        if not prefilling and not decoding:
            return None
        window, mean = self._window(pool), total / len(inst.ranks)
        duration = 0.0
        if prefilling:
            # step_cost's prefill context c gives its tokens a mean attention context (c + 1) / 2
            context = 2 * keys_busiest / busiest - 1
            duration = pool.steps.time_s(Phase.PREFILL, busiest, context, window, mean)
        if decoding:
            duration = max(duration, pool.steps.time_s(Phase.DECODE, n_best, kv_best / n_best, window, mean))
        return duration, prefilling, decoding

    def _admit(self, rank: _Rank, pool: _Pool) -> None:
        """Decode side of a rank at a step boundary: start KV transfers for prompts waiting for a slot, and
        move sequences whose KV is in place into the running batch."""
        cap = pool.cap
        while rank.incoming and rank.residents < cap:
            r = rank.incoming[0]
            if not self._room(rank, r, self.req.inp[r]):
                break
            rank.incoming.popleft()
            self._reserve(rank, r, self.req.inp[r])
            self._transfer(r, rank)
        req = self.req
        while rank.ready:
            r = rank.ready.popleft()
            kv = req.inp[r] + req.generated[r]
            k = rank.kv.start_decoding(kv)
            rank.running[r] = None
            req.state[r] = State.RUNNING
            req.k_admit[r], req.kv_admit[r] = k, kv
            heapq.heappush(rank.heap, (k + req.out[r] - req.generated[r], req.epoch[r], r))

    def _reserve(self, rank: _Rank, r: int, tokens: int) -> None:
        rank.kv.reserve(self._final(rank, r), tokens)
        rank.residents += 1
        self._evict(rank)

    def _chunk(self, rank: _Rank, pool: _Pool) -> tuple[list[tuple[int, int]], int, float]:
        """The rank's chunk of prompt tokens for this step: [(request, tokens)], their count, and the sum over them
        of the keys each attends to."""
        budget, tokens, keys, items = pool.chunk, 0, 0.0, []
        for r in rank.prefill_q:
            if not self.req.started[r] and not self._start_prefill(rank, r, pool):
                break  # first come, first served: a prompt that does not fit holds the ones behind it
            t = min(budget - tokens, self.req.todo[r])
            p0 = self.req.pos[r]
            keys += t * (p0 + (t + 1) / 2)  # the tokens at positions p0 .. p0 + t - 1 attend to p + 1 keys each
            items.append((r, t))
            tokens += t
            if tokens >= budget:
                break
        return items, tokens, keys

    def _start_prefill(self, rank: _Rank, r: int, pool: _Pool) -> bool:
        """Reserve KV for r's prompt (or recompute) on the rank and look up its cached prefix."""
        recompute = self.req.state[r] == State.RECOMPUTE
        tokens = self.req.inp[r] + self.req.generated[r]
        if pool.cap is not None and rank.residents >= pool.cap:
            return False
        if not self._room(rank, r, tokens):
            return False
        blocks = self._hits(rank, r)
        for b in self.req.blocks[r][:blocks] if blocks else ():
            rank.cache.move_to_end(b)  # a hit makes the blocks recently used
        hit = min(blocks * PREFIX_BLOCK_TOKENS, tokens - 1)
        self._reserve(rank, r, tokens)
        self.req.started[r] = True
        self.req.todo[r], self.req.pos[r] = tokens - hit, hit
        rank.queued_tokens -= hit
        if not recompute:
            self.req.cached[r] = hit
            self.req.state[r] = State.PREFILL
            self.req.queue_start[r] = self.env.now
            self._count(waiting=-1)
        return True

    # ------------------------------------------------------------------ finishing a step
    def end_step(self, inst: _Instance, duration: float, prefilling, decoding) -> None:
        pool, now = inst.pool, self.env.now
        self._bin(now)  # every bin the step spans exists
        used = 0
        for rank in inst.ranks:
            used += rank.kv.used()
        pool.tally.step(now - duration, duration, used / (pool.capacity * len(inst.ranks)), self.bin_s)
        for rank, items in prefilling:
            for r, t in items:
                self.req.todo[r] -= t
                self.req.pos[r] += t
                rank.queued_tokens -= t
                if self.req.todo[r] == 0:
                    rank.prefill_q.popleft()
                    self._prefill_done(rank, r)
        tokens, req = 0, self.req
        for rank in decoding:
            kv, heap = rank.kv, rank.heap
            tokens += kv.n_run
            kv.decode_step()
            while heap and heap[0][0] <= kv.k:
                _, epoch, r = heapq.heappop(heap)
                if epoch == req.epoch[r] and req.state[r] == State.RUNNING:
                    kv.stop_decoding(req.kv_admit[r], req.k_admit[r], req.final[r])
                    del rank.running[r]
                    rank.residents -= 1
                    self._complete(r)
        if tokens:
            self.tokens_bins[self._bin(now)] += tokens

    def _prefill_done(self, rank: _Rank, r: int) -> None:
        self.req.started[r] = False
        if self.req.state[r] == State.RECOMPUTE:  # KV rebuilt: it decodes again
            rank.ready.append(r)
            self.req.state[r] = State.READY
            return
        if self.disaggregated:
            self.req.state[r] = State.AWAIT_DECODE
            dr = self._route_decode(r)
            self.req.decode_rank[r] = dr
            dr.incoming.append(r)
            dr.inst.poke()
            return
        self._remember(rank, r)
        self.req.decode_rank[r] = rank
        self._first_token(r, rank)

    def _transfer(self, r: int, dest: _Rank) -> None:
        """Move r's prompt KV from its prefill rank to `dest` over the prefill rank's NIC."""
        src = self.req.prefill_rank[r]
        now = self.env.now
        begin = max(now + self.req.inp[r] * self.gather_s_per_token, src.nic_free_at)
        src.nic_free_at = begin + self.req.inp[r] * self.transfer_s_per_token
        self.req.state[r] = State.TRANSFER
        done = _Timed(self.env, src.nic_free_at - now, Priority.TRANSFER_DONE)
        done.callbacks.append(lambda _event: self._transfer_done(r, src, dest))

    def _transfer_done(self, r: int, src: _Rank, dest: _Rank) -> None:
        src.kv.release(self.req.inp[r], self.req.inp[r])  # a prefill rank holds and reserves the prompt alone
        src.residents -= 1
        self._remember(src, r)
        src.inst.poke()
        self._first_token(r, dest)

    def _first_token(self, r: int, rank: _Rank) -> None:
        self.req.first_token[r] = self.env.now
        self.req.generated[r] = 1
        self.tokens_bins[self._bin(self.env.now)] += 1
        if self.req.out[r] == 1:
            rank.kv.release(self.req.inp[r], self.req.final[r])
            rank.residents -= 1
            self._complete(r)
            return
        rank.kv.grow(1)  # the first token's KV is written by its first decode step
        rank.ready.append(r)
        self.req.state[r] = State.READY
        rank.inst.poke()

    def _preempt(self, rank: _Rank) -> None:
        """Evict the most recently admitted sequence; it recomputes its KV before decoding on."""
        r = next(reversed(rank.running))
        del rank.running[r]
        rank.kv.stop_decoding(self.req.kv_admit[r], self.req.k_admit[r], self.req.final[r])
        rank.residents -= 1
        self.req.generated[r] += rank.kv.k - self.req.k_admit[r]
        self.req.epoch[r] += 1
        self.req.preempted[r] += 1
        self.req.state[r] = State.RECOMPUTE
        tokens = self.req.inp[r] + self.req.generated[r]
        rank.queued_tokens += tokens
        # behind the prompts already being prefilled, ahead of those waiting to start
        ahead = 0
        for q in rank.prefill_q:
            if not self.req.started[q]:
                break
            ahead += 1
        rank.prefill_q.insert(ahead, r)

    def _complete(self, r: int) -> None:
        self.req.finish[r] = self.env.now
        self.req.state[r] = State.DONE
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
        self._count()
        return assemble(self.plan, self.trace, self.req, [pool.tally for pool in self.pools],
                        [pool.steps.evaluations for pool in self.pools], self.tokens_bins, self.bin_s,
                        self.waiting_area, self.system_area,
                        self.config.assumptions(self.disaggregated, self.trace.prefix_blocks is not None), wall_seconds)


def simulate(plan: Plan, trace: RequestTrace, config: SimConfig = SimConfig(),
             decode_routing: RoutingTrace | None = None, prefill_routing: RoutingTrace | None = None) -> SimResult:
    """Replay `trace` through `plan`. decode_routing / prefill_routing: routing windows (in time order, spread
    evenly over the trace's arrival span) of each phase; prefill falls back to decode's, and no routing data
    means uniform expert load, labelled. An aggregated plan uses decode_routing for both of its phases."""
    if plan.recommendation is None:
        raise InputError(f"{plan.source}: recommendation", f"is null ({plan.infeasible or 'no deployment met the SLOs'})",
                         "relax the SLOs or grow the cluster, then plan again")
    if len(trace) == 0:
        raise InputError("trace", "has no requests", "give a trace with at least one request")
    start = time.perf_counter()
    arch = plan.deployment.model
    *prefill, decode = plan.pools
    decode_loads = role_loads(arch, decode.layout, decode_routing, decode.placement, decode.placement_label, config.placement)
    prefill_loads = None
    if prefill:
        prefill_loads = role_loads(arch, prefill[0].layout, prefill_routing or decode_routing, prefill[0].placement,
                                   prefill[0].placement_label, config.placement)
    sim = _Sim(plan, trace, config, decode_loads, prefill_loads)
    sim.run()
    return sim.result(time.perf_counter() - start)


def _requests_on(rank: _Rank) -> int:
    return len(rank.running) + len(rank.ready) + len(rank.prefill_q)


def _least(ranks: list[_Rank], turn: int, key) -> _Rank:
    """The rank with the least `key`, ties broken in turn (starting from rank `turn` mod R): a router that always
    took the first of equals would pile an idle cluster's prompts onto one rank."""
    start = turn % len(ranks)
    return min(ranks[start:] + ranks[:start], key=key)
