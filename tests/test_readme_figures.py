"""Every figure the README quotes, recomputed or read from the run that measured it: a change that moves one
fails here until the README says the new value.

Three kinds: figures a model run yields in seconds are recomputed here and the README sentence is rebuilt
from them; console output the README shows is the command run again and compared line by line (only the wall
time may differ); figures only a slow benchmark yields are read from benchmarks/results/<name>.json, which the
benchmark writes when run (python benchmarks/bench_<name>.py). Published figures are citations, quoted with
their source named beside them, and not recomputed.
"""

import contextlib
from dataclasses import replace
import glob
import io
import json
import os
import math
import re
import shlex
import tomllib
from pathlib import Path

import numpy as np
import pytest
import yaml

import moeplan
from moeplan import api, cli, example_path
from hwmodels.layout import Layout
from planner import search

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
RESULTS = ROOT / "benchmarks" / "results"


def _quoted(text: str) -> None:
    assert " ".join(text.split()) in " ".join(README.split()), f"README no longer says: {text}"


def _run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(argv)
    return status, out.getvalue(), err.getvalue()


def _results(name: str) -> dict:
    """A benchmark's recorded figures, with a line naming the machine and how busy it was."""
    record = json.loads((RESULTS / f"{name}.json").read_text(encoding="utf-8"))
    m, load = record["machine"], record["load_average_1m"]
    # a load average above the CPU count: other work was running, and a timing says so
    record["on"] = f"{m['cpus']}-CPU {m['cpu']}" + (", shared with other work" if max(load.values()) > m["cpus"] else "")
    return record


@pytest.fixture(scope="module")
def default_plan():
    return moeplan.plan(example_path())


def _default_spec(**changes) -> dict:
    return {**yaml.safe_load(example_path().read_text()), **changes}


# --- the quick start, the limits and defaults it names ------------------------------------------------------

def test_the_built_in_example_and_the_python_version():
    d = api.deployment(example_path())
    _quoted(f"plan Kimi K2 on {d.cluster.num_devices} x H200 (the built-in example)")
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    _quoted(f"Python {requires.removeprefix('>=')}+, no GPU needed")


def test_limits_and_defaults_are_the_codes():
    from app.common import MAX_UPLOAD_MB
    from hwmodels.ingest.requests import PREFIX_BLOCK_TOKENS
    from hwmodels.ingest.source import MAX_FILE_BYTES
    from hwmodels.layouts import ATTENTION_TP
    from hwmodels.units import GiB
    from moeplan import engines
    from planner.refusals import MOST_DEVICES
    from planner.plan_json import PLAN_SCHEMA_VERSION

    _quoted(f"up to a size limit per file ({MAX_FILE_BYTES / GiB:.0f} GiB; {MAX_UPLOAD_MB} MB in the dashboard)")
    _quoted(f"Uploads are limited to {MAX_UPLOAD_MB} MB")
    _quoted(f"attention TP of {min(ATTENTION_TP)} to {max(ATTENTION_TP)} devices inside a scale-up domain")
    _quoted(f"then bisected, up to {MOST_DEVICES:,} devices")
    _quoted(f"(`--requests N`, default {api.SYNTHETIC_REQUESTS:,})")
    _quoted(f"Mooncake's {PREFIX_BLOCK_TOKENS}-token block hashes")
    _quoted(f"at least {engines.TASKS_PER_WORKER} tasks per CPU, at most {engines.MAX_CHUNK_ITEMS} points")
    _quoted(f"is retried {['once', 'twice'][engines.RETRIES - 1]}")
    _quoted(f"(after {engines.RETRIES + 1} attempts)")
    _quoted(f"(`planner/plan_json.py`, schema {PLAN_SCHEMA_VERSION})")


def test_the_spec_block_is_the_default_example():
    block = README.split("[`catalogs/examples/kimi-k2-h200.yaml`](catalogs/examples/kimi-k2-h200.yaml):")[1]
    shown = yaml.safe_load(block.split("```yaml\n", 1)[1].split("```", 1)[0])
    example = yaml.safe_load(example_path().read_text())
    assert shown == {k: v for k, v in example.items() if k in shown}  # the README leaves out only its name
    assert set(example) - set(shown) == {"name"}


# --- check --------------------------------------------------------------------------------------------------

def test_check_says_what_fits():
    _quoted(moeplan.check(example_path()).headline())


def test_check_says_what_does_not_fit_and_what_would():
    status, _, err = _run_cli(["check", str(example_path("kimi-k2-h100-8.yaml"))])
    block = README.split("A model that does not fit says so")[1].split("```text\n", 1)[1].split("```", 1)[0]
    assert status == 1 and block.endswith(", ...\n")
    assert " ".join(err.split()).startswith(" ".join(block.removesuffix(", ...\n").split()))


def test_bad_input_is_one_line(tmp_path):
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(_default_spec(cluster={"unit": "hgx-h20", "units": 2})))
    status, _, err = _run_cli(["check", str(tmp_path / "spec.yaml")])
    assert status == 2
    _quoted(f"never a traceback: `{err.strip()}`")


# --- plan ---------------------------------------------------------------------------------------------------

def test_the_default_examples_utilisation_and_cost_at_capacity(default_plan):
    r = default_plan.recommendation
    _quoted(f"The default example: {r.requests_per_s:g} requests/s use {r.utilization:.0%} of its capacity, "
            f"${r.usd_per_million_output:.2f} per million output tokens, ${r.usd_per_million_output_at_capacity:.2f} full.")


def test_the_plan_is_checked_by_its_replay(default_plan):
    check = default_plan.replays[-1]
    assert check.holds and check.requests == api.CHECK_SYNTHETIC_REQUESTS
    _quoted(f"(`replayed: ... {check.describe().split(': ', 1)[1]}`)")
    _quoted(f"(`--replay N`, default {api.REPLAYED_OPTIONS}; 0 leaves the check out) on the workload's trace (its first "
            f"{api.CHECK_TRACE_REQUESTS:,} requests) or {api.CHECK_SYNTHETIC_REQUESTS:,} requests of its synthetic traffic")


def test_an_slo_nothing_meets_says_how_close_the_best_comes():
    result = moeplan.plan(_default_spec(slo={"ttft_s": 2.0, "tpot_s": 0.005, "percentile": 99}))
    assert result.recommendation is None
    message = result.infeasible
    _quoted(f"(`{message.split(' (')[0]} (...); ... would help`, exit status 1)")


def test_printed_summaries_are_short(default_plan):
    longest = max(len(repr(x).splitlines()) for x in (default_plan, default_plan.recommendation,
                                                         moeplan.check(example_path())))
    assert longest <= 20
    _quoted("a summary of at most 20 lines")


def test_the_readmes_config_json_example_is_shipped_and_runs(capsys, monkeypatch):
    """The quick-start's `moeplan model <config.json>` line names a file in the checkout, and it runs as written."""
    line = next(ln for ln in README.splitlines() if ln.startswith("$ moeplan model ") and "config.json" in ln)
    argv = shlex.split(line[2:].split("#")[0])[1:]
    monkeypatch.chdir(ROOT)
    assert cli.main(argv) == 0
    assert "14.3 B total" in capsys.readouterr().out  # Qwen's model card: 14.3 B parameters, 2.7 B activated


# --- simulate: the README's replay of the Mooncake trace, run as written ------------------------------------

def _replay_block() -> tuple[list[str], list[str]]:
    """The console block of the Mooncake replay: its commands (continuation lines joined) and its output lines."""
    start = README.index("$ sed 's|name: mooncake")
    lines = README[start:README.index("```", start)].rstrip("\n").split("\n")
    commands, i = [], 0
    while lines[i].startswith("$ "):
        command = lines[i][2:]
        while command.endswith("\\"):
            i += 1
            command = command[:-1] + lines[i]
        commands.append(command)
        i += 1
    return commands, lines[i:]


@pytest.fixture(scope="module")
def replay(shared_data, request):
    """Run the block's commands as a shell would (the sed edit, the glob expansion, in the checkout), keeping the
    plan the CLI made and the replay it printed, for the sentences around the block."""
    (sed, simulate), _ = _replay_block()
    _, script, source, _, target = shlex.split(sed)
    text = (ROOT / source).read_text()
    for command in script.split(";"):  # sed's s<d>regex<d>replacement<d>, one line at a time
        command = command.strip()
        _, pattern, replacement, _ = command.split(command[1])
        text = "\n".join(re.sub(pattern, replacement, line, count=1) for line in text.split("\n"))
    spec = ROOT / target  # where the README writes it: its relative trace path starts at the checkout
    spec.write_text(text)
    request.addfinalizer(spec.unlink)
    argv = []
    for word in shlex.split(simulate)[1:]:
        argv += [str(spec)] if word == target else sorted(glob.glob(word, root_dir=ROOT)) if "*" in word else [word]
    made = {}

    def recording(function, key):
        def call(*args, **kwargs):
            made[key] = function(*args, **kwargs)
            return made[key]
        return call

    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(ROOT)
        patch.setattr(api, "_plan", recording(api._plan, "plan"))
        patch.setattr(api, "simulate", recording(api.simulate, "simulation"))
        status, out, _ = _run_cli(argv)
        assert status == 0
        trace = api.read_trace(made["plan"].deployment.workload.trace)  # the spec's workload.trace, replayed
    return out, made["plan"], made["simulation"], trace


def test_the_replay_prints_what_the_readme_shows(replay):
    out, plan, sim, _ = replay
    shown = _replay_block()[1]
    wall = re.compile(r"\((\d[\d.,]*) s wall\)")  # the one figure that depends on the machine
    printed = [wall.sub("(... s wall)", line) for line in out.rstrip("\n").split("\n")]
    assert printed == [wall.sub("(... s wall)", line) for line in shown]
    # the wall time shown is what benchmarks/bench_sim.py recorded for this same replay (its "EPLB skew" run)
    bench = _results("bench_sim")["figures"]
    assert bench["plan"] == plan.describe()
    assert bench["runs"]["EPLB skew"]["ttft_p99_s"] == pytest.approx(sim.percentile("ttft", 99), rel=1e-9)
    assert wall.search(shown[0]).group(1) == f"{bench['replay_wall_s']['EPLB skew']:.1f}"


