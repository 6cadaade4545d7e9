"""Request traces (hwmodels.ingest.requests): the real Mooncake, Azure, length-only and ServeGen files, read
from paths, bytes and in-memory folders alike, the synthetic generator, time scaling and sub-sampling, and one
clear error for every corrupt, truncated or oversized input."""

import csv
import functools
import math

import numpy as np
import pytest

from hwmodels.errors import InputError
from hwmodels.ingest.requests import PREFIX_BLOCK_TOKENS, load_trace, synthetic_trace

MOONCAKE = ("requests", "mooncake", "conversation_trace.jsonl")
AZURE = ("requests", "azure-2023", "AzureLLMInferenceTrace_conv.csv")
SHAREGPT = ("requests", "lengths", "sharegpt_8k_filtered_stats_llama2_tokenizer.csv")
SERVEGEN = ("requests", "servegen-deepseek-r1")


@functools.cache
def _loaded(path: str, **options):
    """Each real file parsed once per test session."""
    return load_trace(path, **options)


def _cv(x: np.ndarray) -> float:
    return float(np.std(x) / np.mean(x))


def test_mooncake_conversation_trace_matches_its_published_summary(shared_data):
    # SOURCES.md: 12,031 requests of Kimi conversation traffic over 3,537 s; mean input 12,035, output 343.
    trace = _loaded(str(shared_data.joinpath(*MOONCAKE)))
    assert len(trace) == 12_031
    assert trace.duration_s == pytest.approx(3_537, abs=1)
    assert trace.input_tokens.mean() == pytest.approx(12_035, abs=1)
    assert trace.output_tokens.mean() == pytest.approx(343, abs=1)
    assert trace.arrival_s[0] == 0 and (np.diff(trace.arrival_s) >= 0).all()
    assert trace.input_tokens.dtype == np.int64 and trace.input_tokens.min() >= 1 and trace.output_tokens.min() >= 1
    blocks = [len(b) for b in trace.prefix_blocks]
    assert blocks == [math.ceil(n / PREFIX_BLOCK_TOKENS) for n in trace.input_tokens]
    assert trace.prefix_blocks[0][0] == trace.prefix_blocks[1][0] == 0  # a shared system-prompt block
    assert "Mooncake" in trace.source


def test_limit_speedup_and_subsample(shared_data):
    path = shared_data.joinpath(*MOONCAKE)
    full = _loaded(str(path))
    first = load_trace(path, limit=100)
    assert len(first) == 100 and np.array_equal(first.arrival_s, full.arrival_s[:100])
    assert first.prefix_blocks == full.prefix_blocks[:100] and "first 100" in first.source

    fast = full.speedup(2)
    assert fast.duration_s == pytest.approx(full.duration_s / 2) and fast.rate_per_s == pytest.approx(2 * full.rate_per_s)
    assert np.array_equal(fast.input_tokens, full.input_tokens) and "2x faster" in fast.source

    half = full.subsample(0.5, seed=3)
    assert len(half) == round(0.5 * len(full)) and half.arrival_s[0] == 0
    again = full.subsample(0.5, seed=3)
    assert np.array_equal(half.arrival_s, again.arrival_s) and half.prefix_blocks == again.prefix_blocks
    assert not np.array_equal(half.input_tokens, full.subsample(0.5, seed=4).input_tokens)
    assert half.input_tokens.mean() == pytest.approx(full.input_tokens.mean(), rel=0.05)


def test_azure_conversation_trace_keeps_100ns_timestamps(shared_data):
    trace = _loaded(str(shared_data.joinpath(*AZURE)))
    assert len(trace) == 19_366
    assert 3_400 < trace.duration_s < 3_600  # "about 59 minutes"
    # 18:15:46.6805900 -> 18:15:50.9951690 in the file's first two rows
    assert trace.arrival_s[1] == pytest.approx(4.3145790, abs=1e-9)
    assert (trace.input_tokens[:4] == [374, 396, 879, 91]).all() and trace.prefix_blocks is None


