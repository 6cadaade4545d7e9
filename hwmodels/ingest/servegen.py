"""ServeGen client traces (alibaba/ServeGen `data/<category>/<model>/`, arXiv:2505.09999): a client's
`chunk-N-trace.csv` (no header: `window_start_s,rate_rps,cv,dist_name,param1,param2`) and `chunk-N-dataset.json`
(per 6-hour window, `input_tokens` / `output_tokens` pdfs as Python dict-literal strings); one chunk is one client,
a folder is all its clients together. `read_servegen` draws the requests they describe (bounded by
MAX_CLIENT_REQUESTS and MAX_REQUESTS before any is drawn); hwmodels.ingest.requests makes them a RequestTrace.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass

import numpy as np

from hwmodels.errors import InputError, excerpt
from hwmodels.ingest.arrivals import gaps
from hwmodels.ingest.bounds import MAX_CLIENT_REQUESTS, MAX_REQUESTS, MAX_TIME_S, MAX_TOKENS, bounded_text
from hwmodels.ingest.safe_load import csv_rows, json_document, line_of, literal_mapping
from hwmodels.ingest.source import Source

SERVEGEN_FILE = re.compile(r"chunk-(\d+)-(trace\.csv|dataset\.json)")
_SERVEGEN_FAMILIES = ("gamma", "weibull", "exponential")
# Shape (param1) bounds per family: below them a window's gaps are so bursty that reaching its end takes unbounded
# draws (Gamma shape 1e-3 is a gap CV of 32, Weibull 0.1 one of 430; the DeepSeek-R1 chunks go down to 0.012 and
# 0.26), and Weibull's mean needs Gamma(1 + 1 / shape), which overflows below shape 0.006.
_SERVEGEN_SHAPES = {"gamma": (1e-3, 1e6), "weibull": (0.1, 1e6)}
_SERVEGEN_FIX = "the file is corrupt or truncated; fetch it again"


def read_servegen(src: Source, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, None, str]:
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
                         if (m := SERVEGEN_FILE.fullmatch(name))), key=lambda chunk: chunk[0])
        if not chunks:
            raise InputError(src.name, "is a folder without ServeGen chunk-N-trace.csv files",
                             "pass a ServeGen model folder, a chunk file, or a trace file")
    else:
        number = int(SERVEGEN_FILE.fullmatch(src.filename)[1])
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
    return (arrival_s, np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts]), None,
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
    times = np.cumsum(gaps(first, 1 / w.rate, w.family, w.shape, rng))
    while times[-1] < w.length_s:  # bursty gaps (CV >> 1) can need more draws than the mean suggests
        if len(times) > 64 * first + 10**6:  # the shape bounds keep real windows far below (4 x first at CV 430)
            raise InputError(w.where, f"{w.family} gaps of shape {w.shape:g} did not reach the window's end in "
                             f"{len(times):,} draws", "the file is corrupt; fetch it again")
        times = np.concatenate((times, times[-1] + np.cumsum(gaps(len(times), 1 / w.rate, w.family, w.shape, rng))))
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
