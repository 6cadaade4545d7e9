"""Measured deployments (NVIDIA's silicon sample) predicted from moeplan's catalogs and operator costs.

Each row of a measured-deployments CSV (columns of ../shared/data/measured/aic-silicon-moe.csv, SOURCES.md) is a
benchmark of one deployment: a closed loop of `concurrency` requests of exactly `isl` prompt and `osl` output
tokens (aiconfigurator's silicon collection: a fixed-concurrency benchmark client, each finished request replaced
at once, after a warm-up), reporting mean TTFT and TPOT. A row is rebuilt as the catalog model and device, the
row's number formats, its layout (aggregated: TP, attention DP, MoE TP x EP, batch per rank; disaggregated: the
prefill and decode workers, each with its layout and batch) and its engine and version (whose measured kernel
tables price the operators, hwmodels.calibrate.operator_costs.costs_for), with every expert equally loaded
(the benchmark's random prompts route near-uniformly; the peer assumes the same).

A closed loop of identical requests has two regimes, and a benchmark's mean TTFT mixes them:
- start-up: the loop's `concurrency` requests arrive at once. Aggregated, each attention rank prefills its n of them
  in steps of its step token budget (step_token_budget), every rank at once, a prompt's first token coming with the step that holds its
  last token; disaggregated, the prefill pool drains the burst at its rate (workers x DP x batch per prefill).
- steady state: a request finishing is replaced at once, and the first wave's spread of finishing times staggers the
  replacements, so a prompt meets the queue of a Poisson-like arrival stream: aggregated, the prompt waits for the
  step in flight (half a decode step) and behind the rank's other prompts (M/D/1 at the loop's rate per rank);
  disaggregated, M/D/1 at the prefill pool until it saturates, then the cycle the prefill rate sets.
TPOT: aggregated, each wave's later prefill steps delay its decode, spread over its osl - 1 tokens,
      TPOT = t_decode(n) + (prefill steps after its first token) x t_step / (osl - 1);
disaggregated, the decode ranks only decode, at the batch Little's law leaves them (the loop's requests past their
first token). The KV transfer between the pools is not priced from its bytes: it is part of the request overhead.

What kernel tables cannot say is fitted, as issue 17 allows, on this file only and with k-fold cross-validation
split by configuration (hwmodels/calibrate/closed_loop_fit.py; catalogs/fits/closed-loop.yaml stores the values
and their held-out error): per engine, a host time per layer added to every forward step (launch gaps between the
layer's kernels, and the scheduling, sampling and output handling around them, which no kernel table holds; a step
of L layers takes L times it longer, entering TPOT through every decode step and TTFT through every prefill step),
a per-request overhead added to every TTFT (HTTP, tokenisation, scheduling and, disaggregated,
the KV hand-off), and one share of a benchmark's measured requests that met the start-up burst,
       TTFT = overhead(engine) + share x TTFT_start-up + (1 - share) x TTFT_steady. """

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from functools import lru_cache
from typing import Any, Mapping

from hwmodels import catalog
from hwmodels.calibrate import measured_tables
from hwmodels.calibrate.engine_choice import FITTED
from hwmodels.calibrate.operator_costs import costs_for
from hwmodels.errors import InputError
from hwmodels.hardware import instance_cluster
from hwmodels.layout import Layout
from hwmodels.precision import default_plan
from hwmodels.roles import Phase
from hwmodels.serving import one_rank_prefill_step
from hwmodels.step import StepContext

# Tokens one attention rank schedules per step, as aiconfigurator's generator configures the engines it benchmarks
# (ai-dynamo/aiconfigurator src/aiconfigurator/generator/rule_plugin/benchmark/{trtllm,vllm,sglang}.rule): a prefill
# worker isl + 1,500 (TensorRT-LLM's and vLLM's max_num_tokens, SGLang's max_prefill_tokens); an aggregated worker
# max_batch_size + isl + 1,500 in TensorRT-LLM and vLLM, whose budget holds the decode tokens too, and isl + 1,500 of
# prompt tokens in SGLang (mixed chunks beside its decode batch).
BUDGET_MARGIN_TOKENS = 1500


