"""Layout search: enumerate feasible layouts, score them with hwmodels, keep the Pareto frontier,
apply the SLOs and recommend the cheapest deployment that carries the traffic.

Roles are scored independently and combined:
- decode pools: instance size x pipeline stages x attention TP x redundant slots x two-batch overlap x batch per
  device (a pipeline's step is the cycle of its pp micro-batches, hwmodels.pipeline; prefill pools and aggregated
  instances stay pp = 1: the queueing of a prompt's pipelined chunks and their mixing with decode are not modelled),
  and, where the user named no engine, attention-FFN disaggregation (hwmodels.afd: the batch is then per attention
  device, the throughput per device over all of them);
  TPOT = the decode step time at that batch, then, for the cheapest options, at the SLO percentile of the load the
  pool carries (planner.tpot);
- prefill pools: instance size x attention TP x redundant slots x overlap x tokens per step x context parallel (a
  rank of cp attention groups prefilling each prompt together, where the engine has it); TTFT at the SLO
  percentile over the workload's spread of prompt lengths and its rate levels (planner.queueing) = the prompt's
  prefill + the KV transfer to the decode pool over the scale-out NIC + the wait for a prefill rank (M^X/G/c) + the wait for a
  free decode slot (M/M/c per decode DP rank; the decode pool grows until the TTFT fits);
- aggregated instances (prefill and decode on the same devices): hwmodels.serving.aggregated_performance; for the
  cheapest options, TPOT at the SLO percentile with the prefill that stalls decode (planner.tpot).
A deployment is disaggregated (prefill pool + decode pool) or aggregated; the cheapest one that meets
both SLOs at the spec's traffic (requests/s x tokens) within the cluster's devices wins. Given a check
(planner.replay_check), the cheapest few are replayed in the simulator and the cheapest that holds wins.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from collections.abc import Callable
from functools import lru_cache

import numpy as np

from hwmodels import catalog
from hwmodels.alltoall_placement import ASSUMPTION
from hwmodels.arithmetic import weight_bytes
from hwmodels.calibrate.operator_costs import costs_of, describe_costs
from hwmodels.deployment import POISSON, Deployment
from hwmodels.hardware import Cluster
from hwmodels.layout import Layout
from hwmodels.layouts import expressible, layout_space
from hwmodels.memory import device_memory
from hwmodels.roles import Phase, Role
from hwmodels.serving import (Performance, aggregated_performance, decode_performance, largest_batch_that_fits,
                              prefill_performance, usd_per_million_tokens)
from hwmodels.step import StepContext
from planner import queueing
from planner.expert_loads import ExpertLoads
from planner.context_parallel_notes import context_parallel_assumptions
from planner.engine_notes import engine_assumptions
from planner.pipeline_notes import pipeline_assumptions
from planner.plan import Candidate, Mode, Pinned, Plan, Recommendation, ReplayCheck, pool_utilization
from planner.prompt_times import (admits_longest, aggregated_prefill_s, instance_context, output_lengths, prefill_s,
                                  prefill_stalls_s, prompt_lengths, rank_prefill_s, sub_cluster)
from planner.refusals import MOST_DEVICES, explain_infeasible, grown_refusal, tpot_refusal
from planner.replay_check import REPLAYED_OPTIONS, Check, checked, refusal
from planner.tpot import decode_tpot_s, instances_for_tpot

DECODE_BATCHES = (1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
PREFILL_TOKENS_PER_DEVICE = (1024, 2048, 4096, 8192, 16384)
# one expert-parallel instance larger than this has no published deployment (the largest: CloudMatrix384's EP320
# decode, DeepSeek's EP144); it also keeps a plan of a 100,000-device cluster as quick as one of 512 devices
MAX_INSTANCE_DEVICES = 512
SLO_UTILISATION_CAP = 0.95  # never plan a pool hotter than this: queues explode as utilisation -> 1


def instance_sizes(d: Deployment, role: str = Role.DECODE) -> list[int]:
    """Parts of one node that hold the weights (1, 2, 4, ... of its devices: one B200, a 2-GPU GB200 instance), then
    whole nodes, from the fewest that hold the weights up to the cluster or MAX_INSTANCE_DEVICES (more traffic takes
    more instances), whichever is smaller, but never fewer nodes than hold the weights. On the cluster of `role`."""
    cluster = d.cluster_of(role)
    unit = cluster.unit
    need = weight_bytes(d.model, d.precision) / (cluster.device.hbm_bytes * d.serving.hbm_utilization)
    parts = [n for n in (2**k for k in range(unit.devices_per_node.bit_length()))
             if need <= n < unit.devices_per_node and unit.devices_per_node % n == 0]
    first = max(1, math.ceil(need / unit.devices_per_node))
    last = min(cluster.num_nodes, max(first, MAX_INSTANCE_DEVICES // unit.devices_per_node))
    return parts + [n * unit.devices_per_node for n in range(first, last + 1)]


def _layouts(d: Deployment, cluster: Cluster, role: Role, pinned: Pinned | None) -> list[Layout]:
    """The layouts of `role` scored on `cluster`: the whole space, or the one the user pinned where it is this size."""
    if pinned is None:  # pipeline stages and attention-FFN disaggregation in decode pools only (module docstring)
        return [x for x in layout_space(d.model, cluster, d.serving.engine, d.serving.redundant_experts, afd_searched(d))
                if (x.pp == 1 and not x.ffn_devices) or role == Role.DECODE]
    layout = pinned.layout(role)
    return [layout] if layout is not None and layout.devices == cluster.num_devices else []


def afd_searched(d: Deployment) -> bool:
    """Whether the search weighs attention-FFN disaggregated decode pools: where the user named no engine (none, or
    one picked only for its tables, `serving.engine_note`), since no engine serves them (hwmodels.afd)."""
    return d.model.is_moe and (d.serving.engine is None or bool(d.serving.engine_note))


def _score_batched(d: Deployment, sizes: list[int], role: Role, loads: ExpertLoads,
                   pinned: Pinned | None = None) -> list[Candidate]:
    """Decode pools or aggregated instances at every batch per device their KV cache admits (or the pinned one)."""
    w, s, out = d.workload, d.serving, []
    context = w.input_tokens + w.output_tokens / 2  # a decoding sequence is halfway through its output on average
    for size in sizes:
        cluster = sub_cluster(d, size)
        for layout in _layouts(d, cluster, role, pinned):
            if not admits_longest(d, cluster, layout, w.output_tokens):
                continue
            scored = loads(layout, Phase.DECODE)
            ctx = StepContext(d.model, d.precision, cluster, layout, scored.load, costs_of(d), images=d.workload.images,
                              **d.serving.engine_terms())
            limit = largest_batch_that_fits(ctx, w.context_tokens, s.hbm_utilization, s.tokens_per_step)
            batches = (pinned.batch_per_device,) if pinned and pinned.batch_per_device else DECODE_BATCHES
            for batch in (b for b in batches if b <= limit and not (pinned and pinned.mtp and role == Role.DECODE)):
                if role == Role.DECODE:
                    perf = decode_performance(ctx, batch, context, s.hbm_utilization, s.tokens_per_step)
                else:
                    perf = aggregated_performance(ctx, batch, w.input_tokens, w.output_tokens, s.hbm_utilization,
                                                  s.tokens_per_step)
                out.append(Candidate(role, size, layout, batch, perf, *scored))
            # MTP too (not attention-FFN disaggregated: where its module's experts would sit is not modelled)
            if role == Role.DECODE and s.speculation is not None and not (pinned and pinned.mtp is False) \
                    and not layout.ffn_devices:
                out += _speculative(d, ctx, size, layout, scored, batches, context)
    return out


def _speculative(d: Deployment, ctx: StepContext, size: int, layout: Layout, scored, batches, context: float) -> list[Candidate]:
    """Decode candidates that verify the MTP modules' drafts each step (their weights and KV layer held too)."""
    s, w = d.serving, d.workload
    limit = largest_batch_that_fits(ctx, w.context_tokens, s.hbm_utilization, s.tokens_per_step, mtp_module=True)
    return [Candidate(Role.DECODE, size, layout, batch, decode_performance(ctx, batch, context, s.hbm_utilization,
                                                                          s.tokens_per_step, s.speculation),
                      *scored, speculation=s.speculation) for batch in batches if batch <= limit]


