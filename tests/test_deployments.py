"""Validation against published deployments (catalogs/published/deployments.yaml, each with its source).

Bars from the hwmodels issue: median absolute error at most 12% and every modelled scenario within 30%,
with no constant tuned to one scenario. For reference, Alibaba InferSim over-predicts DeepSeek-V3 on
H800 by 15%; NVIDIA AIConfigurator has open reports of 40% errors on prefill-heavy layouts.
"""

import json

import pytest
import yaml

from hwmodels.errors import InputError
from hwmodels.calibrate import measured_tables
from hwmodels.calibrate.deployments import DEFAULT_DEPLOYMENTS, load_entries, summary, validate


@pytest.fixture(scope="module")
def rows():
    return validate()


def test_every_scenario_is_reported(rows):
    ids = [d["id"] for d in yaml.safe_load(DEFAULT_DEPLOYMENTS.read_text())["deployments"]]
    assert [r.id for r in rows] == ids
    for r in rows:
        assert r.predicted is not None or r.reason


# Where the model stands today (moeplan validate, each entry priced by the engine it names, on that engine's measured
# tables where moeplan[measured] is installed): DeepSeek's two H800 profiles and SGLang's H100 decode within 10%;
# SGLang's H100 prefill runs (EPLB on, as their source states) within 20% on SGLang's tables (its DeepEP MoE table of
# SGLang 0.5.10 at 32 ranks' tokens: the 4k run -19%, slower than the blog's SGLang of May 2025 measured), 25% on the
# fitted models. Two runs were outside the issue's 30% on an engine's kernels of its day rather than the hardware:
# TensorRT-LLM's H200 aggregated run (+28.5% with TensorRT-LLM's step constants, +30% without, +61% fitted: its decode
# step, 88 ms by the published per-user rate; +26%
# while its MoE exchange was priced as DeepEP's all-to-all rather than the NCCL all-gather and reduce-scatter
# TensorRT-LLM runs at EP8 <= top-8, hwmodels.calibrate.operator_costs.GATHER_EXCHANGE_ENGINES), which is inside 35%
# on the engines' tables, and SGLang's first GB200 decode (+18% at EP48, interpolated between the EP sizes
# SGLang's DeepEP MoE table measured; +48% while the fitted model priced its experts, +66% fitted throughout: "many
# kernels have yet to fully saturate the GB200's memory bandwidth or computational capabilities", the source).
# TensorRT-LLM's two B200 runs, whose source states every setting, are within 15% on its tables. Each bound guards
# against a regression; an improvement passes. The issue's bar is the strict xfail below.
TABLES = measured_tables.database_root() is not None
WITHIN_10_PERCENT = ("sglang-h100-decode", "deepseek-profile-prefill-h800", "deepseek-profile-decode-h800")
WITHIN_25_PERCENT = ("sglang-h100-prefill-1k", "sglang-h100-prefill-2k", "sglang-h100-prefill-4k")
EARLY_ENGINE_KERNELS_WITHIN = {"trtllm-h200-max-throughput": 0.35 if TABLES else 0.70,
                               "trtllm-b200-max-throughput-fp8-kv": 0.20 if TABLES else 0.60,
                               "trtllm-b200-max-throughput-fp16-kv": 0.10 if TABLES else 0.65,
                               "sglang-gb200-decode": 0.25 if TABLES else 0.75}


