"""Redundant expert slots decided with the KV cache they take HBM from (moeplan issue 19), against fixing them for
balance first (serving.redundant_experts, the engine's --ep-num-redundant-experts) and giving the KV cache the rest.

The case (README "Redundant slots against the KV cache"): DeepSeek-V3 on 4 x HGX H100 at 8K-token prompts, its
own routing statistics (SGLang's, fitted on two windows, scored on a third), placed by EPLB. Every redundant slot
holds one more expert per device in each of 58 MoE layers, about 2.6 GB of an H100's 80 GiB: at 24 devices the 8 slots
that spread 256 experts evenly leave KV room for 8 sequences per device, the 32 that LMSYS deployed for 4.
"""

import json
from pathlib import Path

import pytest

from hwmodels.catalog import load_device, load_model
from hwmodels.errors import InputError
from hwmodels.layout import Layout
from hwmodels.memory import weights_per_device
from hwmodels.precision import default_plan
from moeplan import api

SLOTS_FOR_BALANCE = 32  # LMSYS's DeepSeek-V3 deployment (lmsys.org 2025-05-05): --ep-num-redundant-experts 32


@pytest.fixture(scope="module")
def spec(shared_data) -> dict:
    routing = shared_data / "routing" / "deepseek-v3-sglang-eplb"
    return {"schema_version": 1, "name": "deepseek-v3-h100-32", "model": "deepseek-v3",
            "cluster": {"unit": "hgx-h100", "units": 4},
            "workload": {"input_tokens": 8192, "output_tokens": 1024, "requests_per_s": 2.0},
            "slo": {"ttft_s": 5.0, "tpot_s": 0.1},
            "routing": {"decode": {"fit": [str(routing / "decode_in1800out100.json"), str(routing / "decode_in2000out100.json")],
                                   "evaluate": str(routing / "decode_in1000out1000.json")},
                        "prefill": {"fit": [str(routing / "prefill_in1024.json")], "evaluate": str(routing / "prefill_in2048.json")},
                        "placement": "eplb"}}


def _readme() -> str:
    return " ".join((Path(__file__).parents[1] / "README.md").read_text().split())


def _with(spec: dict, redundant: int) -> dict:
    return {**spec, "serving": {"redundant_experts": redundant}}


@pytest.fixture(scope="module")
def plans(spec):
    return api.plan(spec, replay=0), api.plan(_with(spec, SLOTS_FOR_BALANCE), replay=0)


def test_searched_with_the_kv_cache_beats_slots_fixed_for_balance(plans):
    joint, balance_first = (p.recommendation for p in plans)
    assert joint.decode.layout.redundant_experts < SLOTS_FOR_BALANCE
    assert {x.layout.redundant_experts for x in (balance_first.decode, balance_first.prefill) if x} == {SLOTS_FOR_BALANCE}
    assert joint.usd_per_million_output <= 0.95 * balance_first.usd_per_million_output
    assert any("redundant expert slots searched with the KV cache" in a for a in plans[0].assumptions)
    assert any(f"redundant expert slots fixed at {SLOTS_FOR_BALANCE}" in a for a in plans[1].assumptions)


def test_the_readme_states_the_case(plans):
    joint, balance_first = (p.recommendation for p in plans)
    saving = 1 - joint.usd_per_million_output / balance_first.usd_per_million_output
    sentence = (f"searched, the plan serves it from {joint.decode_devices} devices, {joint.decode.layout.name(True)} at "
                f"{joint.decode.work_per_device} sequences per device, for ${joint.usd_per_million_output:.2f} per million "
                f"output tokens; with `serving.redundant_experts: {SLOTS_FOR_BALANCE}` it needs {balance_first.devices} "
                f"devices ({balance_first.mode}) and ${balance_first.usd_per_million_output:.2f}: the joint choice is "
                f"{saving:.0%} cheaper")
    assert sentence in _readme(), sentence


def test_the_saving_is_the_kv_cache(spec, plans):
    """The joint plan's layout with the balance-first slot count: fewer sequences fit per device."""
    joint = plans[0].recommendation
    layout = joint.decode.layout
    assert joint.mode == "aggregated"  # the README's case: one aggregated instance
    text = f"attention=tp{layout.tp}xdp{layout.dp},experts=ep{layout.devices}"
    fewer = api.estimate(spec, layout=f"{text},redundant={SLOTS_FOR_BALANCE}").plan.recommendation
    assert fewer.decode.work_per_device < joint.decode.work_per_device
    assert fewer.decode.layout.redundant_experts == SLOTS_FOR_BALANCE
    # the estimate scores the slots its layout names: no line about searching or fixing them
    assert not any("redundant expert slots" in a for a in api.estimate(spec, layout=text).plan.assumptions)
    assert f"with {SLOTS_FOR_BALANCE} slots holds {fewer.decode.work_per_device} sequences per device" in _readme()


def test_a_slot_costs_what_the_readme_says():
    arch = load_model("deepseek-v3")
    plan = default_plan(arch.quantization_config, arch.torch_dtype)
    experts = [weights_per_device(arch, plan, Layout(tp=8, dp=3, redundant_experts=r))["routed_experts"] for r in (8, 32)]
    one_slot = experts[1] - experts[0]  # 12 slots per device against 11, in each MoE layer
    hbm_gib = load_device("h100-sxm").hbm_bytes / 2**30
    assert f"each slot holds one more expert per device in each of {len(arch.moe_layers)} MoE layers, about " \
           f"{one_slot / 1e9:.1f} GB of an H100's {hbm_gib:.0f} GiB" in _readme()


def test_a_count_no_ep_size_divides_is_refused(spec):
    plan = api.plan(_with(spec, 5), replay=0)  # 261 experts + slots: no instance of 8 to 32 H100 divides it
    assert plan.recommendation is None
    assert plan.plan.infeasible_field == "serving.redundant_experts"
    assert "leave serving.redundant_experts out" in plan.infeasible


def test_a_dense_model_has_no_slots_to_fix(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32,
                                  "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
                                  "intermediate_size": 14336, "torch_dtype": "bfloat16"}))
    with pytest.raises(InputError, match="has no experts to replicate"):
        api.deployment({"schema_version": 1, "model": str(config), "cluster": {"unit": "hgx-h100", "units": 1},
                        "workload": {"input_tokens": 1024, "output_tokens": 128}, "slo": {"ttft_s": 1, "tpot_s": 0.05},
                        "serving": {"redundant_experts": 8}})
