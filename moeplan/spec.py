"""The deployment spec YAML: pydantic validation at load, then resolution against the catalogs.

Every field has help text; unknown keys are errors (a typo must not be silently ignored). Errors
come out as one InputError line naming the field path, e.g. `workload.input_tokens`.

Numbers are strict and finite: `devices: '1_000'`, `units: 2.0`, `schema_version: true` and `.inf` / `.nan`
are refused, not coerced. Every size has a bound (the constants below, each with its reason), so an absurd
but well-formed spec (`units: 10**30`, `input_tokens: 10**400`) is refused before any planning starts; a
prompt longer than the model's context (config.json max_position_embeddings, where it states one) is too.
"""

from __future__ import annotations

import numbers
import os
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, ValidationError, model_validator

from hwmodels import catalog, safe_yaml
from hwmodels.calibrate.engine_choice import FITTED, best_covered, engine_coverage
from hwmodels.calibrate.kernel_profile import KernelProfile, load_profile
from hwmodels.deployment import SLO, Deployment, PhaseRouting, Price, Routing, Serving, Workload
from hwmodels.errors import InputError, excerpt, nearest_names, validation_error
from hwmodels.hardware import Cluster, make_cluster
from hwmodels.speculation import DEFAULT_ACCEPTANCE, MAX_DRAFT_TOKENS, Speculation, model_speculation
from hwmodels.ingest.bounds import MAX_EXPERTS
from hwmodels.ingest.requests import MAX_LENGTH_CV, RequestTrace, load_trace
from hwmodels.ingest.traffic import traffic
from hwmodels.ingest.routing import fit_to_model, read_routing
from hwmodels.model_arch import ModelArch
from hwmodels.precision import PrecisionPlan, default_plan
from hwmodels.roles import Phase
from hwmodels.vision import ImageInputs

SCHEMA_VERSION = 1
DEFAULT_EXAMPLE = "kimi-k2-h200.yaml"


# Bounds of a spec: far past any real deployment, low enough that planning stays bounded.
MAX_DEVICES = 100_000  # the largest GPU clusters built are ~100,000-device training clusters (xAI Colossus, 2024);
#                        one serving deployment is far smaller, and the planner's search grows with the node count
MAX_TOKENS = 10**8  # 10x the longest context any model states (Llama 4 Scout, 10M tokens)
MAX_TOKENS_PER_STEP = 10**7  # 1,000x vLLM's and SGLang's default chunked-prefill sizes (8,192 and 16,384)
MAX_REQUESTS_PER_S = 10**7  # 100x a large web search engine's peak query rate
MAX_SLO_S = 86_400.0  # a day: a latency target past that is a typo (seconds for milliseconds)
MAX_SOLVE_S = 3_600.0  # an hour per placement solve
MAX_USD_PER_DEVICE_HOUR = 10_000.0  # 1,000x a data-center GPU's hourly price
# lengths spread around their means when a spec states neither mean's spread: about what the public conversation
# traces measure (Azure 2023 prompts 0.96, ShareGPT 0.89, Mooncake 1.31; catalogs/workloads.yaml), never all at the mean
DEFAULT_LENGTH_CV = 1.0
MAX_IMAGES = 1_000  # images per prompt: 100x what multimodal chat APIs accept per request (Kimi, Qwen: tens)
MAX_IMAGE_PX = 65_536  # pixels per side: 8x an 8K frame
MAX_NAME_CHARS = 200  # labels and catalog names (a report prints them)
MAX_PATH_CHARS = 4_096  # PATH_MAX on Linux


def _whole(value):
    """A numpy integer becomes an int; a string, boolean or float is left for Strict to refuse."""
    return int(value) if isinstance(value, numbers.Integral) and not isinstance(value, (bool, int)) else value


def _real(value):
    """A numpy float or integer becomes a float; a string or boolean is left for Strict to refuse."""
    return float(value) if isinstance(value, numbers.Real) and not isinstance(value, (bool, int, float)) else value