def test_error_today(rows):
    by_id = {r.id: r for r in rows}
    for rid in WITHIN_10_PERCENT:
        assert abs(by_id[rid].error) <= 0.10, f"{rid}: {by_id[rid].error:+.1%}"
    for rid in WITHIN_25_PERCENT:
        assert abs(by_id[rid].error) <= 0.25, f"{rid}: {by_id[rid].error:+.1%}"
    for rid, bound in EARLY_ENGINE_KERNELS_WITHIN.items():
        assert abs(by_id[rid].error) <= bound, f"{rid}: {by_id[rid].error:+.1%}"
    # on the engines' tables 10.1% (8.5% while the measured MoE tables were keyed by one rank's tokens); on the fitted
    # models 22.4% (20.7% before MLA's q_a and kv_a became one GEMM, as the engines run them: it speeds up SGLang's
    # H100 prefill, which the fitted models over-predict by 20-23%; 7.8% and 21.3% before CloudMatrix384's decode run
    # was modelled, at -35.6%; 23.4% since TensorRT-LLM's two B200 runs joined, +51% and +56% fitted, +14.9% and +1.3%
    # on TensorRT-LLM's tables; 10.2% on the engines' tables since an engine's run takes its step constants, 9.6% since
    # SGLang's DeepEP all-to-all is its measured DeepEP kernels)
    assert summary(rows)["median_abs_error"] <= (0.11 if TABLES else 0.24)
    assert not summary(rows)["not_modelled"]
    if TABLES:
        for rid in WITHIN_25_PERCENT:
            assert abs(by_id[rid].error) <= 0.20, f"{rid}: {by_id[rid].error:+.1%}"
    # DeepSeek's profiles were taken with perfectly balanced routing (deepseek-ai/profile-data README)
    for rid in ("deepseek-profile-prefill-h800", "deepseek-profile-decode-h800"):
        assert "every expert equally loaded, as the source measured" in by_id[rid].assumptions
    # the decode profile runs DeepSeek's MTP module; LMSYS converts it at 60% acceptance
    assert any("1.60 tokens accepted per step" in a for a in by_id["deepseek-profile-decode-h800"].assumptions)
    assert any("EPLB" in a for a in by_id["sglang-h100-prefill-4k"].assumptions)
    # trtllm-bench's closed loop of equal-length requests: every rank prefills in the same steps
    assert any("closed loop" in a for a in by_id["trtllm-h200-max-throughput"].assumptions)


@pytest.mark.xfail(strict=True, reason="issue bar not met: CloudMatrix384 decode -36% (its expert balancing not "
                   "stated; bar 30%), though the median, 9.6% on the engines' tables, meets its 12% (TensorRT-LLM's "
                   "H200 run +28.5% with its engine's step constants, +30.1% without)")
def test_issue_error_bars(rows):
    for r in rows:
        if r.error is not None:
            assert abs(r.error) <= 0.30, f"{r.id}: predicted {r.predicted:,.0f} vs published {r.published:,.0f}"
    assert summary(rows)["median_abs_error"] <= 0.12


def test_an_offline_run_of_many_requests_replays_in_bounded_time_and_a_larger_one_is_refused(tmp_path):
    """The replay takes a run of steps that admit nothing at once (hwmodels.serving.offline_performance), so a million
    requests of 100,000 output tokens (10^11 steps one by one) finish; more requests than a million are one error."""
    entry = {"id": "offline", "model": "qwen3-30b-a3b", "precision": {"routed_experts": "nvfp4"}, "hardware": "b200-sxm",
             "phase": "aggregated", "devices": 1, "engine": {"name": "trtllm"},
             "workload": {"input_tokens": 1, "output_tokens": 100_000, "requests": 1_000_000},
             "metric": {"name": "output_tokens_per_s_per_device", "value": 1000}}
    path = tmp_path / "offline.yaml"
    path.write_text(yaml.safe_dump({"schema_version": 1, "deployments": [entry]}))
    (row,) = validate(path)
    assert row.predicted > 0 and any(a.startswith("offline benchmark: 1000000 requests") for a in row.assumptions)
    path.write_text(yaml.safe_dump({"schema_version": 1, "deployments": [
        entry | {"workload": entry["workload"] | {"requests": 1_000_001}}]}))
    with pytest.raises(InputError) as e:
        validate(path)
    assert "workload.requests" in str(e.value) and "\n" not in str(e.value)