def score_decode(d: Deployment, sizes: list[int], loads: ExpertLoads | None = None,
                 pinned: Pinned | None = None) -> list[Candidate]:
    return _score_batched(d, sizes, Role.DECODE, loads or ExpertLoads(d), pinned)


def score_aggregated(d: Deployment, sizes: list[int], loads: ExpertLoads | None = None,
                     pinned: Pinned | None = None) -> list[Candidate]:
    return _score_batched(d, sizes, Role.AGGREGATED, loads or ExpertLoads(d), pinned)


def score_prefill(d: Deployment, sizes: list[int], loads: ExpertLoads | None = None,
                  pinned: Pinned | None = None) -> list[Candidate]:
    w, s, out, loads = d.workload, d.serving, [], loads or ExpertLoads(d)
    chunks = (pinned.prefill_tokens_per_device,) if pinned and pinned.prefill_tokens_per_device else PREFILL_TOKENS_PER_DEVICE
    longest = float(prompt_lengths(d).max())
    for size in sizes:
        cluster = sub_cluster(d, size, Role.PREFILL)
        for layout in _layouts(d, cluster, Role.PREFILL, pinned):
            if not admits_longest(d, cluster, layout, 0):
                continue
            scored = loads(layout, Phase.PREFILL)
            ctx = StepContext(d.model, d.precision, cluster, layout, scored.load, costs_of(d, Role.PREFILL),
                              images=d.workload.images, **d.serving.engine_terms())
            for tokens in chunks:
                mem = device_memory(d.model, d.precision, cluster, layout, w.input_tokens, s.hbm_utilization, tokens,
                                    sliding_kv_share=s.sliding_kv_share)
                if not mem.fits:
                    continue
                perf = prefill_performance(ctx, tokens, w.input_tokens, s.hbm_utilization)
                out += [Candidate(Role.PREFILL, size, x, tokens, perf if x is layout else _with_layout(d, perf, x), *scored)
                        for x in ([layout] if pinned else context_parallel_layouts(d, layout, longest > tokens * layout.tp))]
    return out


