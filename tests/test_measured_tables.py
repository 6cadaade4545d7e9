"""The measured kernel tables (aiconfigurator-core, moeplan[measured]) behind the operator-cost interface, and the
measured-deployments validation (../shared/data/measured/aic-silicon-moe.csv, NVIDIA's silicon sample; SOURCES.md).
Skipped where the package is absent, except under CI=true, which installs the extra and must run them."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hwmodels.calibrate import measured_tables
from hwmodels.calibrate.measured_grid import Grid

MEASURED_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "measured" / "aic-silicon-moe.csv"
needs_package = pytest.mark.skipif(measured_tables.database_root() is None and os.environ.get("CI") != "true",
                                   reason="aiconfigurator-core is not installed (pip install 'moeplan[measured]')")
needs_csv = pytest.mark.skipif(not MEASURED_CSV.is_file() and os.environ.get("CI") != "true",
                               reason=f"{MEASURED_CSV} is absent (the shared data checkout)")


def test_grid_interpolates_log_log_and_extrapolates_tokens_linearly():
    rows = pd.DataFrame({"m": [1, 1, 100, 100], "n": [10, 100, 10, 100], "latency": [1.0, 2.0, 4.0, 8.0]})
    grid = Grid.from_frame(rows, ("m", "n"), "m")
    assert grid.lookup((1, 10)) == (pytest.approx(1.0), 1.0)
    assert grid.lookup((10, 10))[0] == pytest.approx(2.0)  # halfway in log m: the geometric mean
    assert grid.lookup((400, 100)) == (pytest.approx(32.0), 4.0)  # rule 2: linear past the largest m
    assert grid.lookup((0.5, 10)) == (pytest.approx(1.0), 2.0)  # the launch floor below the smallest
    assert grid.lookup((10, 1000)) == (None, 10.0)  # another axis outside: not covered


def test_a_slice_measured_to_fewer_tokens_extrapolates_linearly_past_its_own_largest():
    """NVIDIA's attention tables stop at about 2^18 batch x KV tokens: many sequences only at short contexts. Past a
    slice's largest measured batch, its time grows linearly in the batch, as past the table's (rule 2)."""
    rows = pd.DataFrame({"batch": [1, 100, 1000, 1, 100], "step": [10, 10, 10, 1000, 1000],
                         "latency": [1.0, 2.0, 20.0, 3.0, 30.0]})
    grid = Grid.from_frame(rows, ("batch", "step"), "batch")
    assert grid.lookup((100, 1000)) == (pytest.approx(30.0), 1.0)  # measured
    assert grid.lookup((1000, 1000)) == (pytest.approx(300.0), 10.0)  # 10x the slice's largest batch
    assert grid.lookup((1000, 100))[0] == pytest.approx(math.sqrt(20.0 * 300.0))  # log-log between the two slices
    assert grid.lookup((1000, 100))[1] == 10.0
    holed = Grid.from_frame(rows[rows.batch != 100], ("batch", "step"), "batch")
    assert holed.lookup((100, 10)) == (pytest.approx(20.0 ** (2 / 3)), 1.0)  # inside a slice: interpolated as before
    assert holed.lookup((100, 1000))[0] == pytest.approx(300.0)  # past the slice's largest (1): linear from it
    empty = Grid.from_frame(pd.DataFrame({"batch": [1, 10], "step": [10, 10], "latency": [1.0, 2.0]})
                            .assign(k=[1, 2]), ("batch", "k"), "batch")
    assert empty.lookup((10, 1))[0] == pytest.approx(10.0) and empty.lookup((1, 2))[0] is None  # nothing to fill from


def test_a_balanced_moe_table_time_is_priced_for_randomly_routed_pairs():
    """The package's `balanced` MoE rows read min(experts, pairs) experts; pairs routed at random leave
    exp(-pairs / experts) of them idle, and the table's own time for those experts comes off (its time at the tokens
    whose balanced pairs read as many, less at the tokens whose pairs read as many as random routing does)."""
    import math
    from hwmodels.calibrate.measured_costs import Measured
    from hwmodels.calibrate.operator_costs import _randomly_routed

    experts = 256

    def table_s(pairs):  # a weight-streaming kernel: 10 us + 1 us per expert read, balanced
        return 10e-6 + 1e-6 * min(experts, pairs)

    read_s = 0.9e-6  # one expert's weights at the HBM peak: the table reads slower, so it did read them all
    at = Measured(table_s(256), "measured")
    random_read = experts * -math.expm1(-1.0)  # 256 pairs on 256 experts: 162 read
    priced = _randomly_routed(at, table_s, 256, experts, read_s)
    assert priced.latency_s == pytest.approx(10e-6 + 1e-6 * random_read)
    assert "random routing" in priced.label
    prefill = Measured(table_s(65536), "measured")  # 65,536 pairs: both read every expert
    assert _randomly_routed(prefill, table_s, 65536, experts, read_s).latency_s == pytest.approx(prefill.latency_s)
    one = Measured(table_s(8), "measured")  # 8 pairs on 256 experts: both read about 8
    assert _randomly_routed(one, table_s, 8, experts, read_s).latency_s == pytest.approx(one.latency_s, rel=0.01)
    # a table faster than reading every expert at the HBM peak did not read them all: kept as measured
    assert _randomly_routed(at, table_s, 256, experts, 2e-6).latency_s == at.latency_s


@needs_package
def test_the_measured_moe_experts_of_a_decode_step_are_priced_for_random_routing():
    """DeepSeek-V3's experts on one B200 of a TP8 group at 32 tokens (256 pairs on 256 experts): TensorRT-LLM's fp8
    table (DeepGEMM, 421 us, above the 183 us of reading every expert) comes down for the experts random routing leaves
    idle; SGLang's (136 us, below it: its kernel did not read them all) is not corrected; in prefill (8192 tokens)
    both are the tables' times."""
    from hwmodels import catalog
    from hwmodels.calibrate.operator_costs import costs_for

    device = catalog.load_device("b200-sxm")
    for engine, corrected in (("trtllm", True), ("sglang", False)):
        costs = costs_for("b200-sxm", engine)
        for tokens in (32, 8192):
            table = costs.measured.moe(tokens, 7168, 2048, 8, 256, 8, 1, "fp8").latency_s
            priced = costs.moe_experts(device, tokens, 7168, 2048, 8, 256, 8, 1, "fp8", 1.0)
            assert table is not None and priced is not None
            if corrected and tokens == 32:
                assert priced.total_s < 0.8 * table and "random routing" in priced.source
            else:
                assert "random routing" not in priced.source and priced.total_s >= table


