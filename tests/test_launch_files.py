"""`moeplan plan -o DIR --backend NAME` writes DIR/launch/: every pool's server command, the router, a Dynamo
manifest, at plan.json's parallel sizes, with only flags the engine documents at the pinned source.

None of the three engines installs on a CPU machine from PyPI light enough to parse with its own parser here:
SGLang's and vLLM's wheels pull CUDA PyTorch and their kernels, TensorRT-LLM needs NVIDIA's index and CUDA. So the
flags are checked against catalogs/engine_flags.yaml: each engine's documented flags and config keys read from its
source at a cited commit.
"""

import json

import numpy as np
import pytest
import yaml

import checkout_cli
from hwmodels import catalog
from hwmodels.ingest.routing import save_counts
from moeplan import api, example_path
from moeplan.launch.shell import argv_of
from planner.plan_json import plan_to_json

EXAMPLES = example_path().parent
FLAGS = catalog.engine_flags()
# the plans the launch files are written for: each engine on a spec it serves, disaggregated over several nodes
CASES = {"sglang": "kimi-k2-h200-128.yaml", "vllm": "kimi-k2-h200-128.yaml", "trtllm": "deepseek-v3-gb200-nvl72.yaml"}


@pytest.fixture(scope="module", params=sorted(CASES))
def launched(request):
    engine = request.param
    view = api.plan(str(EXAMPLES / CASES[engine]), backend=engine, replay=0)
    assert view.recommendation is not None, view.infeasible
    files = api.launch_files(view)
    return engine, json.loads(json.dumps(plan_to_json(view.plan))), files


def _names(table: dict) -> dict[str, dict]:
    """Every spelling of every flag in an engine's table -> its entry."""
    out = {}
    for flag, entry in table.items():
        entry = entry or {}
        for name in [flag, *entry.get("aliases", [])]:
            out[name] = entry
    return out


def _check_flags(argv: list[str], table: dict, choices: dict) -> dict[str, str | None]:
    """The options of `argv` (from its first --flag on) -> value, each one a documented flag with a documented choice."""
    known, seen = _names(table), {}
    tokens = argv[next(i for i, t in enumerate(argv) if t.startswith("--")):]
    i = 0
    while i < len(tokens):
        flag = tokens[i]
        assert flag in known, f"{flag} is not a documented flag"
        takes = known[flag].get("takes_value", True)
        value = tokens[i + 1] if takes else None
        if value is not None and flag in choices:
            assert value in choices[flag], f"{flag} {value} is not one of {choices[flag]}"
        seen[flag] = value
        i += 2 if takes else 1
    return seen


def _pools(plan_json: dict) -> dict[str, dict]:
    r = plan_json["recommendation"]
    return {p["role"]: p for p in (r["prefill"], r["decode"]) if p is not None}


def test_every_pool_carries_the_plans_parallel_sizes(launched):
    engine, plan_json, files = launched
    doc = json.loads(files["launch.json"])
    planned = _pools(plan_json)
    assert doc["engine"] == engine and doc["mode"] == plan_json["recommendation"]["mode"]
    assert {p["role"] for p in doc["pools"]} == set(planned)
    for pool in doc["pools"]:
        c = planned[pool["role"]]
        layout = c["layout"]
        assert (pool["instances"], pool["instance_devices"]) == (c["instances"], c["instance_devices"])
        assert (pool["attention_tp"], pool["attention_dp"], pool["expert_parallel"]) == (
            layout["attention_tp"], layout["attention_dp"], layout["expert_parallel"])
        assert (pool["redundant_experts"], pool["two_batch_overlap"]) == (layout["redundant_experts"], layout["two_batch_overlap"])
        assert pool["batch_per_device"] == (c["batch_per_device"] if pool["role"] != "prefill" else None)
        assert pool["pipeline_stages"] == layout["pipeline_stages"]
        assert pool["context_parallel"] == layout["context_parallel"]
        assert argv_of(files[pool["script"]]) == pool["argv"]  # the script runs what launch.json says