Whole = Annotated[int, BeforeValidator(_whole), Strict()]  # 1000, not '1_000', 1000.0 or true
Number = Annotated[float, BeforeValidator(_real), Strict()]  # 0.05 or 2, not '0.05' or true; finite (allow_inf_nan)
Name = Annotated[str, Field(max_length=MAX_NAME_CHARS)]
PathText = Annotated[str, Field(max_length=MAX_PATH_CHARS)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class PrefillClusterSpec(_Strict):
    unit: Name = Field(description="cluster unit of the prefill pool (catalogs/clusters.yaml)")
    units: Whole | None = Field(None, gt=0, le=MAX_DEVICES, description="how many units")
    devices: Whole | None = Field(None, gt=0, le=MAX_DEVICES, description="or a device count of whole nodes")

    @model_validator(mode="after")
    def _one_size(self):
        if (self.units is None) == (self.devices is None):
            raise ValueError("give exactly one of units or devices")
        return self


class ClusterSpec(_Strict):
    unit: Name = Field(description="cluster unit from catalogs/clusters.yaml: hgx-h200, gb200-nvl72, cloudmatrix384, ...")
    units: Whole | None = Field(None, gt=0, le=MAX_DEVICES, description="how many units (nodes, racks, supernodes)")
    devices: Whole | None = Field(None, gt=0, le=MAX_DEVICES,
                                  description="or a device count that is a whole number of nodes (trays)")
    prefill: PrefillClusterSpec | None = Field(None, description="prefill on other hardware: its own cluster (the one "
                                               "above then serves decode only, disaggregated; the KV cache moves "
                                               "between them over the slower NIC)")
    device_profile: PathText | None = Field(
        None, description="a kernels CSV written by `moeplan bench-kernels` (e.g. catalogs/measured/kernels-amd-epyc-2-"
        "threads.csv): the kernels it measured (routed experts, router, quantisation, MLA decode) are priced by its "
        "per-kernel fits, on the machine that measured them; the unit still sets memory, links and device counts; "
        "relative to the spec's folder")

    @model_validator(mode="after")
    def _one_size(self):
        if (self.units is None) == (self.devices is None):
            raise ValueError("give exactly one of units or devices")
        return self


class WorkloadSpec(_Strict):
    name: Name | None = Field(None, description="a named workload from catalogs/workloads.yaml; the fields below override it")
    input_tokens: Whole | None = Field(None, gt=0, le=MAX_TOKENS, description="mean prompt length in tokens")
    output_tokens: Whole | None = Field(None, gt=0, le=MAX_TOKENS, description="mean generated length in tokens")
    requests_per_s: Number | None = Field(None, gt=0, le=MAX_REQUESTS_PER_S, description="traffic volume in requests per second")
    max_input_tokens: Whole | None = Field(None, gt=0, le=MAX_TOKENS,
                                           description="longest prompt every pool must admit into its KV cache")
    input_cv: Number | None = Field(None, ge=0, le=MAX_LENGTH_CV, description="coefficient of variation (std / mean) of "
                                    f"the prompt lengths, lognormal around the mean; 0: all at the mean (default: the "
                                    f"named workload's, else {DEFAULT_LENGTH_CV:g})")
    output_cv: Number | None = Field(None, ge=0, le=MAX_LENGTH_CV, description="the same for the output lengths")
    images_per_request: Whole = Field(0, ge=0, le=MAX_IMAGES, description="images in each prompt, for a model with a "
                                      "vision tower (Kimi K2.5 / K3, Qwen3.5): each adds its tokens to input_tokens and "
                                      "its encoder work to prefill")
    image_width_px: Whole = Field(1024, gt=0, le=MAX_IMAGE_PX, description="width of each image in pixels")
    image_height_px: Whole = Field(1024, gt=0, le=MAX_IMAGE_PX, description="height of each image in pixels")
    trace: PathText | None = Field(None, description="a request trace to size for (Mooncake JSONL, Azure CSV, BurstGPT CSV, ServeGen "
                                   "chunk or folder, or a length CSV with requests_per_s): its rate, its swings from "
                                   "minute to minute, its burstiness and its prompt lengths as measured; the fields "
                                   "above override it; relative to the spec's folder")

    @model_validator(mode="after")
    def _one_source(self):
        if self.name is not None and self.trace is not None:
            raise ValueError("give a named workload or a trace, not both")
        return self


class SLOSpec(_Strict):
    ttft_s: Number = Field(gt=0, le=MAX_SLO_S, description="time to first token, seconds, at the percentile below")
    tpot_s: Number = Field(gt=0, le=MAX_SLO_S, description="time per output token after the first, seconds")
    percentile: Number = Field(99.0, gt=0, le=100, description="percentile the SLOs apply to")


# NAME[@VERSION] of the engine for specs that name none, as --backend would give it (unset: the best covered)
BACKEND_ENV = "MOEPLAN_BACKEND"


class EngineSpec(_Strict):
    name: Literal["sglang", "trtllm", "vllm", "fitted"] = Field(
        description="the serving engine: sglang, trtllm or vllm; fitted: no engine, the fitted kernel models")
    version: Name | None = Field(None, description="its version, e.g. 0.5.6 (default: the newest measured)")

    @model_validator(mode="after")
    def _fitted_has_no_version(self):
        if self.name == FITTED and self.version is not None:
            raise ValueError("the fitted kernel models have no version: leave it out, or name sglang, trtllm or vllm")
        return self


def engine_spec(backend: str, field: str = "--backend") -> EngineSpec:
    """`NAME[@VERSION]` (--backend, or the MOEPLAN_BACKEND variable: `field`) as a serving.engine."""
    name, _, version = str(backend).partition("@")
    if name == FITTED and version:
        raise InputError(field, "the fitted kernel models have no version", f"give {field} fitted")
    try:
        return EngineSpec(name=name, version=version or None)
    except ValidationError as e:
        raise validation_error(e, field, EngineSpec, "give sglang, trtllm, vllm or fitted, e.g. sglang@0.5.6") from None


class SpeculativeSpec(_Strict):
    draft_tokens: Whole = Field(ge=0, le=MAX_DRAFT_TOKENS, description="tokens the model's MTP modules draft per "
                                "step (0: no speculative decoding; default: one per MTP module)")
    acceptance: Number | None = Field(None, gt=0, le=1, description="chance each drafted token is accepted when the "
                                      f"ones before it were (default {DEFAULT_ACCEPTANCE:g}, DeepSeek-V3's reported low end)")


class ServingSpec(_Strict):
    engine: EngineSpec | None = Field(None, description="the engine whose measured kernel tables price the operators "
                                      "(the moeplan[measured] extra); none: the engine whose tables cover the model "
                                      "best on the device, or the fitted kernel models where none does")
    hbm_utilization: Number = Field(
        0.90, gt=0, le=1,
        description="fraction of HBM the engine uses for weights, activations and KV (vLLM's default gpu_memory_utilization is 0.9)",
    )
    tokens_per_step: Whole = Field(8192, gt=0, le=MAX_TOKENS_PER_STEP,
                                   description="tokens one forward step processes (chunked-prefill size)")
    redundant_experts: Whole | None = Field(None, ge=0, le=MAX_EXPERTS, description="redundant expert slots of every "
                                            "layout (the engine's --ep-num-redundant-experts, e.g. 32 as LMSYS deployed "
                                            "DeepSeek-V3); layouts whose EP size does not divide experts + it are not "
                                            "scored; none: searched with the KV cache the slots take HBM from")
    speculative: SpeculativeSpec | None = Field(None, description="MTP speculative decoding of a model with MTP modules "
                                                "(DeepSeek, GLM-5, Qwen3.5, MiniMax): decode pools are scored with and "
                                                "without it; default: one draft token per MTP module")


class RoutingPhaseSpec(_Strict):
    evaluate: PathText = Field(description="routing statistics the placement serves (today's traffic), in any format `moeplan "
                          "simulate --routing` reads (EPLB/SGLang logical_count JSON, SGLang CSV or .pt dump, moeplan loads "
                          "JSON, a TensorRT-LLM statistics folder, per-token JSON lines, OLMoE pickles), its windows summed; "
                          "files that do not give the expert count are read as this model's; relative to the spec's folder")
    fit: list[PathText] = Field(default_factory=list, max_length=100, description="statistics the placement is decided on (yesterday's windows); "
                           "empty: `evaluate` itself, an in-sample (optimistic) score that the plan labels")


class RoutingSpec(_Strict):
    decode: RoutingPhaseSpec | None = Field(None, description="statistics of the decode phase")
    prefill: RoutingPhaseSpec | None = Field(None, description="statistics of the prefill phase")
    placement: Literal["ilp", "eplb"] = Field("ilp", description="placement method: the robust ILP, or EPLB's greedy policy")
    time_limit_s: Number = Field(5.0, gt=0, le=MAX_SOLVE_S, description="time limit of each placement solve (one per EP size, slot count and phase scored)")

    @model_validator(mode="after")
    def _a_phase(self):
        if self.decode is None and self.prefill is None:
            raise ValueError("give decode or prefill statistics (or leave routing out)")
        return self


class PricesSpec(BaseModel):
    """USD per device-hour by device name (any key but cloud and file), overriding the price tables."""

    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)
    __pydantic_extra__: dict[Name, Annotated[Number, Field(gt=0, le=MAX_USD_PER_DEVICE_HOUR)]]
    cloud: Name | None = Field(None, description="the cloud whose price rows cost the devices (moeplan devices --cloud "
                               "NAME lists them; catalogs/prices.yaml clouds); none: the default rows")
    file: PathText | None = Field(None, description="a price file in catalogs/prices.yaml's format that replaces the "
                                  "catalog's (relative to the spec's folder)")

    @model_validator(mode="after")
    def _few(self):
        if len(self.model_extra or {}) > 100:
            raise ValueError("give at most 100 device prices")
        return self

    def devices(self) -> dict[str, float]:
        """The spec's own prices by device name."""
        return dict(self.model_extra or {})


