"""Routing statistics files, format by format (hwmodels.ingest.routing_formats through read_counts /
read_routing): the EPLB/SGLang JSON, SGLang's CSV dump, moeplan's own format, bad input, and which reader a
file's content and name select. The richer formats (per-token, pickles, .pt, TensorRT-LLM) are exercised with
their mapping onto a model in tests/test_ingest_routing.py."""

import json

import numpy as np
import pytest

from hwmodels.errors import InputError
from hwmodels.ingest.routing import read_counts, read_routing, save_counts
from hwmodels.ingest.routing_formats import AGGREGATED


def test_reads_the_sglang_deepseek_v3_statistics(shared_data):
    loads = read_counts(shared_data / "routing" / "deepseek-v3-sglang-eplb" / "decode_in1000out1000.json")
    assert loads.shape == (61, 256)
    assert not loads[:3].any()  # layers 0-2 are dense
    moe = loads[3:].sum(axis=1)
    assert np.allclose(moe, moe[0])  # top-8 routing: every MoE layer counts tokens x 8


def test_own_format_round_trips(tmp_path):
    loads = np.arange(12.0).reshape(3, 4)
    save_counts(loads, tmp_path / "w.json", model="toy")
    assert np.array_equal(read_counts(tmp_path / "w.json"), loads)
    doc = json.loads((tmp_path / "w.json").read_text())
    assert doc["schema_version"] == 1 and doc["model"] == "toy"


def test_sglang_csv_dump_adds_rows_and_keeps_dense_layers(tmp_path):
    path = tmp_path / "expert_distribution_rank0_timestamp1.csv"
    path.write_text("layer_id,expert_id,count\n3,0,10\n3,2,5\n3,0,1\n4,1,7\n")
    loads = read_counts(path)
    assert loads.shape == (5, 3)
    assert loads[3].tolist() == [11.0, 0.0, 5.0] and loads[4].tolist() == [0.0, 7.0, 0.0]
    assert not loads[:3].any()
    assert read_counts(path, num_experts=8).shape == (5, 8)


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
        read_counts(path)
    assert str(path) in str(err.value) and where in str(err.value)


def test_binary_torch_dump_is_refused_not_unpickled(tmp_path):
    # Named as text statistics, a pickle is not UTF-8: refused before any parser sees it.
    path = tmp_path / "expert_distribution_recorder.json"
    path.write_bytes(b"\x80\x02}q\x00(X\r\x00\x00\x00logical_countq\x01")  # a pickle header
    with pytest.raises(InputError, match="cannot read"):
        read_counts(path)
    # Named .pt, it goes to torch.load(weights_only=True) (or is refused without PyTorch), never to plain pickle.
    dump = path.with_suffix(".pt")
    dump.write_bytes(path.read_bytes())
    with pytest.raises(InputError, match="not a readable PyTorch dump|needs PyTorch") as err:
        read_counts(dump)
    assert str(dump) in str(err.value)


def test_own_format_round_trips_through_bytes(tmp_path):
    loads = np.arange(12.0).reshape(3, 4)
    save_counts(loads, tmp_path / "w.json", model="toy")
    assert np.array_equal(read_counts((tmp_path / "w.json").read_bytes(), name="w.json"), loads)


@pytest.mark.parametrize("name, text, kind, top_k", [
    ("stats.json", '{"logical_count": [[1, 2], [3, 4]]}', AGGREGATED, None),
    ("stats.txt", "layer_id,expert_id,count\n0,1,5\n", AGGREGATED, None),
    ("decisions.json", '{"problem_id": 0, "layer": 0, "token_idx": 0, "experts": [0, 1]}\n', "per-token top-2 decisions", 2),
    ("decisions.jsonl", '{"problem_id": 0, "layer": 0, "token_idx": 0, "experts": [1]}\n', "per-token top-1 decisions", 1),
])
def test_the_reader_is_chosen_by_content_and_suffix(name, text, kind, top_k):
    recorded = read_routing(text.encode(), name=name)
    assert recorded.kind == kind and recorded.per_token is (top_k is not None) and recorded.top_k == top_k
    assert recorded.source == f"{name} ({kind})" and recorded.windows.ndim == 3 and len(recorded.windows) == 1