def test_the_sentences_around_the_replay(replay):
    _, plan, sim, trace = replay
    r = plan.recommendation
    pool = r.decode.instance_devices * r.decode_instances
    _quoted(f"Moonshot's real Kimi conversation trace (Mooncake FAST'25, {len(trace):,} requests over "
            f"{trace.duration_s:,.0f} s)")
    levels = [m for _, m in plan.deployment.workload.arrivals.levels]
    _quoted(f"The planner's TTFT ({r.ttft_s:.2f} s at p99) is each prompt's prefill at its own length")
    _quoted(f"{len(levels)} levels, from {min(levels):.2f}x to {max(levels):.2f}x the mean")
    _quoted(f"Its TPOT ({r.tpot_s * 1e3:.1f} ms at p99) is the decode step at the load the pool carries")
    _quoted(f"{np.mean(trace.output_tokens < 5):.1%} of the trace's requests generate fewer than 5 tokens")
    assert r.decode_instances == 1 and r.prefill_instances == 1
    _quoted(f"instance of {pool} devices, {r.decode.work_per_device * pool} sequence slots at {r.decode_utilization:.0%} "
            f"of its capacity, and the prefill 1 instance at {r.prefill_utilization:.0%} of its capacity")
    ttft, tpot = sim.percentile("ttft", 99), sim.percentile("tpot", 99)
    _quoted(f"TTFT p99 {ttft:.2f} s (the planner is on the safe side by {r.ttft_s / ttft - 1:.0%}), TPOT p99 "
            f"{tpot * 1e3:.1f} ms against the planned {r.tpot_s * 1e3:.1f} ms, {sim.meets_slo.sum() / sim.completed:.1%} of requests "
            "within both SLOs")
    why = next(a for a in plan.assumptions if a.startswith("the recommended prefill pool splits each prompt"))
    alone = re.search(r"against ([\d.]+) s on one group", why).group(1)
    _quoted(f"The prefill pool splits each prompt over {r.prefill.layout.cp} of its {r.prefill.layout.dp} DP attention "
            f"groups")
    _quoted(f"one group alone prefills the p99 prompt in {alone} s")
    _quoted(f"recommended 16 H200 for the trace's {len(trace) / trace.duration_s:.1f} requests/s")
    _quoted(f"# Kimi traffic; the trace runs {len(trace) / trace.duration_s:.1f}/s")
    _quoted(f"(`workload.max_input_tokens`; {trace.input_tokens.max():,} for the Mooncake conversation trace)")
    _quoted(f"The simulated cost charges all {r.devices} devices to output tokens "
            f"(${sim.usd_per_million_output_tokens:.2f} per million); the planner's ${r.usd_per_million_output:.2f} "
            f"charges the decode pool only")


def test_the_trace_rate_refused_on_16_h200_and_the_default_examples_replay(default_plan, shared_data):
    """The aggregated-serving story: the default plan and its replay, the TPOT SLOs the planner refuses on 16 H200
    (40 ms analytically, 50 ms, which only the replay refuses) and the trace's own rate (the catalog workload's)."""
    assert moeplan.plan(_default_spec(workload={"name": "mooncake-conversation"})).recommendation is None
    at_40_ms = moeplan.plan(_default_spec(slo={**_default_spec()["slo"], "tpot_s": 0.04}))
    assert at_40_ms.recommendation is None and not at_40_ms.replays
    _quoted(f"(`{at_40_ms.infeasible.split(' (')[0]} (...) reaches {at_40_ms.infeasible.split('reaches ')[1].split(' (')[0]}`)")
    at_50_ms = moeplan.plan(_default_spec(slo={**_default_spec()["slo"], "tpot_s": 0.05}))
    assert at_50_ms.recommendation is None and at_50_ms.infeasible_field == "slo.tpot_s"
    nearest = min(at_50_ms.replays, key=lambda c: c.replayed_tpot_s)
    _quoted(f"at 50 ms the analytic ranking accepts it (TPOT {nearest.planned_tpot_s * 1e3:.1f} ms planned) "
            f"and its replay refuses it ({nearest.replayed_tpot_s * 1e3:.1f} ms)")
    assert moeplan.plan(_default_spec(slo={**_default_spec()["slo"], "ttft_s": 2.0})).recommendation is None
    rate, r = yaml.safe_load(example_path().read_text())["workload"]["requests_per_s"], default_plan.recommendation
    at_rate = api.simulate(example_path(), default_plan, requests=600, seed=3)  # as tests/test_plan_vs_sim.py
    _quoted(f"so the default example asks {default_plan.deployment.slo.tpot_s * 1e3:g} ms, and {rate:g} requests/s at "
            f"TTFT {default_plan.deployment.slo.ttft_s:g} s, as the trace's long prompts queue on their rank and 2 s "
            "needs more than 16 H200")
    _quoted(f"the plan's TTFT is {r.ttft_s:.2f} s at p99 and the replay's {at_rate.percentile('ttft', 99):.2f} s; "
            f"TPOT p50 {at_rate.percentile('tpot', 50) * 1e3:.0f} ms, p99 {at_rate.percentile('tpot', 99) * 1e3:.0f} ms "
            f"against the planned {r.tpot_s * 1e3:.0f} ms")
    lengths = api.read_trace(shared_data / "requests" / "mooncake" / "conversation_trace.jsonl").input_tokens
    _quoted(f"cv {lengths.std() / lengths.mean():.2f} for Mooncake's prompts, whose p99 is "
            f"{math.floor(float(np.percentile(lengths, 99)) / lengths.mean()):.0f}x the mean")


# --- the notebook API and the what-if study -----------------------------------------------------------------

def test_the_notebook_examples_active_parameters():
    active = f"{moeplan.model_summary('deepseek-v3')['active_params']:.2e}".replace("e+", "e")
    _quoted(f'moeplan.model_summary("deepseek-v3")["active_params"]       # {active}')


@pytest.mark.xdist_group("context_study")
def test_the_context_studys_costs(context_study):
    import pandas as pd

    frame = pd.read_csv(context_study / "whatif_kimi_k2_context.csv")
    feasible = frame[frame["feasible"]]
    cost = {(row["device"], row["workload.input_tokens"]): row["usd_per_million_output_tokens"]
            for _, row in feasible.iterrows()}
    names = {"gb200": "GB200", "b200-sxm": "B200", "h200-sxm": "H200", "ascend-910c": "910C, at an assumed $2/h"}
    at_2k = {device: c for (device, tokens), c in cost.items() if tokens == 2048}
    at_128k = {device: c for (device, tokens), c in cost.items() if tokens == 131072}
    assert set(at_2k) == set(at_128k) == set(names)  # every device serves both prompt lengths on 64 devices
    devices = int(re.search(r'"devices": (\d+)', (ROOT / "docs" / "whatif_kimi_k2_context.py").read_text()).group(1))
    assert frame["devices"].max() <= devices

    def span(costs: dict, digits: int) -> str:
        low, high = min(costs, key=costs.get), max(costs, key=costs.get)
        return f"from ${costs[low]:.{digits}f} ({names[low]}) to ${costs[high]:.{digits}f} ({names[high]})"
    _quoted(f"On up to {devices} devices each: {span(at_2k, 2)} per million output tokens at 2K; at 128K "
            f"{span(at_128k, 1)}.")
    _quoted(f"it now decodes in PP2 (see *Pipeline stages*), at ${at_2k['b200-sxm']:.2f}.")


def test_the_traffic_refusal_says_how_many_devices_it_takes():
    spec = yaml.safe_load(example_path().read_text())
    spec["workload"]["requests_per_s"] = 3.4  # the trace's own rate
    _quoted(f"`{api.plan(spec, replay=0).infeasible}`")


# --- model arithmetic ---------------------------------------------------------------------------------------

def test_the_model_arithmetic_table():
    from hwmodels.units import format_bytes, format_count

    rows = {"Kimi K2": "kimi-k2", "DeepSeek-V3 / R1": "deepseek-v3", "Qwen3-235B-A22B": "qwen3-235b-a22b",
            "Qwen3-235B-A22B (FP8)": "qwen3-235b-a22b-fp8", "Mixtral-8x7B": "mixtral-8x7b"}
    for label, name in rows.items():
        s = moeplan.model_summary(name)
        total = format_count(s["total_params"])
        if name == "kimi-k2":  # four digits, beside the figure Moonshot's model card quotes
            total = f"{s['total_params'] / 1e12:.3f} T (Moonshot quotes 1.04 T)"
        if s["mtp_params"]:
            total += f" (+{format_count(s['mtp_params'])} MTP)"
        _quoted(f"| {label} | {total} | {format_count(s['active_params'])} | {format_bytes(s['weight_bytes'])} "
                f"{s['precision']['routed_experts']} |")


def test_kv_bytes_and_the_routing_map_shapes():
    kimi, deepseek = api.model_config("kimi-k2"), api.model_config("deepseek-v3")
    latent, layers = kimi["kv_lora_rank"] + kimi["qk_rope_head_dim"], kimi["num_hidden_layers"]
    assert moeplan.model_summary("kimi-k2")["kv_bytes_per_token"] == latent * layers * 2  # bf16: 2 bytes
    _quoted(f"(Kimi K2: {latent} x {layers} x 2 = {latent * layers * 2:,} B in bf16)")
    moe = {m: moeplan.model_summary(m)["moe_layers"] for m in ("kimi-k2", "deepseek-v3")}
    _quoted(f"MoE layers by relative depth ({moe['deepseek-v3']} -> {moe['kimi-k2']}) and expert j replays DeepSeek-V3 "
            f"expert j mod {deepseek['n_routed_experts']} (so {kimi['n_routed_experts']} real per-expert loads")


def test_the_catalogs_cluster_shapes_and_number_formats():
    from hwmodels.precision import SCHEMES

    clusters = {c["name"]: c for c in api.clusters()}
    nvl72, cm384, hgx = clusters["gb200-nvl72"], clusters["cloudmatrix384"], clusters["hgx-h200"]
    _quoted(f"HGX {hgx['devices_per_node']}-GPU nodes, GB200/GB300 NVL72 racks ({nvl72['scaleup_domain_devices']}-GPU "
            f"NVLink domain, {nvl72['devices_per_node']} GPUs per tray)")
    _quoted(f"CloudMatrix384 ({cm384['devices']} NPUs on the Unified Bus)")
    domains = sorted({c["scaleup_domain_devices"] for c in clusters.values()})
    _quoted(f"scale-up domain of {' / '.join(map(str, domains))}, scale-out")
    fp8, int4 = SCHEMES["fp8"], SCHEMES["int4"]
    assert (fp8.scale_bytes, int4.scale_bytes) == (4.0, 2.0)  # fp32 and bf16 scales
    _quoted(f"(fp8 {fp8.block_rows}x{fp8.block_cols} with fp32 scales, int4 groups of {int4.block_cols} with bf16 scales, "
            f"MXFP4, NVFP4)")


# --- the operator fits and the validation against published deployments -------------------------------------