class Spec(_Strict):
    schema_version: Literal[1] = Field(description="spec format version; this moeplan reads 1")
    name: Name | None = Field(None, description="a label for reports")
    model: PathText = Field(description="catalog model name (moeplan models) or a path to a HuggingFace config.json")
    cluster: ClusterSpec
    precision: dict[Name, Name] = Field(
        default_factory=dict, max_length=100,
        description="per-part formats overriding the checkpoint's: routed_experts, shared_experts, dense_mlp, attention, "
        "embedding, lm_head, kv_cache, dispatch, combine -> bf16, fp8, int8, int4, mxfp4, nvfp4",
    )
    workload: WorkloadSpec
    slo: SLOSpec
    prices: PricesSpec = Field(default_factory=PricesSpec, description="USD per device-hour by device name, overriding "
                               "the price tables; cloud: NAME picks a cloud's rows; file: PATH a price file of your own")
    serving: ServingSpec = Field(default_factory=ServingSpec)
    routing: RoutingSpec | None = Field(None, description="routing statistics: the planner places experts on them and scores "
                                        "layouts with the placement's per-device loads (without: catalog skew or uniform load)")


def example_path(name: str = DEFAULT_EXAMPLE) -> Path:
    from catalogs import CATALOG_DIR

    return CATALOG_DIR / "examples" / name


