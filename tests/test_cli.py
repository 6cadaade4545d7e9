"""The `moeplan` command as a user runs it: the installed console script, from a folder that is not
the checkout (so an installed, non-editable package must find its own catalogs)."""

import json
import shutil
import subprocess
import sys

import pytest

from moeplan import example_path


def moeplan(*args, cwd):
    exe = shutil.which("moeplan")
    cmd = [exe, *args] if exe else [sys.executable, "-m", "moeplan.cli", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_models_and_devices(tmp_path):
    r = moeplan("models", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    names = {m["name"] for m in json.loads(r.stdout)}
    assert {"kimi-k2", "deepseek-v3", "mixtral-8x7b"} <= names
    r = moeplan("devices", cwd=tmp_path)
    assert r.returncode == 0 and "ascend-910c" in r.stdout and "752*" in r.stdout  # unverified figures are marked
    r = moeplan("devices", "--json", cwd=tmp_path)
    d = {x["name"]: x for x in json.loads(r.stdout)}
    assert "peak_flops_per_s.bf16" in d["ascend-910b"]["unverified"]


def test_model_json_contract(tmp_path):
    r = moeplan("model", "kimi-k2", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["kv_bytes_per_token"] == 70272
    assert s["total_params"] == pytest.approx(1.0264e12, rel=1e-3)
    assert {"active_params", "weight_bytes"} <= set(s)
    r = moeplan("model", "kimi-k2", "--json", "--precision", "kv_cache=fp8", cwd=tmp_path)
    assert json.loads(r.stdout)["kv_bytes_per_token"] == 35136


def test_check_default_example(tmp_path):
    r = moeplan("check", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Kimi K2 Instruct fp8 needs 1.03 TB of weights; 16 x h200-sxm hold 2.42 TB" in r.stdout
    r = moeplan("check", str(example_path()), "--json", cwd=tmp_path)
    out = json.loads(r.stdout)
    assert out["fits"] and out["devices"] == 16 and out["best"]["concurrent_sequences"] > 0


def test_check_that_does_not_fit_exits_1_with_one_error_line(tmp_path):
    r = moeplan("check", str(example_path("kimi-k2-h100-8.yaml")), cwd=tmp_path)
    assert r.returncode == 1
    errors = [line for line in r.stderr.splitlines() if line]
    assert len(errors) == 1 and errors[0].startswith("error: cluster: Kimi K2 Instruct fp8 needs 1.03 TB")
    assert "fix: use at least 16 x h100-sxm" in errors[0]
    assert "needs 1.03 TB" not in r.stdout  # the verdict once, on the error line
    assert "none: 53.8 GB short" in r.stdout and " -53" not in r.stdout  # no negative room


@pytest.mark.parametrize(
    "content, field",
    [
        ("schema_version: 1\nmodel: [unclosed\n", "malformed YAML at line"),
        ("schema_version: 1\nmodel: kimi-k2\ncluster: {unit: hgx-h999, units: 1}\nworkload: {input_tokens: 1, output_tokens: 1}\nslo: {ttft_s: 1, tpot_s: 1}\n", "cluster.unit"),
        ("schema_version: 1\nmodel: kimi-k2\ncluster: {unit: hgx-h200, units: -1}\nworkload: {input_tokens: 1, output_tokens: 1}\nslo: {ttft_s: 1, tpot_s: 1}\n", "cluster.units"),
    ],
)
def test_bad_spec_is_one_line_exit_2_no_traceback(tmp_path, content, field):
    spec = tmp_path / "spec.yaml"
    spec.write_text(content)
    r = moeplan("check", str(spec), cwd=tmp_path)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if line]
    assert len(lines) == 1 and field in lines[0]
    assert spec.read_text() == content  # the user's file is untouched


def test_bad_model_argument(tmp_path):
    r = moeplan("model", "deepsek-v3", cwd=tmp_path)
    assert r.returncode == 2 and "did you mean deepseek-v3" in r.stderr and "Traceback" not in r.stderr


def test_validate_json_contract(tmp_path):
    r = moeplan("validate", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert len(rows) >= 9
    for row in rows:
        assert {"id", "predicted", "published", "error"} <= set(row)
    r = moeplan("validate", "--deployments", str(tmp_path / "nope.yaml"), cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    # a malformed entry (once a KeyError traceback): one line naming the entry and its field
    bad = tmp_path / "deployments.yaml"
    bad.write_text("schema_version: 1\ndeployments:\n  - {id: mine, model: deepseek-v3, hardware: h100-sxm, phase: decode}\n")
    r = moeplan("validate", "--deployments", str(bad), cwd=tmp_path)
    lines = [line for line in r.stderr.splitlines() if line]
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(lines) == 1
    assert "mine: metric" in lines[0] and "missing" in lines[0]


def test_plan_writes_plan_json_and_never_overwrites(tmp_path):
    out = tmp_path / "out"
    r = moeplan("plan", str(example_path()), "-o", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads((out / "plan.json").read_text())
    assert doc["feasible"] and doc["recommendation"]["devices"] <= 16
    assert {"layout", "batch_per_device", "memory_per_device", "step_s"} <= set(doc["recommendation"]["decode"])
    assert doc["provenance"]["price"]["usd_per_device_hour"] == 2.3 and doc["assumptions"]
    before = (out / "plan.json").read_text()
    r = moeplan("plan", str(example_path()), "-o", str(out), cwd=tmp_path)
    assert r.returncode == 2 and "not empty" in r.stderr and (out / "plan.json").read_text() == before
    assert moeplan("plan", str(example_path()), "-o", str(out), "--force", cwd=tmp_path).returncode == 0


def test_bench_kernels_quick_writes_a_csv_calibration_reads(tmp_path):
    pytest.importorskip("torch")
    from hwmodels.calibrate.kernels_measured import load_measured, report

    out = tmp_path / "k.csv"
    r = moeplan("bench-kernels", "--quick", "-o", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    table = load_measured(out)
    assert {"grouped_swiglu_fp8", "dispatch_fp8", "combine_bf16"} <= {k.split(":")[0] for k in table.kernels()}
    assert all(row["predicted_s"] > 0 for row in report(table))
    r = moeplan("bench-kernels", "--quick", "-o", str(out), cwd=tmp_path)
    assert r.returncode == 2 and "exists" in r.stderr  # never overwrites


def test_place_json_contract_and_deployable_file(tmp_path, shared_data):
    loads = shared_data / "routing" / "deepseek-v3-sglang-eplb" / "prefill_in1024.json"
    out = tmp_path / "location.json"
    r = moeplan("place", "--loads", str(loads), "--ep", "8", "--redundant", "8", "--time-limit", "3", "--json", "-o", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    for method in ("contiguous", "eplb", "ilp"):
        assert {"mean_imbalance", "worst_layer_imbalance", "step_cost", "seconds"} <= set(result["methods"][method])
    assert result["methods"]["ilp"]["step_cost"] <= result["methods"]["eplb"]["step_cost"] + 1e-9  # in-sample
    assert result["lp_bound"] is not None
    phy2log = json.loads(out.read_text())["physical_to_logical_map"]
    assert len(phy2log) == 61 and len(phy2log[5]) == 264
    r = moeplan("place", "--loads", str(loads), "--ep", "8", "--redundant", "3", cwd=tmp_path)
    assert r.returncode == 2 and "fix: use --redundant 0" in r.stderr


def test_place_reads_every_routing_format(tmp_path, shared_data):
    # Per-token JSON lines and OLMoE Counter pickles (once refused: place read JSON and CSV only), each file's
    # windows summed in its own shape: Mixtral's 32 layers x 8 experts, or the pickles' 3 sampled layers.
    per_token = shared_data / "routing" / "mixtral-8x7b-per-token"
    r = moeplan("place", "--loads", str(per_token / "gsm8k_2_routing.jsonl"), "--fit-loads",
                str(per_token / "humaneval_2_routing.jsonl"), "--ep", "4", "--redundant", "4", "--time-limit", "2", "--json",
                "-o", str(tmp_path / "location.json"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["fit_windows"] == 1 and json.loads(r.stdout)["slots_per_device"] == 3
    assert len(json.loads((tmp_path / "location.json").read_text())["physical_to_logical_map"]) == 32
    counters = shared_data / "routing" / "olmoe-mixtral-counts" / "mistral" / "expert_counts"
    r = moeplan("place", "--loads", str(counters / "arxiv.pkl"), "--fit-loads", str(counters / "c4.pkl"),
                str(counters / "book.pkl"), "--ep", "2", "--time-limit", "2", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["fit_windows"] == 2
    (tmp_path / "bad.pkl").write_bytes(b"\x80\x04K\x01.")  # a pickled int, not Counters
    r = moeplan("place", "--loads", str(tmp_path / "bad.pkl"), "--ep", "4", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.startswith(f"error: {tmp_path / 'bad.pkl'}: ") and r.stderr.count("\n") == 1
