"""The `moeplan` command as a user runs it: the installed console script, from a folder that is not
the checkout (so an installed, non-editable package must find its own catalogs)."""

import json
import os
import pty
import subprocess

import pytest

import checkout_cli

from moeplan import example_path


def moeplan(*args, cwd):
    return checkout_cli.run(*args, cwd=cwd)


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


def test_plan_replays_its_cheapest_options_unless_told_not_to(tmp_path):
    r = moeplan("plan", str(example_path()), "--json", "--requests", "300", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    held = doc["recommendation"]["replay"]
    assert held == doc["replays"][-1] and held["holds"] and held["requests"] == 300 == held["completed"]
    assert held["devices"] == doc["recommendation"]["devices"] and held["planned_tpot_s"] == doc["recommendation"]["tpot_s"]
    r = moeplan("plan", str(example_path()), "--json", "--replay", "0", cwd=tmp_path)
    doc = json.loads(r.stdout)
    assert r.returncode == 0 and doc["replays"] == [] and doc["recommendation"]["replay"] is None
    r = moeplan("plan", str(example_path()), "--requests", "300", cwd=tmp_path)
    assert "replayed: aggregated, 16 devices: TTFT" in r.stdout and ": holds" in r.stdout


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


def test_place_reports_cross_node_bytes_per_method(tmp_path, shared_data):
    loads = shared_data / "routing" / "deepseek-v3-sglang-eplb" / "prefill_in1024.json"
    base = ("place", "--loads", str(loads), "--ep", "72", "--redundant", "32", "--nodes", "9", "--time-limit", "8")
    r = moeplan(*base, "--model", "deepseek-v3", "--device", "h800-sxm", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    cross = {name: m["cross_node_bytes_per_token"] for name, m in result["methods"].items()}
    assert result["scaleout_weight"] == pytest.approx(5.6, abs=0.1)  # DeepSeek-V3 on H800 (api.placement_scaleout_weight)
    assert cross["ilp"] <= cross["eplb"] and cross["ilp"] < cross["contiguous"]
    r = moeplan(*base, "--device", "h800-sxm", cwd=tmp_path)
    assert r.returncode == 2 and "--device" in r.stderr and "--model" in r.stderr
    r = moeplan(*base, "--model", "kimi-k2", cwd=tmp_path)  # 384 experts, the statistics hold 256
    assert r.returncode == 2 and "--model" in r.stderr


def test_place_shows_its_step_and_the_time_limit_on_a_terminal(tmp_path, shared_data):
    # once silent for the whole time limit; the bar runs on stderr only where stderr is a terminal
    loads = shared_data / "routing" / "deepseek-v3-sglang-eplb" / "prefill_in1024.json"
    master, slave = pty.openpty()
    p = subprocess.Popen([*checkout_cli.COMMAND, "place", "--loads", str(loads), "--ep", "8", "--redundant", "8", "--time-limit", "3"],
                         cwd=tmp_path, stdout=subprocess.PIPE, stderr=slave, env=checkout_cli.env(TERM="xterm"))
    os.close(slave)
    screen = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        screen.append(chunk)
    os.close(master)
    table = p.communicate(timeout=120)[0].decode()
    shown = b"".join(screen).decode(errors="replace")
    assert p.returncode == 0 and "step cost" in table and "ILP on" not in table  # the table on stdout, the bar not
    assert "ILP on 61 layers" in shown and "of at most 3 s" in shown  # EPLB's step is over before a refresh


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


HOSTILE_SPEC = "schema_version: 1\nmodel: {model}\ncluster: {cluster}\nworkload: {workload}\nslo: {{ttft_s: 2, tpot_s: 0.05}}\n"


def hostile_spec(model="deepseek-v3", cluster="{unit: gb200-nvl72, devices: 48}",
                 workload="{input_tokens: 2000, output_tokens: 100}", extra=""):
    return HOSTILE_SPEC.format(model=model, cluster=cluster, workload=workload) + extra


def alias_bomb():
    lines = ["l0: &l0 [" + ", ".join(["lol"] * 10) + "]"]
    lines += [f"l{k}: &l{k} [" + ", ".join([f"*l{k - 1}"] * 10) + "]" for k in range(1, 9)]
    return "\n".join(lines) + "\nname: *l8\n"


@pytest.mark.parametrize("content, config, field", [  # ids: PYTEST_CURRENT_TEST must stay short for a subprocess
    (hostile_spec(extra=alias_bomb()), None, "line 10: stands for more than 20,000 values"),
    (hostile_spec(extra="precision: " + "{a: " * 1000 + "1" + "}" * 1000 + "\n"), None, "nested deeper than 32 levels"),
    (hostile_spec(extra="model: kimi-k2\n"), None, "key 'model' appears twice"),
    (hostile_spec(cluster="{unit: gb200-nvl72, units: 1000000000000000000000000000000}"), None, "cluster.units"),
    (hostile_spec(workload="{input_tokens: 2000, output_tokens: 100, requests_per_s: .inf}"), None, "finite number"),
    (hostile_spec(workload="{input_tokens: 1000000, output_tokens: 100}"), None, "longer than deepseek-v3's context"),
    (hostile_spec(model="./config.json"), "[" * 100_000 + "]" * 100_000, "nests too deep"),
    (hostile_spec(model="./config.json"), '{"model_type": "bert", "hidden_size": 768, "num_hidden_layers": 12, '
     '"num_attention_heads": 12, "vocab_size": 30522, "intermediate_size": 3072}', "encoder-only"),
], ids=["alias bomb", "deep", "duplicate key", "units 10^30", "rate inf", "prompt past context", "deep config.json",
        "bert config.json"])
def test_hostile_input_is_one_line_exit_2_no_traceback(tmp_path, content, config, field):
    spec = tmp_path / "spec.yaml"
    spec.write_text(content)
    if config is not None:
        (tmp_path / "config.json").write_text(config)
    r = moeplan("check", str(spec), cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("error: ") and field in lines[0] and "; fix: " in lines[0], r.stderr
    assert "fix the value" not in lines[0]


def one_error_line(r, *needles):
    """Exit 2, exactly one line on stderr holding each needle, no traceback."""
    lines = r.stderr.splitlines()
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.mark.parametrize("args, needles", [
    ([], ["COMMAND: missing", "plan"]),
    (["plna"], ["COMMAND: unknown command 'plna'", "did you mean plan"]),
    (["place"], ["--loads: is required (also missing: --ep)", "moeplan place --help"]),
    (["place", "--loads", "x", "--ep"], ["--ep: needs a value"]),
    (["place", "--loads", "x", "--ep", "8", "--bogus", "1"], ["unrecognized arguments: --bogus 1", "moeplan place --help"]),
    (["bench-kernels", "--device", "tpu"], ["--device: invalid choice 'tpu'", "cpu"]),
    (["model", "kimi-k2", "--context", str(10**12)], ["--context", "100,000,000"]),
    (["simulate", "--requests", str(10**12)], ["--requests", "1,000,000"]),
    (["plan", "--requests", "0"], ["--requests"]),
    (["simulate", "--speedup", "nan"], ["speedup: is nan", "finite"]),  # checked by api.simulate, before planning
    (["simulate", "--speedup", "1e7"], ["speedup: is 10000000.0", "1e+06"]),
    (["simulate", "--speedup", "fast"], ["--speedup: must be a number"]),
    (["simulate", "--subsample", "2"], ["subsample: is 2.0", "(0, 1]"]),
    (["simulate", "--shards", str(10**9)], ["--shards", "4,096"]),
    (["simulate", "--rate", "inf"], ["--rate", "finite"]),
    (["simulate", "--seed", "-1"], ["--seed"]),
    (["simulate", "--max-batch", "1e3"], ["--max-batch", "whole number"]),
    (["app", "--port", "0"], ["--port", "65,535"]),
    (["app", "--port", "99999"], ["--port", "65,535"]),
    (["compare", "--processes", "-3"], ["--processes"]),
    (["place", "--loads", "x", "--ep", "8", "--time-limit", "nan"], ["--time-limit", "(0, 3600]"]),
    (["place", "--loads", "x", "--ep", "8", "--time-limit", "inf"], ["--time-limit"]),
    (["place", "--loads", "x", "--ep", "8", "--time-limit", "0"], ["--time-limit"]),
    (["place", "--loads", "x", "--ep", "8", "--time-limit", "-1"], ["--time-limit"]),
    (["place", "--loads", "x", "--ep", "8", "--redundant", "-1"], ["--redundant"]),
    (["place", "--loads", "x", "--ep", "9" * 5000], ["--ep", "whole number"]),
    (["models", "\x85\u2028"], ["unrecognized arguments"]),  # line breaks str.splitlines knows: one line still
    (["check", "a\x00b"], ["argument 2", "NUL"]), (["check", "\ud800"], ["argument 2", "not encodable"]),
    (["simulate", "--address", "ray://head:10001"], ["--address: is used only with --engine ray"]),
    (["plan", "--address", "ray://head:10001"], ["--address: is used only with --engine ray"]),
    (["plan", "--replay", "-1"], ["--replay", "20"]), (["plan", "--replay", "21"], ["--replay", "20"]),
    (["compare", "--devices", ",,,", "--processes", "1"], ["--devices: nothing to compare"]),  # no blank progress line
])
def test_bad_arguments_are_one_line_naming_the_option(capsys, args, needles):
    """argparse's usage block (4-10 lines) is gone: every argument error is one line, exit 2, naming the option
    (in this process: main returns the status; the subprocess test below runs a few as a user does)."""
    from moeplan.cli import main

    code = main(args)
    out = capsys.readouterr()
    one_error_line(subprocess.CompletedProcess(args, code, out.out, out.err), *needles)
    assert out.out == ""


def test_bad_arguments_in_a_real_run(tmp_path):
    cases = [([], "COMMAND: missing"), (["place", "--ep", "0", "--loads", "x"], "--ep: must be from 1"),
             (["simulate", "--speedup", "nan"], "speedup: is nan"), (["nosuch"], "COMMAND: unknown command")]
    runs = [subprocess.Popen([*checkout_cli.COMMAND, *args], cwd=tmp_path, env=checkout_cli.env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for args, _ in cases]
    for (args, needle), run in zip(cases, runs):
        out, err = run.communicate(timeout=120)
        one_error_line(subprocess.CompletedProcess(args, run.returncode, out, err), needle)


@pytest.fixture(scope="module")
def wide_loads(tmp_path_factory):
    """One layer of 200,000 experts with heavy-tailed counts (the fuzz's case) and a small 2 x 64 file."""
    import numpy as np
    folder = tmp_path_factory.mktemp("loads")
    rng = np.random.default_rng(0)
    (folder / "wide.json").write_text(json.dumps({"logical_count": [np.round(rng.pareto(1.2, 200_000) * 100).astype(int).tolist()]}))
    (folder / "small.json").write_text(json.dumps({"logical_count": rng.integers(0, 1000, (2, 64)).tolist()}))
    return folder


def test_place_returns_near_its_time_limit_on_200000_experts(tmp_path, wide_loads):
    import time
    start = time.perf_counter()
    r = moeplan("place", "--loads", str(wide_loads / "wide.json"), "--ep", "8", "--redundant", "200", "--time-limit", "1",
                "--json", cwd=tmp_path)
    wall = time.perf_counter() - start
    assert r.returncode == 0, r.stderr
    assert wall < 12, wall  # interpreter start-up and reading included; once 38 s for --time-limit 0.5
    result = json.loads(r.stdout)
    assert result["methods"]["ilp"]["step_cost"] <= result["methods"]["eplb"]["step_cost"] + 1e-9


@pytest.mark.parametrize("args, needles", [
    (["--ep", "8", "--redundant", "1000000"], ["--redundant: must be from 0 to 64"]),
    (["--ep", "8", "--nodes", "3"], ["--nodes: 3 nodes do not divide the EP group of 8"]),
    (["--ep", "1000000"], ["--ep: 64 experts + 0 slots do not divide"]),
    (["--ep", "8", "--redundant", "3"], ["fix: use --redundant 0"]),
])
def test_place_arguments_are_checked_against_the_loads(tmp_path, wide_loads, args, needles):
    one_error_line(moeplan("place", "--loads", str(wide_loads / "small.json"), *args, cwd=tmp_path), *needles)


def test_place_on_one_device_is_not_a_traceback(tmp_path, wide_loads):
    r = moeplan("place", "--loads", str(wide_loads / "small.json"), "--ep", "1", "--time-limit", "1", "--json", cwd=tmp_path)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert json.loads(r.stdout)["methods"]["ilp"]["step_cost"] == pytest.approx(1.0)
