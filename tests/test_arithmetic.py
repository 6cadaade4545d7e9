"""Model arithmetic against published parameter counts and hand-computed KV sizes.

Published figures: DeepSeek-V3 technical report (arXiv 2412.19437): 671B total (without the MTP
module), 37B activated; Qwen3 technical report: 235B / 22B; Mixtral of Experts (arXiv 2401.04088):
46.7B / 12.9B; Kimi K2 technical report (arXiv 2507.20534): 1.04T total, 32.6B activated.
"""

import pytest

from hwmodels import arithmetic as A
from hwmodels.catalog import load_model
from hwmodels.precision import SCHEMES, default_plan


def plan_of(arch, **overrides):
    return default_plan(arch.quantization_config, arch.torch_dtype).with_overrides(overrides)


def expert_mlp(d, width):
    return 3 * d * width


def kimi_k2_by_hand():
    """Kimi K2 from its config fields, written out independently of weight_matrices()."""
    d, h, layers, vocab, experts, width = 7168, 64, 61, 163840, 384, 2048
    attention = d * 1536 + 1536 + 1536 * h * 192 + d * 576 + 512 + 512 * h * 256 + h * 128 * d
    dense = expert_mlp(d, 18432)
    moe = experts * expert_mlp(d, width) + expert_mlp(d, width) + experts * d
    norms = 2 * d
    total = layers * (attention + norms) + dense + (layers - 1) * moe + d + 2 * vocab * d
    active = total - (layers - 1) * (experts - 8) * expert_mlp(d, width)
    return total, active


def test_kimi_k2_matches_hand_count_and_published_figures():
    arch = load_model("kimi-k2")
    total, active = kimi_k2_by_hand()
    assert A.total_params(arch) == total
    assert A.active_params(arch) == pytest.approx(active)
    # The config fields give 1.0264e12. Moonshot's report rounds to 1.04T (1.3% higher); the checkpoint's
    # own safetensors element count (and its 1.03 TB of fp8 weights) agrees with the config-field count.
    assert A.total_params(arch) == pytest.approx(1.04e12, rel=0.015)
    assert A.total_params(arch) == pytest.approx(1.03e12, rel=0.01)
    assert A.active_params(arch) == pytest.approx(32.6e9, rel=0.03)


@pytest.mark.parametrize(
    "model, total, active, total_rel",
    [
        ("deepseek-v3", 671e9, 37e9, 0.01),
        ("deepseek-r1", 671e9, 37e9, 0.01),
        ("qwen3-235b-a22b", 235e9, 22e9, 0.01),
        ("qwen3-235b-a22b-fp8", 235e9, 22e9, 0.01),
        ("qwen3-30b-a3b", 30.5e9, 3.3e9, 0.01),
        ("mixtral-8x7b", 46.7e9, 12.9e9, 0.01),
    ],
)
def test_published_parameter_counts(model, total, active, total_rel):
    arch = load_model(model)
    assert A.total_params(arch) == pytest.approx(total, rel=total_rel)
    assert A.active_params(arch) == pytest.approx(active, rel=0.03)


def test_deepseek_v3_mtp_module_is_counted_apart():
    arch = load_model("deepseek-v3")
    assert arch.num_mtp_layers == 1
    # DeepSeek publishes 685B with the MTP module: the module (sharing embedding and head) adds ~11.6B here,
    # the rest of the 14B being the checkpoint's copies of the embedding and head in layer 61.
    assert 11e9 < A.mtp_params(arch) < 14e9
    assert A.mtp_params(load_model("kimi-k2")) == 0


def test_kimi_k2_kv_cache_bytes_per_token():
    arch = load_model("kimi-k2")
    assert A.kv_bytes_per_token(arch, plan_of(arch)) == 70_272  # 576 x 61 x 2 B
    assert A.kv_bytes_per_token(arch, plan_of(arch, kv_cache="fp8")) == 35_136


def test_gqa_kv_cache_bytes_per_token():
    arch = load_model("qwen3-235b-a22b")
    assert A.kv_bytes_per_token(arch, plan_of(arch)) == 2 * 4 * 128 * 94 * 2


def test_fp8_weight_bytes_include_block_scales():
    arch = load_model("kimi-k2")
    plan = plan_of(arch)
    by_part = A.weight_bytes_by_part(arch, plan)
    # one routed expert's gate_proj [2048, 7168]: 16 x 56 blocks of 128x128, one fp32 scale each
    assert SCHEMES["fp8"].matrix_bytes(2048, 7168) == 2048 * 7168 + 16 * 56 * 4
    # partial blocks still carry a full scale: kv_a_proj_with_mqa has 576 = 4.5 x 128 rows
    assert SCHEMES["fp8"].matrix_bytes(576, 7168) == 576 * 7168 + 5 * 56 * 4
    routed = A.params_by_part(arch)["routed_experts"]
    assert by_part["routed_experts"] == pytest.approx(routed * (1 + 4 / 128**2))
    assert by_part["embedding"] == 163840 * 7168 * 2  # bf16, unquantised
    assert A.weight_bytes(arch, plan) == pytest.approx(1.03e12, rel=0.005)


def test_kimi_k2_5_int4_experts_rest_bf16():
    arch = load_model("kimi-k2.5")
    plan = plan_of(arch)
    assert plan.of("routed_experts").name == "int4"
    assert {plan.of(p).name for p in ("attention", "shared_experts", "dense_mlp", "lm_head")} == {"bf16"}
    routed = A.params_by_part(arch)["routed_experts"]
    # 4 bits per weight plus one bf16 scale per group of 32
    assert A.weight_bytes_by_part(arch, plan)["routed_experts"] == pytest.approx(routed * (0.5 + 2 / 32))


def test_flops_per_token_decode_is_twice_active_matmul_params_plus_attention():
    arch = load_model("kimi-k2")
    f = A.flops_per_token(arch, 4096, "decode")
    matmul_params = A.active_params(arch) - 163840 * 7168 - sum(
        w.active_params for w in A.weight_matrices(arch) if w.part == "norms"
    )
    assert f["linear"] + f["lm_head"] == pytest.approx(2 * matmul_params)
    # absorbed MLA: 64 heads x (2 x 512 + 64) x 2 FLOPs per key per layer
    assert f["attention"] == 2 * 64 * (2 * 512 + 64) * 4096 * 61


def test_prefill_attention_uses_causal_average_and_lm_head_once_per_prompt():
    arch = load_model("kimi-k2")
    f = A.flops_per_token(arch, 1000, "prefill")
    assert f["attention"] == pytest.approx(2 * 64 * (192 + 128) * 500.5 * 61)
    assert f["lm_head"] == pytest.approx(2 * 163840 * 7168 / 1000)


def test_summary_has_contract_keys():
    arch = load_model("kimi-k2")
    s = A.summary(arch, plan_of(arch))
    for key in ("total_params", "active_params", "kv_bytes_per_token", "weight_bytes"):
        assert key in s