CONTEXT_PARALLEL = (2, 4, 8)  # prompts split over this many attention groups (the sizes SGLang's prefill-CP tests run)


def _with_layout(d: Deployment, perf: Performance, layout: Layout) -> Performance:
    """A context-parallel variant's scores: its layout's (the steps and memory are the same)."""
    return replace(perf, layout=layout, memory=replace(perf.memory, layout=layout, layout_name=layout.name(d.model.is_moe)))


def context_parallel_layouts(d: Deployment, layout: Layout, spans_steps: bool = True) -> list[Layout]:
    """A prefill layout and its context-parallel variants: cp of its attention groups prefill each prompt together
    (planner.prompt_times.context_parallel_s). The step is the same (a device takes the same tokens per step at the
    same contexts), so the variants share its score; only a prompt's time and the ranks it queues for change. Only
    those the engine can run (hwmodels.layouts.expressible), and none where no prompt spans more than one group's
    step (`spans_steps` False): every prompt would take as long, plus the gather, on fewer ranks."""
    if not spans_steps:
        return [layout]
    variants = (replace(layout, cp=cp) for cp in CONTEXT_PARALLEL if layout.dp % cp == 0)
    return [layout] + [x for x in variants if expressible(x, d.serving.engine)]


def pareto_frontier(candidates: list[Candidate]) -> tuple[Candidate, ...]:
    """Candidates no other beats on both tokens/s per device and tokens/s per user."""
    ranked = sorted(candidates, key=lambda c: (-c.tokens_per_s_per_user, -c.tokens_per_s_per_device))
    frontier, best = [], -1.0
    for c in ranked:
        if c.tokens_per_s_per_device > best:
            frontier.append(c)
            best = c.tokens_per_s_per_device
    return tuple(frontier)


def _allowed_tail(d: Deployment) -> float:
    """The share of requests the TTFT SLO lets run over it (1% at p99)."""
    return 1.0 - d.slo.percentile / 100.0


def _regimes(d: Deployment, req_rate: float, waits_at: Callable[[float, float], tuple[queueing.Wait, ...]]):
    """The waits at each rate level of the workload's arrivals (hwmodels.deployment.Arrivals), `waits_at(rate,
    arrival_scv)` giving one level's waits for the whole traffic's rate and its squared coefficient of variation."""
    arrivals = d.workload.arrivals
    return tuple(queueing.Regime(share, waits_at(req_rate * m, arrivals.scv)) for share, m in arrivals.levels)


def _clump_per_rank(d: Deployment, ranks: int) -> float:
    """The clump a request arrives in as one of `ranks` ranks sees it: the router spreads a clump evenly (fewest
    queued tokens first), so a rank gets its share of it (at least the request itself)."""
    return max(1.0, d.workload.arrivals.clump_size / max(ranks, 1))


def _thinned(arrival_scv: float, servers: int) -> float:
    """The burstiness one of `servers` queues sees when the router spreads the arrivals over them: splitting a stream
    at random keeps 1 / servers of its excess over Poisson (the index of dispersion of a thinned process)."""
    return 1.0 + (arrival_scv - 1.0) / max(servers, 1)