def load_spec(path: str | Path) -> tuple[Spec, Path]:
    """Parse and validate a spec file; returns the spec and the folder relative paths resolve against."""
    path = Path(path)
    text = safe_yaml.read_text(path, "SPEC", f"give a spec YAML, e.g. {example_path()}")
    return parse_spec(spec_yaml(text, str(path)), str(path)), path.resolve().parent


def spec_yaml(text: str, where: str = "spec") -> object:
    """A spec's YAML text loaded in bounded work (hwmodels.safe_yaml: no alias bomb, duplicate key or nesting
    deeper than 32), not yet validated: parse_spec does that."""
    return safe_yaml.load(text, where)


def parse_spec(raw: object, where: str = "spec") -> Spec:
    if not isinstance(raw, dict):
        raise InputError(where, "is not a YAML mapping of spec fields", f"start from {example_path()}")
    version = raw.get("schema_version", SCHEMA_VERSION)
    if type(version) is not int or version != SCHEMA_VERSION:  # true == 1 and 1.0 == 1 in Python: refused too
        raise InputError(f"{where}: schema_version", f"version {excerpt(version)} is not supported",
                         f"use schema_version: {SCHEMA_VERSION} (a whole number, unquoted)")
    try:
        return Spec.model_validate(raw)
    except ValidationError as e:
        raise one_line_error(e, where) from None


