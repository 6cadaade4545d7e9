"""Routing statistics files: the EPLB/SGLang JSON, SGLang's CSV dump, moeplan's own format, bad input."""

import json

import numpy as np
import pytest

from hwmodels.errors import InputError
from planner.loads import fit_to_model, load_counts, save_counts


def test_reads_the_sglang_deepseek_v3_statistics(shared_data):
    loads = load_counts(shared_data / "routing" / "deepseek-v3-sglang-eplb" / "decode_in1000out1000.json")
    assert loads.shape == (61, 256)
    assert not loads[:3].any()  # layers 0-2 are dense
    moe = loads[3:].sum(axis=1)
    assert np.allclose(moe, moe[0])  # top-8 routing: every MoE layer counts tokens x 8


def test_own_format_round_trips(tmp_path):
    loads = np.arange(12.0).reshape(3, 4)
    save_counts(loads, tmp_path / "w.json", model="toy")
    assert np.array_equal(load_counts(tmp_path / "w.json"), loads)
    doc = json.loads((tmp_path / "w.json").read_text())
    assert doc["schema_version"] == 1 and doc["model"] == "toy"


def test_sglang_csv_dump_adds_rows_and_keeps_dense_layers(tmp_path):
    path = tmp_path / "expert_distribution_rank0_timestamp1.csv"
    path.write_text("layer_id,expert_id,count\n3,0,10\n3,2,5\n3,0,1\n4,1,7\n")
    loads = load_counts(path)
    assert loads.shape == (5, 3)
    assert loads[3].tolist() == [11.0, 0.0, 5.0] and loads[4].tolist() == [0.0, 7.0, 0.0]
    assert not loads[:3].any()
    assert load_counts(path, num_experts=8).shape == (5, 8)


@pytest.mark.parametrize("text, where", [
    ('{"logical_count": [[1, 2], [3', "line 1 column"),
    ('{"logical_count": [[1, 2], [3, -1]]}', "logical_count[1][1]"),
    ('{"logical_count": [[1, 2], [3]]}', "logical_count[1]"),
    ('{"logical_count": [[1, 2], [3, "x"]]}', "logical_count[1][1]"),
    ('{"logical_count": [[0, 0]]}', "no routed tokens"),
    ('{"schema_version": 2, "loads": [[1]]}', "schema_version"),
    ('{"counts": [[1]]}', "neither"),
    ('[[1, 2]]', "not an object"),
    ("layer_id,expert_id,count\n3,0,10\n3,zero,1\n", "line 3"),
    ("layer,expert,n\n3,0,10\n", "line 1"),
    ("layer_id,expert_id,count\n3,0,-4\n", "line 2"),
])
def test_corrupt_input_names_file_and_place(tmp_path, text, where):
    path = tmp_path / "stats.json"
    path.write_text(text)
    with pytest.raises(InputError) as err:
        load_counts(path)
    assert str(path) in str(err.value) and where in str(err.value)


def test_binary_torch_dump_is_refused_not_unpickled(tmp_path):
    path = tmp_path / "expert_distribution_recorder.pt"
    path.write_bytes(b"\x80\x02}q\x00(X\r\x00\x00\x00logical_countq\x01")  # a pickle header
    with pytest.raises(InputError, match="cannot read"):
        load_counts(path)


def test_statistics_of_the_model_itself_are_not_mapped():
    loads = np.zeros((4, 8))
    loads[1:] = np.arange(1, 9)
    same, note = fit_to_model(loads, 4, (1, 2, 3), 8)
    assert note == "" and same is loads


def test_mapping_to_more_experts_keeps_real_expert_loads_and_layer_totals():
    rng = np.random.default_rng(0)
    source = np.zeros((61, 256))
    source[3:] = rng.gamma(0.8, 100.0, size=(58, 256))  # DeepSeek-V3's shape: 3 dense layers
    target, note = fit_to_model(source, 61, tuple(range(1, 61)), 384)  # Kimi K2's shape: 1 dense layer
    assert target.shape == (61, 384) and not target[0].any()
    assert "58 MoE layers x 256 experts mapped to 60 x 384" in note and "correlated" in note
    # first and last MoE layers replay the source's first and last; every layer keeps its source's total
    src_first, src_last = source[3], source[60]
    assert target[1].sum() == pytest.approx(src_first.sum()) and target[60].sum() == pytest.approx(src_last.sum())
    scale = src_first.sum() / src_first[np.arange(384) % 256].sum()
    np.testing.assert_allclose(target[1], src_first[np.arange(384) % 256] * scale)
    # the skew survives: the per-expert coefficient of variation stays near the source's
    cv = lambda row: row.std() / row.mean()  # noqa: E731
    assert cv(target[30]) == pytest.approx(cv(source[3 + round(29 * 57 / 59)]), rel=0.15)


def test_mapping_to_fewer_experts_subsamples():
    source = np.zeros((3, 16))
    source[1:] = np.arange(1, 17)
    target, note = fit_to_model(source, 2, (0, 1), 8)
    np.testing.assert_allclose(target[0], np.arange(1, 9) * source[1].sum() / np.arange(1, 9).sum())
    assert "correlated" not in note