def step_token_budget(engine: str, aggregated: bool, isl: int, batch: int) -> int:
    """Prompt tokens an attention rank takes per step under the benchmark's configuration (above)."""
    return isl + BUDGET_MARGIN_TOKENS + (batch if aggregated and engine != "sglang" else 0)
MAX_ROWS = 100_000
# the package's quant-mode names -> moeplan's number formats (hwmodels.precision.SCHEMES)
FORMATS = {"fp8_block": "fp8", "fp8": "fp8_tensor", "nvfp4": "nvfp4", "bfloat16": "bf16", "float16": "fp16",
           "int4_wo": "int4", "w4a16_mxfp4": "mxfp4"}
GEMM_PARTS = ("attention", "dense_mlp", "shared_experts")


@dataclass(frozen=True)
class MeasuredPrediction:
    id: str
    model: str
    system: str
    engine: str
    mode: str
    measured_ttft_s: float | None
    measured_tpot_s: float | None
    predicted_ttft_s: float | None  # None: not modelled (reason)
    predicted_tpot_s: float | None
    peer_ttft_s: float | None  # AIConfigurator 0.12's own prediction of the row, where the file has one
    peer_tpot_s: float | None
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        def ms(x):
            return None if x is None else x * 1e3
        return {"id": self.id, "predicted_ttft_ms": ms(self.predicted_ttft_s), "predicted_tpot_ms": ms(self.predicted_tpot_s),
                "reason": self.reason or None}