def one_line_error(error: ValidationError, where: str, root: type[BaseModel] = Spec) -> InputError:
    """The first validation error as one InputError naming the field path (`root`: the model validated)."""
    return validation_error(error, where, root, f"add it (see {example_path()})")


def resolve(spec: Spec, base_dir: Path | None = None) -> Deployment:
    """Look the spec's names up in the catalogs and build the typed Deployment."""
    arch = catalog.load_model(spec.model, "model", base_dir)
    display = catalog.model_entry(spec.model)["display_name"] if spec.model in catalog.model_names() else arch.name
    plan = default_plan(arch.quantization_config, arch.torch_dtype).with_overrides(spec.precision)
    cluster = _cluster(spec.cluster, "cluster")
    prefill = None if spec.cluster.prefill is None else _cluster(spec.cluster.prefill, "cluster.prefill")
    engine, version, note = _engine(spec.serving.engine, cluster, arch, plan)
    step_overhead_s, overlap = catalog.step_constants(engine, cluster.device, arch.num_layers) if engine else (0.0, 0.0)
    return Deployment(
        name=spec.name or f"{spec.model} on {cluster.describe()}",
        model=arch,
        model_display_name=display,
        precision=plan,
        cluster=cluster,
        workload=_workload(spec.workload, arch, spec.slo.ttft_s, base_dir),
        slo=SLO(spec.slo.ttft_s, spec.slo.tpot_s, spec.slo.percentile),
        price=_price(cluster.device.name, spec.prices, base_dir),
        serving=Serving(spec.serving.hbm_utilization, spec.serving.tokens_per_step,
                        engine, version, _speculation(spec.serving.speculative, arch),
                        device_profile=_device_profile(spec.cluster.device_profile, base_dir),
                        request_overhead_s=catalog.request_overhead_s(engine) if engine else 0.0,
                        step_overhead_s=step_overhead_s, shared_expert_overlap=overlap,
                        sliding_kv_share=catalog.sliding_kv_share(engine) if engine else 0.0,
                        engine_note=note,
                        redundant_experts=_redundant_experts(spec.serving.redundant_experts, arch)),
        routing=_routing(spec.routing, arch, base_dir),
        prefill_cluster=prefill,
        prefill_price=None if prefill is None else _price(prefill.device.name, spec.prices, base_dir),
    )


def _engine(given: EngineSpec | None, cluster: Cluster, arch: ModelArch, plan: PrecisionPlan) -> tuple[str | None, str | None, str]:
    """(engine, version, why it was chosen where the spec names none): the engine named, none for `fitted`, else the
    one MOEPLAN_BACKEND names, else the one whose measured tables cover the model best on the device
    (hwmodels.calibrate.engine_choice)."""
    note = ""
    if given is None and os.environ.get(BACKEND_ENV):
        given = engine_spec(os.environ[BACKEND_ENV], BACKEND_ENV)
        note = f"no serving engine named: {BACKEND_ENV}={os.environ[BACKEND_ENV]}"
    if given is not None:
        return (None, None, note) if given.name == FITTED else (given.name, given.version, note)
    coverage = engine_coverage(cluster.device, arch, plan)
    best = best_covered(coverage)
    if best is None:
        return None, None, ""
    others = ", ".join(c.phrase() for c in coverage if c.engine != best.engine)
    return best.engine, None, (f"no serving engine named: {best.engine}, whose measured tables cover the most of "
                               f"{arch.name}'s operator families on {cluster.device.name} ({best.phrase()}: "
                               f"{', '.join(best.measured)}; {others}; ties go to sglang, then trtllm); "
                               "--backend NAME or serving.engine picks another, --backend fitted the fitted models")


