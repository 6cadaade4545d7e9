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
  second (the released files), the n requests of one second arrive 1 / n s apart from its start: the file cannot say when
  within the second they came, and read as simultaneous they would be clumps the traffic model queues together;
- length-only CSV (microsoft/sarathi-serve and microsoft/vidur `data/processed_traces/`):
  `num_prefill_tokens,num_decode_tokens,...` without times; arrivals come from a chosen process;
- ServeGen (alibaba/ServeGen `data/<category>/<model>/`, arXiv:2505.09999): `chunk-N-trace.csv` (no
  header: `window_start_s,rate_rps,cv,dist_name,param1,param2`) and `chunk-N-dataset.json` (per
  6-hour window, `input_tokens` / `output_tokens` pdfs as Python dict-literal strings); one chunk is
  one client, a directory is all its clients together.
`synthetic_trace` generates requests from mean lengths and an arrival process.

Arrival processes (`arrival`): "poisson" (exponential gaps, CV 1), "gamma" and "weibull" with the
given coefficient of variation `cv` of the gaps; cv = 0 gives evenly spaced arrivals (the limit of
both families).

Bounds (hwmodels.ingest.bounds): token counts are whole numbers in 0..MAX_TOKENS, times finite and under
MAX_TIME_S, Mooncake hash ids int64; anything else is one InputError naming the file, line and field. Peak
memory of the JSON-lines and CSV readers is at most about 20 bytes per byte of file (measured on files of the
shortest rows); ServeGen's, which generates requests from rates, follows MAX_CLIENT_REQUESTS and MAX_REQUESTS.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import numpy as np

from hwmodels.errors import InputError, excerpt
from hwmodels.ingest.bounds import MAX_CLIENT_REQUESTS, MAX_REQUESTS, MAX_TIME_S, MAX_TOKENS, bounded, bounded_text
from hwmodels.ingest.safe_load import csv_rows, first_line, json_document, json_lines, line_of, literal_mapping
from hwmodels.ingest.source import Source, SourceLike

PREFIX_BLOCK_TOKENS = 512  # Mooncake's hash_ids: one id per 512-token prompt block
ARRIVAL_PROCESSES = ("poisson", "gamma", "weibull")

_AZURE_HEADER = ["timestamp", "contexttokens", "generatedtokens"]
_BURSTGPT_COLUMNS = ("timestamp", "request tokens", "response tokens")
_SERVEGEN_FILE = re.compile(r"chunk-(\d+)-(trace\.csv|dataset\.json)")
_SERVEGEN_FAMILIES = ("gamma", "weibull", "exponential")
# Shape (param1) bounds per family: below them a window's gaps are so bursty that reaching its end takes unbounded
# draws (Gamma shape 1e-3 is a gap CV of 32, Weibull 0.1 one of 430; the DeepSeek-R1 chunks go down to 0.012 and
# 0.26), and Weibull's mean needs Gamma(1 + 1 / shape), which overflows below shape 0.006.
_SERVEGEN_SHAPES = {"gamma": (1e-3, 1e6), "weibull": (0.1, 1e6)}
_SERVEGEN_FIX = "the file is corrupt or truncated; fetch it again"
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
    if src.is_dir() or _SERVEGEN_FILE.fullmatch(src.filename):
        _own_times(src, "ServeGen", arrival, rate_per_s, cv)
        return _cut(_servegen(src, seed), limit)
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
    arrival_s = _arrivals(num_requests, rate_per_s, arrival, cv, rng)
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


# --- arrival processes ----------------------------------------------------------------------------------

def _arrivals(n: int, rate_per_s, process: str, cv: float, rng: np.random.Generator) -> np.ndarray:
    """[n] arrival times from 0 of a renewal process with mean gap 1 / rate_per_s."""
    if rate_per_s is None or isinstance(rate_per_s, bool) or not rate_per_s > 0 or not math.isfinite(rate_per_s):
        raise InputError("rate_per_s", f"is {rate_per_s!r}; requests without times need an arrival rate",
                         "pass rate_per_s (--rate requests per second) > 0")
    family, shape = _family(process, cv)
    return np.concatenate(([0.0], np.cumsum(_gaps(n - 1, 1.0 / rate_per_s, family, shape, rng))))