def test_nearest_version():
    assert measured_tables.nearest_version(["0.5.10", "0.5.14"], "0.5.12") == "0.5.10"
    assert measured_tables.nearest_version(["1.3.0rc20"], "1.2.0rc6.post2") == "1.3.0rc20"
    assert measured_tables.nearest_version(["0.5.10", "0.5.14"], None) == "0.5.14"


def test_a_query_starts_at_the_queryable_version_nearest_the_asked_one_and_fills_backward():
    """The package's rule (systems/query_versions.yaml): older folders are backward-fill sources, never the answer
    while a queryable version holds the table; a newer folder is the last resort."""
    measured = ["0.19.0", "0.22.0", "0.24.0", "0.26.0"]
    assert measured_tables.versions_to_try(measured, "0.16.0", "0.24.0", ("0.24.0",)) == [
        "0.24.0", "0.22.0", "0.19.0", "0.26.0"]
    assert measured_tables.versions_to_try(measured, None, "0.24.0", ("0.24.0", "0.26.0"))[0] == "0.24.0"
    assert measured_tables.versions_to_try(measured, "0.26.0", "0.24.0", ("0.24.0", "0.26.0"))[:2] == ["0.26.0", "0.24.0"]
    # a table the current version lacks: the newest older folder that has it
    assert measured_tables.versions_to_try(["0.19.0"], "0.24.0", "0.24.0", ("0.24.0",)) == ["0.19.0"]
    # without the slots file every folder is queryable: the nearest measured one first
    assert measured_tables.versions_to_try(measured, "0.20.0", None, ())[0] == "0.19.0"


@needs_package
def test_the_package_declares_its_queryable_versions():
    current, queryable = measured_tables.queryable_versions("h200_sxm", "vllm")
    assert current in queryable and current in measured_tables.table_versions("h200_sxm", "vllm", "moe_perf")
    assert measured_tables.queryable_versions("a100_sxm", "vllm")[0] != current  # a system with its own slots
    assert measured_tables.query_version("h200_sxm", "vllm", None) == current
    assert measured_tables.query_version("h200_sxm", "vllm", "0.16.0") == current  # older than every slot


@needs_package
def test_the_plan_says_which_version_priced_it_when_another_was_asked():
    from hwmodels.calibrate.operator_costs import describe_costs
    from moeplan import api, example_path

    current = measured_tables.queryable_versions("h200_sxm", "vllm")[0]
    said = describe_costs(api.deployment(example_path(), backend="vllm@0.16.0"))
    assert f"{current}, the queryable version nearest 0.16.0" in said
    assert "l40s" in describe_costs(api.deployment(example_path(), backend="fitted"))  # every device measured


@needs_package
def test_measured_costs_are_labelled_and_never_below_the_roofline():
    from hwmodels.catalog import load_model, load_unit
    from hwmodels.calibrate.operator_costs import costs_for
    from hwmodels.hardware import make_cluster
    from hwmodels.layout import Layout
    from hwmodels.precision import default_plan
    from hwmodels.step import StepContext
    arch = load_model("deepseek-v3")
    plan = default_plan(arch.quantization_config, arch.torch_dtype)
    costs = costs_for("h200-sxm", "sglang", "0.5.14")
    ctx = StepContext(arch, plan, make_cluster(load_unit("hgx-h200"), units=1), Layout(tp=8, dp=1), costs=costs)
    for phase, tokens in (("decode", 8), ("prefill", 1024)):
        step = ctx.step(phase, tokens, 2048)
        labels = {name: source for name, source, _ in step.operator_sources}
        assert labels["routed_experts"].startswith("measured: h200_sxm sglang 0.5.14 moe_perf fp8_block")
        assert labels["q_b_proj"].startswith("measured: h200_sxm sglang")
        assert all(beyond >= 1.0 for _, _, beyond in step.operator_sources)
    for m in (1, 64, 4096, 65536):  # the last is past the table: extrapolated, labelled
        cost = costs.gemm(ctx.cluster.device, m, 7168, 2048, "fp8", quant="fp8", name="g")
        assert cost.total_s >= cost.roofline_s and cost.source.startswith("measured")
        assert (cost.beyond_coverage > 1.0) == (m > 32768)


@needs_package
def test_grouped_query_attention_takes_the_engines_measured_attention_tables():
    """gpt-oss-120b on one H200 under TensorRT-LLM: decode attention from generation_attention_perf at its 64 query and
    8 KV heads of 64 (a sliding layer asked at its 128-key window), prefill attention of its full layers from
    context_attention_perf; without an engine the GQA decode model fitted to such tables (catalogs/fits/gqa-decode.yaml)."""
    from hwmodels.catalog import load_model, load_unit
    from hwmodels.calibrate.measured_costs import MeasuredSource
    from hwmodels.calibrate.operator_costs import costs_for
    from hwmodels.hardware import make_cluster
    from hwmodels.layout import Layout
    from hwmodels.precision import default_plan
    from hwmodels.step import StepContext

    arch = load_model("gpt-oss-120b")
    plan = default_plan(arch.quantization_config, arch.torch_dtype)
    cluster = make_cluster(load_unit("hgx-h200"), units=1)
    measured = StepContext(arch, plan, cluster, Layout(tp=1, dp=8), costs=costs_for("h200-sxm", "trtllm"))
    fitted = StepContext(arch, plan, cluster, Layout(tp=1, dp=8))
    decode = {name: source for name, source, _ in measured.step("decode", 64, 2048).operator_sources}
    assert decode["gqa_decode_kv_read"].startswith("measured: h200_sxm trtllm") and "generation_attention_perf" in decode["gqa_decode_kv_read"]
    assert {n: s for n, s, _ in fitted.step("decode", 64, 2048).operator_sources}["gqa_decode_kv_read"].startswith("GQA decode fit")
    prefill = measured.step("prefill", 4096, 4096)
    assert any("context_attention_perf" in source for _, source, _ in prefill.operator_sources)
    # the table's time at a window of keys is its time over that many keys: a sliding layer reads no more
    source = MeasuredSource("h200_sxm", "trtllm")
    short, long = source.gqa_decode(64, 127, 64, 8, 64, "bf16"), source.gqa_decode(64, 4095, 64, 8, 64, "bf16")
    assert short.latency_s < long.latency_s
    assert measured.step("decode", 64, 2048).time_s != fitted.step("decode", 64, 2048).time_s


