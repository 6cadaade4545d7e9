"""Model families read from their config.json fields, checked against the parameter counts their makers publish,
and families moeplan does not read, refused instead of read as something else."""

import json
import os

import pytest

from hwmodels.arithmetic import active_params, total_params
from hwmodels.attention_kinds import Kind
from hwmodels.errors import InputError
from hwmodels.model_arch import arch_from_config
from hwmodels.precision import default_plan

# meta-llama/Llama-4-Maverick-17B-128E-Instruct config.json's text_config (the fields moeplan reads)
MAVERICK = {"model_type": "llama4", "torch_dtype": "bfloat16", "text_config": {
    "model_type": "llama4_text", "hidden_size": 5120, "intermediate_size": 8192, "intermediate_size_mlp": 16384,
    "num_hidden_layers": 48, "num_attention_heads": 40, "num_key_value_heads": 8, "head_dim": 128,
    "vocab_size": 202048, "num_local_experts": 128, "num_experts_per_tok": 1, "interleave_moe_layer_step": 2,
    "attention_chunk_size": 8192, "no_rope_layers": [], "max_position_embeddings": 1048576}}
# baidu/ERNIE-4.5-300B-A47B-PT config.json
ERNIE_300B = {"model_type": "ernie4_5_moe", "hidden_size": 8192, "intermediate_size": 28672,
              "moe_intermediate_size": 3584, "moe_num_experts": 64, "moe_k": 8, "moe_num_shared_experts": 0,
              "moe_layer_start_index": 3, "moe_layer_end_index": 53, "moe_layer_interval": 1,
              "num_hidden_layers": 54, "num_attention_heads": 64, "num_key_value_heads": 8, "head_dim": 128,
              "vocab_size": 103424, "max_position_embeddings": 131072, "torch_dtype": "bfloat16"}
QWEN3_NEXT = {"model_type": "qwen3_next", "hidden_size": 2048, "intermediate_size": 5120, "num_hidden_layers": 48,
              "num_attention_heads": 16, "num_key_value_heads": 2, "head_dim": 256, "vocab_size": 151936,
              "num_experts": 512, "num_experts_per_tok": 10, "moe_intermediate_size": 512,
              "shared_expert_intermediate_size": 512, "full_attention_interval": 4, "linear_num_key_heads": 16,
              "linear_num_value_heads": 32, "linear_key_head_dim": 128, "linear_value_head_dim": 128}
DENSE = {"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
         "num_key_value_heads": 8, "vocab_size": 128256, "intermediate_size": 14336}


def _within(value: float, published: float, tolerance: float) -> bool:
    return abs(value / published - 1) <= tolerance


def test_llama4_maverick_is_400b_with_17b_active():
    """Meta's model card: 17B active and 400B total parameters, 128 experts. Every second layer routes (to one
    expert beside a shared one); the others are dense and twice as wide; three layers in four attend in chunks."""
    arch = arch_from_config(MAVERICK, "maverick")
    assert arch.moe_layers == tuple(range(1, 48, 2))
    assert arch.moe.num_shared_experts == 1 and arch.dense_intermediate_size == 16384
    assert _within(total_params(arch), 400e9, 0.01) and _within(active_params(arch), 17e9, 0.03)
    assert len(arch.layers_of(Kind.FULL)) == 12 and arch.layers_of(Kind.FULL)[0] == 3
    assert arch.sliding_window == 8192


def test_llama4_scout_routes_every_layer():
    """Meta's model card: 17B active and 109B total parameters, 16 experts."""
    scout = {**MAVERICK, "text_config": {**MAVERICK["text_config"], "num_local_experts": 16,
                                         "interleave_moe_layer_step": 1}}
    arch = arch_from_config(scout, "scout")
    assert len(arch.moe_layers) == 48
    assert _within(total_params(arch), 109e9, 0.02) and _within(active_params(arch), 17e9, 0.03)


def test_llama4_layer_types_name_chunked_layers():
    text = {**MAVERICK["text_config"], "layer_types": ["chunked_attention", "full_attention"] * 24}
    arch = arch_from_config(text, "maverick")
    assert len(arch.layers_of(Kind.SLIDING)) == 24 and arch.sliding_window == 8192