def _max_utilisation_for_ttft(d: Deployment, c: Candidate, prefill_s: np.ndarray, service_s: np.ndarray) -> float:
    """The busiest a prefill pool may run while the TTFT at the SLO percentile stays in budget (its prompts'
    spread of lengths included; a prompt waits for a rank, M^X/G/c over the prompts' prefill times)."""
    if queueing.ttft_tail(d.slo.ttft_s, prefill_s) > _allowed_tail(d):
        return 0.0
    ranks, service = c.layout.attention_devices // c.layout.rank_devices, queueing.Service.of(service_s)
    clump = _clump_per_rank(d, ranks)
    return _largest_accepted(lambda u: queueing.ttft_tail(d.slo.ttft_s, prefill_s, _regimes(
        d, u, lambda level_u, scv: (queueing.mgc_wait(service, level_u, ranks, scv, clump, c.step_s),)))
        <= _allowed_tail(d), SLO_UTILISATION_CAP)


def _price(d: Deployment, role: str = Role.DECODE) -> float | None:
    price = d.price_of(role)
    return price.usd_per_device_hour if price else None


def _decode_slot_wait(d: Deployment, dc: Candidate, n_decode: int, req_rate: float,
                      arrival_scv: float = 1.0) -> queueing.Wait:
    """A prefilled prompt's wait for a decode slot. Each DP attention rank of the decode pool is an M/M/c queue of
    its sequence slots (batch per device x TP), the router spreading requests evenly over the ranks; a sequence
    holds its slot for its output tokens' decode steps."""
    ranks = dc.layout.attention_devices // dc.layout.tp * n_decode
    holding_s = d.workload.output_tokens * dc.tpot_s
    return queueing.slot_wait(dc.work_per_device * dc.layout.tp, holding_s, req_rate / ranks, _thinned(arrival_scv, ranks))


def _disaggregated(d: Deployment, decode: list[Candidate], prefill: list[Candidate]) -> list[Recommendation]:
    decode_ok = _best_per_size([(c, c.tokens_per_s_per_device) for c in decode if c.tpot_s <= d.slo.tpot_s])
    prompts = prompt_lengths(d)
    times = {}  # per prefill candidate: (each prompt's prefill and KV transfer, its rank's service time)
    for c in prefill:
        service_s = rank_prefill_s(d, c, prompts)
        times[id(c)] = prefill_s(d, prompts, service_s), service_s
    # a prefill candidate's useful capacity is its throughput at the utilisation its TTFT budget allows
    prefill_ok = _best_per_size([(c, c.tokens_per_s_per_device * u) for c in prefill
                                 if (u := _max_utilisation_for_ttft(d, c, *times[id(c)])) > 0])
    out = []
    for dc, dc_rate in decode_ok:
        for pc, pc_rate in prefill_ok:
            sized = _size_disaggregated(d, dc, dc_rate, pc, pc_rate, *times[id(pc)])
            if sized is not None:
                n_decode, n_prefill, ttft, req_rate = sized
                out.append(_recommend(d, Mode.DISAGGREGATED, dc, n_decode, pc, n_prefill, ttft, dc.tpot_s, req_rate))
    return out