@needs_package
def test_an_all_reduce_takes_the_queryable_version_that_measured_its_gpu_count():
    """GB300's TensorRT-LLM tables measure 8 and 16 GPUs (over the NVL72's 4-GPU trays) only from 1.3.0rc20 on, the
    package's current version; a run of an earlier version takes that measurement, not the ring model, and no GPU
    count is invented; a count a system never measured comes from its NVLink twin where their tables agree."""
    from hwmodels.calibrate.measured_costs import MeasuredSource
    from hwmodels.calibrate.operator_costs import costs_for
    from hwmodels.catalog import load_unit
    from hwmodels.hardware import instance_cluster

    older = MeasuredSource("gb300", "trtllm", "1.3.0rc10")
    eight = older.allreduce(8, 7168)
    assert eight.latency_s is not None and "gb300 trtllm 1.3.0rc20 custom_allreduce_perf" in eight.label
    assert "1.3.0rc20" in older.allreduce(4, 7168).label  # rc10 is a backfill folder, not a queryable version
    assert older.allreduce(32, 7168).latency_s is None  # no version measured 32
    tray = load_unit("gb300-nvl72")
    assert tray.devices_per_node == 4
    cost = costs_for("gb300", "trtllm", "1.3.0rc10").allreduce(instance_cluster(tray, 8), 8, 7168 * 2)
    assert cost.source.startswith("measured: gb300 trtllm 1.3.0rc20") and cost.time_s < 10e-6
    # GB200's tables stop at 4 GPUs (one tray): 8 are read from its NVLink twin's, GB300's, over the same two trays,
    # each engine its own (TensorRT-LLM's all-reduce across trays as fast as on one, SGLang's several times slower)
    nvl72 = instance_cluster(load_unit("gb200-nvl72"), 8)
    gb200 = {engine: costs_for("gb200", engine).allreduce(nvl72, 8, 7168 * 2) for engine in ("trtllm", "sglang")}
    for engine, cost in gb200.items():
        assert cost.time_s == MeasuredSource("gb300", engine).allreduce(8, 7168).latency_s
        assert cost.source.startswith(f"measured: gb300 {engine}") and "for gb200 (its NVLink twin" in cost.source
    assert gb200["sglang"].time_s > 3 * gb200["trtllm"].time_s
    assert costs_for("gb200", "trtllm").allreduce(nvl72, 4, 7168 * 2).source.startswith("measured: gb200 trtllm")
    # vLLM's GB200 and GB300 tables disagree where both measured (2 and 4 GPUs): no twin, the fitted model prices 8
    vllm = costs_for("gb200", "vllm").allreduce(nvl72, 8, 7168 * 2)
    assert vllm.source.startswith("ring alpha-beta") and "outside measured: gb200 vllm" in vllm.source


@needs_package
def test_mxfp4_experts_an_engine_measured_only_weight_only_take_that_kernel():
    """vLLM's B200 tables hold gpt-oss's MXFP4 experts as w4a16_mxfp4 alone: where the format's own kernel class
    (MXFP8 activations) is missing, the engine's measured weight-only kernel answers, labelled, not the fitted model;
    an engine that measured both keeps its own."""
    from hwmodels.calibrate.measured_costs import MeasuredSource
    shape = (64, 2880, 2880, 4, 128, 1, 1)
    vllm = MeasuredSource("b200_sxm", "vllm").moe(*shape, "mxfp4")
    assert vllm.latency_s == MeasuredSource("b200_sxm", "vllm").moe(*shape, "mxfp4_w4a16").latency_s is not None
    assert "moe_perf w4a16_mxfp4" in vllm.label
    sglang = MeasuredSource("b200_sxm", "sglang").moe(*shape, "mxfp4")
    assert "moe_perf w4a8_mxfp4_mxfp8" in sglang.label
    assert MeasuredSource("b200_sxm", "vllm").moe(64, 2880, 2880, 4, 128, 1, 3, "mxfp4").latency_s is None  # no EP3


@needs_package
def test_moe_tensor_parallelism_a_table_never_measured_takes_the_ep_table_of_as_many_devices():
    """The engines measured gpt-oss's experts under expert parallelism only: MoE TP 4 x EP 1 (TensorRT-LLM's --tp 4
    --ep 1) is priced by the EP 4 table (the same weight bytes and flops per device), labelled so, not the fitted
    model; a shape the tables measured under MoE TP keeps its own rows."""
    from hwmodels.calibrate.measured_costs import MeasuredSource
    h200 = MeasuredSource("h200_sxm", "trtllm")
    tp4 = h200.moe(16, 2880, 2880, 4, 128, 4, 1, "mxfp4_w4a16")
    ep4 = h200.moe(16, 2880, 2880, 4, 128, 1, 4, "mxfp4_w4a16")
    assert tp4.latency_s == ep4.latency_s is not None
    assert "at EP 4 standing in for MoE TP 4 x EP 1" in tp4.label
    assert h200.moe(16, 2880, 2880, 4, 128, 2, 2, "mxfp4_w4a16").latency_s == ep4.latency_s
    assert h200.moe(16, 2880, 2880, 4, 128, 3, 1, "mxfp4_w4a16").latency_s is None  # no EP 3 either
    deepseek = h200.moe(256, 7168, 2048, 8, 256, 4, 1, "fp8")  # DeepSeek's shape: measured at MoE TP 4 itself
    assert deepseek.latency_s is not None and "standing in" not in deepseek.label


