"""The serving engine as part of the question: serving.engine in the spec, --backend on plan and simulate."""

import os

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
    fitted = api.plan(example_path())
    assert any("fitted kernel models" in a and "no serving engine named" in a for a in fitted.plan.assumptions)
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
    assert api.plan(spec | {"serving": {}}).plan.frontier[0].perf.steps[0].time_s != plan.plan.frontier[0].perf.steps[0].time_s


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
    fitted = api.sweep(spec, vary, processes=1).to_frame()
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
    with pytest.raises(InputError, match="--backend"):
        api.validate(backend="nope")


def test_validate_measured_keeps_the_rows_of_one_backend(shared_data):
    rows = api.validate_measured(shared_data / "measured" / "aic-silicon-moe.csv", backend="vllm")
    assert rows and {r.engine for r in rows} == {"vllm"}