def _size_disaggregated(d: Deployment, dc: Candidate, dc_rate: float, pc: Candidate, pc_rate: float,
                        prefill_s: np.ndarray, service_s: np.ndarray):
    """(decode instances, prefill instances, TTFT, requests/s) of a prefill and decode pair, or None where the
    cluster cannot hold a pair meeting the TTFT SLO. TTFT = each prompt length's prefill and KV transfer + the
    wait for a prefill rank (M^X/G/c) + the wait for a decode slot (M/M/c per decode rank), at the SLO percentile
    (planner.queueing): the decode pool grows until the waits fit the budget. Without a traffic volume: one decode instance at the busiest its TTFT budget allows."""
    w, service = d.workload, queueing.Service.of(service_s)

    def prefill_instances(req_rate: float) -> int:
        return max(1, math.ceil(req_rate * w.input_tokens / (pc_rate * pc.instance_devices)))

    def regimes(req_rate: float, n_decode: int) -> tuple[queueing.Regime, ...]:
        n_prefill = prefill_instances(req_rate)
        capacity = pc.tokens_per_s_per_device * pc.instance_devices * n_prefill / w.input_tokens  # requests/s
        ranks = pc.layout.attention_devices // pc.layout.rank_devices * n_prefill
        return _regimes(d, req_rate, lambda rate, scv: (
            queueing.mgc_wait(service, rate / capacity, ranks, scv, _clump_per_rank(d, ranks), pc.step_s),
            _decode_slot_wait(d, dc, n_decode, rate, scv)))

    def meets(req_rate: float, n_decode: int) -> bool:
        return queueing.ttft_tail(d.slo.ttft_s, prefill_s, regimes(req_rate, n_decode)) <= _allowed_tail(d)

    def fits(req_rate: float, n_decode: int) -> bool:
        return d.holds(n_decode * dc.instance_devices, prefill_instances(req_rate) * pc.instance_devices)

    if w.requests_per_s is None:
        req_rate = _largest_accepted(lambda r: meets(r, 1) and fits(r, 1), dc_rate * dc.instance_devices / w.output_tokens)
        if req_rate <= 0.0:
            return None
        n_decode = 1
    else:
        req_rate = w.requests_per_s
        most = d.cluster.num_devices // dc.instance_devices
        n_decode = math.ceil(req_rate * w.output_tokens / (dc_rate * dc.instance_devices))
        if n_decode > most or not meets(req_rate, most):
            return None
        # the wait only shrinks as instances are added: double to one that meets the SLO, then bisect
        hi = n_decode
        while not meets(req_rate, hi):
            n_decode, hi = hi + 1, min(2 * hi, most)
        while n_decode < hi:
            mid = (n_decode + hi) // 2
            n_decode, hi = (n_decode, mid) if meets(req_rate, mid) else (mid + 1, hi)
    if not fits(req_rate, n_decode):
        return None
    ttft = queueing.ttft_percentile_s(prefill_s, regimes(req_rate, n_decode), d.slo.percentile)
    return n_decode, prefill_instances(req_rate), ttft, req_rate


def _best_per_size(scored: list[tuple[Candidate, float]]) -> list[tuple[Candidate, float]]:
    """The most productive candidate of each instance size (the others cost more for the same work)."""
    best: dict[int, tuple[Candidate, float]] = {}
    for c, rate in sorted(scored, key=lambda x: -x[1]):
        best.setdefault(c.instance_devices, (c, rate))
    return list(best.values())


def _aggregated(d: Deployment, aggregated: list[Candidate]) -> list[Recommendation]:
    w, out = d.workload, []
    max_devices = d.cluster.num_devices
    prompts, chunk_s = prompt_lengths(d), {}
    for c in aggregated:
        tpot = 1.0 / c.tokens_per_s_per_user
        # a rank prefills a prompt in chunks, each a lockstep group step (prefill first: its sequences wait)
        key = (c.instance_devices, c.layout)  # the prefill chunks do not depend on the batch: once per layout
        if key not in chunk_s:
            chunk_s[key] = aggregated_prefill_s(d, c, prompts)
        prefill_s = chunk_s[key]
        service = queueing.Service.of(prefill_s)
        unqueued_s = prefill_s + d.serving.request_overhead_s  # each prompt's TTFT before any wait
        if tpot > d.slo.tpot_s or queueing.ttft_tail(d.slo.ttft_s, unqueued_s) > _allowed_tail(d):
            continue
        # each DP attention rank admits into its own slots (batch per device x TP) the prompts routed to it
        ranks = c.layout.attention_devices // c.layout.tp
        slots, holding_s = c.work_per_device * c.layout.tp, float(prefill_s.mean()) + w.output_tokens * tpot
        capacity = c.tokens_per_s_per_device * c.instance_devices / w.output_tokens  # requests/s at full load

        def regimes(per_instance_rate: float, instances: int = 1) -> tuple[queueing.Regime, ...]:
            """A free batch slot of the prompt's rank (M/M/c) and a rank to prefill it, after the prompts before it
            (M^X/G/c over the instances' ranks, which the router keeps evenly loaded)."""
            def waits(rate: float, scv: float) -> tuple[queueing.Wait, queueing.Wait]:
                per_rank, all_ranks = rate / ranks, ranks * instances
                return (queueing.slot_wait(slots, holding_s, per_rank, _thinned(scv, all_ranks)),
                        queueing.mgc_wait(service, per_rank * service.mean_s, all_ranks, scv,
                                          _clump_per_rank(d, all_ranks), c.perf.steps[-1].time_s))
            return _regimes(d, per_instance_rate, waits)

        def meets(per_instance_rate: float, instances: int = 1) -> bool:
            return queueing.ttft_tail(d.slo.ttft_s, unqueued_s, regimes(per_instance_rate, instances)) <= _allowed_tail(d)
        if w.requests_per_s is None:  # one instance, at the busiest its TTFT budget allows
            n, req_rate = 1, _largest_accepted(meets, min(capacity, slots * ranks / holding_s))
            if req_rate <= 0.0:
                continue
        else:
            req_rate = w.requests_per_s
            n = math.ceil(req_rate / capacity)
            while n * c.instance_devices <= max_devices and not meets(req_rate / n, n):
                n += 1
            if n * c.instance_devices > max_devices:
                continue
        ttft = queueing.ttft_percentile_s(unqueued_s, regimes(req_rate / n, n), d.slo.percentile)
        out.append(_recommend(d, Mode.AGGREGATED, c, n, None, 0, ttft, tpot, req_rate))
    return out