def _worst_percent(errors) -> int:
    """What "every row within N%" claims: the largest |error| rounded up to a whole percent."""
    return math.ceil(max(abs(e) for e in errors) * 100)


def test_the_operator_fits():
    from hwmodels import catalog
    from hwmodels.calibrate import deepep_fit

    gemm = catalog.stored_fit("deepgemm-h800")["report"]
    deepep = deepep_fit.deepep_report()
    parameters = len(catalog.stored_fit("deepgemm-h800")["parameters"])
    worst, worst_held_out = max(abs(r["error"]) for r in gemm), max(abs(r["loo_error"]) for r in gemm)
    _quoted(f"{['', 'one', 'two', 'three', 'four', 'five', 'six', 'seven'][parameters]} physical parameters fitted on "
            f"the {len(gemm)} published DeepGEMM rows (H800, fp8): every row within {worst:.1%}, leave-one-out error "
            f"at most {worst_held_out:.1%}")
    h800 = [r["error"] for r in deepep if not r["table"].startswith("deepep_ascend")]
    ascend = [r["error"] for r in deepep if r["table"].startswith("deepep_ascend")]
    _quoted(f"DeepEP's tables: all {len(h800)} H800 rows within {_worst_percent(h800)}%")
    timed = deepep_fit._published_times_us(deepep_fit._ASCEND_TABLES)
    held_out = [deepep_fit._predict(case, "latency_us", deepep_fit.fit_deepep_ascend(exclude=i))[0].time_s / 1e-6 / us - 1
                for i, (case, us) in enumerate(timed)]
    _quoted(f"all {len(ascend)} published numbers within {_worst_percent(ascend)}%, and each of the {len(timed)} timed "
            f"rows within {_worst_percent(held_out)}% when left out of the fit")


def test_the_two_batch_overlap_fit():
    from hwmodels import catalog

    fit = catalog.stored_fit("overlap")
    rows = {r["id"]: r for r in fit["report"]}
    decode, small = rows["sglang-h100-decode-tbo-256"], rows["sglang-h100-decode-tbo-32"]
    assert small["published_low"] < 1 and small["modelled"] < 1  # slower with TBO, in the model too
    _quoted(f"one efficiency, {fit['parameters']['overlap_efficiency']:.2f}, fitted to LMSYS's published prefill "
            f"ablation (TBO {(rows['sglang-h100-prefill-tbo']['published_low'] - 1) * 100:.0f}-"
            f"{rows['sglang-h100-prefill-tbo']['published_high'] - 1:.0%} faster at equal tokens per device;")
    _quoted(f"predicts its held-out decode ablation ({decode['published_low'] - 1:.1%} faster at 256 sequences per "
            f"device) as {decode['modelled'] - 1:.1%}. Its 32-sequence point (TBO {1 - small['published_low']:.0%} slower)")


def test_the_validation_table(tmp_path):
    from hwmodels import catalog
    from hwmodels.calibrate.deployments import DEFAULT_DEPLOYMENTS, load_entries

    rows = api.validate()
    for r in rows:
        metric = r.metric.replace("tokens_per_s", "tokens/s").replace("_", " ")
        cells = ([f"{r.predicted:,.0f}", f"{r.error:+.1%}"] if r.error is not None else [f"not modelled: {r.reason}", ""])
        _quoted(" | ".join(["", r.id, metric, f"{r.published:,.0f}", *cells, ""]).strip())
    summary = api.validation_summary(rows)
    _quoted(f"Median absolute error {summary['median_abs_error']:.1%} (the issue's bar is 12%)")
    error = {r.id: r.error for r in rows}
    prefill = [e for i, e in error.items() if i.startswith("sglang-h100-prefill")]
    _quoted(f"SGLang's measured H100 kernels put them within {min(prefill):+.1%} to {max(prefill):+.1%} of the\npublished figures")
    # the same entries without their engines: every operator priced by the fitted models
    entries = yaml.safe_load(DEFAULT_DEPLOYMENTS.read_text(encoding="utf-8"))
    for entry in entries["deployments"]:
        entry.pop("engine", None)
    fitted_only = tmp_path / "fitted.yaml"
    fitted_only.write_text(yaml.safe_dump(entries), encoding="utf-8")
    fitted = api.validation_summary(api.validate(str(fitted_only)))
    _quoted(f"without the `engine:` fields) it is {fitted['median_abs_error']:.1%}")
    fitted_prefill = [r.error for r in api.validate(str(fitted_only)) if r.id.startswith("sglang-h100-prefill")]
    _quoted(f"where the fitted models were {min(fitted_prefill):.0%}-{max(fitted_prefill):.0%} over".replace("%-", "-"))
    outside = ("cloudmatrix384-decode-50ms",)
    assert all(abs(error[i]) > 0.30 for i in outside)
    assert all(abs(e) <= 0.30 for i, e in error.items() if i not in outside)
    cloudmatrix = next(e for e in entries["deployments"] if e["id"] == "cloudmatrix384-decode-50ms")
    eplb = tmp_path / "eplb.yaml"  # the same run with its experts balanced by EPLB, which its source does not state
    eplb.write_text(yaml.safe_dump({"schema_version": 1, "deployments": [
        cloudmatrix | {"id": "cloudmatrix-eplb", "layout": cloudmatrix["layout"] | {"eplb": True},
                       "workload": {"kv_tokens_per_sequence": 4096, "batch_per_device": 96}}]}))
    (balanced,) = api.validate(str(eplb))
    _quoted(f"outside 30% ({error['cloudmatrix384-decode-50ms']:+.1%}) because its source does not say how")
    _quoted(f"with EPLB's held-out imbalance instead it would be {balanced.error:+.1%}")
    amended = catalog.published_amendments()["cloudmatrix384-decode-50ms"]["workload"]
    _quoted(f"({amended['batch_per_device']}\nsequences per NPU at a {amended['kv_tokens_per_sequence'] // 1024}K-token KV cache, TPOT 49.4 ms)")
    mtp = next(e for e in load_entries(None) if e.id == "deepseek-profile-decode-h800").workload.speculative
    _quoted(f"converted to tokens at the {mtp.acceptance:.0%} acceptance LMSYS assumes")
    _quoted("GB200 decode is inside 30%")
    _quoted(f"TensorRT-LLM's H200 run is inside 30% ({error['trtllm-h200-max-throughput']:+.1%})")


def test_the_low_deepseek_rows_come_within_five_percent_at_the_batch_their_kv_memory_holds(shared_data, tmp_path):
    """DeepSeek-R1 on four B200 at 1,024/8,192: the heuristic's 96 sequences a rank leave it 36% low; at the 192 its KV
    memory holds (trtllm-bench's newer, MLA-aware sizing would allow them) the same replay is within 5%."""
    from hwmodels.calibrate.deployments import build_scenario, load_entries
    from hwmodels.serving import largest_batch_that_fits

    path = shared_data / "published" / "deployments-trtllm-perf-overview.yaml"
    rid = "trtllm-perf-overview-dsr1-b200-1024-8192"
    entry = next(d for d in yaml.safe_load(path.read_text())["deployments"] if d["id"] == rid)
    ctx = build_scenario(next(e for e in load_entries(path) if e.id == rid), None).context
    fits = largest_batch_that_fits(ctx, 1024 + 8192, 0.9, 2048)
    assert 192 <= fits < 256  # 192 runs as a captured graph of its own size; 256 would pad every step past what fits
    held = tmp_path / "held.yaml"
    held.write_text(yaml.safe_dump({"schema_version": 1, "deployments": [entry | {
        "id": "held", "workload": entry["workload"] | {"max_batch_per_device": 192, "tokens_per_device_per_step": 2048}}]}))
    (row,) = api.validate(str(held))
    assert abs(row.error) < 0.05, row.error
    _quoted("192 sequences a rank its KV memory allows rather than the heuristic's 96")


PERF_OVERVIEW_REST = ROOT / "catalogs" / "published" / "deployments-trtllm-perf-overview-rest.yaml"


def _without_modelopt_formats(precision: dict) -> dict:
    """A Qwen3 row's precision less what its ModelOpt checkpoint adds: the FP8 KV cache, the NVFP4 attention."""
    return {p: n for p, n in precision.items() if p != "kv_cache" and not (p == "attention" and n == "nvfp4")}