def test_ernie45_300b_is_300b_with_47b_active():
    """Baidu's ERNIE 4.5 model card: 300B total, 47B active; the first three layers are dense."""
    arch = arch_from_config(ERNIE_300B, "ernie")
    assert arch.moe_layers == tuple(range(3, 54)) and arch.moe.top_k == 8
    assert _within(total_params(arch), 300e9, 0.01) and _within(active_params(arch), 47e9, 0.03)


def test_ernie45_shared_experts_and_interval():
    arch = arch_from_config(ERNIE_300B | {"moe_num_shared_experts": 2, "moe_layer_interval": 2,
                                          "moe_layer_end_index": -1}, "ernie")
    assert arch.moe.shared_intermediate_size == 2 * 3584
    assert arch.moe_layers == tuple(i for i in range(3, 54) if (i + 1) % 2 == 0)


def test_qwen3_next_without_layer_types_takes_its_interval():
    arch = arch_from_config(QWEN3_NEXT, "qwen3-next")
    assert arch.layers_of(Kind.FULL) == tuple(range(3, 48, 4)) and len(arch.layers_of(Kind.LINEAR)) == 36


@pytest.mark.parametrize("config, field", [
    # Jamba: experts every second layer, Mamba layers between attention ones
    (DENSE | {"num_experts": 16, "num_experts_per_tok": 2, "moe_intermediate_size": 14336, "expert_layer_period": 2,
              "attn_layer_period": 8}, "expert_layer_period"),
    # Step-3: its MoE layers as a string, a shared expert of its own width
    (DENSE | {"moe_num_experts": 48, "moe_k": 3, "moe_intermediate_size": 5120, "moe_layers_enum": "4,5,6"},
     "moe_layers_enum"),
    # Hunyuan-MoE: top-k and shared experts per layer
    (DENSE | {"num_experts": 64, "num_experts_per_tok": 8, "moe_intermediate_size": 3072, "moe_topk": [8]},
     "moe_topk"),
    # MiniMax-Text-01: lightning (linear) attention in seven layers of eight
    (DENSE | {"num_local_experts": 32, "num_experts_per_tok": 2, "attn_type_list": [0] * 7 + [1] * 25},
     "attn_type_list"),
    # an expert count under a name no family reads: never a dense model
    (DENSE | {"n_experts": 16}, "n_experts"),
    (DENSE | {"num_routed_expert": 64}, "num_routed_expert"),
    # ERNIE 4.5 VL: per-modality expert counts
    (ERNIE_300B | {"moe_num_experts": [64, 64]}, "moe_num_experts"),
])
def test_an_unread_moe_structure_is_refused_naming_its_field(config, field):
    with pytest.raises(InputError, match=f"config.json {field}:"):
        arch_from_config(config, "x")


def test_harmless_expert_fields_do_not_refuse_a_dense_model():
    arch = arch_from_config(DENSE | {"num_experts_per_tok": 2, "router_aux_loss_coef": 0.01,
                                     "output_router_logits": False, "num_experts": None}, "dense")
    assert not arch.is_moe


def test_granite_moe_shared_expert():
    """ibm-granite GraniteMoeShared: Mixtral-style experts plus one shared MLP of shared_intermediate_size."""
    granite = DENSE | {"model_type": "granitemoeshared", "intermediate_size": 512, "num_local_experts": 40,
                       "num_experts_per_tok": 8, "shared_intermediate_size": 1024}
    arch = arch_from_config(granite, "granite")
    assert arch.moe.shared_intermediate_size == 1024 and arch.moe.num_shared_experts == 1
    assert active_params(arch) > active_params(arch_from_config(granite | {"shared_intermediate_size": 0}, "g"))


def _package_configs():
    """NVIDIA aiconfigurator-core's model_configs/: the config.json files of 80-odd published models (the extra)."""
    from hwmodels.calibrate import measured_tables
    root = measured_tables.database_root()
    if root is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI installs moeplan[measured], but aiconfigurator-core is missing")
        pytest.skip("aiconfigurator-core is not installed (pip install '.[measured]')")
    folder = root.parents[1] / "model_configs"
    return {p.name.removesuffix("_config.json"): json.loads(p.read_text()) for p in sorted(folder.glob("*_config.json"))
            if not p.name.endswith("_hf_quant_config.json")}