@needs_package
def test_fp4_experts_on_hopper_run_weight_only_and_take_the_measured_w4a16_kernel():
    # gpt-oss's MXFP4 experts: Hopper has no fp4 math, so every engine dequantises them to bf16 in the kernel
    from hwmodels.catalog import load_device, load_model, load_unit
    from hwmodels.calibrate.operator_costs import costs_for, fitted_costs
    from hwmodels.hardware import make_cluster
    from hwmodels.layout import Layout
    from hwmodels.precision import SCHEMES, default_plan
    from hwmodels.step import StepContext
    from hwmodels.step_ops import served
    assert served(SCHEMES["mxfp4"], load_device("h200-sxm")).compute == "bf16"
    assert served(SCHEMES["nvfp4"], load_device("h100-sxm")).name == "nvfp4_w4a16"
    assert served(SCHEMES["nvfp4"], load_device("b200-sxm")) is SCHEMES["nvfp4"]  # fp4 math: as stored
    assert served(SCHEMES["fp8"], load_device("h200-sxm")) is SCHEMES["fp8"]
    arch = load_model("gpt-oss-120b")
    plan = default_plan(arch.quantization_config, arch.torch_dtype)
    cluster = make_cluster(load_unit("hgx-h200"), units=1)
    measured = StepContext(arch, plan, cluster, Layout(tp=1, dp=1), costs=costs_for("h200-sxm", "trtllm", "1.3.0rc20"))
    labels = {name: source for name, source, _ in measured.step("decode", 8, 2048).operator_sources}
    assert "moe_perf w4a16_mxfp4" in labels["routed_experts"]
    # the fitted model prices the weight-only experts at the bf16 peak: slower than at the fp8 one it used to take
    fitted = StepContext(arch, plan, cluster, Layout(tp=1, dp=1), costs=fitted_costs())
    step = fitted.step("prefill", 8192, 8192)
    labels = {name: source for name, source, _ in step.operator_sources}
    assert "ran at its fp8 peak" not in labels["experts_gate_up"]


def test_without_an_engine_the_fitted_costs_are_used():
    from hwmodels.calibrate.operator_costs import costs_for, fitted_costs
    assert costs_for("h200-sxm", None) is fitted_costs()
    assert costs_for("ascend-910c", "sglang").measured is None  # a device NVIDIA did not measure