def _family(process: str, cv: float) -> tuple[str, float]:
    """(gap family, its shape parameter) for an arrival process and CV; family "fixed" for cv 0."""
    if process not in ARRIVAL_PROCESSES:
        raise InputError("arrival", f"is {process!r}", f"one of {', '.join(ARRIVAL_PROCESSES)}")
    if isinstance(cv, bool) or not isinstance(cv, (int, float)) or not 0 <= cv < 50:
        raise InputError("cv", f"is {cv!r}", "a coefficient of variation of the gaps in [0, 50)")
    if process == "poisson":
        if cv != 1:
            raise InputError("cv", f"is {cv:g}, but Poisson arrivals have CV 1",
                             "use arrival gamma or weibull for another CV")
        return "exponential", 1.0
    if cv == 0:
        return "fixed", 0.0
    return process, (1 / cv**2 if process == "gamma" else _weibull_shape(cv))


def _weibull_shape(cv: float) -> float:
    """Weibull shape k whose CV is `cv`: CV^2 = Gamma(1 + 2/k) / Gamma(1 + 1/k)^2 - 1, decreasing in k."""
    def cv_of(k):
        return math.sqrt(math.expm1(math.lgamma(1 + 2 / k) - 2 * math.lgamma(1 + 1 / k)))

    lo, hi = math.log(0.05), math.log(1000.0)  # CV from about 1e7 down to 0.0013
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cv_of(math.exp(mid)) > cv else (lo, mid)
    return math.exp((lo + hi) / 2)


def _gaps(n: int, mean_s: float, family: str, shape: float, rng: np.random.Generator) -> np.ndarray:
    """[n] inter-arrival gaps with mean `mean_s` from the family with that shape (scale set by the mean)."""
    if family == "fixed":
        return np.full(n, mean_s)
    if family == "exponential":
        return rng.exponential(mean_s, n)
    if family == "gamma":
        return rng.gamma(shape, mean_s / shape, n)
    return mean_s / math.gamma(1 + 1 / shape) * rng.weibull(shape, n)


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
    for line_no, fields in rows:
        if not fields or not "".join(fields).strip():
            continue
        where = f"{src.name} line {line_no}"
        if len(fields) != 3:
            raise InputError(where, f"has {len(fields)} fields, expected TIMESTAMP,ContextTokens,GeneratedTokens",
                             "the file is corrupt or truncated; fetch it again")
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
    for line_no, fields in rows:
        if not fields or not "".join(fields).strip():
            continue
        where = f"{src.name} line {line_no}"
        if len(fields) != len(header):
            raise InputError(where, f"has {len(fields)} fields, expected the header's {len(header)}",
                             "the file is corrupt or truncated; fetch it again")
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
    for line_no, fields in rows:
        if not fields or not "".join(fields).strip():
            continue
        where = f"{src.name} line {line_no}"
        if len(fields) != len(header):
            raise InputError(where, f"has {len(fields)} fields, the header {len(header)}",
                             "the file is corrupt or truncated; fetch it again")
        inputs.append(_count(fields[prefill], where, "num_prefill_tokens"))
        outputs.append(_count(fields[decode], where, "num_decode_tokens"))
        if limit is not None and len(inputs) >= limit:
            break
    if not inputs:
        raise InputError(src.name, "holds no requests", "pass a trace with at least one request")
    arrival_s = _arrivals(len(inputs), rate_per_s, arrival, cv, np.random.default_rng(seed))
    shape = f" cv {cv:g}" if arrival != "poisson" else ""
    return _trace(arrival_s, inputs, outputs, None,
                  f"{src.name} (lengths in file order; {arrival}{shape} arrivals at {rate_per_s:g}/s, seed {seed})")


# --- ServeGen -------------------------------------------------------------------------------------------

def _servegen(src: Source, seed: int) -> RequestTrace:
    """All requests of one ServeGen client (a chunk file) or of every client in a folder, merged in time.

    Per 10-minute window with rate > 0, arrivals are a renewal process restarted at the window start whose
    gaps have the window's fitted family (Gamma, Weibull; param1 its shape) and mean 1 / rate_rps. The rate
    column sets the scale because the fitted scale parameters do not always reproduce it (in the DeepSeek-R1
    chunks Gamma's shape x scale x rate ranges from 0.0002 to 1.08); for Gamma the fitted shape is exactly
    1 / cv^2. Each request's input and output lengths are drawn independently from the pdfs of the dataset
    window (6 hours there) it falls in; reason_ratio is not used (output_tokens already counts reasoning).
    Each client draws from its own stream seeded with (seed, chunk number).
    """
    if src.is_dir():
        chunks = sorted(((int(m[1]), src.child(m[0])) for name in src.list("chunk-*-trace.csv")
                         if (m := _SERVEGEN_FILE.fullmatch(name))), key=lambda chunk: chunk[0])
        if not chunks:
            raise InputError(src.name, "is a folder without ServeGen chunk-N-trace.csv files",
                             "pass a ServeGen model folder, a chunk file, or a trace file")
    else:
        number = int(_SERVEGEN_FILE.fullmatch(src.filename)[1])
        chunks = [(number, src.sibling(f"chunk-{number}-trace.csv"))]
    # Windows of every client first: the requests they describe are bounded before any is drawn.
    windows = [_servegen_windows(trace_file) for _, trace_file in chunks]
    expected = sum(w.expected for client in windows for w in client)
    if expected > MAX_REQUESTS:
        raise InputError(src.name, f"describes about {expected:,.0f} requests, over the {MAX_REQUESTS:,} read from one "
                         "rate-only trace", "read fewer clients (one chunk), or lower the rates")
    parts = [_servegen_chunk(trace_file, client, np.random.default_rng([seed, number]))
             for (number, trace_file), client in zip(chunks, windows)]
    arrival_s = np.concatenate([p[0] for p in parts])
    if not len(arrival_s):
        raise InputError(src.name, "has no window with requests (every rate is 0)",
                         "pass a ServeGen client with a rate > 0 in some window")
    clients = f"{len(chunks)} client{'s' if len(chunks) > 1 else ''}"
    return _trace(arrival_s, np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts]), None,
                  f"{src.name} (ServeGen, {clients}, arrivals and lengths drawn with seed {seed})")