def test_length_only_csv_needs_a_rate_and_takes_the_chosen_process(shared_data):
    path = shared_data.joinpath(*SHAREGPT)
    with pytest.raises(InputError, match="rate_per_s"):
        load_trace(path)
    poisson = _loaded(str(path), rate_per_s=4.0)
    with path.open() as f:
        rows = list(csv.DictReader(f))
    assert len(poisson) == len(rows) == 30_731
    assert poisson.input_tokens[:3].tolist() == [int(r["num_prefill_tokens"]) for r in rows[:3]]
    gaps = np.diff(poisson.arrival_s)
    assert gaps.mean() == pytest.approx(0.25, rel=0.03) and _cv(gaps) == pytest.approx(1.0, rel=0.05)
    for process, cv in (("gamma", 3.0), ("weibull", 2.0)):
        gaps = np.diff(load_trace(path, arrival=process, rate_per_s=4.0, cv=cv, seed=1, limit=20_000).arrival_s)
        assert gaps.mean() == pytest.approx(0.25, rel=0.1) and _cv(gaps) == pytest.approx(cv, rel=0.1)
    assert np.array_equal(load_trace(path, rate_per_s=4.0, limit=50).arrival_s, poisson.arrival_s[:50])
    assert not np.array_equal(load_trace(path, rate_per_s=4.0, seed=1, limit=50).arrival_s, poisson.arrival_s[:50])


def test_servegen_client_replays_its_window_rates_and_length_pdfs(shared_data):
    folder = shared_data.joinpath(*SERVEGEN)
    trace = load_trace(folder / "chunk-0-trace.csv", seed=0)
    with (folder / "chunk-0-trace.csv").open() as f:
        windows = [(float(r[0]), float(r[1])) for r in csv.reader(f)]
    expected = sum(rate * 600 for _, rate in windows)
    assert len(trace) == pytest.approx(expected, rel=0.05)
    active = [start for start, rate in windows if rate > 0]
    assert trace.duration_s <= active[-1] + 600 - active[0]  # arrivals re-based to the first, inside active windows
    assert 17 <= trace.input_tokens.min() and trace.input_tokens.max() <= 1056  # the support of chunk 0's input pdfs
    same = load_trace(folder / "chunk-0-dataset.json", seed=0)
    assert np.array_equal(same.arrival_s, trace.arrival_s) and np.array_equal(same.output_tokens, trace.output_tokens)
    other = load_trace(folder / "chunk-0-trace.csv", seed=1)
    assert not np.array_equal(other.arrival_s[:20], trace.arrival_s[:20])


def _servegen_chunk(folder, number, trace_rows, dataset):
    (folder / f"chunk-{number}-trace.csv").write_text("\n".join(trace_rows) + "\n")
    (folder / f"chunk-{number}-dataset.json").write_text(dataset)


def test_servegen_folder_merges_clients_in_time(tmp_path):
    pdf = '{"0": {"input_tokens": "{100: 0.5, 300: 0.5}", "output_tokens": "{10: 1.0}", "reason_ratio": "{}"}}'
    _servegen_chunk(tmp_path, 0, ["0,2.0,1.0,Gamma,1.0,0.5", "600,0,0,,0,0"], pdf)
    _servegen_chunk(tmp_path, 1, ["0,0,0,,0,0", "600,1.0,2.0,Weibull,0.6,0.7"], pdf)
    both = load_trace(tmp_path, seed=5)
    alone = [load_trace(tmp_path / f"chunk-{n}-trace.csv", seed=5) for n in (0, 1)]
    assert len(both) == sum(len(t) for t in alone)
    assert len(alone[0]) == pytest.approx(1200, rel=0.15) and len(alone[1]) == pytest.approx(600, rel=0.3)
    assert (np.diff(both.arrival_s) >= 0).all() and set(both.input_tokens.tolist()) == {100, 300}
    assert (both.output_tokens == 10).all() and "2 clients" in both.source
    assert np.array_equal(load_trace(tmp_path, seed=5).arrival_s, both.arrival_s)


