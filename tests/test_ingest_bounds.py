"""What a traffic file may claim (hwmodels.ingest.bounds), reader by reader, with real hostile files: sizes never
come from a file's ids alone, absurd numbers and nesting are one InputError naming the file and line (never a
traceback), and a small file never makes a reader allocate much. Each refusal is checked to be quick, to stay
under 50 MB of traced memory and to carry a fix."""

import json
import math
import pickle
import struct
import time
import tracemalloc
import zipfile
from collections import Counter

import numpy as np
import pytest

from hwmodels.errors import InputError
from hwmodels.ingest.bounds import CELLS_PER_BYTE, MAX_EXPERTS, MAX_LAYERS, MIN_CELLS, bounded, bounded_text
from hwmodels.ingest.requests import load_trace
from hwmodels.ingest.routing import load_routing, read_routing
from hwmodels.ingest.source import Source

MIXTRAL = dict(num_layers=32, moe_layers=range(32), num_experts=8, top_k=2)
PEAK_BYTES = 50 * 2**20
DEEP = "[" * 100_000 + "]" * 100_000
PDF = '"{1: 1.0}"'


def _run(call):
    """(result or the InputError raised, peak traced bytes, seconds) of call(); any other exception fails."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        result = call()
    except InputError as e:
        result = e
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return result, peak, time.perf_counter() - start


def _refused(call, *where: str) -> InputError:
    """The InputError call() raises: one line naming every `where`, with a fix, quick and small."""
    error, peak, seconds = _run(call)
    assert isinstance(error, InputError), f"read a {type(error).__name__} instead of refusing the file"
    message = str(error)
    assert all(w in error.field for w in where), (where, error.field)
    assert error.fix and "\n" not in message and len(message) < 1000
    assert peak < PEAK_BYTES and seconds < 10, (peak, seconds)  # seconds under tracemalloc, on a shared machine
    return error


def _safetensors(tensors: dict, dtype: str = "F32", header: dict | None = None) -> bytes:
    header, blobs, offset = dict(header or {}), b"", 0
    for name, values in tensors.items():
        blob = np.asarray(values, dtype="<f4" if dtype == "F32" else "<f8").tobytes()
        header[name] = {"dtype": dtype, "shape": list(np.shape(values)), "data_offsets": [offset, offset + len(blob)]}
        blobs += blob
        offset += len(blob)
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + blobs


def _trtllm(tmp_path, tensors=None, meta=None):
    folder = tmp_path / "expert_statistic"
    folder.mkdir(exist_ok=True)
    (folder / "meta_info.json").write_text(json.dumps(meta or {"num_experts": 4, "num_experts_per_token": 2}))
    (folder / "rank0.safetensors").write_bytes(_safetensors(tensors or {"0_1": [1, 2, 3, 4]}))
    return folder


def _servegen(tmp_path, trace: str, dataset: str):
    (tmp_path / "chunk-0-trace.csv").write_text(trace)
    (tmp_path / "chunk-0-dataset.json").write_text(dataset)
    return tmp_path / "chunk-0-trace.csv"


# --- files trusted for sizes ----------------------------------------------------------------------------

@pytest.mark.parametrize("name, text, line", [
    ("dump.csv", "layer_id,expert_id,count\n3,0,1\n0,1000000000000,1\n", "line 3"),
    ("dump.csv", "layer_id,expert_id,count\n1000000000000,1,1\n", "line 2"),
    ("dump.csv", f"layer_id,expert_id,count\n0,{2**70},1\n", "line 2"),
    ("tokens.jsonl", '{"problem_id": 0, "layer": 0, "token_idx": 0, "experts": [1000000000000]}\n', "line 1"),
    ("tokens.jsonl", '{"problem_id": 0, "layer": 1000000000000, "token_idx": 0, "experts": [1]}\n', "line 1"),
    ("tokens.jsonl", f'{{"problem_id": 0, "layer": 0, "token_idx": {2**70}, "experts": [1]}}\n', "line 1"),
], ids=["csv expert 1e12", "csv layer 1e12", "csv expert 2^70", "jsonl expert 1e12", "jsonl layer 1e12",
        "jsonl token 2^70"])
def test_an_id_beyond_the_caps_is_refused_naming_its_line(tmp_path, name, text, line):
    path = tmp_path / name
    path.write_text(text)
    _refused(lambda: read_routing(path), str(path), line)
    _refused(lambda: load_routing(path, **MIXTRAL), str(path), line)


def test_an_id_beyond_the_callers_expert_count_is_refused_naming_its_line(tmp_path):
    path = tmp_path / "dump.csv"
    path.write_text("layer_id,expert_id,count\n1,7,5\n1,8,5\n")
    error = _refused(lambda: load_routing(path, **MIXTRAL, source_num_experts=8), str(path), "line 3")
    assert "source_num_experts" in error.fix
    _refused(lambda: read_routing(path, num_experts=8), "line 3")
    assert read_routing(path).windows.shape == (1, 2, 9)  # without a count: highest id + 1


def test_a_counter_pickle_cannot_size_an_array(tmp_path):
    path = tmp_path / "counts.pkl"
    path.write_bytes(pickle.dumps([Counter({10**12: 1})]))
    _refused(lambda: load_routing(path, **MIXTRAL), str(path), "layer entry 0")
    path.write_bytes(pickle.dumps([Counter({0: 1}), Counter({10**6: 1}), Counter({1: 1})]))  # 3 x 10^6 counts
    error = _refused(lambda: load_routing(path, **MIXTRAL), str(path))
    assert "3 x 1,000,001" in error.problem and error.fix


def test_a_byte_flipped_olmoe_pickle_stays_small(shared_data, tmp_path):
    # Bit 4 of byte 3114 turns an expert id into 2^28: once a 3 x 268,435,472 array (6.4 GB) for a 20-request replay.
    data = bytearray(shared_data.joinpath("routing", "olmoe-mixtral-counts", "olmoe", "expert_counts", "tulu.pkl")
                     .read_bytes())
    path = tmp_path / "tulu.pkl"
    for at, bit in ((3114, 0x10), (3114, 0x01), (2860, 0x10), (143, 0x10), (10, 0x80)):
        flipped = data.copy()
        flipped[at] ^= bit
        path.write_bytes(flipped)
        result, peak, seconds = _run(lambda: load_routing(path, **MIXTRAL))
        assert peak < PEAK_BYTES and seconds < 10, (at, bit, peak)
        if isinstance(result, InputError):
            assert str(path) in result.field and result.fix
        else:
            assert result.windows.shape == (1, 32, 8) and np.isfinite(result.windows).all()


def test_tensorrt_llm_keys_cannot_size_an_array(tmp_path):
    folder = _trtllm(tmp_path, {"0_1000000000000": [1, 2, 3, 4]})
    _refused(lambda: read_routing(folder), "rank0.safetensors", "0_1000000000000")
    # every key a new iteration and a new layer: n keys would make n x n windows
    folder = _trtllm(tmp_path, {f"{i}_{i}": [1] for i in range(3000)}, {"num_experts": 1, "num_experts_per_token": 1})
    error = _refused(lambda: read_routing(folder), str(folder), "layer 2999")
    assert "3,000 x 3,000 x 1" in error.problem


def test_a_safetensors_header_cannot_claim_a_shape(tmp_path):
    folder = _trtllm(tmp_path)
    for info in ({"dtype": "F32", "shape": [2**32, 2**32], "data_offsets": [0, 0]},  # 2^64 elements wrap to 0 in int64
                 {"dtype": "F32", "shape": [-1, 0], "data_offsets": [0, 0]},
                 {"dtype": "F32", "shape": [1] * 100, "data_offsets": [0, 4]},
                 {"dtype": "F32", "shape": [1], "data_offsets": [0, 1e999]}):
        text = json.dumps({"0_1": info}).encode()
        (folder / "rank0.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + bytes(4))
        _refused(lambda: read_routing(folder), "rank0.safetensors", "tensor '0_1'")


def test_a_torch_dump_cannot_claim_elements_its_storage_lacks(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "expert_distribution_recorder.pt"
    torch.save({"logical_count": torch.ones(1).expand(10**6, 10**6)}, path)  # stride 0: 4 bytes, 10^12 elements
    _refused(lambda: load_routing(path, **MIXTRAL), str(path), "logical_count")
    records = [{"forward_pass_id": 0, "topk_ids_of_layer": torch.zeros(1, 10_000, 8, dtype=torch.int32)}] * 2000
    torch.save({"records": records, "last_physical_to_logical_map": torch.zeros(1, 4, dtype=torch.int64)}, path)
    _refused(lambda: load_routing(path, **MIXTRAL), str(path), "records")  # one 320 KB tensor, 2000 passes


def test_a_corrupt_torch_dump_is_one_error(tmp_path):
    pytest.importorskip("torch")
    path = tmp_path / "dump.pt"
    for data in (b"", b"\x80\x02garbage", bytes(range(256)) * 8):
        path.write_bytes(data)
        _refused(lambda: read_routing(path), str(path))
    with zipfile.ZipFile(path, "w") as archive:  # a zip whose directory claims far more than the file holds
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    data = bytearray(path.read_bytes())
    directory = data.rfind(b"PK\x01\x02")
    data[directory + 24:directory + 28] = struct.pack("<I", 2**31)  # uncompressed size in the central directory
    path.write_bytes(bytes(data))
    _refused(lambda: read_routing(path), str(path))


def test_servegen_rates_cannot_size_the_trace(tmp_path):
    trace = _servegen(tmp_path, "0,1e12,1,Gamma,1,1\n", f'{{"0": {{"input_tokens": {PDF}, "output_tokens": {PDF}}}}}')
    _refused(lambda: load_trace(trace), "chunk-0-trace.csv line 1")
    trace = _servegen(tmp_path, "0,1,1,Gamma,1,1\n1e11,1,1,Gamma,1,1\n", f'{{"0": {{"input_tokens": {PDF}, '
                      f'"output_tokens": {PDF}}}}}')  # a window of 10^11 s at 1 request/s
    _refused(lambda: load_trace(trace), "chunk-0-trace.csv line 1")
    trace = _servegen(tmp_path, "0,1,1,Weibull,0.001,1\n", f'{{"0": {{"input_tokens": {PDF}, "output_tokens": {PDF}}}}}')
    _refused(lambda: load_trace(trace), "chunk-0-trace.csv line 1")  # gaps too bursty to sample in bounded draws


# --- absurd numbers and nesting -------------------------------------------------------------------------

@pytest.mark.parametrize("name, text", [
    ("trace.jsonl", '{"timestamp": ' + DEEP + "}\n"),
    ("stats.json", '{"logical_count": ' + DEEP + "}"),
    ("tokens.jsonl", DEEP + "\n"),
], ids=["mooncake", "logical_count", "per-token"])
def test_deep_nesting_is_one_error(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    _refused(lambda: (load_trace if name == "trace.jsonl" else read_routing)(path), str(path))


def test_deep_nesting_in_folders_is_one_error(tmp_path):
    trace = _servegen(tmp_path, "0,1,1,Gamma,1,1\n", DEEP)
    _refused(lambda: load_trace(trace), "chunk-0-dataset.json")
    folder = _trtllm(tmp_path)
    (folder / "meta_info.json").write_text(DEEP)
    _refused(lambda: read_routing(folder), "meta_info.json")
    folder = _trtllm(tmp_path)
    (folder / "rank0.safetensors").write_bytes(struct.pack("<Q", len(DEEP)) + DEEP.encode())
    _refused(lambda: read_routing(folder), "rank0.safetensors")


@pytest.mark.parametrize("row, field", [
    ('"timestamp": 0, "input_length": 1e30, "output_length": 1', "input_length"),
    (f'"timestamp": 0, "input_length": {2**63}, "output_length": 1', "input_length"),
    ('"timestamp": ' + "1" * 400 + ', "input_length": 1, "output_length": 1', "timestamp"),
    ('"timestamp": 0, "input_length": ' + "1" * 5001 + ', "output_length": 1', "JSON"),  # even printing it fails
    ('"timestamp": NaN, "input_length": 1, "output_length": 1', "timestamp"),
    ('"timestamp": 0, "input_length": 1, "output_length": Infinity', "output_length"),
    (f'"timestamp": 0, "input_length": 1, "output_length": 1, "hash_ids": [{2**64}]', "hash_ids"),
], ids=["1e30", "2^63", "400 digits", "5001 digits", "NaN", "Infinity", "hash 2^64"])
def test_absurd_numbers_in_a_mooncake_trace_are_one_error(tmp_path, row, field):
    path = tmp_path / "trace.jsonl"
    path.write_text('{"timestamp": 0, "input_length": 5, "output_length": 1}\n{' + row + "}\n")
    error = _refused(lambda: load_trace(path), str(path), "line 2")
    assert field in error.problem


@pytest.mark.parametrize("name, text, line", [
    ("azure.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,1e30,44\n", "line 2"),
    ("azure.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68," + "9" * 5001 + ",44\n", "line 2"),
    ("lengths.csv", "num_prefill_tokens,num_decode_tokens\n3,3\nnan,1\n", "line 3"),
    ("lengths.csv", "num_prefill_tokens,num_decode_tokens\n" + "1" * 200_000 + ",1\n", "line 2"),  # over csv's limit
    ("lengths.csv", "num_prefill_tokens,num_decode_tokens\n1\x00,1\n", "line 2"),
], ids=["azure 1e30", "azure 5001 digits", "lengths nan", "lengths 200,000-char field", "lengths NUL"])
def test_absurd_numbers_in_csv_traces_are_one_error(tmp_path, name, text, line):
    path = tmp_path / name
    path.write_text(text)
    _refused(lambda: load_trace(path, **({"rate_per_s": 1.0} if name == "lengths.csv" else {})), str(path), line)


@pytest.mark.parametrize("name, text, where", [
    ("stats.json", '{"logical_count": [[1e300, 1e308], [1e308, 1e308]]}', "logical_count[0][0]"),
    ("stats.json", f'{{"logical_count": [[{2**70}, 1]]}}', "logical_count[0][0]"),
    ("stats.json", '{"logical_count": [[' + "1" * 4000 + ", 1]]}", "logical_count[0][0]"),
    ("stats.json", '{"logical_count": [[NaN, 1]]}', "logical_count[0][0]"),
    ("dump.csv", "layer_id,expert_id,count\n0,1,1e300\n0,1,1e300\n", "line 2"),
    ("dump.csv", "layer_id,expert_id,count\n0,1,inf\n", "line 2"),
], ids=["json 1e300", "json 2^70", "json 4000 digits", "json NaN", "csv 1e300", "csv inf"])
def test_counts_beyond_1e18_are_one_error(tmp_path, name, text, where):
    path = tmp_path / name
    path.write_text(text)
    _refused(lambda: read_routing(path), str(path), where)


def test_counts_beyond_1e18_in_binary_formats_are_one_error(tmp_path):
    path = tmp_path / "counts.pkl"
    for counter in (Counter({1: 1e300, 2: 1e308}), Counter({1: 10**400}), Counter({1: float("nan")})):
        path.write_bytes(pickle.dumps([counter]))
        _refused(lambda: read_routing(path), str(path), "layer entry 0")
    folder = _trtllm(tmp_path, {"0_1": [np.nan, 1, 1, 1]})
    _refused(lambda: read_routing(folder), "rank0.safetensors", "tensor '0_1'")
    (folder / "rank0.safetensors").write_bytes(_safetensors({"0_1": [1e300, 1, 1, 1]}, dtype="F64"))
    _refused(lambda: read_routing(folder), "rank0.safetensors", "tensor '0_1'")
    (folder / "meta_info.json").write_text('{"num_experts": 1e999, "num_experts_per_token": 2}')
    _refused(lambda: read_routing(folder), "meta_info.json")


@pytest.mark.parametrize("pdf, problem", [
    ('"{' + "1" * 400 + ': 1.0}"', "not a number"),
    ('"{1000000000000000000000000000000: 1.0}"', "outside"),
    ('"{1: 1e308, 2: 1e308}"', "outside"),
    ('"{1: nan}"', "not a Python dict literal"),
    ('"{1: 0.0}"', "sum to 0"),
], ids=["400-digit length", "length 1e30", "probability 1e308", "nan", "all zero"])
def test_absurd_servegen_pdfs_are_one_error(tmp_path, pdf, problem):
    trace = _servegen(tmp_path, "0,1,1,Gamma,1,1\n", f'{{\n"0": {{\n"input_tokens": {pdf},\n"output_tokens": {PDF}}}}}')
    error = _refused(lambda: load_trace(trace), "chunk-0-dataset.json line 3")
    assert problem in error.problem


# --- memory bounded by what a file holds ----------------------------------------------------------------

def test_per_token_windows_are_counted_without_a_tokens_x_layers_array(tmp_path):
    # token i at layer i to expert i: 24 windows x 1500 layers x 1500 experts from 1500 rows
    path = tmp_path / "tokens.jsonl"
    path.write_text("".join(json.dumps({"problem_id": 0, "layer": i, "token_idx": i, "experts": [i]}) + "\n"
                            for i in range(1500)))
    _refused(lambda: read_routing(path), str(path), "line 1500")
    # the same shape within what the file supports is read, in memory proportional to it
    path.write_text("".join(json.dumps({"problem_id": 0, "layer": i % 200, "token_idx": i, "experts": [i % 8]}) + "\n"
                            for i in range(1500)))
    result, peak, _ = _run(lambda: read_routing(path))
    assert result.windows.shape == (24, 200, 8) and result.windows.sum() == 1500 and peak < PEAK_BYTES


def test_a_pickle_repeating_one_counter_is_refused_before_it_is_expanded(tmp_path):
    path = tmp_path / "counts.pkl"
    path.write_bytes(pickle.dumps([Counter({63: 1})] * 30_000))  # one Counter, 30,000 two-byte references
    assert path.stat().st_size < 100_000
    error = _refused(lambda: read_routing(path), str(path))
    assert "30,000 x 64" in error.problem
    path.write_bytes(pickle.dumps([Counter({7: 1})] * (MAX_LAYERS + 1)))
    _refused(lambda: read_routing(path), str(path))


def test_a_pickle_cannot_make_the_unpickler_reserve_what_it_claims(tmp_path):
    # Python's C unpickler reserves 1 GiB for the first and a 2 GiB memo for the second before reading on
    path = tmp_path / "counts.pkl"
    for body in (b"\x96" + struct.pack("<Q", 2**30) + b"xx.",  # BYTEARRAY8 of 1 GiB, 2 bytes there
                 b"Nr" + struct.pack("<I", 2**27) + b".",  # LONG_BINPUT at memo index 2^27
                 b"\x8d" + struct.pack("<Q", 2**30) + b"xx."):  # BINUNICODE8 of 1 GiB
        path.write_bytes(b"\x80\x04" + body)
        _refused(lambda: read_routing(path), str(path))


def test_a_small_file_is_read_without_reserving_the_size_limit(tmp_path):
    path = tmp_path / "small.json"
    path.write_text('{"logical_count": [[1, 2]]}')
    data, peak, _ = _run(lambda: Source.of(path).read_bytes())  # f.read(2 GiB + 1) would reserve 2 GiB first
    assert data == path.read_bytes() and peak < 2**20


def test_read_files_stay_within_the_cell_budget(tmp_path):
    # the largest array a 1 KB file may make: MIN_CELLS counts; a file of n bytes, 8 n
    path = tmp_path / "dump.csv"
    path.write_text(f"layer_id,expert_id,count\n0,{MIN_CELLS - 1},1\n")
    assert read_routing(path).windows.size == MIN_CELLS
    path.write_text(f"layer_id,expert_id,count\n1,{MIN_CELLS - 1},1\n")
    _refused(lambda: read_routing(path), "line 2")
    assert CELLS_PER_BYTE * path.stat().st_size < MIN_CELLS


def test_the_model_vouches_for_arrays_of_its_own_shape(tmp_path):
    # a one-row dump of the last expert of a large model: refused alone, read when the model says it has that many
    path = tmp_path / "dump.csv"
    path.write_text("layer_id,expert_id,count\n199,99999,3\n")
    _refused(lambda: read_routing(path), "line 2")
    trace = load_routing(path, num_layers=200, moe_layers=range(200), num_experts=100_000, top_k=1)
    assert trace.windows.shape == (1, 200, 100_000) and trace.windows[0, 199, 99_999] == 3


# --- the bounds themselves ------------------------------------------------------------------------------

def test_bounded_compares_before_converting():
    assert bounded(74, "f", "n", 100, "fix", whole=True) == 74 and bounded(74.0, "f", "n", 100, "fix", whole=True) == 74
    assert bounded_text(" 74 ", "f", "n", 100, "fix", whole=True) == 74 and bounded_text("1e3", "f", "n", 1e4, "fix") == 1e3
    for value in (10**5000, float("nan"), float("inf"), -1, True, "74", None, 74.5):
        with pytest.raises(InputError) as err:
            bounded(value, "f", "n", 100, "fix", whole=True)
        assert err.value.fix == "fix" and len(str(err.value)) < 200
    for text in ("9" * 5001, "nan", "1e400", "x", "1" * 101, "\x00"):
        with pytest.raises(InputError):
            bounded_text(text, "f", "n", 1e18, "fix")
    assert MAX_EXPERTS == 2**20 and math.log10(MAX_LAYERS) == 5