def test_bad_speculation_is_refused(tmp_path):
    entry = next(d for d in yaml.safe_load(DEFAULT_DEPLOYMENTS.read_text())["deployments"] if d["phase"] == "decode")
    entry = dict(entry, workload=dict(entry["workload"], speculative={"draft_tokens": 0, "acceptance": 0.6}))
    bad = tmp_path / "d.yaml"
    bad.write_text(yaml.safe_dump({"schema_version": 1, "deployments": [entry]}))
    with pytest.raises(InputError, match="speculative"):
        validate(bad)


def test_assumptions_are_stated(rows):
    by_id = {r.id: r for r in rows}
    assert any("SGLang's default --max-prefill-tokens" in a for a in by_id["sglang-h100-prefill-1k"].assumptions)
    assert any("largest" in a for a in by_id["sglang-gb200-decode"].assumptions)


def test_shared_published_file_reads_the_same(shared_data, rows):
    """The catalog restates every entry of the shared published file, in its order, and adds runs of its own with
    their sources (TensorRT-LLM's two B200 max-throughput runs from the blog the H200 run comes from)."""
    shared = validate(shared_data / "published" / "deployments.yaml")
    assert [r.id for r in shared] == [r.id for r in rows if r.id in {s.id for s in shared}]
    assert {r.id for r in rows} - {r.id for r in shared} == {"trtllm-b200-max-throughput-fp8-kv",
                                                             "trtllm-b200-max-throughput-fp16-kv"}


def test_unknown_routing_is_refused(tmp_path):
    entry = dict(yaml.safe_load(DEFAULT_DEPLOYMENTS.read_text())["deployments"][0], routing="skewed")
    bad = tmp_path / "d.yaml"
    bad.write_text(yaml.safe_dump({"schema_version": 1, "deployments": [entry]}))
    with pytest.raises(InputError, match="routing"):
        validate(bad)


def test_bad_deployments_file(tmp_path):
    bad = tmp_path / "d.yaml"
    bad.write_text("deployments: 3\n")
    with pytest.raises(InputError, match="deployments: missing or not a list"):
        validate(bad)


def test_json_contract(rows):
    for r in rows:
        j = json.loads(json.dumps(r.to_json()))
        assert {"id", "metric", "predicted", "published", "error", "assumptions", "not_modelled", "source"} <= set(j)
        assert j["id"] == r.id and j["published"] == r.published and j["predicted"] == r.predicted
        assert (j["error"] is None) == (r.predicted is None) and (j["not_modelled"] is None) == (r.predicted is not None)


@pytest.mark.parametrize("change, field", [
    ({"workload": {"input_tokens": "many"}}, "workload.input_tokens"),
    ({"metric": {"name": "output_tokens_per_s_per_device"}}, "metric.value"),
    ({"layout": {"attention": "dp8", "redundant": 32}}, "layout.redundant"),
    ({"devices": -4}, "devices"),
])
def test_a_malformed_entry_is_one_error_naming_its_field(tmp_path, change, field):
    entry = yaml.safe_load(DEFAULT_DEPLOYMENTS.read_text())["deployments"][0] | change
    bad = tmp_path / "d.yaml"
    bad.write_text(yaml.safe_dump({"schema_version": 1, "deployments": [entry]}))
    with pytest.raises(InputError) as e:
        validate(bad)
    assert e.value.field == f"{bad}: {entry['id']}: {field}" and "\n" not in str(e.value)


@pytest.mark.parametrize("change, field", [
    ({"devices": 16384}, "layout.experts"),  # ep32 on 16,384 devices (numpy's "maximum dimension" once)
    ({"devices": 10**30}, "devices"),
    ({"layout": {"attention": "dp7", "experts": "ep32"}}, "layout.attention"),
])
def test_a_layout_the_step_model_cannot_price_is_one_line(tmp_path, change, field):
    # a malformed entry fails the file (one line); one the step model cannot price is a row with its reason, and the
    # other rows still run (issue 17: one bad row never aborts the run)
    entries = yaml.safe_load(DEFAULT_DEPLOYMENTS.read_text())["deployments"]
    entry = entries[0] | change
    bad = tmp_path / "d.yaml"
    bad.write_text(yaml.safe_dump({"schema_version": 1, "deployments": [entry, entries[1]]}))
    try:
        rows = validate(bad)
    except InputError as e:
        assert e.field.endswith(f"{entry['id']}: {field}") and "\n" not in str(e)
        return
    assert rows[0].predicted is None and f"{entry['id']}.{field}" in rows[0].reason and "\n" not in rows[0].reason
    assert rows[1].predicted is not None