def test_the_tensorrt_llm_perf_overview_figures(shared_data, tmp_path, monkeypatch):
    from hwmodels import catalog
    from hwmodels.calibrate import trtllm_bench
    from hwmodels.calibrate.deployments import EngineEntry, build_scenario, load_entries, summary, validate
    from hwmodels.serving import largest_batch_that_fits

    path = shared_data / "published" / "deployments-trtllm-perf-overview.yaml"
    rows, other = api.validate(str(path)), api.validate(str(PERF_OVERVIEW_REST))
    median = {None: summary(rows)["median_abs_error"]}
    worst = max(rows, key=lambda r: abs(r.error))
    assert worst.id == "trtllm-perf-overview-qwen3-30b-gb200-1024-1024"
    published = {r.id: r.published for r in rows}
    below = 1 - published[worst.id] / published["trtllm-perf-overview-qwen3-30b-b200-1024-1024"]
    _quoted(f"is predicted within a median\n{median[None]:.1%} (max {abs(worst.error):.1%}, Qwen3-30B on one GB200 at "
            f"1,024/1,024, a run the doc puts {below:.0%} below the same run on one B200)")
    o, both = summary(other), summary(rows + other)
    worst_other = max(other, key=lambda r: abs(r.error))
    assert worst_other.id == "trtllm-perf-overview-llama4-maverick-h200-1024-8192"
    maverick = {r.id.split("maverick-")[1]: r for r in other if "maverick" in r.id}
    ratio = {g: maverick[f"{g}-1024-8192"].published / maverick[f"{g}-1024-32768"].published for g in ("h200", "b200")}
    _quoted(f"(the {o['scenarios']} runs of its models, GPUs and layouts at the doc's other sequence lengths, and of Llama 4 "
            f"Maverick at all of them")
    _quoted(f"are predicted within a median {o['median_abs_error']:.1%} (max {abs(worst_other.error):.1%}, Llama 4 Maverick "
            f"on eight H200 at 1,024/8,192, a run the doc puts at {ratio['h200']:.1f}x its 1,024/32,768 one, where B200's is "
            f"{ratio['b200']:.1f}x); the {both['scenarios']} together within {both['median_abs_error']:.1%}, "
            f"{sum(abs(r.error) > 0.30 for r in rows + other)} of them outside 30%")
    error = {r.id: r.error for r in rows}
    requests = {(e.workload.input_tokens, e.workload.output_tokens): a["workload"]["requests"]
                for e in load_entries(path) if (a := catalog.published_amendments().get(e.id))}
    _quoted(f"({requests[1024, 1024]:,} at\n1,024/1,024 tokens, {requests[8192, 1024]:,} at 8,192/1,024 and 1,024/8,192")
    assert requests[1024, 8192] == requests[8192, 1024]
    dsr1 = next(e for e in load_entries(path) if e.id == "trtllm-perf-overview-dsr1-b200-1024-1024")
    ctx = build_scenario(dsr1, dsr1.engine).context
    s = trtllm_bench.engine_settings(ctx.arch, catalog.model_config("deepseek-r1"), ctx.precision,
                                     ctx.cluster.device.hbm_bytes, 4, 1, 1024, 1024)
    fits = largest_batch_that_fits(ctx, 2048, 0.9, s.max_num_tokens)
    _quoted(f"caps DeepSeek-R1 on four\nB200 at {s.max_batch_size} requests per rank at 1,024/1,024, where the KV memory holds {fits}")
    assert "128 KV heads of 56" in s.rule
    for backend in ("fitted", "sglang"):
        median[backend] = summary(validate(path, EngineEntry(name=backend)))["median_abs_error"]
    # the Qwen3 rows without their checkpoints' FP8 KV cache and NVFP4 attention
    amendments = catalog.published_amendments()
    monkeypatch.setattr(catalog, "published_amendments", lambda: {
        k: a | {"precision": _without_modelopt_formats(a.get("precision", {}))} if "qwen3" in k else a
        for k, a in amendments.items()})
    plain = validate(path)
    monkeypatch.setattr(catalog, "published_amendments", lambda: amendments)
    plain_other_file = tmp_path / "plain_other.yaml"
    entries = yaml.safe_load(PERF_OVERVIEW_REST.read_text())["deployments"]
    plain_other_file.write_text(yaml.safe_dump({"schema_version": 1, "deployments": [
        e | {"precision": _without_modelopt_formats(e["precision"])}
        if "qwen3" in e["id"] else e for e in entries]}))
    plain_other = validate(plain_other_file)
    p, po, pb = summary(plain), summary(plain_other), summary(plain + plain_other)
    _quoted(f"took the {both['scenarios']} rows' median from {pb['median_abs_error']:.1%} to {both['median_abs_error']:.1%} "
            f"({sum(abs(r.error) > 0.30 for r in plain + plain_other)} of them outside 30% before), the rest's from "
            f"{po['median_abs_error']:.1%} to {o['median_abs_error']:.1%}")
    _quoted(f"and the shared file's from {p['median_abs_error']:.1%} to {median[None]:.1%}, its max from "
            f"{p['max_abs_error']:.1%} to {abs(worst.error):.1%}")
    qwen235_blackwell = [r.error for r in plain + plain_other if "qwen3-235b" in r.id and "h1" not in r.id and "h2" not in r.id]
    now_blackwell = [r.error for r in rows + other if "qwen3-235b" in r.id and "h1" not in r.id and "h2" not in r.id]
    _quoted(f"Qwen3-235B on Blackwell from {-max(qwen235_blackwell):.0%}-{-min(qwen235_blackwell):.0%} low to "
            f"{min(now_blackwell):+.0%} to {max(now_blackwell):+.0%}")
    qwen30 = [r.error for r in rows + other if "qwen3-30b" in r.id and "32768-1024" not in r.id and r.id != worst.id]
    _quoted(f"Qwen3-30B's runs with 1,024- and 8,192-token prompts are {min(qwen30):+.0%} to {max(qwen30):+.0%}")
    llama4 = [r for r in other if "maverick" in r.id]
    on_blackwell, on_h200 = [r.error for r in llama4 if "h200" not in r.id], [r.error for r in llama4 if "h200" in r.id]
    assert max(on_blackwell) < 0 and not any("maverick" in r.id for r in rows)  # the shared file has no Llama 4
    _quoted(f"median {summary(llama4)['median_abs_error']:.1%} over its {len(llama4)} runs; its ten on Blackwell are "
            f"{-max(on_blackwell):.0%} to {-min(on_blackwell):.0%} low")
    assert len(on_blackwell) == 10
    _quoted(f"and on H200 it is {min(on_h200):+.0%} to {max(on_h200):+.0%}")
    h100 = "trtllm-perf-overview-qwen3-235b-h100-1024-1024"
    _quoted(f"Qwen3-235B on eight H100 at 1,024/1,024 {error[h100]:+.1%}")
    h200 = "trtllm-perf-overview-qwen3-235b-h200-1024-1024"
    entry = next(d for d in yaml.safe_load(path.read_text())["deployments"] if d["id"] == h200)
    bf16 = tmp_path / "bf16.yaml"  # the entry priced as the catalog's bf16 checkpoint, its own bf16 KV cache
    every_part = dict.fromkeys(("routed_experts", "shared_experts", "dense_mlp", "attention", "kv_cache"), "bf16")
    bf16.write_text(yaml.safe_dump({"schema_version": 1, "deployments": [entry | {"precision": every_part}]}))
    (unamended,) = api.validate(str(bf16))
    _quoted(f"Qwen3-235B on H200 at 1,024/1,024\nis {unamended.error:+.1%} priced as the catalog's bf16 checkpoint with a "
            f"bf16 KV cache and {error[h200]:+.1%} as NVIDIA's FP8 one")
    # the same entries without the CUDA-graph batch sizes their source states: decode steps unpadded
    monkeypatch.setattr(catalog, "published_amendments", lambda: {
        k: a | {"workload": {f: v for f, v in a["workload"].items() if f != "cuda_graph_batch_sizes"}}
        for k, a in amendments.items()})
    unpadded_rows = validate(path)
    unpadded, unpadded_error = summary(unpadded_rows), {r.id: r.error for r in unpadded_rows}
    monkeypatch.setattr(catalog, "published_amendments", lambda: amendments)
    gb200, b200 = "trtllm-perf-overview-gpt-oss-120b-gb200-1024-1024", "trtllm-perf-overview-gpt-oss-120b-b200-1024-1024"
    _quoted(f"Without that padding the median is\n{unpadded['median_abs_error']:.1%} (max {unpadded['max_abs_error']:.1%}): "
            f"it took gpt-oss-120b on GB200 from {unpadded_error[gb200]:+.1%} to {error[gb200]:+.1%} and on B200 at "
            f"1,024/1,024 from {unpadded_error[b200]:+.1%} to\n{error[b200]:+.1%}")
    qwen_moved = [100 * (unpadded_error[i] - error[i]) for i in error if "qwen3-235b" in i]
    _quoted(f"and the Qwen3-235B rows {round(min(qwen_moved))} to {round(max(qwen_moved))} points lower (on H200 at "
            f"1,024/1,024 from {unpadded_error[h200]:+.1%})")
    notes = " ".join(next(r for r in rows if r.id == h200).assumptions)
    kv = int(re.search(r"KV memory holds (\d+) requests", notes).group(1))
    graphs = [int(g) for g in re.search(r"smallest captured batch that holds it \(([\d, ]+) per", notes).group(1).split(", ")]
    _quoted(f"whose KV memory holds {kv} requests per rank, decodes as {min(g for g in graphs if g >= kv)}")
    gpt_oss = {i: e for i, e in error.items() if "gpt-oss" in i}
    out_gpt_oss = [e for e in gpt_oss.values() if abs(e) > 0.30]
    _quoted(f"Outside 30% still: the three Qwen3 rows above, one of the five gpt-oss-120b rows\n({max(out_gpt_oss):+.0%}), "
            f"on H100 over four GPUs")
    _quoted(f"+12.0% ({gpt_oss['trtllm-perf-overview-gpt-oss-120b-h200-1024-1024']:+.1%} now;")
    blackwell = [e for i, e in gpt_oss.items() if "b200" in i]
    _quoted(f"the three on Blackwell at {min(blackwell):+.0%} to {max(blackwell):+.0%} with that FP8 KV cache")
    bf16_kv = tmp_path / "bf16_kv.yaml"  # the same three with a bf16 KV cache stated: no amendment fills it
    bf16_kv.write_text(yaml.safe_dump({"schema_version": 1, "deployments": [
        d | {"precision": d["precision"] | {"kv_cache": "bf16"}} for d in yaml.safe_load(path.read_text())["deployments"]
        if "gpt-oss" in d["id"] and "b200" in d["id"]]}))
    bf16_errors = [r.error for r in api.validate(str(bf16_kv))]
    _quoted(f"({min(bf16_errors):+.0%} to {max(bf16_errors):+.0%} with a bf16 one)")
    _quoted(f"DeepSeek-R1 on H200 at 1,024/1,024 ({error['trtllm-perf-overview-dsr1-h200-1024-1024']:+.1%} now")
    _quoted(f"DeepSeek-R1 on B200 at 1,024/8,192 ({error['trtllm-perf-overview-dsr1-b200-1024-8192']:+.1%})")
    outside = {i for i, e in error.items() if abs(e) > 0.30}
    dsr1_blackwell = {f"trtllm-perf-overview-dsr1-{r}" for r in ("b200-1024-1024", "b200-1024-8192")}
    qwen_out = {i for i in outside if "qwen3" in i}
    assert len(out_gpt_oss) == 1 and outside == {i for i, e in gpt_oss.items() if abs(e) > 0.30} | dsr1_blackwell | qwen_out
    assert qwen_out == {h100, worst.id, "trtllm-perf-overview-qwen3-30b-b200-1024-1024"}
    _quoted(f"DeepSeek-R1's two 1,024-token-prompt rows on four B200 ({min(error[i] for i in dsr1_blackwell):+.0%} "
            f"to {max(error[i] for i in dsr1_blackwell):+.0%})")
    # the steady-state reading: the same entries without their request counts
    monkeypatch.setattr(catalog, "published_amendments", lambda: {
        k: {f: v for f, v in a.items() if f != "workload"} for k, a in amendments.items()})
    steady = {b: summary(validate(path, b and EngineEntry(name=b))) for b in (None, "fitted", "sglang")}
    _quoted(f"the median is {steady[None]['median_abs_error']:.1%} (max {steady[None]['max_abs_error']:.1%})")
    long = [r.error for r in validate(path) if r.id.endswith("8192-1024") and ("dsr1" in r.id or "qwen3-235b" in r.id)]
    _quoted(f"Qwen3-235B are {-max(long):.0%} to {-min(long):.0%} low")
    _quoted(f"on the fitted models alone the median goes from {steady['fitted']['median_abs_error']:.1%} to "
            f"{median['fitted']:.1%}, on SGLang's tables from {steady['sglang']['median_abs_error']:.1%} to\n"
            f"{median['sglang']:.1%}")
    assert all(median[b] < steady[b]["median_abs_error"] for b in median)