def read_rows(path: str | Path) -> list[dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise InputError("--measured", f"no file '{path}'", "give a measured-deployments CSV like ../shared/data/measured/aic-silicon-moe.csv")
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = []
            for row in csv.DictReader(f):
                rows.append(_in_file_columns(row))
                if len(rows) > MAX_ROWS:
                    raise InputError("--measured", f"{path} has more than {MAX_ROWS:,} rows", "split it")
    except (UnicodeDecodeError, csv.Error) as e:
        raise InputError("--measured", f"{path} is not a readable CSV ({e})", "give a UTF-8 CSV with a header row") from None
    if not rows or "id" not in rows[0]:
        raise InputError("--measured", f"{path} has no rows or no 'id' column", "use the columns of aic-silicon-moe.csv")
    return _layouts_from_twins(rows)


def _in_file_columns(row: dict) -> dict:
    """A row of aiconfigurator-core's own systems/silicon_sample.csv in the columns of aic-silicon-moe.csv: its
    `model_path` is the model, its concurrency is in the id (`_c<N>_`) and in `silicon_data_source`
    (`silicon_concurrency=<N>`), a bf16 row may leave both quant modes empty, and an aggregated row may leave its
    attention DP size empty where its other sizes fix it (`_attention_dp_from_sizes`)."""
    if "model" in row and "concurrency" in row:
        return row
    row = dict(row)
    if row.get("precision") in ("bf16", "fp16") and not row.get("gemm_quant_mode") and not row.get("moe_quant_mode"):
        row["gemm_quant_mode"] = row["moe_quant_mode"] = "bfloat16"
    row = _attention_dp_from_sizes(row)
    row.setdefault("model", row.get("model_path") or "")
    if "concurrency" not in row:
        found = re.search(r"_c(\d+)_", row.get("id") or "") or \
            re.search(r"silicon_concurrency=(\d+)", row.get("silicon_data_source") or "")
        row["concurrency"] = found.group(1) if found else ""
    return _layout_from_id(row)


LAYOUT_COLUMNS = ("tp_size", "attention_dp_size", "moe_tp_size", "moe_ep_size")


def _attention_dp_from_sizes(row: dict) -> dict:
    """An aggregated row with no attention DP size: the one its sizes leave, as an instance's attention and MoE span
    the same devices (tp x attention DP = moe_tp x moe_ep). Among the package's rows that omit it (Qwen3-235B-A22B-FP8,
    ids `_tp<T>_epnone_`), TensorRT-LLM 1.0.0rc3's and SGLang 0.5.6.post2's come out at 1 (attention TP over the
    instance, the engines' default without attention DP); vLLM 0.12.0's tp1 or tp2 rows with a larger moe_tp at 2 or
    4 (vLLM's DP ranks without --enable-expert-parallel shard the MoE by TP over all of them)."""
    tp, moe_tp, moe_ep = (number(row, k) for k in ("tp_size", "moe_tp_size", "moe_ep_size"))
    if row.get("mode") != "agg" or number(row, "attention_dp_size") is not None or not (tp and moe_tp and moe_ep):
        return row
    dp = moe_tp * moe_ep / tp
    return row | {"attention_dp_size": str(int(dp))} if dp >= 1 and dp == int(dp) else row


_NAMED_LAYOUT = re.compile(r"_tp(\d+)_ep(\d+)_")


def _twin_key(row: dict) -> tuple:
    """What one measurement is: the package lists some twice, under two ids (one naming its layout, one `_cfg<N>`)."""
    return tuple(row.get(k) for k in ("backend", "backend_version", "system", "model", "mode", "isl", "osl", "concurrency",
                                      "silicon_ttft_ms", "silicon_tpot_ms"))


def _layouts_from_twins(rows: list[dict]) -> list[dict]:
    """A package row (`model_path` column) whose id names no layout takes the layout of its twin, the same measurement
    under an id that names one (_layout_from_id), where the twin counts fewer devices: its labels are products of
    the real sizes, as ../shared/data/SOURCES.md corrected the measured file's rows "from the id and twin rows"."""
    def devices(row):
        return (number(row, "tp_size") or 0) * (number(row, "attention_dp_size") or 0)
    named = {_twin_key(r): r for r in rows if "model_path" in r and _NAMED_LAYOUT.search(r.get("id") or "")}
    out = []
    for row in rows:
        twin = named.get(_twin_key(row)) if "model_path" in row and not _NAMED_LAYOUT.search(row.get("id") or "") else None
        if twin is not None and 0 < devices(twin) < devices(row):
            row = row | {k: twin[k] for k in LAYOUT_COLUMNS}
        out.append(row)
    return out


def _layout_from_id(row: dict) -> dict:
    """An aggregated row whose id names its instance (`_tp<T>_ep<E>_`: T devices, experts over E of them) but whose
    labelled sizes count more devices (tp x attention DP > T) carries products of the real sizes: tp64/adp1/moe_tp8/
    moe_ep8 for an 8-device tp8 ep8 run. Its layout is rebuilt from the id, as ../shared/data/SOURCES.md says the
    measured file's rows were: moe_ep E, moe_tp T / E, attention over the T devices by DP where the label has
    attention DP without TP (tp 1), else by TP. A label that counts T devices is kept as it is."""
    found = _NAMED_LAYOUT.search(row.get("id") or "")
    tp, dp = number(row, "tp_size"), number(row, "attention_dp_size")
    if row.get("mode") != "agg" or not found or tp is None or dp is None:
        return row
    devices, ep = int(found.group(1)), int(found.group(2))
    if tp * dp <= devices or devices % ep:
        return row
    by_dp = tp == 1 and dp > 1
    return row | {"tp_size": "1" if by_dp else str(devices), "attention_dp_size": str(devices) if by_dp else "1",
                  "moe_tp_size": str(devices // ep), "moe_ep_size": str(ep)}


def predict_file(path: str | Path, engine: str | None = None, version: str | None = None) -> list[MeasuredPrediction]:
    """Every row of the file, or only those an engine (and version) served."""
    if engine == FITTED:
        raise InputError("--backend", "each measured row is priced on the engine that served it, and no row was "
                         "served by the fitted models", "give sglang, trtllm or vllm to keep that engine's rows")
    rows = [r for r in read_rows(path)
            if engine is None or (r.get("backend") == engine and version in (None, r.get("backend_version")))]
    return [predict_row(row, i) for i, row in enumerate(rows)]


def number(row: dict, key: str) -> float | None:
    """A row's column as a finite number, or None (empty, text, inf or NaN)."""
    text = (row.get(key) or "").strip()
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _whole(row: dict, key: str) -> int:
    value = number(row, key)
    if value is None or value < 1 or value != int(value):
        raise NotModelled(f"{key} is {row.get(key)!r}, not a whole number >= 1")
    return int(value)


class NotModelled(Exception):
    """A row moeplan cannot rebuild (its reason becomes the row's `reason`)."""


def predict_row(row: dict, index: int = 0) -> MeasuredPrediction:
    """One row's prediction; a row moeplan cannot model (or a malformed one) gets a reason, never an exception."""
    def seconds(key):
        v = number(row, key)
        return None if v is None else v * 1e-3
    base = dict(id=row.get("id") or f"row {index + 1}", model=row.get("model", ""), system=row.get("system", ""),
                engine=row.get("backend", ""), mode=row.get("mode", ""), measured_ttft_s=seconds("silicon_ttft_ms"),
                measured_tpot_s=seconds("silicon_tpot_ms"), peer_ttft_s=seconds("aic_0_12_ttft_ms"),
                peer_tpot_s=seconds("aic_0_12_tpot_ms"))
    try:
        loop = loop_times(row)
    except (NotModelled, InputError, ValueError) as e:
        return MeasuredPrediction(**base, predicted_ttft_s=None, predicted_tpot_s=None, reason=str(e).splitlines()[0])
    return MeasuredPrediction(**base, predicted_ttft_s=loop.ttft_s(closed_loop_fit()), predicted_tpot_s=loop.tpot_s)


@dataclass(frozen=True)
class ClosedLoopFit:
    """The constants fitted to measured closed loops (module docstring): catalogs/fits/closed-loop.yaml."""

    request_overhead_s: Mapping[str, float]  # per engine
    startup_share: float
    layer_overhead_s: Mapping[str, float] = field(default_factory=dict)  # per engine: host time per layer of a step
    # per engine and GPU generation (catalog.gpu_generation): the share of the shorter of a decode step's shared and
    # routed experts hidden by running them side by side
    shared_expert_overlap: Mapping[str, Mapping[str, float]] = field(default_factory=dict)


@lru_cache(maxsize=1)
def closed_loop_fit() -> ClosedLoopFit:
    params = catalog.stored_fit("closed-loop")["parameters"]
    return ClosedLoopFit(dict(params["request_overhead_s"]), float(params["startup_share"]), dict(params["layer_overhead_s"]),
                         {e: dict(g) for e, g in params.get("shared_expert_overlap", {}).items()})


@dataclass(frozen=True)
class LoopTimes:
    """One row's closed loop as the step model prices it, before the fitted constants."""

    engine: str
    startup_ttft_s: float
    steady_ttft_s: float
    tpot_s: float

    def ttft_s(self, fit: ClosedLoopFit) -> float:
        share = fit.startup_share
        return fit.request_overhead_s.get(self.engine, 0.0) + share * self.startup_ttft_s + (1 - share) * self.steady_ttft_s


# ------------------------------------------------------------------------------------------------ the rows


# Models the package's silicon rows name by something other than a HuggingFace repository. A row's quant modes give
# its number formats, so the name need only fix the architecture: the package's "zhipuai/GLM-5" rows (their
# silicon_data_source says model=GLM-5) run fp8 and nvfp4 checkpoints of the architecture published as zai-org/GLM-5.
ROW_MODEL_NAMES = {"zhipuai/glm-5": "glm-5"}


def _catalog_model(hf_repo: str) -> str:
    name = catalog.model_by_hf_id(hf_repo) or ROW_MODEL_NAMES.get(hf_repo.strip().lower())
    if name is None:
        raise NotModelled(f"model {hf_repo} is not in the catalog")
    return name


def _device(system: str) -> str:
    devices = {v: k for k, v in measured_tables.SYSTEMS.items()}
    if system not in devices:
        raise NotModelled(f"system {system} is not a catalog device")
    return devices[system]


@dataclass(frozen=True)
class _Setup:
    model: str
    device: str
    engine: str
    version: str
    formats: dict
    isl: int
    osl: int
    concurrency: int


def _setup(row: dict) -> _Setup:
    engine = row.get("backend", "")
    if engine not in measured_tables.ENGINES:
        raise NotModelled(f"engine {engine!r} is not one of {', '.join(measured_tables.ENGINES)}")
    formats = {}
    for column, parts in (("gemm_quant_mode", GEMM_PARTS), ("moe_quant_mode", ("routed_experts",))):
        mode = row.get(column, "")
        if mode not in FORMATS:
            raise NotModelled(f"{column} {mode!r} has no moeplan number format")
        formats |= {part: FORMATS[mode] for part in parts}
    return _Setup(_catalog_model(row.get("model", "")), _device(row.get("system", "")), engine,
                  row.get("backend_version", "") or None, formats, _whole(row, "isl"), _whole(row, "osl"),
                  _whole(row, "concurrency"))


def generation(row: dict) -> str:
    """The GPU generation of a row's system (catalog.gpu_generation); NotModelled where the system is no catalog device."""
    return catalog.gpu_generation(catalog.load_device(_device(row.get("system", ""))))


def _context(s: _Setup, row: dict, prefix: str, layer_overhead_s: float, overlap: float) -> tuple[StepContext, int]:
    """The step context of one worker (prefix '' for aggregated, 'prefill_' or 'decode_') and its batch per rank."""
    tp, dp, pp = _whole(row, f"{prefix}tp_size"), _whole(row, f"{prefix}attention_dp_size"), _whole(row, f"{prefix}pp_size")
    moe_tp, moe_ep = _whole(row, f"{prefix}moe_tp_size"), _whole(row, f"{prefix}moe_ep_size")
    if pp != 1:
        raise NotModelled(f"{prefix}pp_size {pp}: pipeline stages are not modelled")
    if tp * dp != moe_tp * moe_ep:
        raise NotModelled(f"{prefix}tp x attention_dp = {tp * dp} devices but moe_tp x moe_ep = {moe_tp * moe_ep}")
    arch = catalog.load_model(s.model)
    if arch.attention.num_heads % tp:
        raise NotModelled(f"{prefix}tp_size {tp} does not divide {s.model}'s {arch.attention.num_heads} attention heads")
    formats = dict(s.formats)
    if formats["attention"] == "nvfp4" and arch.is_mla:
        # NVIDIA's NVFP4 checkpoints of DeepSeek-R1 and Kimi-K2.5 leave the whole self_attn block unquantized, so
        # their attention projections run in bf16 (aiconfigurator-core 0.12.0 sdk/models/deepseek.py, from the
        # checkpoints' quantization exclusions)
        formats["attention"] = "bf16"
    plan = default_plan(arch.quantization_config, arch.torch_dtype).with_overrides(formats)
    unit = catalog.load_unit(catalog.units_for_device(s.device)[0])
    cluster = instance_cluster(unit, tp * dp)
    layout = Layout(tp=tp, dp=dp, moe_tp=moe_tp)
    costs = costs_for(s.device, s.engine, s.version)
    return (StepContext(arch, plan, cluster, layout, costs=costs, step_overhead_s=layer_overhead_s * arch.num_layers,
                        shared_expert_overlap=overlap),
            _whole(row, f"{prefix}batch_size"))


def _prefill_s(ctx: StepContext, isl: int, budget: int, prompts: int = 1) -> float:
    """`prompts` prompts of `isl` tokens on one attention rank, in steps of at most `budget` tokens, while
    the other DP ranks have none (the lockstep cost of one rank's prefill)."""
    tokens = prompts * isl
    steps = math.ceil(tokens / budget)
    chunk = tokens / steps
    return steps * one_rank_prefill_step(ctx, max(1, round(chunk / ctx.layout.tp)), isl).time_s


def _decode_s(ctx: StepContext, sequences_per_rank: float, context_tokens: float) -> float:
    return ctx.step(Phase.DECODE, max(sequences_per_rank, 1.0) / ctx.layout.tp, context_tokens).time_s


def _wave(ctx: StepContext, n: float, isl: int, osl: int, t_decode: float, budget: int) -> tuple[float, float]:
    """(mean TTFT, mean TPOT) of a closed loop of identical requests, `n` per attention rank: they start together,
    finish together and are replaced together, so the loop runs in waves. Each wave prefills its n prompts per rank
    in steps of `budget` tokens (every rank at once), prompt j finishing with the step that holds its last
    token; the steps after a prompt's first token delay its decode (prefill first, or mixed into the decode
    batch: either way a step as long as the chunk's), over its osl - 1 tokens."""
    tokens = max(n, 1.0) * isl
    steps = math.ceil(tokens / budget)
    step_s = ctx.step(Phase.PREFILL, max(1, round(tokens / steps / ctx.layout.tp)), isl).time_s
    members = max(int(round(n)), 1)
    done = [math.ceil((j + 1) * isl / (tokens / steps)) for j in range(members)]  # the step each prompt ends with
    ttft = sum(done) / members * step_s
    after = sum(steps - k for k in done) / members
    return ttft, t_decode + after * step_s / max(osl - 1, 1)


def _md1_wait_s(service_s: float, utilization: float) -> float:
    """Mean wait in an M/D/1 queue (Pollaczek-Khinchine with deterministic service)."""
    return utilization * service_s / (2 * (1 - utilization))


def loop_times(row: dict, layer_overhead_s: float | None = None, shared_expert_overlap: float | None = None) -> LoopTimes:
    """A row's start-up and steady-state TTFT and its TPOT (module docstring); NotModelled where it cannot be built.
    layer_overhead_s: the engine's host time per layer of a step (None: the stored fit's, catalog.layer_overhead_s);
    shared_expert_overlap: the engine's on the row's GPU generation (None: the stored fit's,
    catalog.shared_expert_overlap)."""
    s = _setup(row)
    overhead_s = catalog.layer_overhead_s(s.engine) if layer_overhead_s is None else layer_overhead_s
    overlap = (catalog.shared_expert_overlap(s.engine, generation(row)) if shared_expert_overlap is None
               else shared_expert_overlap)
    context = s.isl + s.osl / 2  # a decoding sequence is halfway through its output on average
    if row.get("mode") == "agg":
        ctx, batch = _context(s, row, "", overhead_s, overlap)
        budget = step_token_budget(s.engine, True, s.isl, batch)
        # sequences per rank: the row's batch_size is not a cap (rows at 8x batch_size x DP concurrency measured
        # no wait for a slot, so the engine admitted them all)
        n = s.concurrency / ctx.layout.dp
        t_decode = _decode_s(ctx, n, context)
        startup, tpot = _wave(ctx, n, s.isl, s.osl, t_decode, budget)
        alone, _ = _wave(ctx, 1, s.isl, s.osl, t_decode, budget)  # one prompt's prefill on its rank
        utilization = n / (startup + (s.osl - 1) * tpot) * alone  # prompts per second per rank x prefill time
        steady = min(startup, alone + t_decode / 2 + _md1_wait_s(alone, utilization)) if utilization < 1 else startup
        return LoopTimes(s.engine, startup, steady, tpot)
    if row.get("mode") == "disagg":
        pctx, pbatch = _context(s, row, "prefill_", overhead_s, overlap)
        dctx, dbatch = _context(s, row, "decode_", overhead_s, overlap)
        prefill_workers, decode_workers = _whole(row, "prefill_num_workers"), _whole(row, "decode_num_workers")
        decode_ranks = decode_workers * dctx.layout.dp
        budget = step_token_budget(s.engine, False, s.isl, pbatch)
        t_p = _prefill_s(pctx, s.isl, budget, pbatch)
        rate_per_s = prefill_workers * pctx.layout.dp * pbatch / t_p  # prompts the prefill pool serves per second
        ttft, tpot = t_p, _decode_s(dctx, min(dbatch, s.concurrency / decode_ranks), context)
        for _ in range(50):  # the closed loop's cycle, its arrival rate and the decode batch it leaves: a fixed point
            cycle = ttft + (s.osl - 1) * tpot
            # Little's law: of the loop's requests, the decode pool holds those past their first token
            tpot = _decode_s(dctx, min(dbatch, s.concurrency * (s.osl - 1) * tpot / cycle / decode_ranks), context)
            utilization = s.concurrency / cycle / rate_per_s
            bound = s.concurrency / rate_per_s - (s.osl - 1) * tpot  # prefill-bound cycle
            new = max(t_p + (_md1_wait_s(t_p, utilization) if utilization < 1 else math.inf), bound, t_p)
            new = min(new, max(bound, t_p) if utilization >= 0.95 else new)
            if abs(new - ttft) < 1e-6:
                break
            ttft = new
        startup = _prefill_s(pctx, s.isl, budget) + s.concurrency / (2 * rate_per_s)  # the burst drains at the pool's rate
        return LoopTimes(s.engine, startup, ttft, tpot)
    raise NotModelled(f"mode {row.get('mode')!r} is neither agg nor disagg")


# ------------------------------------------------------------------------------------------------ the summary

GROUPS = ("model", "system", "engine", "mode")


def _errors(rows: list[MeasuredPrediction], metric: str, who: str) -> list[float]:
    """|predicted - measured| / measured of `who` ('predicted' or 'peer') on the rows both it and the file hold."""
    out = []
    for r in rows:
        measured, predicted = getattr(r, f"measured_{metric}_s"), getattr(r, f"{who}_{metric}_s")
        if measured and predicted is not None:
            out.append(abs(predicted - measured) / measured)
    return out


def _stats(errors: list[float]) -> dict[str, float | None]:
    if not errors:
        return {"median": None, "mape": None, "p90": None}
    ordered = sorted(errors)
    return {"median": _quantile(ordered, 0.5), "mape": sum(ordered) / len(ordered), "p90": _quantile(ordered, 0.9)}


def _quantile(ordered: list[float], q: float) -> float:
    """Linear interpolation between the two nearest ranks (numpy's default)."""
    position = q * (len(ordered) - 1)
    lo = int(position)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (position - lo)


def summarize(rows: list[MeasuredPrediction], by: str | None = None) -> list[dict[str, Any]]:
    """Per group of `by` (one of GROUPS; None: all rows): rows, coverage (modelled / rows whose model the catalog
    holds), and median |error|, MAPE and p90 of TTFT and TPOT for moeplan and for the peer (AIC 0.12), each on the
    rows it predicts, plus moeplan's on the rows both predict."""
    keys = sorted({getattr(r, by) for r in rows}) if by else ["all"]
    out = []
    for key in keys:
        group = [r for r in rows if by is None or getattr(r, by) == key]
        in_catalog = [r for r in group if "is not in the catalog" not in r.reason]
        modelled = [r for r in group if r.predicted_tpot_s is not None]
        both = [r for r in modelled if r.peer_tpot_s is not None]
        entry: dict[str, Any] = {"group": key, "rows": len(group), "in_catalog": len(in_catalog), "modelled": len(modelled),
                                 "coverage": len(modelled) / len(in_catalog) if in_catalog else None,
                                 "peer_modelled": sum(r.peer_tpot_s is not None for r in group), "both": len(both)}
        for metric in ("ttft", "tpot"):
            for who, subset in (("moeplan", modelled), ("peer", group), ("moeplan_on_both", both)):
                stats = _stats(_errors(subset, metric, "peer" if who == "peer" else "predicted"))
                entry |= {f"{who}_{metric}_{k}": v for k, v in stats.items()}
        out.append(entry)
    return out
