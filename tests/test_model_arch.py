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
        load_model("kimi-k3")


def test_invalid_json_names_the_line(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text('{"hidden_size": 7168,\n "oops"\n}')
    with pytest.raises(InputError, match="not valid JSON \\(line 3"):
        load_model(str(bad))