def test_the_published_bars_bench_fidelity_prints(shared_data):
    from hwmodels.calibrate.deployments import summary, validate

    catalog_file = summary(validate(None))
    overview = summary(validate(shared_data / "published" / "deployments-trtllm-perf-overview.yaml"))
    _quoted(f"the catalog's, {catalog_file['modelled']} of {catalog_file['scenarios']} modelled, median\n"
            f"{catalog_file['median_abs_error']:.1%}, max {catalog_file['max_abs_error']:.1%}; TensorRT-LLM's perf overview, "
            f"{overview['modelled']} of {overview['scenarios']}, median {overview['median_abs_error']:.1%}, "
            f"max {overview['max_abs_error']:.1%}")
    rest = validate(PERF_OVERVIEW_REST)
    both = summary(validate(shared_data / "published" / "deployments-trtllm-perf-overview.yaml") + rest)
    rest = summary(rest)
    _quoted(f"the perf overview's runs that file leaves out, {rest['modelled']} of {rest['scenarios']} modelled, "
            f"median\n{rest['median_abs_error']:.1%}, max {rest['max_abs_error']:.1%}, and the {both['scenarios']} runs "
            f"of both its files together, median {both['median_abs_error']:.1%}")


def test_the_tensorrt_llm_runs_arithmetic():
    from hwmodels.calibrate.deployments import build_scenario, load_entries
    from hwmodels.roles import Phase

    entry = next(e for e in load_entries(None) if e.id == "trtllm-h200-max-throughput")
    w = entry.workload
    batch, budget = w.max_batch_per_device, w.tokens_per_device_per_step
    _quoted(f"(`--max_num_tokens {budget}`, decode tokens included, beside {batch} slots per rank; a dataset of "
            f"exactly {w.input_tokens:,} input and {w.output_tokens:,} output tokens; concurrency {w.concurrency:,} = "
            f"{entry.devices} ranks x {batch})")
    # one prompt per rank per step, as hwmodels.serving.lockstep_aggregated_performance admits them
    assert (budget - batch) // (w.input_tokens - 1) == 1
    _quoted(f"{batch} mixed steps in each {w.output_tokens:,}-step slot lifetime")
    published_per_user = 11.35  # tokens/s, the same TensorRT-LLM blog post as the table's row
    step = build_scenario(entry, entry.engine).context.step(Phase.DECODE, batch, w.input_tokens + w.output_tokens / 2)
    _quoted(f"Its published per-user rate, {published_per_user} tokens/s, puts its average step at "
            f"{1e3 / published_per_user:.0f} ms, against moeplan's {step.time_s * 1e3:.0f} ms decode step for {batch} "
            f"sequences per GPU at EP{entry.devices}")


# --- kernels_ref: accuracy, and the committed measurement's calibration -------------------------------------

def _sci(x: float) -> str:
    return f"{x:.1e}".replace("e-0", "e-")


def test_the_fp8_experts_error_at_kimi_k2s_sizes():
    torch = pytest.importorskip("torch")
    from kernels_ref import TOLERANCE, calc_diff, grouped_swiglu_fp8
    from kernels_ref.generators import generate_grouped_swiglu

    # one expert, 8 tokens, Kimi K2's hidden 7168 and expert width 2048 (tests/kernels_ref/test_grouped_gemm.py)
    errors = {}
    for reference in ("checkpoint", "unquantised"):
        inputs, expected = generate_grouped_swiglu([8], 7168, 2048, seed=5, reference=reference)
        y = grouped_swiglu_fp8(inputs.x_q, inputs.x_scale, inputs.offsets, inputs.weights, torch.float32)
        errors[reference] = calc_diff(y, expected)
    assert (TOLERANCE["fp8_swiglu"], TOLERANCE["fp8_swiglu_with_weight_rounding"]) == (1e-3, 3e-3)  # the README's bars
    _quoted("stay below 1e-3 against fp32 arithmetic on the checkpoint's own weights")
    # the autotuner's path (where the AMX kernel applies the block scales) moves the figure within the quoted range
    assert 9.5e-4 <= round(errors["checkpoint"], 5) <= 9.9e-4
    _quoted("9.5e-4 to 9.9e-4 measured at Kimi K2's sizes, by the kernel path the autotuner picks")
    _quoted(f"gives {_sci(errors['unquantised'])} (tested below 3e-3)")


def _benchmark(name: str):
    """benchmarks/<name>.py as a module (the scripts import their sibling record.py)."""
    import importlib

    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(ROOT / "benchmarks"))
        return importlib.import_module(name)


def _words(items) -> str:
    items = [str(i) for i in items]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def test_the_kernel_calibration_figures():
    pytest.importorskip("torch")  # bench_kernels.py imports kernels_ref
    kernels_bench = _benchmark("bench_kernels")
    record = _results("bench_kernels")
    f = record["figures"]
    path = ROOT / "catalogs" / "measured" / f["csv"]
    # the results file is what bench_kernels.py --from makes of the committed CSV today
    assert json.loads(json.dumps(kernels_bench.headline(kernels_bench._read_rows(path), path))) == \
        {k: v for k, v in f.items() if k not in ("measured_wall_s", "quick")}
    c, layer = f["calibration"], f["layer_shape"]
    worst = {"quantize_fp8": "fp8 quantisation", "router_noaux_tc": "the router"}[f["worst_row"]["kernel"].split(":")[0]]
    _quoted(f"(`moe_layer` rows: router top-{layer['top_k']}, dispatch, grouped experts, shared expert, combine, on "
            f"{layer['experts']} of Kimi K2's {layer['experts_of_model']} experts, an "
            f"EP{layer['experts_of_model'] // layer['experts']} shard)")
    _quoted(f"On a {f['threads']}-thread {f['device'].split(' (')[0]} (`catalogs/measured/{f['csv']}`, measured "
            f"{f['date']} by `python benchmarks/bench_kernels.py`): the whole layer within {c['layer_max_abs_error']:.1%} "
            f"of its prediction at {_words(f['layer_tokens']['decode'])} (decode) and "
            f"{_words(f['layer_tokens']['prefill'])} (prefill) tokens, and every one of the {c['rows']} kernel rows "
            f"within {c['max_abs_error']:.1%} of its fit (the worst: {worst} of {f['worst_row']['tokens']} token{'s' * (f['worst_row']['tokens'] != 1)}), "
            f"bar {c['bar']:.0%}; fp8 experts at {f['prefill_ratio_range'][0]:.2f} to {f['prefill_ratio_range'][1]:.2f} "
            f"of the measured bf16 matmul rate at prefill and {f['decode_memory_bound_ratio_range'][0]:.2f} to "
            f"{f['decode_memory_bound_ratio_range'][1]:.2f} of the measured memory bandwidth at memory-bound decode "
            f"shapes (target {f['target_fraction']:g})")
    low, high = (b / 1e9 for b in f["probe_bytes_per_s_range"])
    _quoted(f"The memory probe swung between {low:.0f} and {high:.0f} GB/s within that run")


def _roofline_bar_words(bar: dict) -> str:
    classes = {"experts": "experts", "layer": "whole layer", "glue": "glue"}
    words = [f"{label}: min {bar[name]['min']:.2f}, median {bar[name]['median']:.2f} ({bar[name]['below']} of "
             f"{bar[name]['rows']} below {bar[name]['target']:.2f})" for name, label in classes.items()]
    return "; ".join(words) + f"; median of all {bar['all']['rows']} kernel rows {bar['all']['median']:.2f}"


def test_the_kernel_roofline_bar_figures():
    # issue 24's bar, computed from the committed CSVs of the three machines
    pytest.importorskip("torch")
    kernels_bench = _benchmark("bench_kernels")
    measured = ROOT / "catalogs" / "measured"
    for name, machine in (("kernels-intel-xeon-avx512-2-threads.csv", "Intel Xeon without AMX"),
                          ("kernels-amd-epyc-2-threads.csv", "AMD EPYC"),
                          ("kernels-intel-xeon-2-threads.csv", "AMX Intel Xeon")):
        rows = kernels_bench._read_rows(measured / name)
        _quoted(f"On the 2-thread {machine} (`catalogs/measured/{name}`, measured {rows[0]['date']}): "
                + _roofline_bar_words(kernels_bench.bar_report(rows)) + ".")


# --- benchmarks: the figures their last run recorded --------------------------------------------------------

def test_the_placement_benchmark():
    record = _results("bench_placement")
    f = record["figures"]
    inside, held_out, solve = f["in_sample"], f["out_of_sample"], f["solve_time"]
    ep72 = inside["mean_step_cost_by_config"]["EP72+32"]
    assert inside["never_worse_than_eplb"] and solve["met"]
    modes = held_out["modes"]
    _quoted(f"(`python benchmarks/bench_placement.py`, {f['wall_s'] / 60:.0f} minutes on a {record['on']}; "
            f"`benchmarks/results/bench_placement.json`): in-sample never worse than EPLB (EP72 + 32 slots, mean over "
            f"the {inside['files']} files: {ep72['ilp_step_cost']:.3f} vs {ep72['eplb_step_cost']:.3f}); EP144 x "
            f"{solve['layers']} layers within its {solve['bar_s']:.0f} s limit on {record['machine']['cpus']} cores.")
    # (b) the README states the robustness bar as measured, met or not
    words = []
    for mode, fitted in (("several", "fitted on the other files of its phase"), ("one", "fitted on one other file"),
                         ("other_workload", "fitted on the other phase's files")):
        m = modes[mode]
        r = m["mean_ratio_to_stronger_eplb"]
        words.append(f"{fitted}, {abs(1 - r):.1%} {'lower' if r <= 1 else 'higher'} on average "
                     f"({m['cases_above_stronger_eplb']} of {m['cases']} cases above it, worst "
                     f"{m['max_ratio_to_stronger_eplb']:.3f}x)")
    _quoted("; ".join(words))
    _quoted(f"at most {1 - modes['several']['mean_own_bound_ratio']:.1%} lower than that EPLB fitted on several "
            f"windows, {1 - modes['one']['mean_own_bound_ratio']:.1%} on one")
    _quoted(f"bar, {held_out['bar']:.0%} lower on average and never above, fitted on one window and on several, is "
            + ("met" if held_out["met"] else "not met"))
    assert held_out["met"] == all(modes[m]["met"] for m in ("one", "several"))
    # (d) moeplan issue 19: cross-node bytes per token by placement, and what the step model says they cost
    cross = f["cross_node"]
    mean = cross["mean_by_method"]
    assert cross["met"]
    assert mean["ilp_node"]["cross_node_mb_per_token"] < mean["contiguous"]["cross_node_mb_per_token"]
    _quoted(f"the node-aware ILP (weight {cross['scaleout_weight']:.2f}) sends "
            f"{mean['ilp_node']['cross_node_mb_per_token']:.2f} MB per token across nodes on average, EPLB "
            f"{mean['eplb']['cross_node_mb_per_token']:.2f}, contiguous placement "
            f"{mean['contiguous']['cross_node_mb_per_token']:.2f} and the balance-only ILP "
            f"{mean['ilp']['cross_node_mb_per_token']:.2f}: no more than EPLB and less than contiguous in every case.")
    _quoted(f"(step cost {mean['ilp_node']['step_cost']:.2f} against EPLB's {mean['eplb']['step_cost']:.2f} and the "
            f"balance-only ILP's {mean['ilp']['step_cost']:.2f}), so on 9 x HGX H800 a prefill step of 4,096 tokens per "
            f"GPU takes {mean['ilp_node']['prefill_step_ms']:.0f} ms against {mean['eplb']['prefill_step_ms']:.0f} ms and "
            f"{mean['ilp']['prefill_step_ms']:.0f} ms, and even its dispatch and combine take "
            f"{mean['ilp_node']['prefill_alltoall_ms']:.0f} ms against {mean['eplb']['prefill_alltoall_ms']:.0f} ms")
    # the README's conclusion holds only while the step model says so
    assert mean["ilp_node"]["prefill_step_ms"] > mean["eplb"]["prefill_step_ms"]


