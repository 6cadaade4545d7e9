"""Reading config.json files: catalog names, files on disk, wrappers, and configs it must refuse."""

import json

import pytest

from catalogs import CATALOG_DIR
from hwmodels.catalog import load_model
from hwmodels.errors import InputError
from hwmodels.model_arch import arch_from_config


def test_layer_kinds():
    assert load_model("kimi-k2").moe_layers == tuple(range(1, 61))
    assert load_model("deepseek-v3").moe_layers == tuple(range(3, 61))
    assert load_model("qwen3-235b-a22b").moe_layers == tuple(range(94))
    assert load_model("mixtral-8x7b").num_dense_layers == 0


def test_multimodal_wrapper_reads_text_config():
    arch = load_model("kimi-k2.5")
    assert arch.hidden_size == 7168 and arch.moe.num_experts == 384
    assert arch.quantization_config["quant_method"] == "compressed-tensors"


def test_config_on_disk_file_or_folder(tmp_path):
    config = json.loads((CATALOG_DIR / "models" / "mixtral-8x7b.json").read_text())
    folder = tmp_path / "my-mixtral"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    assert load_model(str(folder)).name == "my-mixtral"
    assert load_model(str(folder / "config.json")).moe.top_k == 2


def test_dense_transformer_is_understood():
    arch = arch_from_config({"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32,
                             "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
                             "intermediate_size": 14336}, "llama-8b")
    assert not arch.is_moe and arch.num_dense_layers == 32


def test_non_transformer_config_is_refused_naming_the_field():
    with pytest.raises(InputError, match="hidden_size.*not an MoE or dense decoder transformer"):
        arch_from_config({"model_type": "whisper", "d_model": 1280}, "whisper")


def test_bad_field_value_is_named():
    with pytest.raises(InputError, match="num_hidden_layers.*positive"):
        arch_from_config({"hidden_size": 8, "num_hidden_layers": 0, "num_attention_heads": 1, "vocab_size": 8}, "x")


def test_unknown_model_suggests_nearest():
    with pytest.raises(InputError, match="did you mean kimi-k2"):
        load_model("kimi-k2.9")