def test_every_published_config_is_read_or_refused_naming_a_field():
    """Each model config NVIDIA's package ships: read, or one InputError naming the field moeplan cannot read,
    never another exception; the families this module reads are read, those it refuses are refused."""
    read, refused, configs = {}, {}, _package_configs()
    for name, config in configs.items():
        try:
            read[name] = arch_from_config(config, name)
        except InputError as e:
            refused[name] = str(e)
    assert len(read) >= 60
    maverick = read["meta-llama--Llama-4-Maverick-17B-128E-Instruct"]
    assert _within(total_params(maverick), 400e9, 0.01) and _within(active_params(maverick), 17e9, 0.03)
    assert _within(total_params(read["meta-llama--Llama-4-Scout-17B-16E-Instruct"]), 109e9, 0.02)
    step = read["stepfun-ai--Step-3.7-Flash"]  # share_expert_dim: its shared expert's own width
    assert step.moe.shared_intermediate_size == 1280 and len(step.layers_of(Kind.SLIDING)) > 0
    assert read["MiniMaxAI--MiniMax-M2.7"].layer_kinds == ()  # attn_type_list all 1: softmax attention throughout
    assert read["nvidia--GLM-5.2-NVFP4"].indexer is not None  # deepseek_sparse_attention layers
    v4 = read["nvidia--DeepSeek-V4-Flash-NVFP4"]  # ModelOpt's globs, NVFP4 routed experts
    assert default_plan(v4.quantization_config, v4.torch_dtype).weights["routed_experts"].name == "nvfp4"
    mimo = read["XiaomiMiMo--MiMo-V2-Flash"]  # keys of 192, values of 128; 39 of 48 layers slide over 128 tokens
    assert mimo.attention.value_dim == 128 and len(mimo.layers_of(Kind.SLIDING)) == 39 and mimo.sliding_window == 128
    # github.com/XiaomiMiMo/MiMo-V2-Flash README: 309B total, 15B active, sliding and global layers 5:1
    assert _within(total_params(mimo), 309e9, 0.01) and _within(active_params(mimo), 15e9, 0.02)
    assert "gemma" not in " ".join(read).lower()  # its MoE block beside a dense MLP is not read, text model or not
    with pytest.raises(InputError, match="enable_moe_block"):
        arch_from_config(configs["google--gemma-4-26B-A4B"]["text_config"], "gemma")
    assert all("hybrid_override_pattern" in m or "layers_block_type" in m or "num_hidden_layers" in m
               for n, m in refused.items() if "Nemotron-H" in n or "Nemotron-3" in n)


def test_moe_layer_freq_per_layer():
    """MiMo-V2-Flash gives moe_layer_freq as one flag per layer (1: the layer routes)."""
    deepseek_style = DENSE | {"n_routed_experts": 64, "num_experts_per_tok": 4, "moe_intermediate_size": 1024,
                              "num_hidden_layers": 4, "moe_layer_freq": [0, 1, 1, 0]}
    assert arch_from_config(deepseek_style, "x").moe_layers == (1, 2)
    with pytest.raises(InputError, match="moe_layer_freq: a list must give 0 or 1 for each of the 4 layers"):
        arch_from_config(deepseek_style | {"moe_layer_freq": [0, 1]}, "x")


def test_a_hugging_face_id_the_package_ships_is_read_in_place():
    """With moeplan[measured], a HuggingFace id outside the catalog is read from aiconfigurator-core's model_configs/,
    and a ModelOpt checkpoint's format from the hf_quant_config.json beside it (NVFP4 in groups of 16, FP8 per
    tensor, its exclude_modules kept in their own format)."""
    from hwmodels import catalog

    _package_configs()  # skips without the package
    qwen = catalog.load_model("nvidia/Qwen3-235B-A22B-NVFP4")
    plan = default_plan(qwen.quantization_config, qwen.torch_dtype)
    assert plan.weights["routed_experts"].name == "nvfp4" and plan.weights["router"].name == "bf16"
    llama = catalog.load_model("NVIDIA/Llama-3.1-70B-Instruct-FP8")  # the id's case does not matter
    assert default_plan(llama.quantization_config, llama.torch_dtype).weights["dense_mlp"].name == "fp8_tensor"
    assert catalog.load_model("MiniMaxAI/MiniMax-M2.7").moe.num_experts == 256
    with pytest.raises(InputError, match="MIXED_PRECISION.* is not a format moeplan reads"):  # per-layer formats
        catalog.load_model("nvidia/NVIDIA-Nemotron-3.5-Lightning-30B-A3B-NVFP4")
    with pytest.raises(InputError, match="whose config.json aiconfigurator-core ships"):
        catalog.load_model("example-org/not-a-model")