def test_synthetic_trace_processes_lengths_and_seeds():
    fixed = synthetic_trace(100, 4.0, 1000, 200, arrival="gamma", cv=0.0)
    assert np.allclose(np.diff(fixed.arrival_s), 0.25) and (fixed.input_tokens == 1000).all()
    assert (fixed.output_tokens == 200).all() and fixed.arrival_s[0] == 0
    for process, cv in (("poisson", 1.0), ("gamma", 0.5), ("gamma", 4.0), ("weibull", 0.5), ("weibull", 3.0)):
        gaps = np.diff(synthetic_trace(40_000, 10.0, 100, 10, arrival=process, cv=cv, seed=2).arrival_s)
        assert gaps.mean() == pytest.approx(0.1, rel=0.05) and _cv(gaps) == pytest.approx(cv, rel=0.08)
    varied = synthetic_trace(40_000, 10.0, 2000, 300, length_cv=0.8, seed=2)
    assert varied.input_tokens.mean() == pytest.approx(2000, rel=0.03) and _cv(varied.input_tokens) == pytest.approx(0.8, rel=0.1)
    assert np.array_equal(varied.arrival_s, synthetic_trace(40_000, 10.0, 2000, 300, length_cv=0.8, seed=2).arrival_s)
    assert "seed 2" in varied.source and "poisson" in varied.source
    with pytest.raises(InputError, match="cv"):
        synthetic_trace(10, 1.0, 100, 10, arrival="poisson", cv=2.0)
    with pytest.raises(InputError, match="arrival"):
        synthetic_trace(10, 1.0, 100, 10, arrival="pareto")
    with pytest.raises(InputError, match="rate_per_s"):
        synthetic_trace(10, 0.0, 100, 10)


@pytest.mark.parametrize("name, text", [
    ("t.jsonl", '{"timestamp": 0, "input_length": 5, "output_length": 2, "hash_ids": [0]}\n'),
    ("b.csv", "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n5,ChatGPT,472,18,490,API log\n"),
])
def test_timestamped_traces_refuse_an_arrival_process(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InputError, match="own arrival times"):
        load_trace(path, rate_per_s=2.0)


def test_azure_timestamps_with_zones_and_any_fraction(tmp_path):
    path = tmp_path / "azure.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2024-05-10 00:00:00Z,10,0\n"
                    "2024-05-10 00:00:01.5,20,3\n2024-05-10T02:00:01.25+02:00,30,4\n")
    trace = load_trace(path)
    assert trace.arrival_s.tolist() == [0.0, 1.25, 1.5]  # naive times are UTC; 02:00:01.25+02:00 is 00:00:01.25
    assert trace.output_tokens.tolist() == [1, 4, 3] and "1 zero-token lengths counted as 1" in trace.source


BURSTGPT_HEADER = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"


def test_burstgpt_trace_leaves_out_failed_requests(tmp_path):
    """HPMLL/BurstGPT's CSV (its README's rows): seconds from the start, a 0-token response is a failed request."""
    path = tmp_path / "BurstGPT_1.csv"
    path.write_text(BURSTGPT_HEADER + "5,ChatGPT,472,18,490,Conversation log\n45,ChatGPT,1087,230,1317,Conversation log\n"
                    "118,GPT-4,417,276,693,Conversation log\n120,GPT-4,300,0,300,API log\n")
    trace = load_trace(path)
    assert trace.arrival_s.tolist() == [0.0, 40.0, 113.0]
    assert trace.input_tokens.tolist() == [472, 1087, 417] and trace.output_tokens.tolist() == [18, 230, 276]
    assert "BurstGPT CSV; 1 failed requests" in trace.source
    path.write_text(BURSTGPT_HEADER + "7,ChatGPT,1,1,2,API log\n7,ChatGPT,2,1,3,API log\n7,GPT-4,3,1,4,API log\n"
                    "8,ChatGPT,4,1,5,API log\n")
    spread = load_trace(path)  # whole seconds: the file cannot say when within one its requests came
    assert spread.arrival_s.tolist() == pytest.approx([0, 1 / 3, 2 / 3, 1]) and "spread evenly" in spread.source
    assert spread.input_tokens.tolist() == [1, 2, 3, 4]
    path.write_text(BURSTGPT_HEADER + "7,ChatGPT,1,0,1,API log\n")
    with pytest.raises(InputError, match="no served requests \\(1 failed\\)"):
        load_trace(path)


