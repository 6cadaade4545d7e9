"""Fuzz of every traffic-file reader (hwmodels.ingest): start from a small valid file of each format, mutate it
(numbers replaced by huge, negative, NaN, infinite, 5,001-digit or wrongly typed values; deep nesting; byte flips;
truncation; insertions and deletions; empty files and binary garbage; for pickles and safetensors, also hostile
structures re-encoded), and read it. Each read either succeeds or raises one InputError whose message is one line
with a fix, never any other exception or warning, within 200 MB of traced memory.

Seeded (derandomize) and bounded: 200 examples per format, each under a 5 s deadline. SGLang's .pt dumps are
left out (torch.load is slow); tests/test_ingest_bounds.py reads corrupt ones.
"""

import collections
import json
import pickle
import re
import struct
import time
import tracemalloc
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fuzzing
from hwmodels.errors import InputError
from hwmodels.ingest.requests import load_trace
from hwmodels.ingest.routing import load_routing, read_routing

PEAK_BYTES = 200 * 2**20
DEADLINE_S = 5.0
FUZZ = settings(derandomize=True, max_examples=fuzzing.examples(200), deadline=DEADLINE_S * 1000, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
MIXTRAL = dict(num_layers=32, moe_layers=range(32), num_experts=8, top_k=2)

# What a mutation writes in place of a number: the values the readers once trusted or crashed on, and wrong types.
NUMBERS = [b"1e309", b"-1e309", b"-1", b"-0.0", b"NaN", b"Infinity", b"nan", b"inf", b"1e30", b"1e300", b"1e18",
           str(2**63).encode(), str(2**64).encode(), str(10**12).encode(), b"9" * 400, b"9" * 5001, b"1e-320", b"0",
           b"1.5", b"7", b"31", b"255", b"100000", b"1048576", b"1048575", b"99999", b"99999999999", b"3600000"]
OTHERS = [b'"x"', b'"7"', b"null", b"true", b"[]", b"{}", b"[1, 2]", b"[" * 5000, b"{" * 5000, b'{"a": ' * 3000,
          b"\x00", b"\xff\xfe", b"\n", b",", b'"', b":", b"\\", b"\xe2\x80\xa8"]
NUMBER = re.compile(rb"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")

# --- small valid files ----------------------------------------------------------------------------------

MOONCAKE = b"".join(json.dumps({"timestamp": t, "input_length": n, "output_length": 20, "hash_ids": ids}).encode() + b"\n"
                    for t, n, ids in ((0, 1200, [0, 1, 2]), (15, 700, [0, 3]), (40, 300, [4])))
AZURE = (b"TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,374,44\n"
         b"2023-11-16 18:15:50.9951690,396,109\n2023-11-16 18:15:51.0,1200,3\n")
BURSTGPT = (b"Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n5,ChatGPT,472,18,490,Conversation log\n"
            b"5,GPT-4,1087,230,1317,API log\n118,GPT-4,417,0,417,Conversation log\n120.5,ChatGPT,3,4,7,API log\n")
LENGTHS = b"num_prefill_tokens,num_decode_tokens,num_total_tokens,pd_ratio\n74,918,992,0.08\n290,905,1195,0.32\n3,1,4,3.0\n"
SERVEGEN = {"chunk-0-trace.csv": b"0,0.02,1.0,Gamma,1.0,1.0\n600,0.01,2.0,Weibull,0.8,50.0\n1200,0,0,,0,0\n",
            "chunk-0-dataset.json": json.dumps({"0": {"input_tokens": "{45: 0.25, 46: 0.5, 900: 0.25}",
                                                      "output_tokens": "{10: 0.5, 2000: 0.5}", "reason_ratio": "{}"}},
                                               indent=2).encode()}
LOGICAL_COUNT = json.dumps({"logical_count": [[0, 0, 0, 0], [3, 1, 0, 2], [2.5, 2, 1, 0]]}).encode()
LOADS = json.dumps({"schema_version": 1, "model": "toy", "loads": [[1.0, 2.0, 0.0], [0.5, 0.0, 4.0]]}).encode()
SGLANG_CSV = b"layer_id,expert_id,count\n1,0,10\n1,2,5\n2,1,7\n2,3,1\n1,0,1\n"
PER_TOKEN = b"".join(json.dumps({"dataset": "gsm8k", "problem_id": p, "layer": layer, "experts": e, "token_idx": t,
                                 "gating_probs": [0.6, 0.4]}).encode() + b"\n"
                     for p, t, layer, e in ((0, 0, 0, [7, 0]), (0, 0, 1, [1, 2]), (0, 1, 0, [5, 6]), (1, 0, 0, [3, 4]),
                                            (1, 0, 1, [0, 7])))
OLMOE = pickle.dumps([collections.Counter({np.int64(e): 100 + 7 * e for e in range(8)}) for _ in range(3)], protocol=4)


def _safetensors(tensors: dict, dtype: str = "I64", shape=None) -> bytes:
    """A .safetensors file (huggingface/safetensors README layout) of 1-D tensors."""
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, b"", 0
    for name, values in tensors.items():
        with np.errstate(over="ignore", invalid="ignore"):  # hostile values cast as they come
            blob = np.asarray(values, dtype={"I64": "<i8", "F32": "<f4", "F64": "<f8", "U8": "<u1"}.get(dtype, "<i8")).tobytes()
        header[name] = {"dtype": dtype, "shape": shape if shape is not None else [len(values)],
                        "data_offsets": [offset, offset + len(blob)]}
        blobs += blob
        offset += len(blob)
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + blobs


TRTLLM = {"meta_info.json": b'{"num_experts": 4, "num_experts_per_token": 2}',
          "rank0.safetensors": _safetensors({"100_1": [4, 0, 2, 2], "100_2": [1, 1, 3, 3], "101_1": [2, 2, 2, 2]}),
          "rank1.safetensors": _safetensors({"100_1": [0, 4, 0, 0], "101_2": [4, 4, 0, 0]})}


# --- mutations ------------------------------------------------------------------------------------------

def _apply(data: bytes, op: tuple) -> bytes:
    kind, at, value = op
    if kind == "number":  # the at-th number in the file (cyclically) becomes a hostile token
        numbers = list(NUMBER.finditer(data))
        if not numbers:
            return data
        m = numbers[at % len(numbers)]
        return data[:m.start()] + value + data[m.end():]
    at = at % (len(data) + 1)
    if kind == "flip":
        return data[:at] + bytes([data[at] ^ (value[0] or 1)]) + data[at + 1:] if at < len(data) else data
    if kind == "truncate":
        return data[:at]
    if kind == "insert":
        return data[:at] + value + data[at:]
    if kind == "delete":
        return data[:at] + data[at + len(value):]
    lines = data.split(b"\n")  # "repeat": a line twice
    line = lines[at % len(lines)]
    return b"\n".join(lines[:at % len(lines)] + [line] + lines[at % len(lines):])


TOKENS = st.one_of(st.sampled_from(NUMBERS), st.sampled_from(NUMBERS), st.sampled_from(NUMBERS),
                   st.sampled_from(OTHERS), st.binary(min_size=1, max_size=4))  # mostly numbers: syntax survives
OPS = st.tuples(st.sampled_from(["number"] * 6 + ["flip", "truncate", "insert", "delete", "repeat"]),
                st.integers(0, 10**6), TOKENS)


@st.composite
def mutated(draw, data: bytes) -> bytes:
    """`data` after 1-3 mutations, or (rarely) replaced by nothing, garbage or deep nesting."""
    whole = draw(st.integers(0, 39))
    if whole == 0:
        return draw(st.sampled_from([b"", b"\n\n", b"[" * 100_000 + b"]" * 100_000, b"{" * 100_000]))
    if whole == 1:
        return draw(st.binary(max_size=512))
    for op in draw(st.lists(OPS, min_size=1, max_size=3)):
        data = _apply(data, op)
    return data


@st.composite
def mutated_safetensors(draw, data: bytes) -> bytes:
    """A rank file with its header mutated as text and framed again (so the mutation reaches the header's
    fields rather than its length), or mutated as bytes."""
    if draw(st.booleans()):
        return draw(mutated(data))
    (size,) = struct.unpack("<Q", data[:8])
    header = draw(mutated(data[8:8 + size]))
    return struct.pack("<Q", len(header)) + header + data[8 + size:]


@st.composite
def mutated_folder(draw, files: dict) -> dict:
    """One file of an in-memory folder mutated (safetensors as mutated_safetensors), or one left out."""
    name = draw(st.sampled_from(sorted(files)))
    if draw(st.integers(0, 9)) == 0:
        return {k: v for k, v in files.items() if k != name}
    strategy = mutated_safetensors if name.endswith(".safetensors") else mutated
    return files | {name: draw(strategy(files[name]))}


def _read_checked(read) -> None:
    """read(): its result, or one InputError of one line with a fix; nothing else; under PEAK_BYTES."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # an overflow to inf or nan warns: that is a failure too
            read()
    except InputError as e:
        assert "\n" not in str(e) and e.fix and e.field, str(e)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        fuzzing.record(read.suite, time.perf_counter() - start, DEADLINE_S, read.input_bytes, peak)
    assert peak < PEAK_BYTES, f"peak traced memory {peak / 2**20:.0f} MiB"


def _routing(source, name: str | None = None):
    """Read as `moeplan place` reads it (own shape), then as the simulator does (mapped onto Mixtral)."""
    def read():
        recorded = read_routing(source, name=name)
        assert np.isfinite(recorded.windows).all() and (recorded.windows >= 0).all()
        trace = load_routing(source, name=name, **MIXTRAL)
        assert np.isfinite(trace.windows).all()
    return _labelled(read, "routing", name, source)


def _trace(source, name: str | None = None, **options):
    def read():
        trace = load_trace(source, name=name, **options)
        assert np.isfinite(trace.arrival_s).all() and (trace.input_tokens >= 1).all()
    return _labelled(read, "trace", name, source)


def _labelled(read, kind: str, name: str | None, source):
    """read, with what the fuzz tally counts it under and the bytes it reads."""
    read.suite = f"{kind} {name}"
    read.input_bytes = len(source) if isinstance(source, bytes) else sum(map(len, source.values()))
    return read


def test_the_seeds_are_valid():
    for read in (_trace(MOONCAKE, "t.jsonl"), _trace(AZURE, "a.csv"), _trace(BURSTGPT, "b.csv"),
                 _trace(LENGTHS, "l.csv", rate_per_s=1.0),
                 _trace(SERVEGEN, "sg"), _routing(LOGICAL_COUNT, "s.json"), _routing(LOADS, "w.json"),
                 _routing(SGLANG_CSV, "d.csv"), _routing(PER_TOKEN, "p.jsonl"), _routing(OLMOE, "c.pkl"),
                 _routing(TRTLLM, "trt")):
        read()  # no error at all
    assert len(load_trace(SERVEGEN, name="sg")) > 5


# --- request traces -------------------------------------------------------------------------------------

@FUZZ
@given(mutated(MOONCAKE))
def test_mooncake_jsonl(data):
    _read_checked(_trace(data, "trace.jsonl"))


@FUZZ
@given(mutated(AZURE))
def test_azure_csv(data):
    _read_checked(_trace(data, "AzureLLMInferenceTrace_conv.csv"))


@FUZZ
@given(mutated(BURSTGPT))
def test_burstgpt_csv(data):
    _read_checked(_trace(data, "BurstGPT_1.csv"))


@FUZZ
@given(mutated(LENGTHS))
def test_lengths_csv(data):
    _read_checked(_trace(data, "lengths.csv", rate_per_s=2.0))


@FUZZ
@given(mutated_folder(SERVEGEN))
def test_servegen_chunk(files):
    _read_checked(_trace(files, "servegen"))


# --- routing statistics ---------------------------------------------------------------------------------

@FUZZ
@given(mutated(LOGICAL_COUNT))
def test_logical_count_json(data):
    _read_checked(_routing(data, "stats.json"))


@FUZZ
@given(mutated(LOADS))
def test_moeplan_loads_json(data):
    _read_checked(_routing(data, "loads.json"))


@FUZZ
@given(mutated(SGLANG_CSV))
def test_sglang_csv_dump(data):
    _read_checked(_routing(data, "expert_distribution_rank0_timestamp1.csv"))


@FUZZ
@given(mutated(PER_TOKEN))
def test_per_token_jsonl(data):
    _read_checked(_routing(data, "gsm8k_2_routing.jsonl"))


IDS = st.one_of(st.integers(-3, 12), st.integers(0, 2**70), st.sampled_from([np.int64(5), np.uint64(2**64 - 1)]),
                st.sampled_from([1.0, "3", None, True, (1,)]))
COUNTS = st.one_of(st.integers(-5, 10**6), st.integers(0, 2**80), st.floats(allow_nan=True, allow_infinity=True),
                   st.sampled_from([np.float64(np.inf), np.int64(7), "5", None, [1]]))


@st.composite
def hostile_counters(draw) -> bytes:
    """A pickled list of Counters with hostile ids and counts, up to 4 x 10,000 layers (most of them one
    Counter repeated, 2 bytes each), or something other than a list of Counters."""
    counters = [collections.Counter(draw(st.dictionaries(IDS, COUNTS, max_size=4))) for _ in range(draw(st.integers(0, 4)))]
    repeat = draw(st.sampled_from([1, 1, 1, 1000, 10_000]))
    value = draw(st.sampled_from([counters * repeat, counters * repeat, {"layer": counters}, counters[:1] or None]))
    try:
        return pickle.dumps(value, protocol=draw(st.integers(2, 5)))
    except (pickle.PicklingError, TypeError):
        return OLMOE


@FUZZ
@given(st.one_of(mutated(OLMOE), hostile_counters()))
def test_olmoe_counter_pickle(data):
    _read_checked(_routing(data, "expert_counts.pkl"))


@st.composite
def hostile_rank_files(draw) -> dict:
    """A TensorRT-LLM folder whose rank file holds hostile keys, dtypes, shapes and values, framed correctly."""
    keys = st.one_of(st.sampled_from(["100_1", "100_2", "101_1"]),
                     st.builds("{}_{}".format, st.integers(0, 10**20), st.integers(0, 10**13)),
                     st.sampled_from(["last_1", "9" * 30 + "_1", "1_99999", "1_100000", "__metadata__"]))
    values = st.lists(st.one_of(st.integers(0, 9), st.floats(allow_nan=True, allow_infinity=True)), max_size=6)
    tensors = draw(st.dictionaries(keys, values, min_size=1, max_size=4))
    dtype = draw(st.sampled_from(["I64", "F32", "F64", "U8", "BF16", "X9"]))
    shape = draw(st.sampled_from([None, None, [4], [2, 2], [2**32, 2**32], [-1], [1] * 70, ["4"], 4]))
    try:
        rank = _safetensors(tensors, dtype, shape)
    except (ValueError, OverflowError, TypeError):
        rank = TRTLLM["rank0.safetensors"]
    return TRTLLM | {"rank0.safetensors": rank}


@FUZZ
@given(st.one_of(mutated_folder(TRTLLM), hostile_rank_files()))
def test_tensorrt_llm_folder(files):
    _read_checked(_routing(files, "expert_statistic"))


@pytest.mark.parametrize("body", [b"\x96" + struct.pack("<Q", 2**30), b"Nr" + struct.pack("<I", 2**27)])
def test_a_counter_pickle_claiming_gigabytes(body):
    _read_checked(_routing(b"\x80\x04" + body + b".", "expert_counts.pkl"))