def _servegen_chunk(trace_file: Source, windows: list["_Window"],
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(absolute arrival s, input tokens, output tokens) of one client, from its windows (_servegen_windows)."""
    dataset_file = trace_file.sibling(trace_file.filename.replace("trace.csv", "dataset.json"))
    arrivals = [w.start_s + _renewal(w, rng) for w in windows if w.rate > 0]
    arrival_s = np.concatenate(arrivals) if arrivals else np.zeros(0)
    if not len(arrival_s):
        return arrival_s, np.zeros(0, np.int64), np.zeros(0, np.int64)
    pdf_starts, pdfs = _servegen_pdfs(dataset_file)
    window = np.maximum(np.searchsorted(pdf_starts, arrival_s, side="right") - 1, 0)
    inputs, outputs = np.zeros(len(arrival_s), np.int64), np.zeros(len(arrival_s), np.int64)
    for w in np.unique(window):
        at = window == w
        for out, field in ((inputs, "input_tokens"), (outputs, "output_tokens")):
            values, probs, where = pdfs[w][field]
            if values is None:
                raise InputError(where, "is an empty pdf, but requests arrive in this window",
                                 "the dataset does not match its trace.csv; fetch both again")
            out[at] = rng.choice(values, size=int(at.sum()), p=probs)
    return arrival_s, inputs, outputs


@dataclass(frozen=True)
class _Window:
    """One row of a chunk-N-trace.csv: its start, length (to the next start; the median gap for the last),
    rate, gap family and shape, and where it is (for errors)."""

    start_s: float
    length_s: float
    rate: float
    family: str
    shape: float
    where: str

    @property
    def expected(self) -> float:
        """Requests the window describes on average."""
        return self.rate * self.length_s


def _servegen_windows(trace_file: Source) -> list[_Window]:
    """The windows of a chunk-N-trace.csv: starts in -MAX_TIME_S..MAX_TIME_S, increasing; rates >= 0, together
    describing at most MAX_CLIENT_REQUESTS; shapes within _SERVEGEN_SHAPES where a rate > 0 uses them."""
    text = trace_file.read_text("ServeGen trace.csv")
    rows = []
    for line_no, fields in csv_rows(trace_file.name, text):
        if not fields or not "".join(fields).strip():
            continue
        where = f"{trace_file.name} line {line_no}"
        if len(fields) != 6:
            raise InputError(where, f"has {len(fields)} fields, expected window_start_s,rate_rps,cv,dist,param1,param2",
                             _SERVEGEN_FIX)
        start = bounded_text(fields[0], where, "window_start_s", MAX_TIME_S, _SERVEGEN_FIX, lower=-MAX_TIME_S)
        rate = bounded_text(fields[1], where, "rate_rps", MAX_REQUESTS, _SERVEGEN_FIX)
        family = fields[3].strip().lower()
        shape = 0.0
        if rate > 0 and family not in _SERVEGEN_FAMILIES:
            raise InputError(where, f"rate {rate:g}/s with inter-arrival distribution {excerpt(fields[3])}",
                             f"distributions read: {', '.join(_SERVEGEN_FAMILIES)}")
        if rate > 0 and family in _SERVEGEN_SHAPES:
            low, high = _SERVEGEN_SHAPES[family]
            shape = bounded_text(fields[4] or "0", where, f"{fields[3].strip()} shape (param1)", high,
                                 f"{family} shapes read: {low:g}..{high:g}", lower=low)
        rows.append((start, rate, family, shape, where))
    if not rows:
        raise InputError(trace_file.name, "has no windows", "pass a chunk-N-trace.csv with one row per window")
    bad = next((b for a, b in itertools.pairwise(rows) if b[0] <= a[0]), None)
    if bad:
        raise InputError(bad[4], f"window start {bad[0]:g} s is not after the previous one",
                         "window starts increase down the file; it is corrupt, fetch it again")
    starts = np.array([r[0] for r in rows])
    length_s = np.diff(starts, append=starts[-1] + (np.median(np.diff(starts)) if len(starts) > 1 else 600.0))
    windows = [_Window(start, float(length), rate, family, shape, where)
               for (start, rate, family, shape, where), length in zip(rows, length_s)]
    expected = 0.0
    for w in windows:
        expected += w.expected
        if expected > MAX_CLIENT_REQUESTS:
            raise InputError(w.where, f"windows up to here describe {expected:,.0f} requests, over the "
                             f"{MAX_CLIENT_REQUESTS:,} read for one client", _SERVEGEN_FIX)
    return windows


def _renewal(w: _Window, rng: np.random.Generator) -> np.ndarray:
    """Arrival offsets in [0, w.length_s) of a renewal process started at 0 with mean gap 1 / w.rate."""
    expected = w.expected
    first = int(expected + 5 * math.sqrt(expected) + 10)
    times = np.cumsum(_gaps(first, 1 / w.rate, w.family, w.shape, rng))
    while times[-1] < w.length_s:  # bursty gaps (CV >> 1) can need more draws than the mean suggests
        if len(times) > 64 * first + 10**6:  # the shape bounds keep real windows far below (4 x first at CV 430)
            raise InputError(w.where, f"{w.family} gaps of shape {w.shape:g} did not reach the window's end in "
                             f"{len(times):,} draws", "the file is corrupt; fetch it again")
        times = np.concatenate((times, times[-1] + np.cumsum(_gaps(len(times), 1 / w.rate, w.family, w.shape, rng))))
    return times[times < w.length_s]


class _LineOf:
    """Where a value sits in a JSON document, as "file line N", found only when an error prints it: searching
    the text for every window as it is read would take time quadratic in the file."""

    def __init__(self, name: str, text: str, *needles: str):
        self.name, self.text, self.needles = name, text, needles

    def __str__(self) -> str:
        return f"{self.name} line {line_of(self.text, *self.needles)}"


def _servegen_pdfs(dataset_file: Source) -> tuple[np.ndarray, list[dict]]:
    """Sorted window starts and, per window, {field: (values, probabilities, where)} ((None, None, where) if empty).
    Lengths are whole numbers in 0..MAX_TOKENS, probabilities weights in 0..MAX_COUNT with a sum > 0."""
    text = dataset_file.read_text("ServeGen dataset.json")
    doc = json_document(dataset_file.name, text)
    if not isinstance(doc, dict) or not doc:
        raise InputError(dataset_file.name, "is not a JSON object of windows {window_start_s: {...}}", _SERVEGEN_FIX)
    windows = []
    for key, entry in doc.items():
        quoted_key = f'"{key}"'
        where = _LineOf(dataset_file.name, text, quoted_key)
        start = bounded_text(key, where, "window key (start s)", MAX_TIME_S, _SERVEGEN_FIX, lower=-MAX_TIME_S)
        if not isinstance(entry, dict):
            raise InputError(where, f"window {excerpt(key)} is a {type(entry).__name__}, not an object of pdfs",
                             _SERVEGEN_FIX)
        pdfs = {}
        for field in ("input_tokens", "output_tokens"):
            at = _LineOf(dataset_file.name, text, quoted_key, f'"{field}"')
            if field not in entry:
                raise InputError(at, f"window {excerpt(key)} has no {field}",
                                 "ServeGen windows hold input_tokens and output_tokens")
            pdf = literal_mapping(entry[field], at, key_bound=MAX_TOKENS)
            pdfs[field] = _pdf(pdf, at) if pdf else (None, None, at)
        windows.append((start, pdfs))
    windows.sort(key=lambda w: w[0])
    return np.array([w[0] for w in windows]), [w[1] for w in windows]


def _pdf(pdf: dict, where) -> tuple[np.ndarray, np.ndarray, object]:
    """(lengths, probabilities summing to 1, where) of a pdf whose entries literal_mapping has bounded."""
    values = np.array(list(pdf), dtype=float)
    probs = np.array(list(pdf.values()), dtype=float)
    if not probs.sum() > 0:
        raise InputError(where, "is not a pdf of token counts (its probabilities sum to 0)", _SERVEGEN_FIX)
    return values.astype(np.int64), probs / probs.sum(), where
