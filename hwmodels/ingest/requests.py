"""Request traces: what arrives, when, how long it is, and which prefix blocks it shares.

Loaders for the public trace formats (../shared/data/SOURCES.md) return one `RequestTrace`;
`load_trace` reads a file or folder on disk or in memory (hwmodels.ingest.source: a path, the bytes of one
file with its name, or {file name: bytes} for a folder; at most max_bytes per file) and tells the formats
apart by content:
- Mooncake JSONL (kvcache-ai/Mooncake `FAST25-release/traces/`): one object per line,
  `{"timestamp": ms since the start, "input_length", "output_length", "hash_ids": [...]}`, each hash id
  one PREFIX_BLOCK_TOKENS-token prompt block;
- Azure LLM inference CSV (Azure/AzurePublicDataset `data/AzureLLMInferenceTrace_*.csv`, Patel et al.,
  "Splitwise", ISCA 2024): `TIMESTAMP,ContextTokens,GeneratedTokens`, TIMESTAMP an absolute datetime
  with up to 7 fractional digits (100 ns);
- BurstGPT CSV (HPMLL/BurstGPT `data/BurstGPT_*.csv`, Wang et al., arXiv:2401.17644): `Timestamp,Model,Request
  tokens,Response tokens,Total tokens,Log Type` (release 3 adds `Session ID,Elapsed time` after Timestamp),
  Timestamp in seconds from the trace's start; a request with 0 response tokens failed (the release's
  `_without_fails` files drop them) and is left out, the source says how many. Where every Timestamp is a whole
  second (the released files), the n requests of one second arrive 1 / n s apart from its start: the file cannot
  say when within the second they came, and read as simultaneous they would be clumps the traffic model queues
  together;
- length-only CSV (microsoft/sarathi-serve and microsoft/vidur `data/processed_traces/`):
  `num_prefill_tokens,num_decode_tokens,...` without times; arrivals come from a chosen process;
- ServeGen chunks and folders (alibaba/ServeGen, hwmodels.ingest.servegen: rates and length pdfs per window,
  from which the requests are drawn).
`synthetic_trace` generates requests from mean lengths and an arrival process (`arrival`, `cv`:
hwmodels.ingest.arrivals).

Bounds (hwmodels.ingest.bounds): token counts are whole numbers in 0..MAX_TOKENS, times finite and under
MAX_TIME_S, Mooncake hash ids int64; anything else is one InputError naming the file, line and field. Peak
memory of the JSON-lines and CSV readers is at most about 20 bytes per byte of file (measured on files of the
shortest rows); ServeGen's, which generates requests from rates, follows MAX_CLIENT_REQUESTS and MAX_REQUESTS.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import numpy as np

from hwmodels.errors import InputError, excerpt
from hwmodels.ingest.bounds import MAX_TIME_S, MAX_TOKENS, bounded, bounded_text
from hwmodels.ingest.safe_load import csv_rows, first_line, json_lines
from hwmodels.ingest.arrivals import arrivals
from hwmodels.ingest.servegen import SERVEGEN_FILE, read_servegen
from hwmodels.ingest.source import Source, SourceLike

PREFIX_BLOCK_TOKENS = 512  # Mooncake's hash_ids: one id per 512-token prompt block

_AZURE_HEADER = ["timestamp", "contexttokens", "generatedtokens"]
_BURSTGPT_COLUMNS = ("timestamp", "request tokens", "response tokens")
_COUNT_FIX = f"token counts are whole numbers in 0..{MAX_TOKENS:.0e}"
_MOONCAKE_TIME_FIX = f"milliseconds since the trace start, in 0..{MAX_TIME_S * 1000:.0e}"
_DATETIME = re.compile(r"(\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?\s*(Z|[+-]\d\d:?\d\d)?")


@dataclass(frozen=True)
class RequestTrace:
    """Requests in arrival order. Times in seconds from the first arrival.

    arrival_s: float64 [R], non-decreasing, arrival_s[0] == 0.
    input_tokens, output_tokens: int64 [R], >= 1.
    prefix_blocks: per request, the hash ids of its PREFIX_BLOCK_TOKENS-token prompt blocks (equal ids
      are reusable KV), or None where the trace does not say.
    source: where the requests came from (file, or generator and its parameters), for every report.
    """

    arrival_s: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    prefix_blocks: tuple[tuple[int, ...], ...] | None
    source: str

    def __len__(self) -> int:
        return len(self.arrival_s)

    @property
    def duration_s(self) -> float:
        return float(self.arrival_s[-1]) if len(self) else 0.0

    @property
    def rate_per_s(self) -> float:
        """Mean arrival rate: requests after the first over the span they arrive in (0 for one request)."""
        return (len(self) - 1) / self.duration_s if self.duration_s > 0 else 0.0

    def speedup(self, factor: float) -> "RequestTrace":
        """The same requests arriving `factor` times faster (factor 2: replay at twice the rate)."""
        if factor <= 0:
            raise ValueError("speedup factor must be > 0")
        return replace(self, arrival_s=self.arrival_s / factor, source=f"{self.source}, {factor:g}x faster")

    def subsample(self, fraction: float, seed: int = 0) -> "RequestTrace":
        """Each request kept with probability `fraction` (seeded), arrival times unchanged."""
        if not 0 < fraction <= 1:
            raise ValueError("subsample fraction must be in (0, 1]")
        keep = np.sort(np.random.default_rng(seed).choice(len(self), max(1, round(fraction * len(self))), replace=False))
        return self.take(keep, f"{self.source}, {fraction:g} subsample (seed {seed})")

    def take(self, index: np.ndarray, source: str | None = None) -> "RequestTrace":
        """The requests at `index` (sorted), times re-based to the first of them."""
        index = np.asarray(index)
        arrival = self.arrival_s[index]
        return RequestTrace(arrival - (arrival[0] if len(arrival) else 0.0), self.input_tokens[index],
                            self.output_tokens[index],
                            None if self.prefix_blocks is None else tuple(self.prefix_blocks[i] for i in index),
                            source or self.source)


def load_trace(source: SourceLike | Source, *, name: str | None = None, max_bytes: int | None = None,
               arrival: str = "poisson", rate_per_s: float | None = None, cv: float = 1.0, seed: int = 0,
               limit: int | None = None) -> RequestTrace:
    """The requests of one trace file (or a ServeGen folder), the first `limit` of them in arrival order.

    source: a path, the bytes of one file (name: its file name, which a ServeGen chunk is known by), or
      {file name: bytes} for a folder in memory (a ServeGen chunk's two files). max_bytes: the most bytes read
      from one file (default hwmodels.ingest.source.MAX_FILE_BYTES); a larger file is an InputError.
    arrival, rate_per_s, cv: the arrival process for a length-only CSV (rate_per_s required there);
      traces with their own times refuse them (use RequestTrace.speedup to replay faster).
    seed: for the generated parts (length-only arrivals, ServeGen arrivals and lengths); same seed, same trace.
    """
    src = Source.of(source, name=name, max_bytes=max_bytes)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InputError("limit", f"is {limit!r}", "a whole number of requests >= 1, or None for all")
    if src.is_dir() or SERVEGEN_FILE.fullmatch(src.filename):
        _own_times(src, "ServeGen", arrival, rate_per_s, cv)
        return _cut(_trace(*read_servegen(src, seed)), limit)
    text = src.read_text("request trace")
    first = first_line(text)
    header = [h.strip().lower() for h in first.split(",")]
    if first.lstrip().startswith("{"):
        _own_times(src, "Mooncake JSONL", arrival, rate_per_s, cv)
        return _cut(_mooncake(src, text), limit)
    if header == _AZURE_HEADER:
        _own_times(src, "Azure CSV", arrival, rate_per_s, cv)
        return _cut(_azure(src, text), limit)
    if all(column in header for column in _BURSTGPT_COLUMNS):
        _own_times(src, "BurstGPT CSV", arrival, rate_per_s, cv)
        return _cut(_burstgpt(src, text, header), limit)
    if "num_prefill_tokens" in header and "num_decode_tokens" in header:
        return _lengths_csv(src, text, arrival, rate_per_s, cv, seed, limit)
    raise InputError(f"{src.name} line 1", f"is not a known request trace (starts {excerpt(first[:60])})",
                     "pass Mooncake JSONL, an Azure LLM inference CSV (TIMESTAMP,ContextTokens,GeneratedTokens), "
                     "a BurstGPT CSV (Timestamp,Model,Request tokens,Response tokens,...), a length CSV (num_prefill_tokens,num_decode_tokens,...) or a ServeGen chunk or folder")


def synthetic_trace(num_requests: int, rate_per_s: float, input_tokens: float, output_tokens: float, *,
                    arrival: str = "poisson", cv: float = 1.0, length_cv: float = 0.0, output_cv: float | None = None,
                    max_input_tokens: int | None = None, seed: int = 0) -> RequestTrace:
    """num_requests requests at rate_per_s from the arrival process, with mean lengths input_tokens and
    output_tokens: fixed lengths at a cv of 0, else lognormal with that coefficient of variation (the shape of
    measured prompt and output lengths), rounded, at least 1 token. length_cv: the prompts' cv, and the
    outputs' unless output_cv; max_input_tokens: the longest prompt drawn (a longer draw is cut to it)."""
    if isinstance(num_requests, bool) or not isinstance(num_requests, int) or num_requests < 1:
        raise InputError("num_requests", f"is {num_requests!r}", "a whole number >= 1")
    for name, value in (("input_tokens", input_tokens), ("output_tokens", output_tokens)):
        if not value >= 1:
            raise InputError(name, f"is {value!r}", "a mean length >= 1 token")
    output_cv = length_cv if output_cv is None else output_cv
    for name, value in (("length_cv", length_cv), ("output_cv", output_cv)):
        if not (isinstance(value, (int, float)) and 0 <= value <= MAX_LENGTH_CV):
            raise InputError(name, f"is {value!r}", f"a coefficient of variation from 0 to {MAX_LENGTH_CV:g}")
    rng = np.random.default_rng(seed)
    arrival_s = arrivals(num_requests, rate_per_s, arrival, cv, rng)
    inputs, outputs = (_lognormal(mean, c, num_requests, rng) for mean, c in ((input_tokens, length_cv),
                                                                               (output_tokens, output_cv)))
    if max_input_tokens is not None:
        inputs = np.minimum(inputs, max_input_tokens)
    shape = f"cv {cv:g} " if arrival != "poisson" else ""
    cvs = f"length cv {length_cv:g}" if output_cv == length_cv else f"length cv {length_cv:g} in / {output_cv:g} out"
    cap = f", prompts cut at {max_input_tokens:,}" if max_input_tokens is not None else ""
    return RequestTrace(arrival_s, inputs, outputs, None,
                        f"synthetic: {num_requests} requests, {arrival} {shape}arrivals at {rate_per_s:g}/s, "
                        f"mean {input_tokens:g} in / {output_tokens:g} out tokens, {cvs}{cap}, seed {seed}")


MAX_LENGTH_CV = 10.0  # the widest published length spread is arXiv summaries' outputs, cv 1.8


def _lognormal(mean: float, cv: float, n: int, rng: np.random.Generator) -> np.ndarray:
    if cv == 0:
        return np.full(n, max(1, round(mean)), dtype=np.int64)
    sigma2 = math.log1p(cv**2)
    draws = rng.lognormal(math.log(mean) - sigma2 / 2, math.sqrt(sigma2), n)
    return np.maximum(1, np.rint(draws)).astype(np.int64)


# --- trace files ----------------------------------------------------------------------------------------

def _own_times(src: Source, kind: str, arrival: str, rate_per_s, cv: float) -> None:
    if rate_per_s is not None or arrival != "poisson" or cv != 1.0:
        raise InputError("rate_per_s" if rate_per_s is not None else "arrival",
                         f"{src.name} is a {kind} trace with its own arrival times",
                         "leave the arrival process out; replay faster with RequestTrace.speedup")


def _count(value, where: str, what: str) -> int:
    """A token count in 0..MAX_TOKENS from a CSV or JSON field ("74", "74.0" or 74)."""
    if isinstance(value, str):
        return bounded_text(value, where, what, MAX_TOKENS, _COUNT_FIX, whole=True)
    return bounded(value, where, what, MAX_TOKENS, _COUNT_FIX, whole=True)


def _cut(trace: RequestTrace, limit: int | None) -> RequestTrace:
    return trace if limit is None or limit >= len(trace) else trace.take(np.arange(limit), f"{trace.source}, first {limit}")


def _trace(arrival_s, input_tokens, output_tokens, prefix_blocks, source: str) -> RequestTrace:
    """A RequestTrace in arrival order (ties keep file order), times from the first arrival; zero-length
    prompts or outputs (a request that failed, say) count as one token, and the source says how many."""
    arrival_s = np.asarray(arrival_s, dtype=float)
    order = np.argsort(arrival_s, kind="stable")
    inputs = np.asarray(input_tokens, dtype=np.int64)[order]
    outputs = np.asarray(output_tokens, dtype=np.int64)[order]
    zeros = int((inputs == 0).sum() + (outputs == 0).sum())
    if zeros:
        source += f"; {zeros} zero-token lengths counted as 1"
    blocks = None if prefix_blocks is None else tuple(prefix_blocks[i] for i in order)
    arrival_s = arrival_s[order]
    return RequestTrace(arrival_s - arrival_s[0], np.maximum(inputs, 1), np.maximum(outputs, 1), blocks, source)


def _mooncake(src: Source, text: str) -> RequestTrace:
    times_ms, inputs, outputs, blocks = [], [], [], []
    has_blocks = None
    for line_no, row in json_lines(src.name, text):
        where = f"{src.name} line {line_no}"
        missing = [k for k in ("timestamp", "input_length", "output_length") if k not in row]
        if missing:
            raise InputError(where, f"has no {', '.join(missing)}",
                             "Mooncake rows hold timestamp (ms), input_length, output_length and hash_ids")
        times_ms.append(bounded(row["timestamp"], where, "timestamp", MAX_TIME_S * 1000, _MOONCAKE_TIME_FIX))
        inputs.append(_count(row["input_length"], where, "input_length"))
        outputs.append(_count(row["output_length"], where, "output_length"))
        ids = row.get("hash_ids")
        if has_blocks is None:
            has_blocks = ids is not None
        if (ids is not None) != has_blocks:
            raise InputError(where, "has hash_ids where earlier rows have none, or the reverse",
                             "every row needs hash_ids, or none")
        if ids is not None:
            # int64 ids: the simulator keys its prefix cache on them
            if type(ids) is not list or not all(type(i) is int and -2**63 <= i < 2**63 for i in ids):
                raise InputError(where, f"hash_ids is {excerpt(ids)}, not a list of integers",
                                 "hash_ids are the prompt's block hashes, whole numbers within int64")
            blocks.append(tuple(ids))
    if not times_ms:
        raise InputError(src.name, "holds no requests", "pass a trace with at least one request")
    return _trace(np.asarray(times_ms, dtype=float) / 1000.0, inputs, outputs, blocks if has_blocks else None,
                  f"{src.name} (Mooncake JSONL)")


def _azure(src: Source, text: str) -> RequestTrace:
    whole_s, fraction_s, inputs, outputs = [], [], [], []
    rows = csv_rows(src.name, text)
    next(rows)
    for where, fields in _records(src, rows, 3, "expected TIMESTAMP,ContextTokens,GeneratedTokens"):
        whole, fraction = _parse_datetime(fields[0], where)
        whole_s.append(whole)
        fraction_s.append(fraction)
        inputs.append(_count(fields[1], where, "ContextTokens"))
        outputs.append(_count(fields[2], where, "GeneratedTokens"))
    if not whole_s:
        raise InputError(src.name, "holds no requests", "pass a trace with at least one request")
    # Integer seconds and their fraction separately: epoch seconds (~1.7e9) in one float64 would lose the 100 ns digits.
    whole = np.asarray(whole_s, dtype=np.int64)
    arrival_s = (whole - whole.min()).astype(float) + np.asarray(fraction_s)
    return _trace(arrival_s, inputs, outputs, None, f"{src.name} (Azure LLM inference CSV)")


def _burstgpt(src: Source, text: str, header: list[str]) -> RequestTrace:
    at = {column: header.index(column) for column in _BURSTGPT_COLUMNS}
    times_s, inputs, outputs, failed = [], [], [], 0
    rows = csv_rows(src.name, text)
    next(rows)
    for where, fields in _records(src, rows, len(header), f"expected the header's {len(header)}"):
        response = _count(fields[at["response tokens"]], where, "Response tokens")
        if response == 0:
            failed += 1
            continue
        times_s.append(bounded_text(fields[at["timestamp"]], where, "Timestamp", MAX_TIME_S,
                                    f"seconds since the trace start, in 0..{MAX_TIME_S:.0e}"))
        inputs.append(_count(fields[at["request tokens"]], where, "Request tokens"))
        outputs.append(response)
    if not times_s:
        raise InputError(src.name, "holds no served requests" + (f" ({failed} failed)" if failed else ""),
                         "pass a trace with at least one request that has response tokens")
    times = np.asarray(times_s, dtype=float)
    note = ""
    if np.all(times == np.floor(times)):
        order = np.argsort(times, kind="stable")
        _, first, count = np.unique(times[order], return_index=True, return_counts=True)
        rank = np.arange(len(times)) - np.repeat(first, count)  # place within its second, in file order
        times[order] += rank / np.repeat(count, count)  # the k-th of n at k / n s past the second
        note = "; whole-second timestamps: each second's requests spread evenly over it"
    return _trace(times, inputs, outputs, None, f"{src.name} (BurstGPT CSV"
                  + (f"; {failed} failed requests, 0 response tokens, left out" if failed else "") + note + ")")


def _records(src: Source, rows, width: int, expected: str):
    """(where, fields) of each non-blank CSV row, every one `width` fields wide (else the file is cut or corrupt)."""
    for line_no, fields in rows:
        if not fields or not "".join(fields).strip():
            continue
        where = f"{src.name} line {line_no}"
        if len(fields) != width:
            raise InputError(where, f"has {len(fields)} fields, {expected}", "the file is corrupt or truncated; fetch it again")
        yield where, fields


def _parse_datetime(text: str, where: str) -> tuple[int, float]:
    """(whole epoch seconds, fraction) of "2023-11-16 18:15:46.6805900" (any digits, optional zone; naive is UTC)."""
    match = _DATETIME.fullmatch(text.strip())
    try:
        if not match:
            raise ValueError("not YYYY-MM-DD HH:MM:SS[.fraction][zone]")
        stamp = datetime.fromisoformat(match[1] + (match[3] or ""))
    except ValueError as e:
        raise InputError(where, f"TIMESTAMP {excerpt(text)} is not a datetime ({e})",
                         "expected YYYY-MM-DD HH:MM:SS[.fraction], as in the Azure traces") from e
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    digits = match[2] or "0"
    return int(stamp.timestamp()), int(digits) / 10 ** len(digits)


def _lengths_csv(src: Source, text: str, arrival: str, rate_per_s, cv: float, seed: int,
                 limit: int | None) -> RequestTrace:
    rows = csv_rows(src.name, text)
    header = [h.strip().lower() for h in next(rows)[1]]
    prefill, decode = header.index("num_prefill_tokens"), header.index("num_decode_tokens")
    inputs, outputs = [], []
    for where, fields in _records(src, rows, len(header), f"the header {len(header)}"):
        inputs.append(_count(fields[prefill], where, "num_prefill_tokens"))
        outputs.append(_count(fields[decode], where, "num_decode_tokens"))
        if limit is not None and len(inputs) >= limit:
            break
    if not inputs:
        raise InputError(src.name, "holds no requests", "pass a trace with at least one request")
    arrival_s = arrivals(len(inputs), rate_per_s, arrival, cv, np.random.default_rng(seed))
    shape = f" cv {cv:g}" if arrival != "poisson" else ""
    return _trace(arrival_s, inputs, outputs, None,
                  f"{src.name} (lengths in file order; {arrival}{shape} arrivals at {rate_per_s:g}/s, seed {seed})")