@needs_package
@needs_csv
def test_validate_measured_json_has_a_row_per_line_and_reasons():
    """moeplan validate --measured FILE --json: one object per row, each either predicted or with its reason; the
    catalog holds every model of aic-silicon-moe.csv (DeepSeek-V3, Kimi-K2.5, gpt-oss-120b, MiniMax-M2.5,
    Qwen3.5-397B-A17B), so at least 95% of its rows are modelled (issue 20's bar)."""
    out = subprocess.run([sys.executable, "-m", "moeplan.cli", "validate", "--measured", str(MEASURED_CSV), "--json"],
                         capture_output=True, text=True, timeout=600, cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert len(rows) == len(pd.read_csv(MEASURED_CSV))
    for r in rows:
        assert set(r) == {"id", "predicted_ttft_ms", "predicted_tpot_ms", "reason"}
        assert (r["reason"] is None) == (r["predicted_tpot_ms"] is not None)
    assert not any("is not in the catalog" in (r["reason"] or "") for r in rows)
    assert sum(r["predicted_tpot_ms"] is not None for r in rows) >= 0.95 * len(rows)


@needs_package
@needs_csv
def test_the_2026_models_measured_rows_are_predicted_within_the_peers_range():
    """TPOT of gpt-oss-120b, MiniMax-M2.5 and Qwen3.5-397B-A17B on NVIDIA's measured rows: moeplan's median |error|
    stays under 40% per model (it was 18-27% when these models joined the catalog; AIConfigurator 0.12's own
    median on the rows it estimated is 11-15%), so a pricing regression in their attention kinds shows here."""
    from hwmodels.calibrate.measured_deployments import predict_file, summarize
    rows = [r for r in predict_file(MEASURED_CSV)
            if r.model in ("openai/gpt-oss-120b", "MiniMaxAI/MiniMax-M2.5", "Qwen/Qwen3.5-397B-A17B")]
    for group in summarize(rows, "model"):
        assert group["coverage"] == 1.0, group["group"]
        assert group["moeplan_tpot_median"] < 0.40, (group["group"], group["moeplan_tpot_median"])


@needs_csv
def test_a_bad_row_becomes_a_reason(tmp_path):
    from hwmodels.calibrate.measured_deployments import predict_file
    header = pd.read_csv(MEASURED_CSV, nrows=0).columns
    good = pd.read_csv(MEASURED_CSV, dtype=str).fillna("")
    good = good[good.model == "deepseek-ai/DeepSeek-V3"].head(1)
    bad = good.copy()
    bad["isl"] = "x"
    path = tmp_path / "rows.csv"
    pd.concat([bad, good])[list(header)].to_csv(path, index=False)
    rows = predict_file(path)
    assert rows[0].predicted_tpot_s is None and "isl" in rows[0].reason
    if measured_tables.database_root() is not None:
        assert rows[1].predicted_tpot_s is not None and np.isfinite(rows[1].predicted_ttft_s)


def test_a_row_of_the_packages_own_silicon_sample_reads_in_the_files_columns():
    """aiconfigurator-core's systems/silicon_sample.csv names the model `model_path` and puts the concurrency in the
    id and in silicon_data_source; a bf16 row may leave its quant modes empty."""
    from hwmodels.calibrate.measured_deployments import _in_file_columns
    row = _in_file_columns({"id": "kimik2_5_gb200_trtllm_fp4_disagg_1024x1024_c668_cfg759", "model_path": "a/b",
                            "silicon_data_source": "db-dump; silicon_concurrency=7", "precision": "bf16",
                            "gemm_quant_mode": "", "moe_quant_mode": ""})
    assert (row["model"], row["concurrency"]) == ("a/b", "668")
    assert row["gemm_quant_mode"] == row["moe_quant_mode"] == "bfloat16"
    no_id = _in_file_columns({"id": "x", "model_path": "a/b", "silicon_data_source": "silicon_concurrency=7"})
    assert no_id["concurrency"] == "7"
    assert _in_file_columns({"id": "x", "model": "m", "concurrency": "3"}) == {"id": "x", "model": "m", "concurrency": "3"}


def test_a_package_row_labelled_with_products_of_its_layout_is_rebuilt_from_its_id():
    """Some aggregated rows of the package label tp/adp/moe_tp/moe_ep as products of the real sizes (tp64/moe_tp8/
    moe_ep8 for an 8-GPU tp8 ep8 run); ../shared/data/SOURCES.md corrected the measured file's rows so, and a package
    row read in place is rebuilt from the `_tp<T>_ep<E>_` its id names: 64/1/8/8 -> 8/1/1/8, 1/64/8/8 -> 1/8/1/8,
    4/4/1/16 -> 4/1/1/4 (the file's corrections of the same rows). A label that counts T devices is kept."""
    from hwmodels.calibrate.measured_deployments import _in_file_columns

    def layout(row_id, *sizes, mode="agg"):
        row = _in_file_columns({"id": row_id, "model_path": "a/b", "mode": mode, **dict(zip(
            ("tp_size", "attention_dp_size", "moe_tp_size", "moe_ep_size"), map(str, sizes)))})
        return tuple(int(row[k]) for k in ("tp_size", "attention_dp_size", "moe_tp_size", "moe_ep_size"))

    assert layout("ds_b200_sglang_agg_1024x1024_c4_tp8_ep8_12", 64, 1, 8, 8) == (8, 1, 1, 8)
    assert layout("ds_b200_trtllm_agg_1024x1024_c4_tp8_ep8_12", 1, 64, 8, 8) == (1, 8, 1, 8)
    assert layout("mm_h100_vllm_agg_1024x1024_c4_tp4_ep4_12", 4, 4, 1, 16) == (4, 1, 1, 4)
    assert layout("q_b200_sglang_agg_1024x1024_c4_tp8_ep1_12", 8, 1, 8, 1) == (8, 1, 8, 1)  # consistent: kept
    assert layout("no_layout_in_id_c4_cfg7", 64, 1, 8, 8) == (64, 1, 8, 8)  # nothing to rebuild it from


def test_a_package_row_takes_the_layout_of_its_twin_that_names_one(tmp_path):
    """The package lists some measurements twice, under an id naming the layout (`_tp2_ep2_`) and a `_cfg<N>` one
    with product labels (tp2/adp2/moe_tp1/moe_ep4 for a 2-GPU run); the cfg row takes its twin's layout. A row of
    the measured file's own columns is never touched."""
    from hwmodels.calibrate.measured_deployments import read_rows
    head = ("id,model_path,backend,backend_version,system,mode,isl,osl,silicon_ttft_ms,silicon_tpot_ms,"
            "tp_size,attention_dp_size,moe_tp_size,moe_ep_size\n")
    same = "a/b,vllm,0.19.0,b200_sxm,agg,1024,1024,132.26,18.18"
    path = tmp_path / "sample.csv"
    path.write_text(head + f"m_b200_vllm_agg_1024x1024_c32_cfg690,{same},2,2,1,4\n"
                    f"m_b200_vllm_agg_1024x1024_c32_tp2_ep2_1384,{same},2,2,1,4\n"
                    f"m_b200_vllm_agg_1024x1024_c64_cfg691,a/b,vllm,0.19.0,b200_sxm,agg,1024,1024,150.0,20.0,2,2,1,4\n")
    cfg, named, alone = read_rows(path)
    assert [named[k] for k in LAYOUT] == ["2", "1", "1", "2"]
    assert [cfg[k] for k in LAYOUT] == ["2", "1", "1", "2"]
    assert [alone[k] for k in LAYOUT] == ["2", "2", "1", "4"]  # no twin: nothing to rebuild it from


LAYOUT = ("tp_size", "attention_dp_size", "moe_tp_size", "moe_ep_size")


def test_a_package_row_without_an_attention_dp_size_takes_the_one_its_sizes_leave():
    """tp x attention DP = moe_tp x moe_ep on an aggregated instance: an empty DP size is what the other sizes leave
    (tp4 with moe_ep4: 1; vLLM's tp1 with moe_tp2, DP ranks sharding the MoE by TP: 2). A size that cannot come out
    whole, a stated one, or a disaggregated row is left alone."""
    from hwmodels.calibrate.measured_deployments import _in_file_columns

    def dp(tp, moe_tp, moe_ep, stated="", mode="agg"):
        return _in_file_columns({"id": "q_c4_tp4_epnone_1", "model_path": "a/b", "mode": mode, "tp_size": str(tp),
                                 "attention_dp_size": stated, "moe_tp_size": str(moe_tp), "moe_ep_size": str(moe_ep)}
                                )["attention_dp_size"]

    assert dp(4, 1, 4) == "1"
    assert dp(1, 2, 1) == "2"
    assert dp(4, 1, 2) == ""  # half a rank: the row stays unmodelled, with its reason
    assert dp(4, 1, 4, stated="2") == "2"
    assert dp(4, 1, 4, mode="disagg") == ""


def test_a_row_model_name_fixes_the_architecture_and_its_quant_modes_the_formats():
    """The package's `zhipuai/GLM-5` rows are GLM-5 (zai-org/GLM-5's architecture), in the formats their quant
    modes name; Qwen's own FP8 checkpoint is a catalog model of its own, with its 128x128 fp8 blocks."""
    from hwmodels import catalog
    from hwmodels.calibrate.measured_deployments import _catalog_model, _setup
    assert _catalog_model("zhipuai/GLM-5") == "glm-5"
    assert _catalog_model("Qwen/Qwen3-235B-A22B-FP8") == catalog.model_by_hf_id("qwen/qwen3-235b-a22b-fp8") \
        == "qwen3-235b-a22b-fp8"
    s = _setup({"backend": "sglang", "model": "zhipuai/GLM-5", "system": "b200_sxm", "gemm_quant_mode": "fp8",
                "moe_quant_mode": "fp8_block", "isl": "1024", "osl": "1024", "concurrency": "4"})
    assert (s.model, s.formats["routed_experts"], s.formats["attention"]) == ("glm-5", "fp8", "fp8_tensor")


@needs_package
def test_the_packages_own_silicon_sample_is_validated_row_by_row():
    """Every row of the package's 5,221 measured deployments becomes a prediction or a reason (none aborts the run);
    the rows of catalog models with complete layouts are modelled, and on those the file it never fitted (the
    rows not in aic-silicon-moe.csv) TPOT stays within the error it had when the step overhead was fitted (19.8%
    median), with a margin for model changes."""
    from hwmodels.calibrate.measured_deployments import predict_file, summarize
    path = measured_tables.database_root().parent / "silicon_sample.csv"
    rows = predict_file(path)
    assert len(rows) == len(pd.read_csv(path))
    assert sum(r.predicted_tpot_s is not None for r in rows) >= 2000
    assert all(r.reason for r in rows if r.predicted_tpot_s is None)
    if MEASURED_CSV.is_file():
        fitted = set(pd.read_csv(MEASURED_CSV).id)
        held_out = summarize([r for r in rows if r.id not in fitted])[0]
        assert held_out["modelled"] >= 1500 and held_out["moeplan_tpot_median"] < 0.25


def test_the_loop_prefills_in_the_token_budget_the_benchmark_configured():
    # ai-dynamo/aiconfigurator generator/rule_plugin/benchmark/*.rule: a prefill worker isl + 1500 tokens a step, an
    # aggregated TensorRT-LLM or vLLM worker max_batch_size + isl + 1500 (its decode tokens share the budget), an
    # aggregated SGLang worker isl + 1500 prompt tokens beside its decode batch
    from hwmodels.calibrate.measured_deployments import step_token_budget
    assert step_token_budget("trtllm", True, 1024, 32) == 2556
    assert step_token_budget("vllm", True, 1024, 32) == 2556
    assert step_token_budget("sglang", True, 1024, 32) == 2524
    assert {step_token_budget(e, False, 4096, 8) for e in ("trtllm", "vllm", "sglang")} == {5596}


@needs_package
def test_mxfp4_experts_take_the_native_kernel_where_the_device_has_fp4_math():
    # Blackwell multiplies MXFP4 weights by MXFP8 activations; only Hopper's weight-only path is w4a16
    from hwmodels.catalog import load_device
    from hwmodels.calibrate.operator_costs import costs_for
    device, costs = load_device("b200-sxm"), costs_for("b200-sxm", "trtllm")
    native = costs.moe_experts(device, 64, 2880, 2880, 4, 128, 1, 1, "mxfp4", 0.53)
    weight_only = costs.moe_experts(device, 64, 2880, 2880, 4, 128, 1, 1, "mxfp4_w4a16", 0.53)
    assert "w4a8_mxfp4_mxfp8" in native.source and "w4a16_mxfp4" in weight_only.source


@needs_package
def test_a_linear_attention_layer_is_priced_by_the_engines_measured_kernels():
    """Qwen3.5's gated DeltaNet and Kimi K3's KDA: the convolution and the delta rule each from the engine's table
    (gdn_perf, kda_perf) where it holds the heads per device, else the fitted op, labelled with the miss."""
    from hwmodels.calibrate.measured_costs import MeasuredSource
    from hwmodels.catalog import load_model, load_unit
    from hwmodels.calibrate.operator_costs import costs_for
    from hwmodels.hardware import instance_cluster
    from hwmodels.layout import Layout
    from hwmodels.precision import default_plan
    from hwmodels.roles import Phase
    from hwmodels.step import StepContext

    sglang = MeasuredSource("b200_sxm", "sglang")
    conv, rule = (sglang.delta_rule("gated_deltanet", part, 8, 0, 2, 8, 128, 128) for part in (0, 1))
    assert "gdn_perf" in rule.label and 1e-6 < conv.latency_s < 4e-6 and 3e-6 < rule.latency_s < 7e-6
    assert sglang.delta_rule("gated_deltanet", 1, 64, 0, 2, 8, 128, 128).latency_s > rule.latency_s
    prefill = sglang.delta_rule("gated_deltanet", 1, 1, 4096, 2, 8, 128, 128)
    assert prefill.latency_s > rule.latency_s
    assert sglang.delta_rule("gated_deltanet", 1, 0.5, 4096, 2, 8, 128, 128).latency_s == pytest.approx(prefill.latency_s / 2)
    assert sglang.delta_rule("gated_deltanet", 1, 8, 0, 3, 8, 128, 128).latency_s is None  # heads never measured
    # KDA: of the decode kernels vLLM measured (packed recurrent, fused), the fastest
    vllm = MeasuredSource("b200_sxm", "vllm")
    kda = vllm.delta_rule("kda", 1, 8, 0, 12, 12, 128, 128)
    assert "kda_perf" in kda.label and kda.latency_s == pytest.approx(6.394e-6, rel=0.01)

    cluster = instance_cluster(load_unit("hgx-b200"), 8)
    for model, measured_by, missed_by in (("qwen3.5-397b-a17b", "sglang", "trtllm"), ("kimi-k3", "vllm", "trtllm")):
        arch = load_model(model)
        plan = default_plan(arch.quantization_config, arch.torch_dtype)
        sources = {}
        for engine in (measured_by, missed_by):  # TensorRT-LLM's gdn table holds 16 key heads only (TP1), and no KDA
            ctx = StepContext(arch, plan, cluster, Layout(tp=8, dp=1), costs=costs_for("b200-sxm", engine))
            sources[engine] = dict((n, s) for n, s, _ in ctx.step(Phase.DECODE, 1.0, 2048).operator_sources)
        assert sources[measured_by]["linear_state_update"].startswith("measured:")
        assert "[fitted:" in sources[missed_by]["linear_state_update"]


@needs_package
def test_an_attention_dp_step_prices_its_experts_at_the_tokens_of_the_whole_expert_group():
    """NVIDIA's collectors route a moe_perf row's num_tokens over every expert and time one rank's share, and the
    package's own query scales an attention-DP rank's tokens by the DP size: DeepSeek-V3 decoding 512 sequences on
    each of 8 H200s (attention DP8, EP8) costs every device TensorRT-LLM's table at 4,096 tokens, nearly twice its
    time at 512; attention TP8 at the tokens of its one group (512: 64 per device in moeplan's count) at 512."""
    from hwmodels import catalog
    from hwmodels.calibrate.operator_costs import costs_for
    from hwmodels.hardware import make_cluster
    from hwmodels.layout import Layout
    from hwmodels.precision import default_plan
    from hwmodels.step import StepContext

    arch, device = catalog.load_model("deepseek-v3"), catalog.load_device("h200-sxm")
    costs = costs_for("h200-sxm", "trtllm")
    moe = arch.moe
    table = {n: costs.moe_experts(device, n, arch.hidden_size, moe.expert_intermediate_size, moe.top_k,
                                  moe.num_experts, 1, 8, "fp8", 1.0).total_s for n in (512, 4096)}
    assert table[4096] > 1.5 * table[512]
    for tp, per_device, tokens in ((1, 512, 4096), (8, 64, 512)):
        ctx = StepContext(arch, default_plan(arch.quantization_config, arch.torch_dtype),
                          make_cluster(catalog.load_unit("hgx-h200"), units=1), Layout(tp=tp, dp=8 // tp), costs=costs)
        step = ctx.step("decode", per_device, 2048)
        assert step.breakdown_s["expert_gemm"] == pytest.approx(len(arch.moe_layers) * table[tokens], rel=1e-9)


@needs_package
def test_sglang_experts_behind_deepep_are_priced_by_its_deepep_moe_tables():
    """SGLang measured its DeepEP MoE layer (DeepGEMM's masked grouped GEMM at decode, the contiguous one at prefill)
    apart from its fused MoE kernel: an attention-DP layout's experts, whose tokens arrive by DeepEP, read those
    tables; attention TP (no all-to-all) and TensorRT-LLM read moe_perf. vLLM measured no DeepEP MoE layer: its
    experts behind DeepEP take the fitted DeepGEMM model's grouped GEMMs; Kimi K2's 384 experts, a shape SGLang's
    DeepEP tables lack, too."""
    from hwmodels import catalog
    from hwmodels.calibrate.operator_costs import costs_for
    from hwmodels.hardware import make_cluster
    from hwmodels.layout import Layout
    from hwmodels.precision import default_plan
    from hwmodels.step import StepContext

    cluster = make_cluster(catalog.load_unit("hgx-h200"), units=1)

    def experts_source(engine, tp, phase, tokens, model="deepseek-v3"):
        arch = catalog.load_model(model)
        ctx = StepContext(arch, default_plan(arch.quantization_config, arch.torch_dtype), cluster,
                          Layout(tp=tp, dp=8 // tp), costs=costs_for("h200-sxm", engine))
        step = ctx.step(phase, tokens, 2048)
        sources = {name: source for name, source, _ in step.operator_sources}
        return sources["routed_experts"] if "routed_experts" in sources else "fitted: " + sources["experts_gate_up"]

    assert "sglang" in experts_source("sglang", 1, "decode", 64) and \
        "wideep_generation_moe_perf" in experts_source("sglang", 1, "decode", 64)
    assert "wideep_context_moe_perf" in experts_source("sglang", 1, "prefill", 4096)
    for engine, tp in (("sglang", 8), ("trtllm", 1)):
        source = experts_source(engine, tp, "decode", 64)
        assert source.startswith("measured:") and "moe_perf" in source and "wideep" not in source
    for engine, model in (("vllm", "deepseek-v3"), ("sglang", "kimi-k2")):
        assert experts_source(engine, 1, "decode", 64, model).startswith("fitted: DeepGEMM")


@needs_package
def test_sglangs_deepep_moe_tables_interpolate_over_the_ep_size():
    """At equal tokens a rank's pairs and experts both go as 1 / EP: SGLang's B200 DeepEP table, which measured EP4
    and EP16 but not EP8, answers EP8 by log-linear interpolation between them (exactly their geometric mean at the
    same tokens), and nothing outside the EP sizes it measured."""
    import math

    from hwmodels.calibrate.measured_costs import MeasuredSource

    source = MeasuredSource("b200_sxm", "sglang")
    table = measured_tables.table_path("b200_sxm", "sglang", "wideep_generation_moe_perf", "0.5.10")
    assert 8 not in set(measured_tables.load_table(table)["moe_ep_size"])

    def at(ep):
        return source.deepep_moe(512, 7168, 2048, 8, 256, ep, "fp8", "generation")

    four, eight, sixteen = at(4), at(8), at(16)
    assert eight.label.startswith("measured:") and "wideep_generation_moe_perf" in eight.label
    assert eight.latency_s == pytest.approx(math.sqrt(four.latency_s * sixteen.latency_s), rel=1e-9)
    assert sixteen.latency_s < eight.latency_s < four.latency_s
    assert at(1).latency_s is None and at(512).latency_s is None


@needs_package
def test_nccl_tables_are_keyed_by_the_whole_message():
    """nccl_perf's message_size is the whole buffer (nccl-tests' size): the 8-GPU all-gather of 268 Mi half elements
    on B200 takes well under four times the 2-GPU one (each GPU receives 7/8 of the buffer, not 7 buffers), and a GPU
    count the table did not measure is no answer."""
    from hwmodels.calibrate.measured_costs import nccl

    big = 268435456
    two, eight = (nccl("b200_sxm", "all_gather", "half", n, big) for n in (2, 8))
    assert two.label.startswith("measured: b200_sxm NCCL") and eight.latency_s < 2 * two.latency_s
    assert big * 2 * 7 / 8 / eight.latency_s < 1e12  # under 1 TB/s received per GPU, as NVLink 5 allows
    small = nccl("b200_sxm", "reduce_scatter", "half", 4, 1.0)
    assert small.latency_s > 0 and small.beyond > 1.0  # below the smallest message: its launch-bound floor
    assert nccl("b200_sxm", "all_gather", "int8", 16, 4096).latency_s is None
    assert nccl("gb200", "all_gather", "int8", 8, 4096).latency_s is None  # GB200 measured 2 and 4 GPUs


@needs_package
def test_tensorrt_llm_exchanges_attention_dp_tokens_by_all_gather_and_reduce_scatter():
    """TensorRT-LLM's CUTLASS MoE under attention DP gathers every rank's tokens and reduce-scatters the outputs where
    the group is no wider than a token's experts or the system has no multi-node NVLink, inside one NVLink domain:
    priced from NCCL's measured tables, the same on every rank whatever the routing skew. On GB200 NVL72 a group wider
    than top_k, a group wider than a node of H200, and SGLang everywhere keep the all-to-all."""
    from hwmodels import catalog
    from hwmodels.calibrate.operator_costs import costs_for
    from hwmodels.hardware import make_cluster

    def exchange(engine, unit, units, ep, skew=None):
        costs, cluster = costs_for(catalog.load_unit(unit).device.name, engine), make_cluster(catalog.load_unit(unit), units=units)
        disp = costs.dispatch(cluster, ep, 64, 7168, 8, 256, 1.0, 224.0, skew, "low_latency")
        comb = costs.combine(cluster, ep, 64, 7168, 8, 256, 2.0, skew, "low_latency")
        return disp, comb

    disp, comb = exchange("trtllm", "hgx-b200", 1, 4)
    assert "NCCL" in disp.source and "all_gather int8 over 4 GPUs" in disp.source
    assert "reduce_scatter half over 4 GPUs" in comb.source
    from hwmodels.calibrate.measured_costs import nccl
    assert disp.time_s == pytest.approx(nccl("b200_sxm", "all_gather", "int8", 4, 4 * 64 * (7168 + 224)).latency_s)
    skewed = exchange("trtllm", "hgx-b200", 1, 4, np.array([0.7, 0.1, 0.1, 0.1]))
    assert skewed[0].time_s == disp.time_s and skewed[1].time_s == comb.time_s
    for engine, unit, units, ep in (("sglang", "hgx-b200", 1, 8), ("trtllm", "hgx-h200", 2, 16)):
        assert "deepep" in exchange(engine, unit, units, ep)[0].source.lower()
    gb200 = catalog.load_unit("gb200-nvl72")
    assert gb200.scaleup_domain_devices > gb200.devices_per_node
    assert "NCCL" in exchange("trtllm", "gb200-nvl72", 1, 4)[0].source  # EP4 <= top-8: gathered
    assert "DeepEP" in exchange("trtllm", "gb200-nvl72", 1, 16)[0].source  # EP16 on MNNVL: the all-to-all


@needs_package
def test_sglangs_deepep_all_to_all_is_priced_by_its_measured_deepep_kernels():
    """SGLang's DeepEP dispatch and combine take the kernels its collector timed (wideep_deepep_*_perf: tokens per rank
    over node_num x 8 GPUs, uniform routing): low-latency at decode, normal (20 SMs, transmit + notify) at prefill, the
    nearest version that measured that many nodes (0.5.12 one node, 0.5.6.post2 up to eight), only the system's own
    GPU's rows; a skewed load scales the measured time by the fitted model's ratio; a group the tables never measured
    (EP72) keeps the fit and says why; an engine without DeepEP tables keeps the fit."""
    import pandas as pd
    from hwmodels import catalog
    from hwmodels.calibrate import measured_tables as tables
    from hwmodels.calibrate.operator_costs import costs_for, fitted_costs
    from hwmodels.hardware import make_cluster

    unit = catalog.load_unit("hgx-h200")
    costs = costs_for(unit.device.name, "sglang")

    def exchange(costs, units, ep, tokens, mode, skew=None):
        cluster = make_cluster(unit, units=units)
        return (costs.dispatch(cluster, ep, tokens, 7168, 8, 256, 1.0, 224.0, skew, mode),
                costs.combine(cluster, ep, tokens, 7168, 8, 256, 2.0, skew, mode))

    def row(version, table, nodes, tokens, **extra):
        rows = pd.read_parquet(tables.table_path("h200_sxm", "sglang", table, version))
        mask = ((rows.node_num == nodes) & (rows.hidden_size == 7168) & (rows.num_topk == 8) & (rows.num_experts == 256)
                & (rows.num_token == tokens) & rows.device.str.contains("H200"))
        for column, value in extra.items():
            mask &= rows[column] == value
        assert mask.sum() == 1
        return rows[mask].iloc[0]

    disp, comb = exchange(costs, 1, 8, 128, "low_latency")
    ll = row("0.5.12", "wideep_deepep_ll_perf", 1, 128)
    assert disp.time_s == pytest.approx(ll.dispatch_avg_t_us * 1e-6) and comb.time_s == pytest.approx(ll.combine_avg_t_us * 1e-6)
    assert disp.source.startswith("measured: h200_sxm sglang 0.5.12 wideep_deepep_ll_perf dispatch_avg_t_us over 1 x 8")
    disp, comb = exchange(costs, 2, 16, 4096, "normal")
    normal = row("0.5.6.post2", "wideep_deepep_normal_perf", 2, 4096, dispatch_sms=20, combine_sms=20)
    assert disp.time_s == pytest.approx((normal.dispatch_transmit_us + normal.dispatch_notify_us) * 1e-6)
    assert comb.time_s == pytest.approx((normal.combine_transmit_us + normal.combine_notify_us) * 1e-6)
    assert "0.5.6.post2 wideep_deepep_normal_perf" in comb.source and "over 2 x 8 GPUs" in comb.source

    skew = np.array([0.3] + [0.7 / 7] * 7)
    measured, fitted = exchange(costs, 1, 8, 128, "low_latency", skew), exchange(fitted_costs(), 1, 8, 128, "low_latency", skew)
    uniform_measured, uniform_fitted = exchange(costs, 1, 8, 128, "low_latency"), exchange(fitted_costs(), 1, 8, 128, "low_latency")
    for m, f, um, uf in zip(measured, fitted, uniform_measured, uniform_fitted):
        assert m.time_s / um.time_s == pytest.approx(f.time_s / uf.time_s) and m.time_s > um.time_s
        assert "for the load (the fitted model's ratio)" in m.source

    wide = exchange(costs, 9, 72, 128, "low_latency")[0]
    assert wide.source.startswith("alpha-beta, DeepEP low_latency") and "no measured wideep_deepep_ll_perf" in wide.source
    assert wide.time_s == exchange(fitted_costs(), 9, 72, 128, "low_latency")[0].time_s
    trtllm = exchange(costs_for(unit.device.name, "trtllm"), 2, 16, 128, "low_latency")[0]
    assert trtllm.source.startswith("alpha-beta") and "wideep" not in trtllm.source

    # past the table's largest token count (1,024 a rank at 0.5.12): linear in tokens, and the step says how far
    assert exchange(costs, 1, 8, 4096, "low_latency")[0].beyond == pytest.approx(4.0)
    from hwmodels.hardware import instance_cluster
    from hwmodels.layout import Layout
    from hwmodels.precision import default_plan
    from hwmodels.step import StepContext
    arch = catalog.load_model("deepseek-v3")
    ctx = StepContext(arch, default_plan(arch.quantization_config, arch.torch_dtype), instance_cluster(unit, 8),
                      Layout(tp=1, dp=8), costs=costs)
    priced = {name: beyond for name, _, beyond in ctx.step("decode", 2048, 2048).operator_sources}
    assert priced["dispatch"] == pytest.approx(2.0) and priced["combine"] == pytest.approx(2.0)
