"""The serving engine as part of the question: serving.engine in the spec, --backend on plan and simulate."""

import os
import subprocess

import pytest
import yaml

import checkout_cli
from hwmodels.calibrate.measured_costs import source_for
from hwmodels.errors import InputError
from moeplan import api, example_path
from moeplan.spec import engine_spec

MEASURED = source_for("h200-sxm", "sglang", None) is not None


def test_a_backend_names_an_engine_and_its_version():
    assert (engine_spec("sglang@0.5.6").name, engine_spec("sglang@0.5.6").version) == ("sglang", "0.5.6")
    assert engine_spec("vllm").version is None
    with pytest.raises(InputError) as e:
        engine_spec("trt@1")
    assert e.value.field.startswith("--backend") and "sglang" in e.value.fix


def test_the_plan_says_which_source_priced_its_operators():
    fitted = api.plan(example_path(), backend="fitted")
    assert any("fitted kernel models" in a and "no serving engine's measured tables" in a for a in fitted.plan.assumptions)
    spec = {"model": "kimi-k2", "cluster": {"unit": "hgx-h200", "units": 2}, "workload": {"name": "mooncake-conversation"},
            "slo": {"ttft_s": 5.0, "tpot_s": 0.05}, "serving": {"engine": {"name": "sglang"}}}
    d = api.deployment(spec)
    assert (d.serving.engine, d.serving.engine_version) == ("sglang", None)
    if not MEASURED and os.environ.get("CI") == "true":
        pytest.fail("CI installs moeplan[measured], but aiconfigurator-core's tables were not found")
    plan = api.plan(spec)
    if not MEASURED:
        assert any("no measured sglang tables for h200-sxm" in a for a in plan.plan.assumptions)
        return
    assert any("sglang tables measured on h200-sxm" in a for a in plan.plan.assumptions)
    sources = dict((name, source) for name, source, _ in plan.plan.frontier[0].perf.steps[0].operator_sources)
    assert sources["dense_gate_up"].startswith("measured: h200_sxm sglang")
    fitted_spec = spec | {"serving": {"engine": {"name": "fitted"}}}
    assert api.plan(fitted_spec).plan.frontier[0].perf.steps[0].time_s != plan.plan.frontier[0].perf.steps[0].time_s