def test_the_simulator_benchmark():
    record = _results("bench_sim")
    f = record["figures"]
    wall, growth, runs = f["replay_wall_s"], f["wall_growth_by_copies"], f["runs"]
    uniform, eplb, contiguous = runs["uniform"], runs["EPLB skew"], runs["contiguous skew"]
    assert growth["2x"] < 2.2 and growth["4x"] < 4.4  # linear, within a shared machine's noise
    grid_mean = max(e["mean"] for e in f["grid_error"].values())
    grid_worst = max(e["worst"] for e in f["grid_error"].values())
    _quoted(f"tracks the exact step within {grid_mean:.3%} on average and {grid_worst:.1%} at worst over the steps of "
            f"the replay below")
    percentiles = [f"{m}_p{q}_s" for m in ("ttft", "tpot") for q in (50, 90, 99)]
    moved = [eplb[k] / uniform[k] - 1 for k in percentiles]
    _quoted(f"plans this spec ({f['plan_s']:.1f} s: TTFT p99 {f['planned']['ttft_p99_s']:.2f} s, TPOT p99 "
            f"{f['planned']['tpot_p99_s'] * 1e3:.1f} ms) and replays the full trace ({wall['uniform']:.1f} s uniform, "
            f"{wall['EPLB skew']:.1f} s with EPLB-balanced skew on a {record['on']}; the target is {f['target_s']:.0f} s "
            f"for both), shows wall time growing linearly with requests (1x, 2x, 4x: "
            f"{', '.join(f'{g:.2f}' for g in growth.values())} in the last run)")
    _quoted(f"EPLB's skew (imbalance {eplb['prefill_imbalance']:.2f} prefill, {eplb['decode_imbalance']:.2f} decode) "
            f"moves them by under {_worst_percent(moved)}%, contiguous placement ({contiguous['prefill_imbalance']:.2f}, "
            f"{contiguous['decode_imbalance']:.2f}) raises TTFT p50 by "
            f"{contiguous['ttft_p50_s'] / eplb['ttft_p50_s'] - 1:.0%} (goodput {eplb['goodput_requests_per_s']:.2f} "
            f"and {contiguous['goodput_requests_per_s']:.2f} requests/s).")


def test_the_plan_benchmark():
    record = _results("bench_plan")
    f = record["figures"]
    _quoted(f"A plan of Kimi K2 on 128 H200, its replays included, takes {f['plan_128_h200']['wall_s']:.1f} s on a "
            f"{record['on']} (`python benchmarks/bench_plan.py`);")
    checked = f["checked_plan_128_h200_mooncake"]
    held = checked["replays"][-1]
    assert held["holds"] and checked["wall_s"] < checked["target_s"]
    _quoted(f"sized for the Mooncake trace and checked on it, {checked['wall_s']:.1f} s (the budget is "
            f"{checked['target_s']:.0f} s): {len(checked['replays'])} option replayed, TTFT {held['planned_ttft_s']:.2f} s "
            f"planned against {held['replayed_ttft_s']:.2f} s replayed, TPOT {held['planned_tpot_s'] * 1e3:.1f} against "
            f"{held['replayed_tpot_s'] * 1e3:.1f} ms.")
    routed = f["routed_plan_16_h200"]
    assert routed["method"] == "ilp" and len(routed["fit"]) == 2
    slots = f" + {routed['redundant_experts']}" if routed["redundant_experts"] else " (no redundant slots)"
    _quoted(f"On Kimi K2 / 16 x H200 with the ILP fitted on two DeepSeek-V3 decode files and scored on a third, the "
            f"recommended EP{routed['ep']}{slots} placement comes within {routed['gap']:.2%} of its bound in sample "
            f"({routed['in_sample_objective']:.4f}) and runs {routed['held_out_mean_imbalance']:.2f} x the mean device "
            f"load held out (worst layer {routed['held_out_worst_layer_imbalance']:.2f}); the plan, its replays included, takes "
            f"{routed['wall_s']:.0f} s on a {record['on']} (`python benchmarks/bench_plan.py`).")


def test_the_device_profile_section_says_which_committed_csv_meets_the_calibration_bar():
    from hwmodels.calibrate.kernels_measured import CALIBRATION_BAR, load_measured, summary

    measured = ROOT / "catalogs" / "measured"

    def where(name: str) -> str:
        s = summary(load_measured(measured / name))
        return "within" if s["rows_within_bar"] and s["layers_within_bar"] else "outside"
    _quoted(f"`moeplan validate --kernels` reports all three: the AMD EPYC's {where('kernels-amd-epyc-2-threads.csv')} "
            f"the {CALIBRATION_BAR:.0%} calibration bar, the AMX Xeon's (run on a shared VM) "
            f"{where('kernels-intel-xeon-2-threads.csv')} it, the other Xeon's "
            f"{where('kernels-intel-xeon-avx512-2-threads.csv')} it.")


def test_the_cold_floor_benchmark():
    record = _results("bench_cold_floor")
    f = record["figures"]
    k = f["kernels"]

    def row(name: str) -> str:
        r = k[name]
        return (f"{(r['read_bytes'] + r['write_bytes']) / 1e3:.1f} kB: roofline {r['roofline_us']:.1f} us, floor "
                f"{r['floor_us']:.1f} us ({r['floor_fraction']:.2f}), kernel {r['kernel_us']:.1f} us "
                f"({r['kernel_fraction']:.2f})")
    _quoted(f"(`python benchmarks/bench_cold_floor.py`, on a {record['on']}, {f['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s): "
            f"quantisation {row('quantize_fp8')}; dispatch {row('dispatch_fp8')}; combine {row('combine_bf16')}; "
            f"router {row('router_noaux_tc')}.")


def test_the_glue_calls_benchmark():
    record = _results("bench_glue_calls")
    f, load = record["figures"], record["load_average_1m"]

    def pair(name: str) -> str:
        return f"{f[f'{name}_1_tokens_eager_s'] * 1e6:.0f} -> {f[f'{name}_1_tokens_prepared_s'] * 1e6:.0f}"
    _quoted(f"`python benchmarks/bench_glue_calls.py`, one token right after the flush, on a {record['on']} (load "
            f"{load['start']:.1f} at the start, {load['end']:.1f} at the end): quantisation {pair('quantize')} us, "
            f"dispatch (plan and both gathers) {pair('dispatch')}, combine {pair('combine')}, router {pair('router')}.")


def test_the_step_benchmark():
    record = _results("bench_step")
    f = record["figures"]
    _quoted(f"`python benchmarks/bench_step.py` scores {f['layouts']:,} distinct layouts of Kimi K2 on 128 H200 (decode "
            f"and prefill step, all layers): {f['layouts_per_s']:,.0f} per second with the stored fits and "
            f"{f['tables_layouts_per_s']:,.0f} with SGLang's measured H200 tables on, on a {record['on']} (target "
            f"{f['target_layouts_per_s']:,} for both).")


def test_the_sweep_benchmark():
    record = _results("bench_sweep")
    f = record["figures"]
    grid = [len(values) for values in _benchmark("bench_sweep").VARY.values()]
    assert f["same_rows"] and f["points"] == grid[0] * grid[1] * grid[2]
    ratio = f["ray_points_per_s"] / f["local_points_per_s"]
    _quoted(f"`python benchmarks/bench_sweep.py` runs {f['points']:,} points (Kimi K2 on 16 H200: {grid[0]} TPOT SLOs x "
            f"{grid[1]} prompt lengths x {grid[2]} prices) both ways. On a {record['on']}, local processes ran "
            f"{f['local_points_per_s']:.1f} points/s and local Ray {f['ray_points_per_s']:.1f} points/s ({ratio:.2f} x, "
            f"plus {f['ray_startup_s']:.0f} s to start the Ray instance), with the same rows;")


def test_the_hostile_input_benchmark():
    record = _results("bench_hostile")
    f = record["figures"]
    ci = sum(s["inputs"] for s in f["per_suite"].values()) / f["scale"]  # about what CI runs at scale 1
    assert f["bar_met"] and f["inputs"] >= 10_000
    _quoted(f"`python benchmarks/bench_hostile.py` runs {f['inputs']:,} of them ({f['scale']:g} times CI's), "
            f"{len(f['large_files'])} files just under 10 MB of every kind, valid and hostile, through their commands, "
            f"and {f['kills']} kill -9 runs while a report is being written, each followed by a run to completion. On a "
            f"{record['on']}: {f['tracebacks'] + f['large_files_tracebacks']} tracebacks, "
            f"{f['over_limit'] + f['large_files_over_limit']} inputs past their time limit, peak resident memory "
            f"{f['peak_rss_bytes'] / 2**30:.2f} GiB for the fuzz and {f['large_files_peak_rss_bytes'] / 2**30:.2f} GiB for "
            f"a 10 MB file, {f['user_files_changed']} user files changed and {f['staging_leftovers']} staging folders left.")
    _quoted(f"about {round(ci, -2):,.0f} hostile specs, config.json files, traces, routing files and command lines in CI")


