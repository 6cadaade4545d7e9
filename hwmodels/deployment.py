"""A resolved deployment question: model and precision, cluster, workload, SLOs, price.

This is the typed, validated core input the planner, simulator and fit check take; the spec YAML
(moeplan.spec) is only its file form.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hwmodels.calibrate.kernel_profile import KernelProfile
from hwmodels.hardware import Cluster
from hwmodels.model_arch import ModelArch
from hwmodels.precision import PrecisionPlan
from hwmodels.roles import Phase
from hwmodels.speculation import Speculation
from hwmodels.vision import ImageInputs


@dataclass(frozen=True)
class Arrivals:
    """How requests arrive beyond their mean rate (a measured trace's; Poisson otherwise).

    levels: the rate's slow swings, as (share of the requests, rate / mean rate) over the trace's minutes: the
      requests of a busy minute queue at that minute's rate (a pointwise-stationary view).
    scv: the burstiness within a level, the squared coefficient of variation of the clumps' arrivals at the SLO's
      time scale (the index of dispersion of their counts; Poisson 1, a steady beat 0).
    clump_size: requests arrive in clumps (at the same instant: Mooncake's conversation trace stamps about ten at a
      time on a 3 s beat); the size of the clump a request arrives in, E[X^2] / E[X] (1: one at a time).
    """
    levels: tuple[tuple[float, float], ...] = ((1.0, 1.0),)
    scv: float = 1.0
    clump_size: float = 1.0
    source: str = "Poisson"


POISSON = Arrivals()


@dataclass(frozen=True)
class Workload:
    input_tokens: int  # mean prompt length
    output_tokens: int  # mean generated length
    requests_per_s: float | None  # traffic volume; None: not stated (capacity questions need it)
    source: str = ""
    max_input_tokens: int | None = None  # the longest prompt to admit; a pool whose KV cache cannot hold it drops it
    # coefficients of variation (std / mean) of the prompt and output lengths: lognormal around the means, as
    # measured traces are; 0: every request at the mean
    input_cv: float = 0.0
    output_cv: float = 0.0
    # a trace's own prompt and output lengths at equally likely quantiles (hwmodels.ingest.traffic); empty: the
    # lognormals above
    prompt_lengths: tuple[float, ...] = ()
    output_lengths: tuple[float, ...] = ()
    arrivals: Arrivals = POISSON
    trace: str | None = None  # the request trace the workload was measured from (what a replay replays by default)
    images: ImageInputs | None = None  # each prompt's images (their tokens are already in input_tokens)

    @property
    def context_tokens(self) -> int:
        """The longest context a request reaches: its prompt plus everything it generates."""
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True)
class SLO:
    ttft_s: float
    tpot_s: float
    percentile: float


@dataclass(frozen=True)
class Price:
    usd_per_device_hour: float
    source: str
    basis: str = "spec"  # assumption, list or on-demand (catalogs/prices.yaml); "spec" for a spec's own price
    date: str = ""  # when it held (YYYY, YYYY-MM or YYYY-MM-DD); "" for a spec's own price

    def describe(self) -> str:
        """The price and where it comes from, in one phrase."""
        when = f", {self.date}" if self.date else ""
        return f"${self.usd_per_device_hour:.2f}/h ({self.basis}{when}: {self.source})"


@dataclass(frozen=True)
class Serving:
    hbm_utilization: float  # fraction of HBM the engine may use for weights, activations and KV
    tokens_per_step: int  # tokens one forward step processes (chunked-prefill size)
    # the serving engine whose measured kernel tables price the operators (hwmodels.calibrate.operator_costs.costs_for);
    # None: the fitted kernel models
    engine: str | None = None
    engine_version: str | None = None
    # MTP speculative decoding the planner may score decode pools with (None: the model has no MTP module, or the
    # spec turned it off)
    speculation: Speculation | None = None
    # a kernels_ref CSV whose measured kernels price those operators first (hwmodels.calibrate.kernel_profile);
    # None: none
    device_profile: KernelProfile | None = None
    # the engine's per-request latency outside the devices' steps (HTTP, tokenisation, scheduling and, disaggregated,
    # the KV hand-off): it adds to every TTFT and occupies no device (catalog.request_overhead_s; 0 without an engine)
    request_overhead_s: float = 0.0
    # the engine's host time per forward step outside its kernels (catalog.layer_overhead_s x the model's layers; 0
    # without an engine): every step of its instances takes this much longer (hwmodels.step.StepContext.step_overhead_s)
    step_overhead_s: float = 0.0
    # the share of the shorter of a decode step's shared and routed experts the engine hides by running them side by
    # side on the decode device (catalog.shared_expert_overlap; 0 without an engine): StepContext.shared_expert_overlap
    shared_expert_overlap: float = 0.0
    # the share of a full layer's KV per token of context the engine's pool reserves for each sliding-window layer
    # (catalog.sliding_kv_share: TensorRT-LLM 1, SGLang 0.8, vLLM 0; 0 without an engine: each its window)
    sliding_kv_share: float = 0.0
    # redundant expert slots every layout is scored with (the engine's --ep-num-redundant-experts, fixed by the user);
    # None: searched together with the KV cache they take HBM from (hwmodels.layouts)
    redundant_experts: int | None = None
    # why `engine` prices the operators where the spec named none (hwmodels.calibrate.engine_choice); "": it was named
    engine_note: str = ""

    def engine_terms(self) -> dict[str, float]:
        """What the engine sets in a StepContext beyond its operator costs (hwmodels.step.StepContext's fields)."""
        return dict(step_overhead_s=self.step_overhead_s, shared_expert_overlap=self.shared_expert_overlap,
                    sliding_kv_share=self.sliding_kv_share)


@dataclass(frozen=True, eq=False)
class PhaseRouting:
    """Routing statistics of one phase in the model's shape ([layers, experts] tokens per logical expert):
    the expert placement is decided on the `fit` windows (yesterday's statistics) and scored on
    `evaluate` (the traffic it will serve)."""

    phase: Phase
    fit: tuple[np.ndarray, ...]
    evaluate: np.ndarray
    fit_on: tuple[str, ...]
    evaluated_on: str
    mapping: str = ""  # how another model's statistics were mapped onto this model, "" for its own

    @property
    def in_sample(self) -> bool:
        return self.fit_on == (self.evaluated_on,)


@dataclass(frozen=True)
class Routing:
    phases: tuple[PhaseRouting, ...]
    placement: str = "ilp"  # "ilp" (planner.placement) or "eplb" (the greedy baseline)
    time_limit_s: float = 5.0  # per placement solve

    def for_phase(self, phase: str) -> PhaseRouting | None:
        return next((p for p in self.phases if p.phase == phase), None)


@dataclass(frozen=True)
class Deployment:
    name: str
    model: ModelArch
    model_display_name: str
    precision: PrecisionPlan
    cluster: Cluster
    workload: Workload
    slo: SLO
    price: Price | None
    serving: Serving
    routing: Routing | None = None  # None: no routing statistics (the planner uses catalog skew or uniform load)
    # prefill on other hardware than decode (cluster.prefill): its own devices and price; None: one cluster for all
    prefill_cluster: Cluster | None = None
    prefill_price: Price | None = None

    @property
    def mixed(self) -> bool:
        """Prefill and decode on different clusters (only disaggregated deployments then)."""
        return self.prefill_cluster is not None

    def cluster_of(self, role: str) -> Cluster:
        """The cluster a pool of `role` runs on."""
        return self.prefill_cluster if role == "prefill" and self.prefill_cluster is not None else self.cluster

    def price_of(self, role: str) -> Price | None:
        return self.prefill_price if role == "prefill" and self.prefill_cluster is not None else self.price

    def holds(self, decode_devices: int, prefill_devices: int) -> bool:
        """Whether pools of these sizes fit the cluster(s): each on its own where prefill has its own."""
        if self.prefill_cluster is None:
            return decode_devices + prefill_devices <= self.cluster.num_devices
        return decode_devices <= self.cluster.num_devices and prefill_devices <= self.prefill_cluster.num_devices

    @property
    def kv_link_bytes_per_s(self) -> float:
        """The rate a prompt's KV cache moves from a prefill to a decode device: each end's scale-out NIC (its
        scale-up link where it has none), the slower of the two."""
        ends = [self.cluster.device] + ([self.prefill_cluster.device] if self.prefill_cluster else [])
        return min(x.scaleout_bytes_per_s or x.scaleup_bytes_per_s for x in ends)

    @property
    def longest_prompt_tokens(self) -> int | None:
        """The longest prompt a request can bring: the workload's, else the model's context (None: neither known)."""
        return self.workload.max_input_tokens or self.model.max_position_embeddings or None