def _redundant_experts(given: int | None, arch: ModelArch) -> int | None:
    if given is not None and not arch.is_moe:
        raise InputError("serving.redundant_experts", f"{arch.name} has no experts to replicate",
                         "leave serving.redundant_experts out")
    return given


def _speculation(given: SpeculativeSpec | None, arch: ModelArch) -> Speculation | None:
    if given is not None and given.draft_tokens > 0 and arch.num_mtp_layers == 0:
        raise InputError("serving.speculative", f"{arch.name} has no MTP module to draft with",
                         "leave serving.speculative out (or draft_tokens: 0)")
    if given is None:
        return model_speculation(arch.num_mtp_layers)
    return model_speculation(arch.num_mtp_layers, given.draft_tokens, given.acceptance)


def _cluster(c: ClusterSpec | PrefillClusterSpec, field: str) -> Cluster:
    unit = catalog.load_unit(c.unit, f"{field}.unit")
    cluster = make_cluster(unit, c.units, c.devices, field)
    if cluster.num_devices > MAX_DEVICES:
        raise InputError(f"{field}.units", f"{c.units:,} x {unit.name} is {cluster.num_devices:,} devices, past "
                         f"the bound of {MAX_DEVICES:,}", f"plan at most {MAX_DEVICES // unit.devices:,} units "
                         "(a serving deployment is far smaller than the largest clusters built)")
    return cluster


def _device_profile(name: str | None, base_dir: Path | None) -> KernelProfile | None:
    """cluster.device_profile: the CSV read and fitted (every error names the field)."""
    return None if name is None else load_profile(_path(name, base_dir), "cluster.device_profile")


def _routing(r: RoutingSpec | None, arch: ModelArch, base_dir: Path | None) -> Routing | None:
    if r is None:
        return None
    if not arch.is_moe:
        raise InputError("routing", f"{arch.name} has no experts to place", "remove routing from the spec")
    phases = []
    for phase in Phase:
        files: RoutingPhaseSpec | None = getattr(r, phase)
        if files is None:
            continue
        evaluate, mapping = _statistics(files.evaluate, f"routing.{phase}.evaluate", arch, base_dir)
        fit = [_statistics(f, f"routing.{phase}.fit[{i}]", arch, base_dir)[0] for i, f in enumerate(files.fit)]
        phases.append(PhaseRouting(phase, tuple(fit) or (evaluate,), evaluate, tuple(files.fit) or (files.evaluate,),
                                   files.evaluate, mapping))
    return Routing(tuple(phases), r.placement, r.time_limit_s)


def _statistics(name: str, field: str, arch: ModelArch, base_dir: Path | None):
    """([layers, experts] in the model's shape, how they were mapped): the file's windows summed (what `moeplan
    place` reads from it), then mapped onto the model. A file that does not say its expert count (SGLang CSV,
    per-token decisions, pickles) is read as the model's, so an expert without tokens keeps its column."""
    path = _path(name, base_dir)
    if not path.exists():  # a TensorRT-LLM folder is statistics too
        raise InputError(field, f"no file '{path}'", "give a routing statistics file (relative paths start at the spec's folder)")
    try:
        recorded = read_routing(path, num_experts=arch.moe.num_experts)
    except InputError as e:
        raise InputError(f"{field}: {e.field}", e.problem, e.fix) from None
    counts, mapping = fit_to_model(recorded.loads, arch.num_layers, arch.moe_layers, arch.moe.num_experts)
    return counts, "; ".join(filter(None, [recorded.note, mapping]))