def test_the_2026_models_table_and_claims():
    """README "Models of 2026": each row from `moeplan.model_summary`, the DeepSeek-V4-Pro / V3.2 ratios at a
    million tokens, Kimi K3's weights against one HGX B200 node and its tokens per 1024-px image."""
    from hwmodels import catalog
    from hwmodels.arithmetic import cache_bytes_per_sequence, flops_per_token
    from hwmodels.precision import default_plan
    from hwmodels.units import GiB, format_bytes, format_count

    rows = {"Kimi K3": "kimi-k3", "DeepSeek-V3.2": "deepseek-v3.2", "DeepSeek-V4-Pro": "deepseek-v4-pro", "GLM-5": "glm-5",
            "Qwen3.5-397B-A17B": "qwen3.5-397b-a17b", "MiniMax-M2.5": "minimax-m2.5", "gpt-oss-120b": "gpt-oss-120b"}
    for label, name in rows.items():
        s = moeplan.model_summary(name)
        kinds = ", ".join(f"{n} {k}" for k, n in s["attention_layers"].items())
        state = format_bytes(s["linear_state_bytes_per_sequence"]) if s["linear_state_bytes_per_sequence"] else "-"
        _quoted(f"| {label} | {format_count(s['total_params'])} | {format_count(s['active_params'])} | {s['attention']} "
                f"({kinds}) | {s['kv_bytes_per_token']:,.0f} B | {state} | {format_bytes(s['weight_bytes'])} "
                f"{s['precision']['routed_experts']} |")
    million = 2**20
    models = {n: catalog.load_model(n) for n in ("deepseek-v4-pro", "deepseek-v3.2")}
    plans = {n: default_plan(a.quantization_config, a.torch_dtype) for n, a in models.items()}
    flops = {n: flops_per_token(a, million, "decode")["total"] for n, a in models.items()}
    cache = {n: cache_bytes_per_sequence(a, plans[n], million) for n, a in models.items()}
    _quoted(f"DeepSeek-V4-Pro needs {flops['deepseek-v4-pro'] / flops['deepseek-v3.2']:.0%} of DeepSeek-V3.2's decode "
            f"FLOPs per token and {cache['deepseek-v4-pro'] / cache['deepseek-v3.2']:.0%} of its KV cache")
    k3 = moeplan.model_summary("kimi-k3")
    b200 = catalog.load_device("b200-sxm").hbm_bytes
    assert k3["weight_bytes"] > 8 * b200 and b200 == 180 * GiB
    _quoted(f"Kimi K3's weights ({format_bytes(k3['weight_bytes'])}) do not fit one 8-GPU HGX B200 node (8 x 180 GiB)")
    _quoted(f"a 1024 x 1024 image adds {k3['image_tokens_per_1024px_image']:,} prompt tokens to Kimi K3")


def test_the_config_families_table():
    """README's rows for config.json files outside the catalog: the counts recomputed from test_model_families's
    configs; the published ones are the model cards' (cited there)."""
    from hwmodels import catalog
    from hwmodels.arithmetic import active_params, total_params
    from hwmodels.model_arch import arch_from_config
    from hwmodels.units import format_count
    from test_model_families import ERNIE_300B

    rows = {"Llama-4-Maverick-17B-128E (`llama-4-maverick`)": (catalog.load_model("llama-4-maverick"), "400 B, 17 B active"),
            "Llama-4-Scout-17B-16E (`llama-4-scout`)": (catalog.load_model("llama-4-scout"), "109 B, 17 B active"),
            "ERNIE-4.5-300B-A47B": (arch_from_config(ERNIE_300B, "ernie"), "300 B, 47 B active")}
    for label, (arch, published) in rows.items():
        _quoted(f"| {label} | {format_count(total_params(arch))} | {format_count(active_params(arch))} | {published} |")


def test_the_measured_deployments_figures():
    f = _results("bench_fidelity")["figures"]
    _quoted(f"coverage {f['coverage']:.0%} of its {f['rows']} rows")
    _quoted(f"predicted within a median {f['moeplan_tpot_median']:.1%} on TPOT and {f['moeplan_ttft_median']:.1%} on TTFT "
            f"(the\nbars are 12% and 25%)")
    _quoted(f"TPOT median |error| {f['moeplan_tpot_median']:.1%} (peer {f['peer_tpot_median']:.1%} on the 334 rows it "
            f"estimated), TTFT {f['moeplan_ttft_median']:.1%} (peer {f['peer_ttft_median']:.1%})")
    fit = f["closed_loop_fit"]
    overhead_ms = {e: round(v * 1e3) for e, v in fit["request_overhead_s"].items()}
    _quoted(f"misses by a median {fit['startup_only']:.0%} (the burst) or {fit['steady_only']:.0%} (the steady state)")
    _quoted(f"SGLang {overhead_ms['sglang']} ms, TensorRT-LLM {overhead_ms['trtllm']} ms, vLLM {overhead_ms['vllm']} ms, "
            f"share {fit['startup_share']:.3g}")
    held = fit["held_out_by_engine"]
    _quoted(f"TTFT median |error| {fit['held_out_ttft_median']:.1%}\n  held out (SGLang {held['sglang']:.1%}, "
            f"TensorRT-LLM {held['trtllm']:.1%}, vLLM {held['vllm']:.1%}), {fit['fitted_ttft_median']:.1%} fitted")
    layer_us = {e: v * 1e6 for e, v in fit["layer_overhead_s"].items()}
    held = fit["held_out_tpot_by_engine"]
    _quoted(f"SGLang {layer_us['sglang']:.1f} us, TensorRT-LLM {layer_us['trtllm']:.1f} us, vLLM {layer_us['vllm']:.1f} us "
            f"a layer ({fit['no_layer_overhead_tpot_median']:.1%} -> {fit['fitted_tpot_median']:.1%} fitted;\n    "
            f"{fit['held_out_tpot_median']:.1%} held out by the same 5-fold split: SGLang {held['sglang']:.1%}, "
            f"TensorRT-LLM {held['trtllm']:.1%}, vLLM {held['vllm']:.1%})")
    sample = f["package_sample_held_out"]
    _quoted(f"which no constant was fitted on ({sample['rows']:,} rows, {sample['modelled']:,} of them modelled), TPOT "
            f"is missed by a median {sample['moeplan_tpot_median']:.1%}\nand TTFT by {sample['moeplan_ttft_median']:.1%}")


def test_estimate_figures():
    """The estimate section: the plan's own layout estimated again, and DP16's unqueued p99 TTFT."""
    pinned = api.estimate(str(example_path()), layout="attention=tp8xdp2,experts=ep16", batch=4).plan.recommendation
    _quoted(f"gives its TTFT {pinned.ttft_s:.2f} s and TPOT {pinned.tpot_s * 1e3:.1f} ms again")
    dp16 = api.estimate(str(example_path()), layout="attention=dp16,experts=ep16")
    _quoted(f"its p99 prompt alone takes {dp16.unqueued_ttft_s:.1f} s against the 5 s TTFT SLO")


def test_the_default_engine_on_the_built_in_example(monkeypatch):
    """Without MOEPLAN_BACKEND (tests/conftest.py sets it to fitted), the built-in example is priced by SGLang."""
    from hwmodels.calibrate.measured_costs import source_for
    if source_for("h200-sxm", "sglang", None) is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI installs moeplan[measured], but aiconfigurator-core's tables were not found")
        pytest.skip("aiconfigurator-core is not installed (pip install 'moeplan[measured]')")
    monkeypatch.delenv("MOEPLAN_BACKEND")
    note = api.deployment(example_path()).serving.engine_note
    assert "sglang 5 of 5" in note and "trtllm 5 of 5" in note and "vllm 3 of 5" in note
    plan = api.plan(example_path())
    assert plan.recommendation is None
    _quoted(plan.plan.infeasible)
    heads = 64 // 8
    flops = {e: 32768**2 / 2 * heads * (192 + 128) * 2 / source_for("h200-sxm", e, None).mla_prefill(1, 32768, heads, "bf16").latency_s
             for e in ("sglang", "trtllm")}
    _quoted(f"32,768-token prompt at {flops['sglang'] / 1e12:.0f} TFLOP/s on Kimi K2's {heads} heads per device "
            f"(TensorRT-LLM's table: {flops['trtllm'] / 1e12:.0f})")
    unqueued = {b: api.estimate(example_path(), layout="attention=tp8xdp2,experts=ep16", batch=2, backend=b).unqueued_ttft_s
                for b in (None, "fitted")}
    _quoted(f"prefills the p99 prompt in\n{unqueued[None]:.2f} s before any queue, against {unqueued['fitted']:.2f} s fitted")


def test_mixed_hardware_figures():
    mixed = api.plan(str(example_path().parent / "kimi-k2-h200-prefill-b200-decode.yaml"), replay=1)
    r, check = mixed.recommendation, mixed.replays[0]
    single = api.plan(str(example_path().parent / "kimi-k2-h200-128.yaml"), replay=0).recommendation
    _quoted(f"{r.prefill_devices} H200 prefill 3.4 requests/s for {r.decode_devices} B200 decoding (TTFT {r.ttft_s:.2f} s, "
            f"TPOT {r.tpot_s * 1e3:.1f} ms planned; {check.replayed_ttft_s:.2f} s and {check.replayed_tpot_s * 1e3:.1f} ms "
            f"replayed): ${r.usd_per_hour:,.2f} an hour")
    _quoted(f"where {single.devices} H200 cost ${single.usd_per_hour:,.2f}")


def test_the_price_pickers_example_costs(default_plan):
    """The README's Hardware and prices section: the built-in example at the default row and at OCI's rows."""
    oci = api.plan(example_path(), cloud="oci")
    default_price, oci_price = default_plan.deployment.price, oci.deployment.price
    assert (default_plan.recommendation.devices, oci.recommendation.devices) == (16, 16)
    _quoted(f"The built-in example (Kimi K2 on 16 H200) costs ${default_plan.recommendation.usd_per_million_output:.2f} "
            f"per million output tokens at the default row (${default_price.usd_per_device_hour:.2f}/h) and "
            f"${oci.recommendation.usd_per_million_output:.2f} at OCI's list price (${oci_price.usd_per_device_hour:.2f}/h).")
    assert oci_price.basis == "list"


# --- pipeline stages ----------------------------------------------------------------------------------------

