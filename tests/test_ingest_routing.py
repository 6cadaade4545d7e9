"""Routing statistics (hwmodels.ingest.routing): the SGLang/EPLB statistics, the Mixtral per-token decisions,
the OLMoE/Mixtral Counter pickles (restricted unpickler), SGLang .pt dumps, TensorRT-LLM expert statistics, read
from paths, bytes and in-memory folders alike, the mapping onto another model's shape, the fitted synthetic
generator, and one clear error for every bad input."""

import json
import os
import pickle
import struct
from collections import Counter

import numpy as np
import pytest

from hwmodels.errors import InputError
from hwmodels.ingest.routing import (
    JSONL_TOKENS_PER_WINDOW,
    RoutingTrace,
    fit_to_model,
    layer_cv,
    load_routing,
    read_counts,
    read_routing,
    save_counts,
    synthetic_routing,
)

DEEPSEEK_V3 = dict(num_layers=61, moe_layers=range(3, 61), num_experts=256, top_k=8)
KIMI_K2 = dict(num_layers=61, moe_layers=range(1, 61), num_experts=384, top_k=8)
MIXTRAL = dict(num_layers=32, moe_layers=range(32), num_experts=8, top_k=2)
EPLB_FILE = ("routing", "deepseek-v3-sglang-eplb", "decode_in1000out1000.json")
GSM8K = ("routing", "mixtral-8x7b-per-token", "gsm8k_2_routing.jsonl")


def test_deepseek_statistics_on_their_own_model_are_unchanged(shared_data):
    path = shared_data.joinpath(*EPLB_FILE)
    trace = load_routing(path, **DEEPSEEK_V3)
    assert trace.windows.shape == (1, 61, 256) and trace.note == "" and trace.top_k == 8
    assert np.array_equal(trace.loads, read_counts(path))
    assert trace.moe_layers == tuple(range(3, 61)) and str(path) in trace.source


def test_kimi_k2_gets_deepseek_statistics_through_a_documented_mapping(shared_data):
    path = shared_data.joinpath(*EPLB_FILE)
    trace = load_routing(path, **KIMI_K2)
    expected, note = fit_to_model(read_counts(path), 61, range(1, 61), 384)
    assert trace.windows.shape == (1, 61, 384) and trace.note == note != ""
    assert "58 MoE layers x 256 experts mapped to 60 x 384" in trace.note
    assert np.allclose(trace.windows[0], expected)
    assert not trace.windows[0, 0].any() and trace.moe_layers == tuple(range(1, 61))


