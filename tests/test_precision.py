"""Precision plans: the checkpoint's own format by default, user overrides per part."""

import pytest
from hypothesis import given, strategies as st

from hwmodels.errors import InputError
from hwmodels.precision import DTYPES, SCHEMES, default_plan


def test_one_dtype_table_with_fractional_bytes():
    assert DTYPES["fp4"].bytes_per_element == 0.5
    assert DTYPES["int4"].bytes_per_element == 0.5
    assert DTYPES["bf16"].bytes_per_element == 2.0


def test_fp8_block_checkpoint_defaults():
    plan = default_plan({"quant_method": "fp8", "weight_block_size": [128, 128]})
    assert plan.of("routed_experts").name == plan.of("attention").name == "fp8"
    assert plan.of("embedding").name == plan.of("lm_head").name == "bf16"
    assert (plan.kv_cache.name, plan.dispatch.name, plan.combine.name) == ("bf16", "fp8", "bf16")


def test_unquantised_checkpoint_and_overrides():
    plan = default_plan(None).with_overrides({"routed_experts": "nvfp4", "kv_cache": "fp8"})
    assert plan.of("routed_experts").name == "nvfp4" and plan.kv_cache.name == "fp8"
    assert "overridden" in plan.source


def test_bad_overrides_name_the_part():
    with pytest.raises(InputError, match="precision.routed_experts.*unknown number format 'fp3'"):
        default_plan(None).with_overrides({"routed_experts": "fp3"})
    with pytest.raises(InputError, match="precision.experts.*not a part"):
        default_plan(None).with_overrides({"experts": "fp8"})


def test_unsupported_quant_method_is_refused():
    with pytest.raises(InputError, match="quant_method"):
        default_plan({"quant_method": "awq"})


@given(st.integers(1, 5000), st.integers(1, 5000))
def test_scaled_formats_cost_at_least_their_elements_and_less_than_bf16(rows, cols):
    for name in ("fp8", "int4", "mxfp4", "nvfp4", "int8"):
        s = SCHEMES[name]
        size = s.matrix_bytes(rows, cols)
        assert size >= rows * cols * s.dtype.bytes_per_element
        assert size <= SCHEMES["bf16"].matrix_bytes(rows, cols) + 4 * rows  # a scale per row at most on top


COMPRESSED = {"quant_method": "compressed-tensors", "format": "pack-quantized",
              "config_groups": {"group_0": {"targets": ["Linear"], "weights": {"num_bits": 4, "type": "int", "group_size": 32}}}}


def test_compressed_tensors_ignore_list_and_its_hostile_forms():
    plan = default_plan({**COMPRESSED, "ignore": ["lm_head", "re:.*self_attn.*"]})
    assert plan.of("routed_experts").name == "int4" and plan.of("attention").name != "int4"
    assert default_plan({**COMPRESSED, "ignore": None}).of("attention").name == "int4"  # null: nothing ignored
    for ignore in ("lm_head", [1], ["re:(a+)+$"], ["re:("], ["x" * 501]):
        with pytest.raises(InputError, match="quantization_config.ignore"):
            default_plan({**COMPRESSED, "ignore": ignore})
    for groups in ([1], {"g": 1}, {"g": {"weights": [4]}}, {"a": {}, "b": {}}):
        with pytest.raises(InputError, match="config_groups"):
            default_plan({**COMPRESSED, "config_groups": groups})


def test_2026_checkpoint_formats_are_read_from_quantization_config():
    """gpt-oss's quant_method mxfp4 (experts only), Kimi K3's compressed-tensors mxfp4-pack-quantized (4-bit float,
    groups of 32) with its ignore list, NVIDIA ModelOpt NVFP4 (4-bit float, groups of 16) with glob ignores, and W4A8
    (int4 weights, 8-bit activations, whose GEMMs run in fp8)."""
    from hwmodels import catalog

    def plan(name):
        arch = catalog.load_model(name)
        return default_plan(arch.quantization_config, arch.torch_dtype)

    oss = plan("gpt-oss-120b")
    assert oss.of("routed_experts").name == "mxfp4" and {oss.of(p).name for p in ("attention", "router", "lm_head")} == {"bf16"}
    k3 = plan("kimi-k3")  # ignore: self_attn, shared_experts, the dense mlp, lm_head, the vision tower
    assert (k3.of("routed_experts").name, k3.of("shared_experts").name, k3.of("dense_mlp").name) == ("mxfp4", "bf16", "bf16")
    k26 = plan("kimi-k2.6")  # ModelOpt: layer 0, attention and shared experts kept bf16
    assert (k26.of("routed_experts").name, k26.of("attention").name, k26.of("dense_mlp").name) == ("nvfp4", "bf16", "bf16")
    w4a8 = default_plan({"quant_method": "compressed-tensors", "config_groups": {"g": {
        "weights": {"num_bits": 4, "type": "int", "group_size": 128}, "input_activations": {"num_bits": 8, "type": "float"}}}})
    assert w4a8.of("routed_experts").name == "w4a8" and w4a8.of("routed_experts").compute_dtype == "fp8"
    assert SCHEMES["int4"].compute_dtype == "bf16"  # K2.5 / K2-Thinking int4 QAT: weight-only
    v4 = plan("deepseek-v4-pro")  # expert_dtype fp4 beside an fp8 quantization_config
    assert (v4.of("routed_experts").name, v4.of("attention").name) == ("mxfp4", "fp8")
    assert SCHEMES["w4a8"].matrix_bytes(128, 128) == 128 * 128 / 2 + 128 * 2  # one bf16 scale per 128 weights
