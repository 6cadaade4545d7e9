"""The vision towers of Kimi K2.5 / K3 and Qwen3.5 (hwmodels.vision), priced for a workload's images: the prompt
tokens an image adds, the encoder's FLOPs, and the encoder's time in a prefill step."""

import pytest

import moeplan
from hwmodels import catalog
from hwmodels.errors import InputError
from hwmodels.hardware import make_cluster
from hwmodels.layout import Layout
from hwmodels.precision import default_plan
from hwmodels.roles import Phase
from hwmodels.step import StepContext
from hwmodels.vision import ImageInputs

SPEC = {"schema_version": 1, "model": "kimi-k3", "cluster": {"unit": "gb200-nvl72", "devices": 72},
        "workload": {"input_tokens": 4096, "output_tokens": 512}, "slo": {"ttft_s": 3.0, "tpot_s": 0.05}}


def test_an_image_is_cut_into_patches_merged_four_to_a_token():
    """MoonViT: 14-px patches, a 2 x 2 merge (config.json patch_size, merge_kernel_size); Qwen3.5: 16-px, 2 x 2."""
    k3, qwen = catalog.load_model("kimi-k3").vision, catalog.load_model("qwen3.5-397b-a17b").vision
    assert k3.tokens_per_image(1024, 1024) == 74 * 74 // 4  # ceil(1024 / 14) = 74 patches a side
    assert k3.tokens_per_image(28, 28) == 1 and k3.tokens_per_image(14, 14) == 1
    assert qwen.tokens_per_image(1024, 1024) == 64 * 64 // 4
    assert (k3.layers, k3.hidden, k3.intermediate, k3.text_hidden) == (27, 1024, 4096, 7168)


def test_encoder_flops_grow_with_the_pixels_and_quadratically_in_attention():
    tower = catalog.load_model("kimi-k2.5").vision
    small, large = tower.flops_per_image(512, 512), tower.flops_per_image(1024, 1024)
    assert 4 < large / small < 8  # 4x the patches: 4x the GEMMs, 16x the attention among them
    # the tower holds about 0.4B parameters (glennklockwood.com/garden/kimi-k2.5: MoonViT-3D ~425M, est.)
    assert tower.params == pytest.approx(425e6, rel=0.15)


def test_images_add_prompt_tokens_and_encoder_time_to_prefill():
    plain = moeplan.deployment(SPEC)
    with_images = moeplan.deployment({**SPEC, "workload": {**SPEC["workload"], "images_per_request": 2}})
    assert with_images.workload.input_tokens == 4096 + 2 * 1369
    assert "2 image(s) of 1024 x 1024 px" in with_images.workload.source
    arch = with_images.model
    plan = default_plan(arch.quantization_config, arch.torch_dtype)
    cluster = make_cluster(catalog.load_unit("gb200-nvl72"), devices=8)
    base = StepContext(arch, plan, cluster, Layout(tp=8, dp=1))
    seen = StepContext(arch, plan, cluster, Layout(tp=8, dp=1), images=with_images.workload.images)
    prompt = with_images.workload.input_tokens
    step, step_with = base.step(Phase.PREFILL, 1024, prompt), seen.step(Phase.PREFILL, 1024, prompt)
    assert step_with.by_layer_type_s["vision_encoder"] > 0 and "vision_encoder" not in step.by_layer_type_s
    assert step_with.time_s == pytest.approx(step.time_s + step_with.by_layer_type_s["vision_encoder"])
    # decode never runs the encoder
    assert seen.step(Phase.DECODE, 16, prompt).time_s == base.step(Phase.DECODE, 16, prompt).time_s
    assert plain.workload.images is None


def test_images_for_a_text_model_or_past_the_context_are_refused():
    with pytest.raises(InputError, match="workload.images_per_request.*no vision tower"):
        moeplan.deployment({**SPEC, "model": "kimi-k2", "workload": {**SPEC["workload"], "images_per_request": 1}})
    big = {**SPEC, "model": "kimi-k2.5",
           "workload": {"input_tokens": 4096, "output_tokens": 512, "images_per_request": 20,
                        "image_width_px": 8192, "image_height_px": 8192}}
    with pytest.raises(InputError, match="workload.images_per_request.*past kimi-k2.5's context"):
        moeplan.deployment(big)


def test_image_inputs_are_frozen():
    with pytest.raises(AttributeError):
        ImageInputs(1, 2, 3).per_request = 2