def _largest_accepted(accepts: Callable[[float], bool], upper: float) -> float:
    """The largest load in [0, upper) that `accepts` (monotone: true below some load) takes, by bisection."""
    lo, hi = 0.0, upper
    for _ in range(24):  # to 6e-8 of the upper bound
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if accepts(mid) else (lo, mid)
    return lo


def _recommend(d, mode, dc, n_decode, pc, n_prefill, ttft, tpot, req_rate) -> Recommendation:
    w = d.workload
    devices_decode = dc.instance_devices * n_decode
    devices_prefill = pc.instance_devices * n_prefill if pc else 0
    price, prefill_price = _price(d), _price(d, Role.PREFILL)
    if price is None or (devices_prefill and prefill_price is None):
        per_hour = usd_in = usd_out = None
    elif mode == Mode.DISAGGREGATED:
        per_hour = price * devices_decode + prefill_price * devices_prefill
        usd_out = usd_per_million_tokens(price * devices_decode, req_rate * w.output_tokens)
        usd_in = usd_per_million_tokens(prefill_price * devices_prefill, req_rate * w.input_tokens)
    else:  # aggregated: split the bill by the time each kind of work takes on the devices
        per_hour = price * devices_decode
        share_out = 1.0 - dc.perf.prefill_share
        usd_out = usd_per_million_tokens(price * devices_decode * share_out, req_rate * w.output_tokens)
        usd_in = usd_per_million_tokens(price * devices_decode * (1 - share_out), req_rate * w.input_tokens)
    utilization = pool_utilization(dc, n_decode, pc, n_prefill, req_rate, w.input_tokens, w.output_tokens)
    return Recommendation(mode, dc, n_decode, pc, n_prefill, ttft, tpot, per_hour, usd_in, usd_out, req_rate, *utilization)


def _cost_per_request(r: Recommendation) -> float:
    """What the search minimises: the bill per request served (device-hours where there is no price). With the
    workload's traffic fixed this is the cheapest deployment; without it, the most cost-efficient instance."""
    per_hour = r.usd_per_hour if r.usd_per_hour is not None else float(r.devices)
    return per_hour / r.requests_per_s