def _workload(w: WorkloadSpec, arch: ModelArch, ttft_s: float, base_dir: Path | None) -> Workload:
    base: dict = {}
    source = "spec"
    if w.trace is not None:
        # a relative path stays relative (to the working directory), as the user wrote it, for what a replay prints
        path = _path(w.trace, base_dir)
        path = Path(os.path.relpath(path)) if not Path(w.trace).is_absolute() else path
        measured = traffic(read_trace(path, w.requests_per_s), ttft_s)
        base = {k: getattr(measured, k) for k in ("input_tokens", "output_tokens", "requests_per_s", "max_input_tokens",
                                                   "input_cv", "output_cv")}
        source = f"trace {path.name}: {measured.describe()}"
    elif w.name is not None:
        named = catalog.workloads()
        if w.name not in named:
            raise InputError("workload.name", f"unknown workload '{w.name}'", nearest_names(w.name, named))
        base = dict(named[w.name])
        source = base["source"]
    keys = ("input_tokens", "output_tokens", "requests_per_s", "max_input_tokens", "input_cv", "output_cv")
    values = {k: getattr(w, k) if getattr(w, k) is not None else base.get(k) for k in keys}
    overridden = [k for k in keys if getattr(w, k) is not None]
    if w.name is not None and overridden:
        source = f"{source}; {', '.join(overridden)} from the spec"
    for key in ("input_tokens", "output_tokens"):
        if values[key] is None:
            raise InputError(f"workload.{key}", "missing", "set it, or name a workload from catalogs/workloads.yaml")
    longest = values["max_input_tokens"]
    if longest is not None and longest < values["input_tokens"]:
        raise InputError("workload.max_input_tokens", f"{longest} is below the mean prompt {values['input_tokens']}",
                         "give the longest prompt, at least input_tokens")
    context = arch.max_position_embeddings  # 0: the config.json does not state it
    for key in ("input_tokens", "max_input_tokens"):
        if not context or values[key] is None or values[key] <= context:
            continue
        if key == "max_input_tokens" and getattr(w, key) is None:
            # a named trace's longest prompt: an engine refuses prompts past its max_model_len (vLLM, SGLang), so the
            # longest this model's pools admit is its context; the capping is named in the workload's source
            values[key] = longest = context
            source = f"{source}; max_input_tokens capped at {arch.name}'s context of {context:,} tokens"
            continue
        given = "the spec" if getattr(w, key) is not None else f"workload {w.name}"
        raise InputError(f"workload.{key}", f"{values[key]:,} tokens (from {given}) is longer than {arch.name}'s "
                         f"context of {context:,} (max_position_embeddings in its config.json)",
                         f"give at most {context:,}, a model with a longer context, or (a model served with a longer, "
                         "rope-scaled context) its served length as max_position_embeddings")
    assumed = [k for k in ("input_cv", "output_cv") if values[k] is None]
    if assumed:
        source = f"{source}; {' and '.join(assumed)} {DEFAULT_LENGTH_CV:g} assumed (set workload.{assumed[0]})"
    input_cv, output_cv = (DEFAULT_LENGTH_CV if values[k] is None else float(values[k]) for k in ("input_cv", "output_cv"))
    images = None
    if w.images_per_request:
        if arch.vision is None:
            raise InputError("workload.images_per_request", f"{arch.name} has no vision tower (no vision_config in its "
                             "config.json)", "set it to 0, or plan a multimodal model (Kimi K2.5 / K3, Qwen3.5)")
        images = ImageInputs(w.images_per_request, w.image_width_px, w.image_height_px)
        per_image = arch.vision.tokens_per_image(w.image_width_px, w.image_height_px)
        # the images' tokens are prompt tokens: prefilled, cached, counted against the context
        values["input_tokens"] += images.per_request * per_image
        if longest is not None:
            values["max_input_tokens"] = longest = longest + images.per_request * per_image
        source = (f"{source}; {images.per_request} image(s) of {w.image_width_px} x {w.image_height_px} px per request "
                  f"add {images.per_request * per_image:,} prompt tokens ({per_image:,} each) and the vision encoder")
        if context and values["input_tokens"] > context:
            raise InputError("workload.images_per_request", f"{images.per_request} image(s) bring the prompt to "
                             f"{values['input_tokens']:,} tokens, past {arch.name}'s context of {context:,}",
                             "give fewer or smaller images (image_width_px, image_height_px), or shorter prompts")
    workload = Workload(int(values["input_tokens"]), int(values["output_tokens"]), values["requests_per_s"], source,
                        int(longest) if longest is not None else None, input_cv, output_cv, images=images)
    if w.trace is None:
        return workload
    # the trace's own lengths, unless the spec reshapes them (then the lognormal of its mean and cv)
    own_prompts = all(getattr(w, k) is None for k in ("input_tokens", "input_cv", "max_input_tokens"))
    own_outputs = all(getattr(w, k) is None for k in ("output_tokens", "output_cv"))
    return replace(workload, prompt_lengths=measured.prompt_lengths if own_prompts else (),
                   output_lengths=measured.output_lengths if own_outputs else (), arrivals=measured.arrivals, trace=str(path))