def test_fitted_asks_for_no_engine_and_takes_no_version(tmp_path):
    d = api.deployment(example_path(), backend="fitted")
    assert (d.serving.engine, d.serving.request_overhead_s, d.serving.step_overhead_s) == (None, 0.0, 0.0)
    with pytest.raises(InputError) as e:
        engine_spec("fitted@1")
    assert e.value.field == "--backend" and e.value.fix == "give --backend fitted"
    spec = tmp_path / "fitted.yaml"
    raw = yaml.safe_load(example_path().read_text())
    spec.write_text(yaml.safe_dump(raw | {"serving": {"engine": {"name": "fitted", "version": "1"}}}))
    r = checkout_cli.run("check", str(spec), cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.startswith(f"error: {spec}: serving.engine: the fitted kernel models have no "
                                                     "version") and "Traceback" not in r.stderr


def _engine_choice(spec: dict) -> tuple:
    d = api.deployment(spec)
    return d.serving.engine, d.serving.engine_note


def test_without_an_engine_the_plan_takes_the_one_whose_tables_cover_the_model_best(monkeypatch):
    monkeypatch.delenv("MOEPLAN_BACKEND")  # tests/conftest.py sets it for the rest of the suite
    spec = {"model": "kimi-k2", "cluster": {"unit": "hgx-h200", "units": 2}, "workload": {"name": "mooncake-conversation"},
            "slo": {"ttft_s": 5.0, "tpot_s": 0.05}}
    if not MEASURED:
        if os.environ.get("CI") == "true":
            pytest.fail("CI installs moeplan[measured], but aiconfigurator-core's tables were not found")
        assert _engine_choice(spec) == (None, "")  # no tables: the fitted models, as --backend fitted
        return
    # SGLang and TensorRT-LLM both measure Kimi K2's five families on H200 (vLLM has no MLA tables): the tie goes to
    # SGLang, and the plan says so, with its overheads
    engine, note = _engine_choice(spec)
    assert engine == "sglang" and "sglang 5 of 5" in note and "trtllm 5 of 5" in note and "vllm 3 of 5" in note
    d = api.deployment(spec)
    assert d.serving.request_overhead_s > 0
    assumptions = api.estimate(d, layout="attention=dp16,experts=ep16", batch=4).plan.assumptions
    assert any(a.startswith("no serving engine named: sglang") and "sglang tables measured on h200-sxm" in a
               for a in assumptions)
    # per-tensor fp8 experts: only TensorRT-LLM measured Kimi K2's MoE in it, so it covers more
    engine, note = _engine_choice(spec | {"precision": {"routed_experts": "fp8_tensor"}})
    assert engine == "trtllm" and "trtllm 5 of 5" in note and "sglang 4 of 5" in note
    # a device NVIDIA did not measure: the fitted models, and no engine's overheads
    h20 = spec | {"cluster": {"unit": "hgx-h20-96gb", "units": 2}}
    assert _engine_choice(h20) == (None, "") and api.deployment(h20).serving.request_overhead_s == 0.0
    # a named engine stays named
    assert _engine_choice(spec | {"serving": {"engine": {"name": "vllm"}}}) == ("vllm", "")
    # grouped-query attention is a family too: gpt-oss-120b's 64-wide heads on B200, whose MXFP4 MoE vLLM's tables lack
    gpt_oss = spec | {"model": "gpt-oss-120b", "cluster": {"unit": "hgx-b200", "units": 1}}
    engine, note = _engine_choice(gpt_oss)
    assert engine == "sglang" and "sglang 5 of 5" in note and "vllm 4 of 5" in note


def test_backend_on_the_command_line(tmp_path):
    r = checkout_cli.run("plan", "--backend", "sglang", "--json", cwd=tmp_path, timeout=300)
    assert r.returncode in (0, 1), r.stderr
    bad = checkout_cli.run("simulate", "--backend", "nope", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: --backend") and "Traceback" not in bad.stderr


def test_compare_backends_answers_which_engine(tmp_path):
    sweep = api.compare(example_path(), backends=["sglang", "vllm"], processes=1, size=False)
    frame = sweep.to_frame()
    assert list(frame["backend"]) == ["sglang", "vllm"] and len(frame) == 2
    with pytest.raises(InputError, match="--backend"):
        api.compare(example_path(), backends=["tensorrt"], processes=1)
    r = checkout_cli.run("compare", "--backends", "sglang,nope", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip().startswith("error: --backend")


def test_sweep_takes_a_backend_for_every_point(tmp_path):
    vary = {"slo.tpot_s": [0.1, 0.2]}
    spec = yaml.safe_load(example_path().read_text())
    spec["cluster"]["units"] = 4  # SGLang's measured MLA prefill of Mooncake's long prompts needs more than 16 H200
    priced = api.sweep(spec, vary, processes=1, backend="sglang").to_frame()
    fitted = api.sweep(spec, vary, processes=1, backend="fitted").to_frame()
    assert len(priced) == 2 and list(priced["feasible"]) == [True, True]
    assert (priced["tpot_s"] != fitted["tpot_s"]).all()  # sglang's measured tables price the steps, not the fits
    (tmp_path / "sweep.yaml").write_text(f"spec: {example_path()}\nvary: {{slo.tpot_s: [0.1]}}\n")
    r = checkout_cli.run("sweep", str(tmp_path / "sweep.yaml"), "--backend", "nope", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip().startswith("error: --backend") and "Traceback" not in r.stderr


def test_validate_prices_each_published_deployment_by_its_engine_or_the_backend(shared_data):
    trtllm = api.validate(shared_data / "published" / "deployments-trtllm-perf-overview.yaml")
    assert trtllm and all(any(a.startswith("served by trtllm") for a in r.assumptions) for r in trtllm)
    default = api.validate()  # the catalog's entries name the engine their source ran, where it ran one
    served = {r.id: next((a.split(":")[0] for a in r.assumptions if a.startswith("served by")), None) for r in default}
    assert served["sglang-h100-decode"] == "served by sglang" and served["trtllm-h200-max-throughput"] == "served by trtllm"
    assert served["deepseek-profile-decode-h800"] is None  # DeepSeek's own engine: the fits price it
    sglang = api.validate(backend="sglang")
    assert [r.id for r in sglang] == [r.id for r in default]
    assert all(any(a.startswith("served by sglang") for a in r.assumptions) for r in sglang)
    fitted = api.validate(backend="fitted")  # every entry on the fitted kernel models: what moeplan says without tables
    assert [r.id for r in fitted] == [r.id for r in default]
    assert not any(a.startswith("served by") for r in fitted for a in r.assumptions)
    with pytest.raises(InputError, match="--backend"):
        api.validate(backend="nope")


def test_validate_measured_keeps_the_rows_of_one_backend(shared_data):
    rows = api.validate_measured(shared_data / "measured" / "aic-silicon-moe.csv", backend="vllm")
    assert rows and {r.engine for r in rows} == {"vllm"}
    with pytest.raises(InputError) as e:  # the rows name the engine that served them; no row ran on "fitted"
        api.validate_measured(shared_data / "measured" / "aic-silicon-moe.csv", backend="fitted")
    assert e.value.field == "--backend" and "sglang, trtllm or vllm" in e.value.fix


def test_moeplan_backend_names_the_engine_of_specs_that_name_none(monkeypatch, tmp_path):
    spec = {"model": "kimi-k2", "cluster": {"unit": "hgx-h200", "units": 2}, "workload": {"name": "mooncake-conversation"},
            "slo": {"ttft_s": 5.0, "tpot_s": 0.05}}
    monkeypatch.setenv("MOEPLAN_BACKEND", "vllm@0.24.0")
    d = api.deployment(spec)
    assert (d.serving.engine, d.serving.engine_version) == ("vllm", "0.24.0")
    assert d.serving.engine_note == "no serving engine named: MOEPLAN_BACKEND=vllm@0.24.0"
    assert api.deployment(spec | {"serving": {"engine": {"name": "trtllm"}}}).serving.engine == "trtllm"  # the spec wins
    assert api.deployment(spec, backend="sglang").serving.engine == "sglang"  # and --backend
    monkeypatch.setenv("MOEPLAN_BACKEND", "fitted")
    assert api.deployment(spec).serving.engine is None
    monkeypatch.setenv("MOEPLAN_BACKEND", "tensorrt")
    with pytest.raises(InputError) as e:
        api.deployment(spec)
    assert e.value.field.startswith("MOEPLAN_BACKEND") and "sglang" in e.value.fix
    r = subprocess.run([*checkout_cli.COMMAND, "check"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env=checkout_cli.env(MOEPLAN_BACKEND="nope"))
    assert r.returncode == 2 and r.stderr.startswith("error: MOEPLAN_BACKEND") and "Traceback" not in r.stderr
    if not MEASURED:
        return
    r = subprocess.run([*checkout_cli.COMMAND, "plan"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env={k: v for k, v in checkout_cli.env().items() if k != "MOEPLAN_BACKEND"})
    assert "no serving engine named: sglang, whose measured tables cover the most of kimi-k2's operator families on " \
           "h200-sxm" in " ".join(r.stdout.split())


def test_plan_json_says_which_engine_priced_it_and_a_replay_must_use_the_same(tmp_path):
    spec = yaml.safe_load(example_path().read_text()) | {"serving": {"engine": {"name": "vllm"}}}
    doc = api.plan(spec, replay=0).to_json()
    assert doc["serving"]["engine"] == "vllm" and doc["serving"]["engine_chosen"] is None
    assert doc["serving"]["request_overhead_s"] == api.deployment(spec).serving.request_overhead_s
    assert api.load_plan(doc, spec).plan.deployment.serving.engine == "vllm"
    with pytest.raises(InputError) as e:  # priced by vLLM, replayed on the fitted models: refused, not mixed
        api.load_plan(doc, example_path())
    assert e.value.field.endswith("serving.engine") and "'vllm'" in e.value.problem and "--backend vllm" in e.value.fix
    old = {k: v for k, v in doc.items() if k != "serving"}  # a plan.json written before the engine was recorded
    assert api.load_plan(old, example_path()).plan.recommendation.devices == doc["recommendation"]["devices"]


def test_a_comparison_says_when_its_devices_are_priced_by_different_sources(monkeypatch):
    monkeypatch.delenv("MOEPLAN_BACKEND")  # each device takes its own: the best-covered engine, or the fits
    sweep = api.compare(example_path(), devices=["h200-sxm", "ascend-910c"], processes=1, size=False)
    sources = dict(zip(sweep.to_frame()["device"], sweep.to_frame()["priced_by"]))
    assert sources["ascend-910c"] == "fitted"  # NVIDIA measured no Ascend
    said = [w for w in sweep.warnings if w.startswith("operators are priced by different sources")]
    if not MEASURED:
        assert sources["h200-sxm"] == "fitted" and not said
        return
    assert sources["h200-sxm"] == "sglang"
    assert said == ["operators are priced by different sources (h200-sxm: sglang's measured tables; ascend-910c: the "
                    "fitted kernel models): part of each difference is the source; name one engine (--backend, "
                    "--backends or MOEPLAN_BACKEND; fitted: the fitted models) to price every point alike"]
    monkeypatch.setenv("MOEPLAN_BACKEND", "fitted")
    alike = api.compare(example_path(), devices=["h200-sxm", "ascend-910c"], processes=1, size=False)
    assert set(alike.to_frame()["priced_by"]) == {"fitted"}
    assert not any(w.startswith("operators are priced") for w in alike.warnings)


@pytest.mark.skipif(not MEASURED and os.environ.get("CI") != "true", reason="aiconfigurator-core is not installed")
def test_tensorrt_llm_splits_a_long_prompt_over_two_nodes_by_tp16():
    """TensorRT-LLM's attention is DP or TP over all ranks, so on multi-node Kimi K2 its only multi-GPU attention rank
    is TP16 across two HGX nodes (hwmodels.layouts): with it the default example's long prompts meet TTFT 10 s, and the
    refusal on 48 H200 says how many devices that takes, in instances of 16."""
    spec = yaml.safe_load(example_path().read_text())
    spec["cluster"]["units"], spec["slo"]["ttft_s"] = 6, 10.0
    refused = api.plan(spec, backend="trtllm", replay=0)
    assert refused.recommendation is None and refused.infeasible_field == "workload.requests_per_s"
    assert "instances of 16 devices (TP16 attention + EP16)" in refused.infeasible