def test_burstgpt_release_3_columns_with_sessions(tmp_path):
    path = tmp_path / "BurstGPT_3.csv"
    path.write_text("Timestamp,Session ID,Elapsed time,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
                    "0.5,a1,2.0,ChatGPT,100,20,120,Conversation log\n0.25,b2,1.0,ChatGPT,50,10,60,API log\n")
    trace = load_trace(path)
    assert trace.arrival_s.tolist() == [0.0, 0.25] and trace.input_tokens.tolist() == [50, 100]


MOONCAKE_ROW = '{"timestamp": 0, "input_length": 600, "output_length": 2, "hash_ids": [0, 1]}'


@pytest.mark.parametrize("name, text, where", [
    ("cut.jsonl", MOONCAKE_ROW + '\n{"timestamp": 10, "input_le', "line 2"),
    ("keys.jsonl", '{"timestamp": 0, "input_length": 5}\n', "line 1"),
    ("neg.jsonl", MOONCAKE_ROW + '\n\n{"timestamp": 5, "input_length": -3, "output_length": 1, "hash_ids": []}\n',
     "line 3"),
    ("mixed.jsonl", MOONCAKE_ROW + '\n{"timestamp": 5, "input_length": 3, "output_length": 1}\n', "line 2"),
    ("time.jsonl", '{"timestamp": "soon", "input_length": 3, "output_length": 1}\n', "line 1"),
    ("azure.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,3,4\n2023-11-16 25:00:00,3,4\n",
     "line 3"),
    ("azure_cut.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,3,4\n2023-11-16 18:15:4\n",
     "line 3"),
    ("burst.csv", BURSTGPT_HEADER + "5,ChatGPT,472,18,490,Conversation log\n6,ChatGPT,12,-1,11,API log\n", "line 3"),
    ("burst_cut.csv", BURSTGPT_HEADER + "5,ChatGPT,472,18,490,Conversation log\n6,ChatGPT,1\n", "line 3"),
    ("burst_time.csv", BURSTGPT_HEADER + "soon,ChatGPT,472,18,490,Conversation log\n", "line 2"),
    ("lengths.csv", "num_prefill_tokens,num_decode_tokens\n10,3\n10,3.5\n", "line 3"),
    ("lengths_cut.csv", "num_prefill_tokens,num_decode_tokens,num_total_tokens\n10,3,13\n10\n", "line 3"),
    ("other.csv", "prompt,answer\nhi,there\n", "line 1"),
])
def test_corrupt_or_truncated_trace_names_file_and_line(tmp_path, name, text, where):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InputError) as err:
        load_trace(path, **({"rate_per_s": 1.0} if name.startswith("lengths") else {}))
    message = str(err.value)
    assert f"{path} {where}" in message and "\n" not in message


@pytest.mark.parametrize("trace_rows, dataset, where", [
    (["0,1.0,1.0,Pareto,1.0,1.0"], '{"0": {"input_tokens": "{1: 1.0}", "output_tokens": "{1: 1.0}"}}',
     "chunk-0-trace.csv line 1"),
    (["0,0,0,,0,0", "0,1.0"], '{"0": {"input_tokens": "{1: 1.0}", "output_tokens": "{1: 1.0}"}}',
     "chunk-0-trace.csv line 2"),
    (["0,1.0,1.0,Gamma,1.0,1.0"], '{\n"0": {\n"input_tokens": "{1: 1.0}",\n"output_tokens": "{1: __import__}"}}',
     "chunk-0-dataset.json line 4"),
    (["0,1.0,1.0,Gamma,1.0,1.0"], '{\n"0": {\n"input_tokens": "{1: 1.0, 2: 0.', "chunk-0-dataset.json line 3"),
    (["0,1.0,1.0,Gamma,1.0,1.0"], '{"0": {"input_tokens": "{}", "output_tokens": "{1: 1.0}"}}',
     "chunk-0-dataset.json line 1"),
])
def test_corrupt_servegen_chunk_names_file_and_line(tmp_path, trace_rows, dataset, where):
    _servegen_chunk(tmp_path, 0, trace_rows, dataset)
    with pytest.raises(InputError) as err:
        load_trace(tmp_path / "chunk-0-trace.csv")
    assert f"{tmp_path}/{where}" in str(err.value)