def _path(name: str, base_dir: Path | None) -> Path:
    return Path(name) if base_dir is None or Path(name).is_absolute() else base_dir / name


def read_trace(path: str | Path, requests_per_s: float | None = None) -> RequestTrace:
    """A workload's trace (workload.trace), read once per file version (a sweep resolves the spec at every point);
    requests_per_s: the Poisson arrival rate of a length CSV, which has no times of its own."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError:
        raise InputError("workload.trace", f"no file '{path}'", "give a request trace (relative paths start at the "
                         "spec's folder)") from None
    key = (str(path), str(path.resolve()), stat.st_mtime_ns, stat.st_size)  # read by the name the spec gives it
    try:
        try:
            trace = _cached_trace(*key, None)
        except InputError as e:
            if e.field != "rate_per_s":
                raise
            if requests_per_s is None:
                raise InputError("workload.requests_per_s", f"{path.name} has lengths but no arrival times",
                                 "set workload.requests_per_s (Poisson arrivals at that rate)") from None
            trace = _cached_trace(*key, requests_per_s)
    except InputError as e:
        if e.field.startswith("workload."):
            raise
        raise InputError(f"workload.trace: {e.field}", e.problem, e.fix) from None
    if len(trace) < 2 or trace.duration_s <= 0:
        raise InputError("workload.trace", f"{path.name} holds {len(trace)} request(s) over {trace.duration_s:g} s",
                         "give a trace of at least two requests arriving over time")
    return trace


@lru_cache(maxsize=4)
def _cached_trace(path: str, resolved: str, mtime_ns: int, size: int, requests_per_s: float | None) -> RequestTrace:
    return load_trace(path, rate_per_s=requests_per_s)


def with_prices(spec: Spec, cloud: str | None = None, prices_file: str | Path | None = None) -> Spec:
    """The spec with prices.cloud and/or prices.file replaced (--cloud NAME, --prices FILE); a file path is taken as
    given (relative to the working directory), not to the spec's folder."""
    update = {k: v for k, v in (("cloud", cloud), ("file", None if prices_file is None else str(Path(prices_file).resolve())))
              if v is not None}
    if not update:
        return spec
    return spec.model_copy(update={"prices": PricesSpec.model_validate({**spec.prices.model_dump(exclude_none=True), **update})})


def _price(device: str, prices: PricesSpec, base_dir: Path | None = None) -> Price | None:
    """The device's price, most specific first: the spec's own, the price file's, the cloud's rows, the default
    rows. None: no table prices it (plans, reports and comparisons say so)."""
    overrides = prices.devices()
    for name, value in overrides.items():
        if name not in catalog.device_names():
            raise InputError(f"prices.{name}", "unknown device", nearest_names(name, catalog.device_names()))
        if value <= 0:
            raise InputError(f"prices.{name}", f"must be positive, got {value}", "give USD per device-hour")
    table = catalog.price_table() if prices.file is None else catalog.read_price_file(_path(prices.file, base_dir), "prices.file")
    rows = table.for_cloud(prices.cloud)  # an unknown cloud is an error even where the spec prices the device itself
    if device in overrides:
        return Price(overrides[device], "spec")
    return rows.get(device)