def test_what_an_entry_leaves_out_its_source_fills_in(shared_data, tmp_path):
    """catalogs/published/amendments.yaml: TensorRT-LLM's perf overview ran its Qwen3-235B Hopper rows on the FP8
    checkpoint, which those entries do not state (priced as the catalog's bf16 checkpoint they missed by -84..-90%),
    its Qwen3 runs kept their ModelOpt checkpoints' FP8 KV cache (and the NVFP4 ones their NVFP4 attention), and every
    run of it was an offline trtllm-bench run of a stated number of requests."""
    path = shared_data / "published" / "deployments-trtllm-perf-overview.yaml"
    by_id = {r.id: r for r in validate(path)}
    for name in ("h200-1024-1024", "h200-8192-1024", "h100-1024-1024"):
        row = by_id[f"trtllm-perf-overview-qwen3-235b-{name}"]
        assert row.assumptions[0].startswith("not stated in the entry: precision routed_experts fp8_tensor")
        assert "perf-overview.md" in row.assumptions[0] and abs(row.error) < 0.5
    for rid, row in by_id.items():  # the ModelOpt checkpoints' FP8 KV cache: the Qwen3 rows' (GPT-OSS's its options')
        filled, blackwell = row.assumptions[0].split(", as its source states")[0], "-h" not in rid
        assert ("kv_cache fp8" in filled) == ("qwen3" in rid or ("gpt-oss" in rid and blackwell)), rid
        assert ("attention nvfp4" in filled) == ("qwen3" in rid and blackwell), rid
        assert ("kv_cache_quant_algo FP8" in row.assumptions[0]) == ("qwen3" in rid), rid
    requests = {"1024-1024": 3000, "8192-1024": 1500, "1024-8192": 1500}
    for row in by_id.values():
        n = requests[row.id.rsplit("-", 2)[1] + "-" + row.id.rsplit("-", 1)[1]]
        assert f"requests {n}; cuda_graph_batch_sizes [1, 2, 4" in row.assumptions[0]
        assert "as its source states" in row.assumptions[0]
        assert any(a.startswith("a step that only decodes runs as the CUDA graph") for a in row.assumptions)
        assert any(a.startswith(f"offline benchmark: {n} requests queued at the start") for a in row.assumptions)
        assert any(a.startswith("max batch and tokens per step not stated") and "trtllm-bench" in a for a in row.assumptions)
    entry = next(d for d in yaml.safe_load(path.read_text())["deployments"] if d["id"].endswith("qwen3-235b-h200-1024-1024"))
    own = tmp_path / "own.yaml"  # an entry that states its precision, requests and graphs keeps them, part by part
    every_part = dict.fromkeys(("routed_experts", "shared_experts", "dense_mlp", "attention", "kv_cache"), "bf16")
    partly = {"routed_experts": "bf16"}
    own.write_text(yaml.safe_dump({"schema_version": 1, "deployments": [
        entry | {"id": entry["id"], "precision": p,
                 "workload": entry["workload"] | {"requests": 100, "cuda_graph_batch_sizes": [8, 16, 8192]}}
        for p in (every_part, partly)]}))
    row, partial = validate(own)
    assert not any(a.startswith("not stated in the entry") for a in row.assumptions)
    assert any(a.startswith("offline benchmark: 100 requests") for a in row.assumptions)
    assert any("(8, 16, 384 per attention rank)" in a for a in row.assumptions)  # the largest: the max batch
    assert partial.assumptions[0].startswith("not stated in the entry: precision shared_experts fp8_tensor, dense_mlp "
                                             "fp8_tensor, attention fp8_tensor, kv_cache fp8, as its source states")
    unamended = tmp_path / "unamended.yaml"  # the same run, read as a steady state rather than its whole run
    unamended.write_text(yaml.safe_dump({"schema_version": 1, "deployments": [entry | {"id": "not-in-amendments"}]}))
    (steady,) = validate(unamended)
    assert not any(a.startswith("offline benchmark") for a in steady.assumptions) and steady.error != row.error