def test_unreadable_files_are_one_clear_error(tmp_path):
    binary = tmp_path / "trace.jsonl"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InputError, match="cannot read request trace"):
        load_trace(binary)
    with pytest.raises(InputError, match="cannot read"):
        load_trace(tmp_path / "missing.jsonl")
    with pytest.raises(InputError, match="ServeGen"):
        load_trace(tmp_path)  # a folder without chunks
    with pytest.raises(InputError, match="limit"):
        load_trace(binary, limit=0)


# --- paths, bytes and in-memory folders read alike ------------------------------------------------------

def _same(a, b) -> bool:
    return (np.array_equal(a.arrival_s, b.arrival_s) and np.array_equal(a.input_tokens, b.input_tokens)
            and np.array_equal(a.output_tokens, b.output_tokens) and a.prefix_blocks == b.prefix_blocks)


@pytest.mark.parametrize("parts, options", [(MOONCAKE, {}), (AZURE, {}), (SHAREGPT, {"rate_per_s": 2.0})])
def test_a_trace_read_from_bytes_is_the_trace_read_from_its_path(shared_data, parts, options):
    path = shared_data.joinpath(*parts)
    from_path = load_trace(path, limit=500, **options)
    from_bytes = load_trace(path.read_bytes(), name=path.name, limit=500, **options)
    assert _same(from_path, from_bytes) and len(from_bytes) == 500
    assert from_path.source.replace(str(path), path.name) == from_bytes.source


def test_servegen_chunk_read_from_an_in_memory_mapping(shared_data):
    folder = shared_data.joinpath(*SERVEGEN)
    files = {name: (folder / name).read_bytes() for name in ("chunk-3-trace.csv", "chunk-3-dataset.json")}
    on_disk = load_trace(folder / "chunk-3-trace.csv", seed=2)
    in_memory = load_trace(files, name="upload", seed=2)
    assert _same(on_disk, in_memory) and len(in_memory) > 0
    assert in_memory.source == "upload (ServeGen, 1 client, arrivals and lengths drawn with seed 2)"
    one_file = load_trace(files, seed=2)  # a mapping without a name is called so
    assert one_file.source.startswith("in-memory folder (ServeGen")
    with pytest.raises(InputError) as err:  # the trace alone: its dataset is not beside it
        load_trace(files["chunk-3-trace.csv"], name="chunk-3-trace.csv")
    assert str(err.value).startswith("chunk-3-trace.csv: ") and "chunk-3-dataset.json" in str(err.value)
    with pytest.raises(InputError, match="upload/chunk-3-dataset.json line 1"):
        load_trace(files | {"chunk-3-dataset.json": b'{"0": {"input_tokens": "{1: 1.0}"'}, name="upload")


def test_a_trace_over_the_size_limit_is_one_error_naming_file_size_and_limit(tmp_path):
    path = tmp_path / "trace.jsonl"
    path.write_text(MOONCAKE_ROW + "\n" + MOONCAKE_ROW.replace('"timestamp": 0', '"timestamp": 5') + "\n")
    size = path.stat().st_size
    assert len(load_trace(path, max_bytes=size)) == 2
    for source, name in ((path, None), (path.read_bytes(), "trace.jsonl")):
        with pytest.raises(InputError) as err:
            load_trace(source, name=name, max_bytes=size - 1)
        message = str(err.value)
        assert message.startswith(f"{name or path}: is {size:,} bytes, over the {size - 1} bytes limit") and "\n" not in message