def plan(d: Deployment, check: Check | None = None, replayed: int = REPLAYED_OPTIONS, pinned: Pinned | None = None) -> Plan:
    """The cheapest option that meets the SLOs; with `check`, the cheapest of the first `replayed` options whose
    replay holds (planner.replay_check); with `pinned`, among the user's layouts only (planner.estimate)."""
    start = time.perf_counter()
    w = d.workload
    lengths = "its trace's prompt lengths" if w.prompt_lengths else f"its prompt lengths (lognormal, cv {w.input_cv:g})"
    arrivals = ("Poisson arrivals" if w.arrivals == POISSON else
                f"arrivals {w.arrivals.source}: {len(w.arrivals.levels)} rate levels, {min(m for _, m in w.arrivals.levels):.2f}x "
                f"to {max(m for _, m in w.arrivals.levels):.2f}x the mean, in clumps of {w.arrivals.clump_size:.1f} (M^X/G/c), "
                f"burstiness {w.arrivals.scv:.2g} (Allen-Cunneen)")
    assumptions = [
        "TPOT at the SLO percentile of the load each pool carries (planner.tpot: the lockstep step at the busiest rank, "
        "the wait to join a batch and, in aggregated instances, the prefill that stalls decode); "
        f"TTFT at the SLO percentile over {lengths} and {arrivals} = the prompt's "
        "prefill (+ KV transfer over the NIC, disaggregated) + the waits for a prefill rank (M^X/G/c), and for a free "
        "slot of its rank (M/M/c: the decode pool's, disaggregated); the simulator gives the distributions",
        describe_costs(d),
    ]
    assumptions += engine_assumptions(d)
    if d.model.is_moe:
        assumptions += [f"{phase} expert load: {_load_assumption(d, phase)}" for phase in Phase]
        if pinned is None:  # an estimate scores the slots its layout names
            assumptions.append(_redundant_assumption(d))
    if d.workload.requests_per_s is None:
        assumptions.append("no traffic volume (workload.requests_per_s): recommends the instance with the lowest cost per "
                           "request, sized as one decode instance and the prefill it needs")
    for role in (Role.DECODE, Role.PREFILL) if d.mixed else (Role.DECODE,):
        if d.price_of(role) is None:
            name = d.cluster_of(role).device.name
            assumptions.append(f"{catalog.unpriced_text(name)}: set prices.{name} for costs")
    if d.serving.speculation is not None:
        assumptions.append(f"decode pools scored with and without {d.serving.speculation.describe()}")
    if d.mixed:
        assumptions.append(f"prefill on {d.prefill_cluster.num_devices} x {d.prefill_cluster.device.name}, decode on "
                           f"{d.cluster.num_devices} x {d.cluster.device.name} (cluster.prefill): disaggregated only, "
                           f"the KV cache moving at {d.kv_link_bytes_per_s / 1e9:,.0f} GB/s (the slower end's NIC)")
    sizes, loads = instance_sizes(d) if pinned is None else pinned.instance_sizes, ExpertLoads(d)
    prefill_sizes = instance_sizes(d, Role.PREFILL) if pinned is None else sizes
    decode, prefill = score_decode(d, sizes, loads, pinned), score_prefill(d, prefill_sizes, loads, pinned)
    aggregated = [] if d.mixed else score_aggregated(d, sizes, loads, pinned)
    scored = len(decode) + len(prefill) + len(aggregated)
    options = [r for r in _disaggregated(d, decode, prefill) + _aggregated(d, aggregated)
               if d.holds(r.decode_devices, r.prefill_devices)]
    options.sort(key=lambda r: (_cost_per_request(r), r.ttft_s))
    options, nearest = _at_offered_tpot(d, options)
    replays: tuple[ReplayCheck, ...] = ()
    if check is not None and replayed > 0 and options and d.workload.requests_per_s is not None:
        options, replays = checked(d, options, check, replayed)
        assumptions.append(f"checked in the simulator: the cheapest {len(replays)} option(s) replayed on "
                           f"{replays[0].traffic}, the cheapest whose replay holds recommended (planned against "
                           "replayed: the plan's replays)")
    best = options[0] if options else None
    field_name, reason = ("", "") if best else refusal(d, replays) if replays else \
        tpot_refusal(d, *nearest) if nearest else explain_infeasible(d, decode, prefill, sizes)
    # the recommendation keeps its per-device loads and placement maps; the other options keep their predictions
    frontier = tuple(c.summarised() for c in pareto_frontier(decode))
    assumptions += pipeline_assumptions(d, decode, frontier) + context_parallel_assumptions(d, prefill, best)
    if pinned is None and afd_searched(d):
        assumptions.append(_afd_assumption(frontier, best))
    alternatives = tuple(r.summarised() for r in options[1:6])
    return Plan(d, best, frontier, scored, reason, tuple(assumptions), time.perf_counter() - start, alternatives, field_name,
                replays=replays)


def _afd_assumption(frontier: tuple[Candidate, ...], best: Recommendation | None) -> str:
    """What the plan says of attention-FFN disaggregation where the search weighed it (`afd_searched`)."""
    on_frontier = sum(1 for c in frontier if c.layout.ffn_devices)
    where = f"on the decode frontier: {on_frontier} of {len(frontier)} points"
    if best is not None and best.decode.layout.ffn_devices:
        where += "; the recommendation's decode pool is one, which `moeplan launch` refuses"
    return ("attention-FFN disaggregated decode pools weighed too (hwmodels.afd: the routed experts on devices of "
            "their own, MegaScale-Infer's ping-pong pipeline), which no engine moeplan writes launch files for serves; "
            f"{where}; name an engine (serving.engine or --backend) to leave them out")