def test_engine_flags_are_documented_and_say_the_plans_sizes(launched):
    engine, plan_json, files = launched
    doc, table = json.loads(files["launch.json"]), FLAGS[engine]
    for pool in doc["pools"]:
        flags = _check_flags(pool["argv"], table["flags"], table.get("choices", {}))
        tp, dp, devices = pool["attention_tp"], pool["attention_dp"], pool["instance_devices"]
        pp, cp = pool["pipeline_stages"], pool["context_parallel"]
        devices //= pp  # one pipeline stage's: the engines' TP world size
        if engine == "sglang":  # its world is dp x attn_cp x attn_tp: --dp-size counts the ranks of cp groups
            assert int(flags.get("--pp-size") or 1) == pp
            assert int(flags["--tp-size"]) == devices and int(flags.get("--dp-size") or 1) == dp // cp
            assert int(flags.get("--attn-cp-size") or 1) == cp and ("--enable-prefill-cp" in flags) == (cp > 1)
            assert int(flags["--ep-size"]) == pool["expert_parallel"]
            assert ("--enable-dp-attention" in flags) == (dp // cp > 1)
            if pool["batch_per_device"]:
                assert int(flags["--max-running-requests"]) == pool["batch_per_device"] * devices
                assert int(flags["--cuda-graph-max-bs"]) == pool["batch_per_device"] * tp
            assert flags["--disaggregation-mode"] == pool["role"]
        elif engine == "vllm":
            assert int(flags["--tensor-parallel-size"]) == tp and int(flags["--data-parallel-size"]) == dp
            assert int(flags.get("--pipeline-parallel-size") or 1) == pp
            assert "--enable-expert-parallel" in flags
            if pool["batch_per_device"]:
                assert int(flags["--max-num-seqs"]) == pool["batch_per_device"] * tp
            assert json.loads(flags["--kv-transfer-config"])["kv_connector"] in str(table["json_keys"])
        else:
            assert int(flags["--tp_size"]) == devices and int(flags["--ep_size"]) == pool["expert_parallel"]
            options = yaml.safe_load(files[flags["--extra_llm_api_options"]])
            assert options["tensor_parallel_size"] == devices
            assert int(flags["--pp_size"]) == options["pipeline_parallel_size"] == pp
            assert options["moe_expert_parallel_size"] * options["moe_tensor_parallel_size"] == devices
            assert options["moe_expert_parallel_size"] == pool["expert_parallel"]
            assert options["enable_attention_dp"] == (dp > 1)
            keys = table["llm_api_keys"]
            assert set(options) <= set(keys), set(options) - set(keys)
            assert options["moe_config"]["backend"] in keys["moe_config.backend"]["choices"]
            if pool["batch_per_device"]:
                assert options["max_batch_size"] == pool["batch_per_device"] * tp


def test_the_router_fronts_every_instance(launched):
    engine, plan_json, files = launched
    doc = json.loads(files["launch.json"])
    pools = {p["role"]: p for p in doc["pools"]}
    if engine == "sglang":
        flags = doc["router"]["argv"]
        _check_flags(flags, FLAGS["sglang"]["router"]["flags"], {})
        assert flags.count("--prefill") == pools["prefill"]["instances"] and flags.count("--decode") == pools["decode"]["instances"]
    elif engine == "trtllm":
        config = yaml.safe_load(files["disaggregated.yaml"])
        assert set(config) <= set(FLAGS["trtllm"]["disaggregated_keys"]["top_level"])
        assert config["context_servers"]["num_instances"] == len(config["context_servers"]["urls"]) == pools["prefill"]["instances"]
        assert config["generation_servers"]["num_instances"] == pools["decode"]["instances"]
        assert doc["router"]["argv"][:2] == ["trtllm-serve", "disaggregated"]
    else:  # vLLM has no prefill/decode router: Dynamo's frontend is it, and the README says so
        assert doc["router"] is None and "has none" in files["README.md"]


def test_the_dynamo_manifest_runs_each_pool_at_its_size(launched):
    engine, plan_json, files = launched
    manifest = yaml.safe_load(files["dynamo.yaml"])
    assert (manifest["apiVersion"], manifest["kind"]) == (FLAGS["dynamo"]["apiVersion"], FLAGS["dynamo"]["kind"])
    services = manifest["spec"]["services"]
    assert services["Frontend"]["componentType"] == "frontend"
    for pool in json.loads(files["launch.json"])["pools"]:
        s = services[pool["role"].capitalize() + "Worker"]
        assert s["componentType"] == "worker" and s["subComponentType"] == pool["role"]
        assert s["replicas"] == pool["instances"]
        nodes = s.get("multinode", {}).get("nodeCount", 1)
        assert nodes * int(s["resources"]["limits"]["gpu"]) == pool["instance_devices"] == pool["nodes_per_instance"] * int(s["resources"]["limits"]["gpu"])
        assert s["extraPodSpec"]["mainContainer"]["command"] == ["python3", "-m", f"dynamo.{engine}"]


def test_the_readme_says_the_order_and_the_sources(launched):
    engine, _, files = launched
    text = files["README.md"]
    assert "## Start, in this order" in text and "## Where the values come from" in text
    assert all(f"`{name}`" in text for name in files)


def test_an_sglang_plan_with_routing_statistics_ships_its_placement(tmp_path):
    rng = np.random.default_rng(0)
    popularity = rng.gamma(0.6, 1.0, size=(48, 128))
    save_counts(rng.poisson(4000 * popularity).astype(float), tmp_path / "w.json", "qwen3-30b-a3b")
    spec = {"schema_version": 1, "model": "qwen3-30b-a3b", "cluster": {"unit": "hgx-h100", "units": 1},
            "workload": {"input_tokens": 2000, "output_tokens": 500, "requests_per_s": 2.0},
            "slo": {"ttft_s": 3.0, "tpot_s": 0.1}, "serving": {"engine": {"name": "sglang"}},
            "routing": {"decode": {"evaluate": "w.json"}, "prefill": {"evaluate": "w.json"}, "time_limit_s": 1.0}}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    view = api.plan(tmp_path / "spec.yaml", replay=0)
    files = api.launch_files(view)
    doc, checked = json.loads(files["launch.json"]), 0
    for pool, candidate in zip(doc["pools"], [c for c in (view.recommendation.prefill, view.recommendation.decode) if c]):
        if candidate.placement is None:
            continue
        checked += 1
        name = f"expert_location_{pool['role']}.json"
        assert pool["argv"][pool["argv"].index("--init-expert-location") + 1] == name
        assert json.loads(files[name])["physical_to_logical_map"] == candidate.placement.phy2log.tolist()
    assert checked, view.plan.describe()


def test_plan_cli_writes_the_launch_folder_beside_the_report(tmp_path):
    out = tmp_path / "out"
    done = checkout_cli.run("plan", str(EXAMPLES / "qwen3-235b-h100.yaml"), "-o", str(out), "--backend", "vllm",
                            "--replay", "0", "--no-simulate", cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr
    launch = json.loads((out / "launch" / "launch.json").read_text())
    plan_json = json.loads((out / "plan.json").read_text())
    assert launch["devices"] == plan_json["recommendation"]["devices"] and launch["engine"] == "vllm"
    assert (out / "launch" / "README.md").exists() and f"{out / 'launch'}/ for vllm" in " ".join(done.stdout.split())
    # without an engine there is nothing to launch: no folder, and no error
    plain = tmp_path / "plain"
    done = checkout_cli.run("plan", str(EXAMPLES / "qwen3-235b-h100.yaml"), "-o", str(plain), "--replay", "0",
                            "--no-simulate", cwd=tmp_path, timeout=600)
    assert done.returncode == 0 and not (plain / "launch").exists()


def test_launch_files_need_an_engine():
    view = api.plan(str(EXAMPLES / "qwen3-235b-h100.yaml"), replay=0)
    with pytest.raises(api.InputError) as e:
        api.launch_files(view)
    assert e.value.field == "--backend"


@pytest.mark.parametrize("engine, decode, batch, flag", [
    ("sglang", "attention=dp8,experts=ep8,pp=2", 32, ["--pp-size", "2"]),
    ("vllm", "attention=tp8,experts=ep8,pp=2", 8, ["--pipeline-parallel-size", "2"]),  # TP8 MLA: 9 sequences fit
    ("trtllm", "attention=tp8,experts=ep8,pp=2", 8, ["--pp_size", "2"]),
])
def test_a_pipelined_decode_pool_launches_with_its_stages(engine, decode, batch, flag):
    """A decode pool pinned to two pipeline stages (an estimate, solved for real) launches each engine with them, and
    its per-stage sizes: 8 devices a stage of the 16."""
    e = api.estimate(str(EXAMPLES / "kimi-k2-h200-128.yaml"), prefill="attention=dp16,experts=ep16", decode=decode,
                     batch=batch, backend=engine)
    r = e.plan.recommendation
    assert r.decode.layout.pp == 2 and r.decode.instance_devices == 16
    assert plan_to_json(e.plan)["recommendation"]["decode"]["layout"]["pipeline_stages"] == 2
    files = api.launch_files(e.plan)
    pool = next(p for p in json.loads(files["launch.json"])["pools"] if p["role"] == "decode")
    assert pool["pipeline_stages"] == 2
    argv = pool["argv"]
    i = argv.index(flag[0])
    assert argv[i:i + 2] == flag
    table = FLAGS[engine]
    flags = _check_flags(argv, table["flags"], table.get("choices", {}))
    if engine == "sglang":
        assert flags["--tp-size"] == "8" and flags["--dp-size"] == "8" and flags["--max-running-requests"] == str(32 * 16)
    elif engine == "vllm":
        assert flags["--tensor-parallel-size"] == "8" and flags["--distributed-executor-backend"] == "ray"
    else:
        options = yaml.safe_load(files[flags["--extra_llm_api_options"]])
        assert options["tensor_parallel_size"] == 8 and options["pipeline_parallel_size"] == 2


def _requantized_plan(tmp_path, precision: dict, engine: str):
    spec = yaml.safe_load((EXAMPLES / "qwen3-235b-h100.yaml").read_text()) | {"precision": precision}
    path = tmp_path / f"{engine}.yaml"
    path.write_text(yaml.safe_dump(spec))
    view = api.plan(str(path), backend=engine, replay=0)
    assert view.recommendation is not None, view.infeasible
    return api.launch_files(view)


@pytest.mark.parametrize("engine", ["sglang", "vllm", "trtllm"])
def test_weights_the_plan_prices_in_fp8_load_as_fp8(tmp_path, engine):
    """Qwen3-235B's checkpoint is bf16; a plan that prices every linear layer in fp8 launches SGLang and vLLM with
    their load-time fp8 quantisation, and TensorRT-LLM (which has none) with a README saying which checkpoint."""
    files = _requantized_plan(tmp_path, {"routed_experts": "fp8_tensor", "attention": "fp8_tensor", "kv_cache": "fp8"},
                              engine)
    doc = json.loads(files["launch.json"])
    assert {(r["part"], r["planned"], r["checkpoint"]) for r in doc["weights"]["requantized"]} == {
        ("routed_experts", "fp8_tensor", "bf16"), ("attention", "fp8_tensor", "bf16")}
    table = FLAGS[engine]
    for pool in doc["pools"]:
        flags = _check_flags(pool["argv"], table["flags"], table.get("choices", {}))
        assert flags.get("--quantization") == ("fp8" if engine != "trtllm" else None)
    assert doc["weights"]["load_time_quantization"] == ("fp8" if engine != "trtllm" else None)
    assert ("checkpoint already in fp8" in files["README.md"]) == (engine == "trtllm")


def test_weights_no_flag_quantises_are_the_checkpoints_to_bring(tmp_path):
    """Experts priced in NVFP4 (and attention left bf16): no engine quantises so at load, so no flag, and the README
    says to bring such a checkpoint."""
    files = _requantized_plan(tmp_path, {"routed_experts": "nvfp4"}, "sglang")
    doc = json.loads(files["launch.json"])
    assert doc["weights"] == {"requantized": [{"part": "routed_experts", "planned": "nvfp4", "checkpoint": "bf16"}],
                              "load_time_quantization": None}
    assert all("--quantization" not in p["argv"] for p in doc["pools"])
    assert "no engine flag quantises" in files["README.md"]
    plain = _requantized_plan(tmp_path, {"kv_cache": "fp8"}, "sglang")
    assert json.loads(plain["launch.json"])["weights"]["requantized"] == []
    assert "the checkpoint's own (its config.json)" in plain["README.md"]
