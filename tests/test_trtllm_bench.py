"""trtllm-bench's own engine settings (hwmodels/calibrate/trtllm_bench.py), against its heuristic worked by hand."""

import pytest

from hwmodels import catalog
from hwmodels.arithmetic import params_by_part, total_params
from hwmodels.calibrate.trtllm_bench import _finetune, captured_graph_batches, checkpoint_elements, engine_settings
from hwmodels.precision import default_plan

GIB = 1024 ** 3


@pytest.mark.parametrize("requests, isl, osl, pp, expected", [
    (10.0, 1024, 1024, 1, (64, 2048)),  # at least 64 requests and 2,048 tokens
    (106.0, 1024, 1024, 1, (128, 2048)),  # to 32 below 256
    (303.0, 1024, 1024, 1, (384, 2048)),  # to 128 below 1,024
    (1358.0, 1024, 1024, 1, (1536, 2816)),  # to 256 above; tokens 2,716 to 256 below 4,096
    (3000.0, 1024, 1024, 1, (3072, 6144)),  # tokens 6,000 to 512 below 8,192
    (9000.0, 1024, 1024, 1, (4096, 8192)),  # the batch capped at 4,096
    (9000.0, 8192, 1024, 1, (4096, 32768)),  # the tokens capped at 32,768
    (600.0, 1024, 1024, 2, (384, 2048)),  # pipeline stages divide the batch: 300
])
def test_the_heuristic_rounds_as_trtllm_bench_does(requests, isl, osl, pp, expected):
    assert _finetune(requests, isl, osl, pp) == expected


GRAPHS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 384, 512, 1024, 2048, 4096, 8192)  # perf-overview.md's llm_options


@pytest.mark.parametrize("max_batch, max_tokens, expected", [
    (384, 2048, GRAPHS[:10]),  # up to the batch limit, which is a stated size
    (2048, 8192, GRAPHS[:13]),
    (300, 2048, GRAPHS[:9] + (300,)),  # a larger stated size captures the limit instead, padding on
    (2048, 1000, GRAPHS[:10] + (512, 1000)),  # a pure decode step holds at most max_num_tokens sequences
])
def test_the_engine_captures_graphs_up_to_its_largest_decode_batch(max_batch, max_tokens, expected):
    assert captured_graph_batches(GRAPHS, max_batch, max_tokens) == tuple(sorted(set(expected)))


def test_a_checkpoint_counts_packed_elements_and_scales():
    arch = catalog.load_model("deepseek-r1")
    fp8 = default_plan(arch.quantization_config, arch.torch_dtype)  # fp8 with 128 x 128 block scales
    assert checkpoint_elements(arch, fp8) == pytest.approx(total_params(arch), rel=1e-3)
    nvfp4 = fp8.with_overrides({"routed_experts": "nvfp4"})
    experts = params_by_part(arch)["routed_experts"]
    # two fp4 values per byte-sized element and one fp8 scale per 16
    assert checkpoint_elements(arch, fp8) - checkpoint_elements(arch, nvfp4) == pytest.approx(
        experts * (1 - 0.5 - 1 / 16), rel=1e-3)


def test_deepseek_r1_on_four_b200_by_hand():
    """DeepSeek-R1's config states 128 KV heads and no head_dim (7,168 / 128 = 56), so the heuristic counts its MLA
    cache as 128 heads of 56: 2 x 61 x 128 x 56 fp8 bytes a token."""
    arch = catalog.load_model("deepseek-r1")
    plan = default_plan(arch.quantization_config, arch.torch_dtype).with_overrides(
        {"routed_experts": "nvfp4", "shared_experts": "nvfp4", "dense_mlp": "nvfp4", "kv_cache": "fp8"})
    hbm = catalog.load_device("b200-sxm").hbm_bytes
    s = engine_settings(arch, catalog.model_config("deepseek-r1"), plan, hbm, 4, 1, 1024, 1024)
    kv_gib_per_token = 2 * 61 * 128 * 56 * 1.0 / GIB
    requests = (4 * hbm / GIB - checkpoint_elements(arch, plan) * 0.5 / GIB) * 0.9 / (kv_gib_per_token * 2048)
    assert (s.max_batch_size, s.max_num_tokens) == _finetune(requests, 1024, 1024, 1) == (384, 2048)
    assert "128 KV heads of 56" in s.rule
    # a KV cache in bf16 holds half the requests
    bf16 = engine_settings(arch, catalog.model_config("deepseek-r1"), plan.with_overrides({"kv_cache": "bf16"}), hbm,
                           4, 1, 1024, 1024)
    assert bf16.max_batch_size == _finetune(requests / 2, 1024, 1024, 1)[0] < s.max_batch_size
    # with chunked prefill off a whole prompt must fit beside the batch: 8,192 + 96 tokens
    long = engine_settings(arch, catalog.model_config("deepseek-r1"), plan, hbm, 4, 1, 8192, 1024)
    assert long.max_num_tokens == 8192 + long.max_batch_size


def test_a_quantisation_the_heuristic_does_not_tune_gets_the_defaults():
    arch = catalog.load_model("gpt-oss-120b")  # MXFP4 experts
    plan = default_plan(arch.quantization_config, arch.torch_dtype)
    hbm = catalog.load_device("h200-sxm").hbm_bytes
    s = engine_settings(arch, catalog.model_config("gpt-oss-120b"), plan, hbm, 1, 1, 1024, 1024)
    assert (s.max_batch_size, s.max_num_tokens) == (2048, 8192) and "defaults" in s.rule
    assert engine_settings(arch, catalog.model_config("gpt-oss-120b"), plan, hbm, 1, 1, 8192, 1024).max_num_tokens == 8192 + 2048