def devices_needed(d: Deployment, most_devices: int = MOST_DEVICES) -> Plan | None:
    """Where the cluster is too small for the question: the plan on the smallest cluster of the same unit, in whole
    nodes up to `most_devices`, on which the search recommends a deployment (the node count doubled until it does,
    then bisected, as more devices only add options); None where none does, or where prefill has a cluster of its
    own (which of the two to grow is the user's choice). The analytic ranking alone: what a replay would say at that
    size is `moeplan plan`'s there. `moeplan plan`'s traffic refusal and `moeplan compare`'s sizing both use it."""
    if d.mixed:
        return None
    per_node = d.cluster.unit.devices_per_node
    nodes, most = d.cluster.num_devices // per_node, most_devices // per_node

    def at(n: int) -> Plan:
        return plan(replace(d, cluster=Cluster(d.cluster.unit, n * per_node)))

    low, high, found = nodes, 2 * nodes, None
    while found is None and high <= most:
        grown = at(high)
        if grown.recommendation is not None:
            found = grown
        else:
            low, high = high, 2 * high
    while found is not None and high - low > 1:
        mid = (low + high) // 2
        grown = at(mid)
        if grown.recommendation is not None:
            high, found = mid, grown
        else:
            low = mid
    return found


def with_devices_needed(p: Plan) -> Plan:
    """`p`, a traffic refusal saying how many devices the traffic takes (devices_needed). `moeplan plan` asks it;
    sweeps and comparisons do not, as it costs a few more searches."""
    if p.infeasible_field != "workload.requests_per_s" or p.deployment.mixed:
        return p
    return replace(p, infeasible=grown_refusal(p.deployment, devices_needed(p.deployment)))


REFINED_OPTIONS = 6  # the recommendation and the alternatives a plan shows


def _at_offered_tpot(d: Deployment, options: list[Recommendation]) -> list[Recommendation]:
    """The cheapest options with their TPOT at the SLO percentile of the traffic they carry (planner.tpot; aggregated
    instances with the prefill that stalls their decode), pools grown where long prompts' KV or prefill stalls would
    push it past the SLO, refused where none fits."""
    if d.workload.requests_per_s is None:
        return options, None
    prompts, outputs, out, nearest = prompt_lengths(d), output_lengths(d), [], None
    for r in options:
        if len(out) == REFINED_OPTIONS:
            break
        dc = r.decode
        ctx = instance_context(d, dc)
        stalls = None if r.mode == Mode.DISAGGREGATED else prefill_stalls_s(d, dc, prompts)

        @lru_cache(maxsize=None)
        def tpot_at(instances: int) -> float:
            return decode_tpot_s(d, ctx, dc, instances, r.requests_per_s, prompts, outputs, d.slo.percentile, stalls)
        spare = d.cluster.num_devices - r.decode_devices - (0 if d.mixed else r.prefill_devices)
        most = r.decode_instances + spare // dc.instance_devices
        n = instances_for_tpot(tpot_at, r.decode_instances, most, d.slo.tpot_s)
        if n is not None:  # its TTFT is kept: more instances only shorten the waits
            out.append(_recommend(d, r.mode, dc, n, r.prefill, r.prefill_instances, r.ttft_s, tpot_at(n),
                                  r.requests_per_s))
        elif nearest is None or tpot_at(most) < nearest[0]:
            nearest = (tpot_at(most), r)
    return sorted(out, key=lambda r: (_cost_per_request(r), r.ttft_s)), nearest


def _redundant_assumption(d: Deployment) -> str:
    experts, fixed = d.model.moe.num_experts, d.serving.redundant_experts
    if fixed is not None:
        return (f"redundant expert slots fixed at {fixed} (serving.redundant_experts): only layouts whose EP size divides "
                f"{experts} + {fixed} slots are scored")
    return ("redundant expert slots searched with the KV cache: the fewest that spread the experts evenly and one more "
            "per device, each scored at the batch its remaining HBM holds, so a slot's better balance is weighed against "
            "the KV cache it takes")


def _load_assumption(d: Deployment, phase: str) -> str:
    routing = d.routing.for_phase(phase) if d.routing else None
    if routing is not None:
        how = "in sample: fitted and scored on the same statistics, optimistic" if routing.in_sample else \
            f"fitted on {', '.join(routing.fit_on)}, scored on {routing.evaluated_on}"
        return (f"per-device loads of the {d.routing.placement} placement ({how})" + (f"; {routing.mapping}" if routing.mapping else "")
                + f"; {ASSUMPTION}")
    skew = catalog.routing_skew(d.model.name)
    return ("EPLB on earlier statistics at the measured held-out imbalance of " + skew["source"]) if skew else \
        "uniform (no routing statistics for this model)"