def _pipeline_sentences() -> list[str]:
    """The Pipeline stages section's figures, recomputed: Kimi K2 on 16 H200 at a quarter of the NIC, the 128-H200
    example's frontier, and the B200 what-if's decode pool."""
    from hwmodels import layouts
    from hwmodels.catalog import load_unit
    from hwmodels.hardware import instance_cluster
    from hwmodels.layout import Layout
    from hwmodels.serving import decode_performance, largest_batch_that_fits
    from hwmodels.step import StepContext
    from hwmodels.calibrate.operator_costs import costs_of
    from planner.expert_loads import ExpertLoads
    from planner.prompt_times import sub_cluster

    d = api.deployment(example_path())
    unit = load_unit("hgx-h200")
    weak = replace(unit, device=replace(unit.device, scaleout_bytes_per_s=unit.device.scaleout_bytes_per_s / 4))

    def rate(u, layout):
        return StepContext(d.model, d.precision, instance_cluster(u, 16), layout).step("decode", 64, 4096).tokens_per_s_per_device
    piped, flat = Layout(1, 8, pp=2), Layout(1, 16)
    weak_text = (f"PP2 (DP8 + EP8 a stage) makes {rate(weak, piped):,.0f} output tokens/s per device against EP16's "
                 f"{rate(weak, flat):,.0f}, whose all-to-all crosses the slow NIC; at the full NIC EP16 makes "
                 f"{rate(unit, flat):,.0f} and PP2 {rate(unit, piped):,.0f}.")
    view = api.plan(str(example_path("kimi-k2-h200-128.yaml")), replay=0)
    pp = max((c for c in view.frontier if c.layout.pp > 1), key=lambda c: c.tokens_per_s_per_device)
    with pytest.MonkeyPatch.context() as patch:  # the same search without stages
        patch.setattr(layouts, "PIPELINE_STAGES", (1,))
        flat_view = api.plan(str(example_path("kimi-k2-h200-128.yaml")), replay=0)
    end = max(flat_view.frontier, key=lambda c: c.tokens_per_s_per_device)
    assert pp.tokens_per_s_per_device > end.tokens_per_s_per_device and pp.tokens_per_s_per_user > end.tokens_per_s_per_user
    r, flat_r = view.recommendation, flat_view.recommendation
    assert r.decode.layout.pp == 1 and (r.mode, r.devices, r.decode.layout) == (flat_r.mode, flat_r.devices, flat_r.decode.layout)
    d128 = api.deployment(example_path("kimi-k2-h200-128.yaml"))
    w, s = d128.workload, d128.serving
    same = Layout(1, pp.instance_devices, two_batch_overlap=True)  # one stage over the same devices
    ctx = StepContext(d128.model, d128.precision, sub_cluster(d128, pp.instance_devices), same,
                      ExpertLoads(d128)(same, "decode").load, costs_of(d128))
    most = largest_batch_that_fits(ctx, w.context_tokens, s.hbm_utilization, s.tokens_per_step)
    at_most = decode_performance(ctx, most, w.input_tokens + w.output_tokens / 2, s.hbm_utilization, s.tokens_per_step)
    fits = largest_batch_that_fits(instance_context_of(d128, pp), w.context_tokens, s.hbm_utilization, s.tokens_per_step)
    frontier_text = (f"{pp.layout.name()} on {pp.instance_devices} devices at {pp.work_per_device} sequences per device: "
                     f"{pp.tokens_per_s_per_device:,.0f} output tokens/s per device at {pp.tokens_per_s_per_user:.1f} "
                     f"tokens/s per user, ahead on both of where the frontier ends without stages, "
                     f"{end.layout.name()} on {end.instance_devices} devices at {end.work_per_device} sequences "
                     f"({end.tokens_per_s_per_device:,.0f} at {end.tokens_per_s_per_user:.1f}). "
                     f"Its edge is the batch: its KV cache holds {fits} sequences per device, one stage over the same "
                     f"{pp.instance_devices} devices {most}, short of the batch grid's {pp.work_per_device}; that layout "
                     f"at its own {most}, which the grid does not score, makes {at_most.tokens_per_s_per_device:,.0f} at "
                     f"{at_most.tokens_per_s_per_user:.1f} tokens/s per user. The recommendation, "
                     f"{view.recommendation.devices} devices at {view.recommendation.requests_per_s:g} requests/s, has "
                     f"no stages.")
    b200 = api.plan({"schema_version": 1, "model": "kimi-k2", "cluster": {"unit": "hgx-b200", "devices": 64},
                     "workload": {"input_tokens": 2048, "output_tokens": 512, "input_cv": 0, "output_cv": 0},
                     "slo": {"ttft_s": 30.0, "tpot_s": 0.050, "percentile": 99}}, replay=0)  # the what-if study's
    dc = b200.recommendation.decode
    why = next(a for a in b200.plan.assumptions if a.startswith("on the frontier with pipeline stages: "
                                                               f"{dc.layout.name()} on {dc.instance_devices} devices at "
                                                               f"{dc.work_per_device} sequences"))
    b200_text = (f"the recommended decode pool is {dc.instance_devices} devices of {dc.layout.name()} at "
                 f"{dc.work_per_device} sequences per device, and the plan says why: "
                 + why.split(": ", 1)[1])
    scored = (f"The stages add {view.candidates_scored - flat_view.candidates_scored:,} decode candidates to the "
              f"128-H200 plan's {flat_view.candidates_scored:,}")
    return [weak_text, frontier_text, b200_text, scored]


def instance_context_of(d, c):
    from planner.prompt_times import instance_context
    return instance_context(d, c)


def test_the_pipeline_stage_figures(default_plan):
    note = next(a for a in default_plan.plan.assumptions if a.startswith("on the frontier with pipeline stages"))
    _quoted(note)
    with pytest.MonkeyPatch.context() as patch:  # the section weighs stages against single-stage layouts
        patch.setattr(search, "afd_searched", lambda d: False)
        for sentence in _pipeline_sentences():
            _quoted(sentence)


# --- attention-FFN disaggregation -----------------------------------------------------------------------------

def _afd_sentences() -> list[str]:
    """The Attention-FFN disaggregation section's figures: the 128-H200 example's frontier with and without it, and
    its most productive disaggregated layouts."""
    example = str(example_path("kimi-k2-h200-128.yaml"))
    view = api.plan(example, replay=0)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(search, "afd_searched", lambda d: False)
        flat = api.plan(example, replay=0)
    fast, flat_fast = (max(v.frontier, key=lambda c: c.tokens_per_s_per_user) for v in (view, flat))
    wide = max(view.frontier, key=lambda c: c.tokens_per_s_per_device)
    assert fast.layout.ffn_devices and not wide.layout.ffn_devices
    r, flat_r = view.recommendation, flat.recommendation
    assert (r.mode, r.devices, r.decode.layout) == (flat_r.mode, flat_r.devices, flat_r.decode.layout)
    d = view.deployment
    afd = [c for c in search.score_decode(d, search.instance_sizes(d)) if c.layout.ffn_devices]
    best = max(afd, key=lambda c: c.tokens_per_s_per_device)
    quarter = next(c for c in afd if c.layout == Layout(tp=1, dp=96, ffn_devices=32) and c.work_per_device == 128)
    ms = {k: v * 1e3 for k, v in best.perf.steps[0].breakdown_s.items()}
    ends = (f"Its fastest end is {fast.layout.name()} on {fast.instance_devices} devices at {fast.work_per_device} "
            f"sequences per attention device: {fast.tokens_per_s_per_device:,.0f} output tokens/s per device at "
            f"{fast.tokens_per_s_per_user:.1f} tokens/s per user, against {flat_fast.layout.name()} on "
            f"{flat_fast.instance_devices} devices at {flat_fast.work_per_device} ({flat_fast.tokens_per_s_per_device:,.0f} "
            f"at {flat_fast.tokens_per_s_per_user:.1f}) without it. Its throughput end is not: the most productive "
            f"disaggregated layout, {best.layout.name()} at {best.work_per_device} sequences per attention device, "
            f"makes {best.tokens_per_s_per_device:,.0f} output tokens/s per device against the frontier's "
            f"{wide.tokens_per_s_per_device:,.0f} ({wide.layout.name()}), since half the devices run all the attention "
            f"({ms['attention']:.0f} ms of a {best.step_s * 1e3:.0f} ms step); with a quarter on the experts "
            f"({quarter.layout.name()}) each FFN device receives three attention devices' copies over its NIC, and the "
            f"combine alone takes {quarter.perf.steps[0].breakdown_s['combine'] * 1e3:.0f} ms of work per step.")
    scored = (f"It adds {view.candidates_scored - flat.candidates_scored:,} decode candidates to the 128-H200 plan's "
              f"{flat.candidates_scored:,}; the recommendation at the example's traffic, {r.devices} devices, is the "
              "same with it.")
    spare = (f"the FFN devices' spare HBM ({best.perf.memory.ffn_device_bytes / 1e9:.1f} of "
             f"{d.cluster.device.hbm_bytes / 1e9:.0f} GB used")
    return [ends, scored, spare]


def test_the_afd_figures(monkeypatch):
    for sentence in _afd_sentences():
        _quoted(sentence)
    pytest.importorskip("aiconfigurator_core", reason="priced by SGLang's tables: the moeplan[measured] extra")
    monkeypatch.delenv("MOEPLAN_BACKEND")  # the engine moeplan picks by itself: SGLang's tables on H200
    view = api.plan(str(example_path("kimi-k2-h200-128.yaml")), replay=0)
    assert view.deployment.serving.engine == "sglang"
    assert max(view.frontier, key=lambda c: c.tokens_per_s_per_user).layout.ffn_devices
    assert not max(view.frontier, key=lambda c: c.tokens_per_s_per_device).layout.ffn_devices
    _quoted("with the fitted kernel models and priced by SGLang's tables alike")


def test_the_gqa_decode_fit_figures():
    from hwmodels import catalog

    fit = catalog.stored_fit("gqa-decode")
    p, r = fit["parameters"], fit["report"]
    assert fit["source"].endswith("on 9 GPUs")
    bf16, fp8 = p["bfloat16"], p["fp8"]
    _quoted(f"bf16 {bf16['launch_s'] * 1e6:.2f} us + {bf16['per_sequence_s'] * 1e9:.1f} ns a sequence\nat "
            f"{bf16['memory_efficiency']:.3f} of HBM, FP8 {fp8['launch_s'] * 1e6:.2f} us + {fp8['per_sequence_s'] * 1e9:.1f} ns "
            f"at {fp8['memory_efficiency']:.3f}")
    held = {k: sorted(v["held_out_by_gpu"].values()) for k, v in r.items()}
    _quoted(f"it misses by a median {held['bfloat16'][0]:.1%} to {held['bfloat16'][-1]:.1%}\n(bf16) and "
            f"{held['fp8'][0]:.1%} to {held['fp8'][-1]:.1%} (FP8), where the KV read at the DeepGEMM fit's 0.87 it replaced "
            f"missed the same rows by\n{r['bfloat16']['kv_read_model_median_abs_error']:.1%} and "
            f"{r['fp8']['kv_read_model_median_abs_error']:.1%}")