def test_invalid_json_names_the_line(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text('{"hidden_size": 7168,\n "oops"\n}')
    with pytest.raises(InputError, match="not valid JSON \\(line 3"):
        load_model(str(bad))


# --------------------------------------------------------------------------- hostile and absurd config.json files

DEEPSEEK = json.loads((CATALOG_DIR / "models" / "deepseek-v3.json").read_text())
QWEN = json.loads((CATALOG_DIR / "models" / "qwen3-30b-a3b.json").read_text())
BERT = {"model_type": "bert", "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
        "vocab_size": 30522, "intermediate_size": 3072}
HOSTILE_CONFIGS = {  # name: (the config.json text or object, the field the error names, words of the problem)
    "100,000 deep": ("[" * 100_000 + "]" * 100_000, "model", "nests too deep"),
    "40 deep": (DEEPSEEK | {"x": json.loads("[" * 40 + "]" * 40)}, "model", "deeper than 32 levels"),
    "5,000 digits": (json.dumps(DEEPSEEK)[:-1] + ', "x": ' + "9" * 5000 + "}", "model", "cannot be read"),
    "10^12 layers": (DEEPSEEK | {"num_hidden_layers": 10**12}, "num_hidden_layers", "past the bound of 10,000"),
    "quantization string": (DEEPSEEK | {"quantization_config": "fp8"}, "quantization_config", "must be a JSON object"),
    "intermediate 0": (DEEPSEEK | {"intermediate_size": 0}, "intermediate_size", "the model has dense layers"),
    "intermediate negative": (DEEPSEEK | {"intermediate_size": -1}, "intermediate_size", "must be positive"),
    "bert": (BERT, "model_type", "encoder-only"),
    "t5": (BERT | {"model_type": "t5"}, "model_type", "encoder-decoder"),
    "is_encoder_decoder": (DEEPSEEK | {"is_encoder_decoder": True}, "is_encoder_decoder", "encoder-decoder"),
    "masked LM": (DEEPSEEK | {"architectures": ["MyForMaskedLM"]}, "architectures", "not a causal decoder"),
    "0 routed experts": (DEEPSEEK | {"n_routed_experts": 0}, "n_routed_experts", "an MoE without experts"),
    "0 Qwen experts": (QWEN | {"num_experts": 0}, "num_experts", "an MoE without experts"),
    "hidden 10^9": (DEEPSEEK | {"hidden_size": 10**9}, "hidden_size", "past the bound of 1,048,576"),
    "200,000 experts": (DEEPSEEK | {"n_routed_experts": 200_000}, "n_routed_experts", "past the bound of 100,000"),
    "vocab 10^9": (DEEPSEEK | {"vocab_size": 10**9}, "vocab_size", "past the bound of 100,000,000"),
    "NaN size": (DEEPSEEK | {"hidden_size": float("nan")}, "hidden_size", "must be an integer"),
    "string size": (DEEPSEEK | {"num_hidden_layers": "61"}, "num_hidden_layers", "must be an integer"),
    "top-k past experts": (DEEPSEEK | {"num_experts_per_tok": 300}, "num_experts_per_tok", "more than the 256 experts"),
    "kv heads past heads": (QWEN | {"num_key_value_heads": 64}, "num_key_value_heads", "more than the 32 query heads"),
    "exponential pattern": (DEEPSEEK | {"quantization_config": {"quant_method": "compressed-tensors",
                                                                "ignore": ["re:(.*)*x"]}}, "ignore[0]", "exponential"),
    "block not a list": (DEEPSEEK | {"quantization_config": {"quant_method": "fp8", "weight_block_size": 128}},
                         "weight_block_size", "list of integers"),
    "groups not objects": (DEEPSEEK | {"quantization_config": {"quant_method": "compressed-tensors", "config_groups": [1]}},
                           "config_groups", "must map group names"),
    "tie as a string": (DEEPSEEK | {"tie_word_embeddings": "false"}, "tie_word_embeddings", "true or false"),
    "model_type a list": (DEEPSEEK | {"model_type": ["x"]}, "model_type", "must be a string"),
    "text_config a number": ({"text_config": 5}, "text_config", "must be a JSON object"),
    "mlp_only_layers a string": (QWEN | {"mlp_only_layers": "abc"}, "mlp_only_layers", "list of layer indices"),
}


@pytest.mark.parametrize("case", HOSTILE_CONFIGS)
def test_a_hostile_config_is_one_error_naming_its_field(tmp_path, case):
    import time
    import tracemalloc

    content, field, problem = HOSTILE_CONFIGS[case]
    path = tmp_path / "config.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(InputError) as raised:
        load_model(str(path))
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    e = raised.value
    assert seconds < 2 and peak < 100e6
    assert e.field == "model" if field == "model" else (e.field.startswith(str(path)) and e.field.endswith(field))
    assert problem in e.problem and e.fix and e.fix != "fix the value" and "\n" not in str(e)


def test_a_null_size_with_a_default_takes_the_default():
    arch = arch_from_config(QWEN | {"head_dim": None}, "qwen")  # HuggingFace's own default: hidden / heads
    assert arch.attention.head_dim == QWEN["hidden_size"] // QWEN["num_attention_heads"]


def test_null_experts_is_a_dense_model():
    dense = {k: v for k, v in DEEPSEEK.items() if k != "quantization_config"} | {"n_routed_experts": None}
    assert not arch_from_config(dense, "dense").is_moe


def test_catalog_quantization_patterns_are_accepted():
    assert load_model("kimi-k2.5").quantization_config["ignore"][-1] == "re:.*mlp\\.(gate|up|gate_up|down)_proj.*"


def test_a_path_that_cannot_be_one_is_an_error(tmp_path):
    for name in ("x" * 5000 + ".json", "bad\x00/config.json", "~no-such-user-moeplan/config.json"):
        with pytest.raises(InputError, match="^model: "):
            load_model(name)


def test_node_limited_routing_groups_are_read():
    # DeepSeek-V3 config.json: n_group 8, topk_group 4 (a token's experts lie in 4 of 8 groups)
    v3 = load_model("deepseek-v3").moe
    assert (v3.num_groups, v3.groups_per_token) == (8, 4)
    k2 = load_model("kimi-k2").moe  # n_group 1: no limit
    assert (k2.num_groups, k2.groups_per_token) == (1, 1)
    config = json.loads((CATALOG_DIR / "models" / "deepseek-v3.json").read_text())
    with pytest.raises(InputError, match="n_group"):
        arch_from_config({**config, "n_group": 3}, "odd groups")  # 256 experts do not split into 3
    with pytest.raises(InputError, match="topk_group"):
        arch_from_config({**config, "topk_group": 9}, "too many groups per token")
