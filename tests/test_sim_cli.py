"""`moeplan simulate` as a user runs it: the JSON contract, a plan file and a real trace, and one error line
(exit status 2) for each kind of bad input."""

import json
import re

import pytest

import checkout_cli

from moeplan import api, example_path, parse_spec

KEYS = ("requests", "ttft_p50_s", "ttft_p99_s", "tpot_p50_s", "tpot_p99_s", "output_tokens_per_s",
        "goodput_requests_per_s", "usd_per_million_output_tokens", "wall_seconds")


def moeplan(*args, cwd):
    return checkout_cli.run(*args, cwd=cwd, timeout=300)


def test_simulate_the_default_spec(tmp_path):
    r = moeplan("simulate", "--requests", "60", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert all(k in out for k in KEYS) and out["requests"] == out["completed"] == 60
    assert out["trace"].startswith("synthetic: 60 requests, poisson arrivals at 1.1/s")
    r = moeplan("simulate", "--requests", "60", cwd=tmp_path)
    assert r.returncode == 0 and "TTFT p50" in r.stdout and "per million output tokens" in r.stdout


def test_simulate_a_plan_file_with_a_real_trace_and_routing(tmp_path, shared_data):
    spec = example_path("kimi-k2-h200-128.yaml")
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(api.plan(spec).to_json()))
    routing = sorted(str(p) for p in (shared_data / "routing" / "deepseek-v3-sglang-eplb").glob("decode_*.json"))
    trace = shared_data / "requests" / "mooncake" / "conversation_trace.jsonl"
    r = moeplan("simulate", str(spec), "--plan", str(plan), "--trace", str(trace), "--requests", "150", "--speedup", "2",
                "--routing", *routing, "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["requests"] == 150 and "conversation_trace.jsonl" in out["trace"] and "2x faster" in out["trace"]
    assert "decode_in1000out1000" in out["roles"][0]["expert_load"] and out["prefix_cache_hit_rate"] > 0


def test_a_trace_at_another_rate_than_the_plan_says_so_and_how_to_match_it(tmp_path, shared_data):
    # the default plan is sized for 1.1 requests/s; the Mooncake trace arrives at about 3.4 (once replayed silently)
    trace = shared_data / "requests" / "mooncake" / "conversation_trace.jsonl"
    r = moeplan("simulate", "--trace", str(trace), "--requests", "300", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    warning = [line for line in r.stdout.splitlines() if line.startswith("warning: the trace arrives at")]
    assert len(warning) == 1 and "the 1.1 the plan was sized for" in warning[0], r.stdout
    speedup = re.search(r"--speedup ([0-9.]+)", warning[0]).group(1)
    r = moeplan("simulate", "--trace", str(trace), "--requests", "300", "--speedup", speedup, "--json", cwd=tmp_path)
    assert r.returncode == 0 and json.loads(r.stdout)["warnings"] == []  # at the plan's rate: nothing to warn of


@pytest.mark.parametrize("args, starts", [
    (["--plan", "missing.json"], "error: --plan: no file 'missing.json'"),
    (["--plan", "corrupt.json"], "error: corrupt.json line 1 column"),
    (["--plan", "qwen.json"], "error: qwen.json: model.name: is 'qwen3-30b-a3b' but the spec has 'kimi-k2'"),
    (["--trace", "missing.jsonl"], "error: missing.jsonl: cannot read request trace"),
    (["--speedup", "0"], "error: speedup: is 0.0"),
    (["--subsample", "1.5"], "error: subsample: is 1.5"),
    (["--routing", "missing.json"], "error: missing.json: cannot read routing statistics"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, starts):
    (tmp_path / "corrupt.json").write_text('{"schema_version": 1, "model": ')
    qwen = {"schema_version": 1, "model": "qwen3-30b-a3b", "cluster": {"unit": "hgx-h100", "units": 1},
            "workload": {"input_tokens": 2000, "output_tokens": 500, "requests_per_s": 2.0}, "slo": {"ttft_s": 3.0, "tpot_s": 0.1}}
    if "qwen.json" in args:
        (tmp_path / "qwen.json").write_text(json.dumps(api.plan(parse_spec(qwen)).to_json()))
    r = moeplan("simulate", *args, "--requests", "10", cwd=tmp_path)
    lines = [line for line in r.stderr.splitlines() if line]
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith(starts) and "fix:" in lines[0], r.stderr
    assert "Traceback" not in r.stderr