def test_the_perf_overviews_rest_restates_runs_the_shared_file_leaves_out(shared_data):
    """catalogs/published/deployments-trtllm-perf-overview-rest.yaml: the same doc's runs the shared file leaves out
    (its models, GPUs and layouts at the other sequence lengths, and Llama 4 Maverick), each stating what the
    amendments fill in for the shared file's (requests, CUDA graphs, formats), so no amendment touches them; every one
    is modelled."""
    from hwmodels import catalog

    path = DEFAULT_DEPLOYMENTS.parent / "deployments-trtllm-perf-overview-rest.yaml"
    shared = {(e.model, e.hardware, e.devices, e.workload.input_tokens, e.workload.output_tokens): e
              for e in load_entries(shared_data / "published" / "deployments-trtllm-perf-overview.yaml")}
    entries = load_entries(path)
    assert len({e.id for e in entries}) == len(entries) == 47
    assert not {e.id for e in entries} & set(catalog.published_amendments())
    layouts = {(m, h, n): (s.layout, s.engine) for (m, h, n, _, _), s in shared.items()}
    for e in entries:
        key = (e.model, e.hardware, e.devices)
        assert key + (e.workload.input_tokens, e.workload.output_tokens) not in shared, e.id
        assert layouts.get(key, (e.layout, e.engine)) == (e.layout, e.engine), e.id  # the doc's column, as shared states it
        assert e.engine.name == "trtllm" and e.layout.attention == f"dp{e.devices}" == e.layout.experts.replace("ep", "dp")
        assert e.workload.requests and e.workload.cuda_graph_batch_sizes and "perf-overview.md" in e.source
        hopper_gpt_oss = e.model == "gpt-oss-120b" and e.hardware.startswith("h")  # "Hopper: use auto", a bf16 KV
        assert (e.precision or {}).get("kv_cache") == (None if hopper_gpt_oss else "fp8"), e.id
    assert {e.model for e in entries} - {m for m, *_ in shared} == {"llama-4-maverick"}
    rows = validate(path)
    assert all(r.predicted is not None for r in rows)
    assert not any(a.startswith("not stated in the entry") for r in rows for a in r.assumptions)


def test_tensorrt_llm_runs_hold_gpt_oss_sliding_layers_at_full_length(shared_data):
    """TensorRT-LLM's KV pool keeps every layer at one window, the longest (catalogs/engine_kv.yaml): its perf
    overview's gpt-oss rows say so and hold fewer sequences than the windows alone would; no other model's row does."""
    from dataclasses import replace

    from hwmodels.calibrate.deployments import build_scenario, load_entries
    from hwmodels.serving import largest_batch_that_fits

    path = shared_data / "published" / "deployments-trtllm-perf-overview.yaml"
    for row in validate(path):
        said = any("holds each sliding-window layer at 100% of the context" in a for a in row.assumptions)
        assert said == ("gpt-oss" in row.id), row.id
    entry = next(e for e in load_entries(path) if e.id == "trtllm-perf-overview-gpt-oss-120b-h200-1024-1024")
    ctx = build_scenario(entry, entry.engine).context
    assert ctx.sliding_kv_share == 1.0
    held = {s: largest_batch_that_fits(replace(ctx, sliding_kv_share=s), 2048, 0.9, 2048) for s in (1.0, 0.0)}
    assert held[1.0] < held[0.0]