def test_mixtral_per_token_decisions_become_windows_in_time_order(shared_data):
    path = shared_data.joinpath(*GSM8K)
    trace = load_routing(path, **MIXTRAL)
    with path.open() as f:
        rows = [json.loads(line) for line in f]
    tokens = len({(r["problem_id"], r["token_idx"]) for r in rows})  # 247 generated tokens
    assert trace.windows.shape == (-(-tokens // JSONL_TOKENS_PER_WINDOW), 32, 8) and trace.note == ""
    assert trace.windows.sum() == 2 * len(rows)
    assert (trace.windows.sum(axis=2) <= 2 * JSONL_TOKENS_PER_WINDOW).all()
    per_token = load_routing(path, **MIXTRAL, tokens_per_window=1)
    assert per_token.windows.shape[0] == tokens and set(np.unique(per_token.windows)) <= {0.0, 1.0}
    first = rows[0]  # problem 0, token 0, layer 0
    assert per_token.windows[0, 0, first["experts"]].tolist() == [1.0, 1.0]
    wide = load_routing(path, num_layers=32, moe_layers=range(32), num_experts=8, top_k=4)
    assert np.allclose(wide.windows, 2 * trace.windows) and "top-4 / top-2" in wide.note


def test_per_token_order_is_problem_then_token(tmp_path):
    path = tmp_path / "decisions.jsonl"
    rows = [("a", 0, 0, [0, 1]), ("a", 0, 1, [2, 3]), ("a", 0, 2, [0, 2]), ("b", 0, 0, [1, 3]),
            ("a", 1, 0, [0, 1]), ("a", 1, 1, [0, 1]), ("a", 1, 2, [0, 1]), ("b", 1, 0, [2, 3])]
    path.write_text("".join(json.dumps({"problem_id": p, "layer": l, "token_idx": t, "experts": e}) + "\n"
                            for p, l, t, e in rows))
    trace = load_routing(path, num_layers=2, moe_layers=(0, 1), num_experts=4, top_k=2, tokens_per_window=2)
    # window 0: tokens a0, a1; window 1: a2, b0
    assert trace.windows[0, 0].tolist() == [1, 1, 1, 1] and trace.windows[1, 0].tolist() == [1, 1, 1, 1]
    assert trace.windows[0, 1].tolist() == [2, 2, 0, 0] and trace.windows[1, 1].tolist() == [1, 1, 1, 1]


def test_olmoe_and_mixtral_counter_pickles(shared_data):
    folder = shared_data / "routing" / "olmoe-mixtral-counts"
    mixtral = load_routing(folder / "mistral" / "expert_counts" / "arxiv.pkl", **MIXTRAL)
    assert mixtral.windows.shape == (1, 32, 8)
    assert np.allclose(mixtral.loads.sum(axis=1), 417_792)  # 208,896 tokens x top-2 in every layer
    assert "3 sampled layers" in mixtral.note and "mapped to 32 x 8" in mixtral.note
    top1 = load_routing(folder / "olmoe" / "expert_counts_top1" / "arxiv.pkl", num_layers=16,
                        moe_layers=range(16), num_experts=64, top_k=8, source_top_k=1)
    assert np.allclose(top1.loads.sum(axis=1), 8 * 208_896) and "top-8 / top-1" in top1.note


class _Payload:
    def __reduce__(self):
        return os.getcwd, ()


@pytest.mark.parametrize("payload, problem", [
    (pickle.dumps([Counter({0: 3}), _Payload()]), "refused posix.getcwd"),
    (pickle.dumps([Counter({0: 3}), np.dtype(object)]), "dtype object is not numeric"),
    (pickle.dumps({"layer": Counter({0: 3})}), "not a list of Counter"),
    (pickle.dumps([Counter({0: -3})]), "is not expert id: count"),
    (pickle.dumps([Counter({np.int64(0): np.int64(3)})])[:-9], "not a pickle of expert Counters"),
])
def test_counter_pickles_are_read_by_a_restricted_unpickler(tmp_path, payload, problem):
    path = tmp_path / "counts.pkl"
    path.write_bytes(payload)
    with pytest.raises(InputError) as err:
        load_routing(path, **MIXTRAL)
    assert str(path) in str(err.value) and problem in str(err.value)


def test_numpy_counter_pickle_round_trips(tmp_path):
    path = tmp_path / "counts.pkl"
    path.write_bytes(pickle.dumps([Counter({np.int64(e): np.int64(10 * e + 1) for e in range(8)})] * 3))
    trace = load_routing(path, **MIXTRAL)
    assert trace.loads[0].tolist() == [10 * e + 1 for e in range(8)]


def _safetensors(path, tensors):
    """A .safetensors file as the huggingface/safetensors README lays it out (I64 tensors only)."""
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, array in tensors.items():
        blob = np.ascontiguousarray(array, dtype="<i8").tobytes()
        header[name] = {"dtype": "I64", "shape": list(np.shape(array)), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


@pytest.fixture
def trtllm_folder(tmp_path):
    """Two ranks, iterations 100-101, MoE layers 1 and 2 of a 3-layer model with 4 experts, top-2."""
    folder = tmp_path / "expert_statistic"
    folder.mkdir()
    (folder / "meta_info.json").write_text(json.dumps({"num_experts": 4, "num_experts_per_token": 2}))
    _safetensors(folder / "rank0.safetensors", {"100_1": [4, 0, 2, 2], "100_2": [1, 1, 3, 3], "101_1": [2, 2, 2, 2],
                                                "101_2": [0, 0, 0, 8]})
    _safetensors(folder / "rank1.safetensors", {"100_1": [0, 4, 0, 0], "100_2": [1, 1, 1, 1], "101_1": [8, 0, 0, 0],
                                                "101_2": [4, 4, 0, 0]})
    return folder


def test_tensorrt_llm_statistics_sum_ranks_one_window_per_iteration(trtllm_folder):
    trace = load_routing(trtllm_folder, num_layers=3, moe_layers=(1, 2), num_experts=4, top_k=2)
    assert trace.windows.shape == (2, 3, 4) and trace.note == ""
    assert trace.windows[0, 1].tolist() == [4, 4, 2, 2] and trace.windows[1, 2].tolist() == [4, 4, 0, 8]
    assert not trace.windows[:, 0].any() and "TensorRT-LLM" in trace.source
    wider = load_routing(trtllm_folder, num_layers=5, moe_layers=(1, 2, 3, 4), num_experts=8, top_k=2)
    for w in range(2):  # each window mapped exactly as fit_to_model maps it
        expected, note = fit_to_model(trace.windows[w], 5, (1, 2, 3, 4), 8)
        assert np.allclose(wider.windows[w], expected) and wider.note == note


def test_a_window_where_a_layer_is_idle_keeps_the_layer_map(trtllm_folder):
    _safetensors(trtllm_folder / "rank1.safetensors", {"102_1": [1, 1, 1, 1], "102_2": [0, 0, 0, 0]})
    trace = load_routing(trtllm_folder, num_layers=5, moe_layers=(1, 2, 3, 4), num_experts=4, top_k=2)
    assert trace.windows.shape == (3, 5, 4)
    assert trace.windows[2, 1].sum() == 4 and not trace.windows[2, 3:].any()  # source layer 2 idle, not shifted


@pytest.mark.parametrize("damage, where", [
    (lambda f: (f / "rank0.safetensors").write_bytes((f / "rank0.safetensors").read_bytes()[:-5]), "rank0.safetensors"),
    (lambda f: (f / "rank0.safetensors").write_bytes(struct.pack("<Q", 10**6) + b"{}"), "rank0.safetensors"),
    (lambda f: _safetensors(f / "rank1.safetensors", {"last_1": [1, 1, 1, 1]}), "'last_1'"),
    (lambda f: _safetensors(f / "rank1.safetensors", {"100_1": [1, 1, 1]}), "'100_1'"),
    (lambda f: (f / "meta_info.json").write_text('{"num_experts": 4'), "meta_info.json line 1"),
    (lambda f: (f / "meta_info.json").write_text('{"num_experts": 4}'), "meta_info.json"),
    (lambda f: (f / "meta_info.json").unlink(), "without meta_info.json"),
])
def test_corrupt_tensorrt_llm_statistics_name_the_file(trtllm_folder, damage, where):
    damage(trtllm_folder)
    with pytest.raises(InputError) as err:
        load_routing(trtllm_folder, num_layers=3, moe_layers=(1, 2), num_experts=4, top_k=2)
    assert where in str(err.value) and str(trtllm_folder) in str(err.value)


def _sglang_per_token(torch, path):
    """A per_token dump of 4 layers (layer 0 dense), 6 physical slots (4 and 5 replicate logical 0 and 1)."""
    p2l = torch.tensor([[0, 1, 2, 3, 0, 1]] * 4)
    records = []
    for pass_id, ids in ((1, [[4, 2], [5, 3], [0, 1]]), (0, [[0, 1]])):  # written out of order
        topk = torch.full((4, len(ids), 8), -1, dtype=torch.int32)
        topk[1:, :, :2] = torch.tensor(ids, dtype=torch.int32)
        records.append(dict(forward_pass_id=pass_id, rank=0, gatherer_key="primary", input_ids=[0] * len(ids),
                            positions=list(range(len(ids))), extend_seq_lens=None, forward_mode=2,
                            topk_ids_of_layer=topk, misc_objects=[], global_physical_count=torch.zeros(4, 6)))
    torch.save({"records": records, "last_physical_to_logical_map": p2l}, path)


def test_sglang_per_token_and_stat_dumps(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "expert_distribution_recorder_1.0_0.pt"
    _sglang_per_token(torch, path)
    trace = load_routing(path, num_layers=4, moe_layers=(1, 2, 3), num_experts=4, top_k=2)
    assert trace.windows.shape == (2, 4, 4) and trace.note == "" and "per_token" in trace.source
    assert trace.windows[0, 1].tolist() == [1, 1, 0, 0]  # forward pass 0 first
    assert trace.windows[1, 1].tolist() == [2, 2, 1, 1]  # physical 4, 5 are logical 0, 1
    regrouped = load_routing(path, num_layers=4, moe_layers=(1, 2, 3), num_experts=4, top_k=2, tokens_per_window=2)
    assert regrouped.windows.shape == (2, 4, 4) and regrouped.windows[0, 1].tolist() == [2, 1, 1, 0]

    stat = tmp_path / "expert_distribution_recorder_2.0.pt"
    counts = torch.zeros((3, 4, 4), dtype=torch.int32)
    counts[0, 1:] = torch.tensor([5, 1, 1, 1])
    counts[2, 1:] = torch.tensor([1, 1, 1, 5])  # slot 1 was never filled
    torch.save({"rank": 0, "logical_count": counts, "average_utilization_rate_over_window": None}, stat)
    trace = load_routing(stat, num_layers=4, moe_layers=(1, 2, 3), num_experts=4, top_k=2)
    assert trace.windows.shape == (2, 4, 4) and trace.windows[1, 2].tolist() == [1, 1, 1, 5]
    with pytest.raises(InputError, match="tokens_per_window"):
        load_routing(stat, num_layers=4, moe_layers=(1, 2, 3), num_experts=4, top_k=2, tokens_per_window=8)


class _Dumped:
    pass


def test_unsafe_or_broken_torch_dumps_are_refused(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    hostile = tmp_path / "hostile.pt"
    torch.save({"logical_count": _Dumped()}, hostile)
    cut = tmp_path / "cut.pt"
    torch.save({"logical_count": torch.ones(2, 3)}, cut)
    cut.write_bytes(cut.read_bytes()[:100])
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.ones(2)}, other)
    for path, problem in ((hostile, "not a readable PyTorch dump"), (cut, "not a readable PyTorch dump"),
                          (other, "not an SGLang expert-distribution dump")):
        with pytest.raises(InputError) as err:
            load_routing(path, **MIXTRAL)
        assert str(path) in str(err.value) and problem in str(err.value) and "\n" not in str(err.value)
    monkeypatch.setitem(__import__("sys").modules, "torch", None)  # PyTorch not installed: refused, never unpickled
    with pytest.raises(InputError, match="needs PyTorch"):
        load_routing(other, **MIXTRAL)


def test_sglang_csv_and_source_expert_count(tmp_path):
    path = tmp_path / "expert_distribution_rank0_timestamp1.csv"
    path.write_text("layer_id,expert_id,count\n1,0,10\n1,2,5\n2,1,7\n")
    trace = load_routing(path, num_layers=3, moe_layers=(1, 2), num_experts=3, top_k=1)
    assert trace.windows[0, 1].tolist() == [10, 0, 5] and trace.note == ""
    mapped = load_routing(path, num_layers=3, moe_layers=(1, 2), num_experts=8, top_k=1, source_num_experts=4)
    assert "x 4 experts mapped to 2 x 8" in mapped.note


@pytest.mark.parametrize("text, where", [
    ('{"problem_id": 0, "layer": 0, "token_idx": 0, "experts": [1, 2]}\n{"problem_id": 0, "layer": 0, "tok', "line 2"),
    ('{"problem_id": 0, "layer": 0, "token_idx": 0, "experts": [1, 2]}\n{"problem_id": 0, "layer": 1}\n', "line 2"),
    ('{"problem_id": 0, "layer": 0, "token_idx": 0, "experts": [1, 2]}\n'
     + '{"problem_id": 0, "layer": 1, "token_idx": 0, "experts": [1]}\n', "line 2"),
    ('{"problem_id": 0, "layer": 0, "token_idx": 0, "experts": [1, 2]}\n\n'
     + '{"problem_id": 0, "layer": 0, "token_idx": 0, "experts": [1, 3]}\n', "line 3"),
    ('{"problem_id": 0, "layer": -1, "token_idx": 0, "experts": [1, 2]}\n', "line 1"),
])
def test_corrupt_per_token_decisions_name_file_and_line(tmp_path, text, where):
    path = tmp_path / "decisions.jsonl"
    path.write_text(text)
    with pytest.raises(InputError) as err:
        load_routing(path, **MIXTRAL)
    assert f"{path} {where}" in str(err.value)


def test_bad_model_shape_and_options(tmp_path):
    path = tmp_path / "w.json"
    path.write_text(json.dumps({"logical_count": [[0, 0], [3, 1]]}))
    with pytest.raises(InputError, match="moe_layers"):
        load_routing(path, num_layers=2, moe_layers=(1, 2), num_experts=2, top_k=1)
    with pytest.raises(InputError, match="top_k"):
        load_routing(path, num_layers=2, moe_layers=(1,), num_experts=2, top_k=3)
    with pytest.raises(InputError, match="tokens_per_window"):
        load_routing(path, num_layers=2, moe_layers=(1,), num_experts=2, top_k=1, tokens_per_window=4)
    with pytest.raises(InputError, match="rank of TensorRT-LLM"):
        load_routing(tmp_path / "rank0.safetensors", num_layers=2, moe_layers=(1,), num_experts=2, top_k=1)


def test_layer_cv():
    loads = np.array([[0, 0, 0, 0], [1, 1, 1, 1], [4, 0, 0, 0]], dtype=float)
    cv = layer_cv(loads)
    assert np.isnan(cv[0]) and cv[1] == 0 and cv[2] == pytest.approx(np.sqrt(3))
    assert np.allclose(layer_cv(np.stack([loads, loads])), cv, equal_nan=True)


def test_synthetic_routing_reproduces_the_measured_skew(shared_data):
    measured = load_routing(shared_data.joinpath(*EPLB_FILE), **DEEPSEEK_V3)
    synthetic = synthetic_routing(**DEEPSEEK_V3, skew_from=measured, windows=8, tokens_per_window=8192, seed=0)
    assert synthetic.windows.shape == (8, 61, 256) and synthetic.note == ""
    assert np.allclose(synthetic.windows[:, 3:].sum(axis=2), 8192 * 8) and not synthetic.windows[:, :3].any()
    source_cv, fitted_cv = layer_cv(measured.loads)[3:], layer_cv(synthetic.loads)[3:]
    assert fitted_cv.mean() == pytest.approx(source_cv.mean(), rel=0.03)  # 0.785 measured
    assert np.abs(fitted_cv / source_cv - 1).max() < 0.3 and np.corrcoef(source_cv, fitted_cv)[0, 1] > 0.9
    # on Kimi K2's shape the DeepSeek statistics are mapped first, and the note says so
    kimi = synthetic_routing(**KIMI_K2, skew_from=measured.loads, windows=2, tokens_per_window=4096, seed=0)
    assert kimi.windows.shape == (2, 61, 384) and "mapped to 60 x 384" in kimi.note


def test_synthetic_routing_without_data_is_uniform_and_seeded():
    uniform = synthetic_routing(8, range(1, 8), 64, 4, windows=3, tokens_per_window=50_000, seed=1)
    assert (layer_cv(uniform.loads)[1:] < 0.02).all() and not uniform.windows[:, 0].any()
    assert np.array_equal(uniform.windows, synthetic_routing(8, range(1, 8), 64, 4, windows=3,
                                                             tokens_per_window=50_000, seed=1).windows)
    skewed_source = np.random.default_rng(0).gamma(0.5, size=(8, 64)) * 1e6  # CV about sqrt(2) per layer
    skewed_source[0] = 0
    a = synthetic_routing(8, range(1, 8), 64, 4, skew_from=skewed_source, windows=2, seed=7)
    b = synthetic_routing(8, range(1, 8), 64, 4, skew_from=skewed_source, windows=2, seed=8)
    assert not np.array_equal(a.windows, b.windows) and isinstance(a, RoutingTrace)
    assert layer_cv(a.loads)[1:].mean() == pytest.approx(layer_cv(skewed_source)[1:].mean(), rel=0.15)
    with pytest.raises(InputError, match="windows"):
        synthetic_routing(8, range(1, 8), 64, 4, windows=0)


# --- shape mapping (fit_to_model) -----------------------------------------------------------------------

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


# --- paths, bytes and in-memory folders read alike ------------------------------------------------------

@pytest.mark.parametrize("parts, model", [
    (EPLB_FILE, KIMI_K2),
    (GSM8K, MIXTRAL),
    (("routing", "olmoe-mixtral-counts", "mistral", "expert_counts", "arxiv.pkl"), MIXTRAL),
])
def test_a_file_read_from_bytes_is_the_file_read_from_its_path(shared_data, parts, model):
    path = shared_data.joinpath(*parts)
    from_path, from_bytes = (load_routing(source, **model, name=name)
                             for source, name in ((path, None), (path.read_bytes(), path.name)))
    assert np.array_equal(from_path.windows, from_bytes.windows) and from_path.note == from_bytes.note
    assert from_path.source.replace(str(path), path.name) == from_bytes.source  # "name (kind)" either way
    assert np.array_equal(read_counts(path), read_counts(path.read_bytes(), name=path.name))


def test_sglang_dumps_read_from_bytes(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "expert_distribution_recorder_1.0_0.pt"
    _sglang_per_token(torch, path)
    from_path = read_routing(path)
    from_bytes = read_routing(path.read_bytes(), name=path.name)
    assert np.array_equal(from_path.windows, from_bytes.windows) and from_bytes.top_k == from_path.top_k == 2
    assert from_bytes.source == f"{path.name} ({from_path.kind})"


def test_tensorrt_llm_folder_read_from_an_in_memory_mapping(trtllm_folder):
    files = {p.name: p.read_bytes() for p in trtllm_folder.iterdir()}
    on_disk = read_routing(trtllm_folder)
    in_memory = read_routing(files, name="expert_statistic")
    assert np.array_equal(on_disk.windows, in_memory.windows) and in_memory.top_k == on_disk.top_k == 2
    assert in_memory.source == "expert_statistic (TensorRT-LLM expert statistics)"
    mapped = load_routing(files, num_layers=3, moe_layers=(1, 2), num_experts=4, top_k=2)
    assert mapped.windows[0, 1].tolist() == [4, 4, 2, 2]
    files["rank1.safetensors"] = files["rank1.safetensors"][:-5]
    with pytest.raises(InputError, match="expert_statistic/rank1.safetensors"):
        read_routing(files, name="expert_statistic")
    with pytest.raises(InputError, match="without meta_info.json"):
        read_routing({k: v for k, v in files.items() if k != "meta_info.json"})


def test_a_file_over_the_size_limit_is_one_error_naming_it(shared_data):
    path = shared_data.joinpath(*GSM8K)
    size = path.stat().st_size
    with pytest.raises(InputError) as err:
        load_routing(path, **MIXTRAL, max_bytes=size - 1)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and f"{size:,} bytes" in message and "limit" in message and "\n" not in message
    with pytest.raises(InputError, match=r"gsm8k\.jsonl: .*over the"):
        read_counts(path.read_bytes(), name="gsm8k.jsonl", max_bytes=1000)
    assert read_counts(path, max_bytes=size).sum() == load_routing(path, **MIXTRAL).windows.sum()


def test_save_counts_reads_back_from_path_and_bytes(tmp_path):
    loads = np.arange(12.0).reshape(3, 4)
    save_counts(loads, tmp_path / "w.json", model="toy")
    assert np.array_equal(read_counts(tmp_path / "w.json"), loads)
    assert np.array_equal(read_counts((tmp_path / "w.json").read_bytes(), name="w.json"), loads)
