"""What a traffic file may claim: every number a reader accepts is finite and within a bound below, and every
array a reader allocates is sized by the caller (the model) or by what the file really holds, never by a number
in the file alone.

Numbers (each far above any real trace, and low enough that no later arithmetic on them overflows):
- MAX_TOKENS = 10^8 tokens in one request's prompt or output, and token positions within one sequence: the
  longest context windows offered are 10^7 tokens (Llama 4 Scout).
- MAX_TIME_S = 10^12 s for a timestamp or a window start (about 31,700 years; epoch seconds today are 1.7e9),
  so a time is exact to well under a millisecond in float64.
- MAX_COUNT = 10^18 tokens routed to one (layer, expert), or one probability weight: below 2^63, so int64 holds
  it, and a sum over the at most 2^31 numbers a 2 GiB file holds stays under 10^28, far below float64's 1.8e308.
- MAX_EXPERTS = 2^20 experts in one layer: PEER ("Mixture of A Million Experts", He, 2024) has 1024^2, the most
  published; MoE LLMs served today have at most 384 (Kimi K2).
- MAX_LAYERS = 100,000 layers: served models have under 200, and DeepNet (Wang et al., 2022) trained 1,000.
- MAX_CLIENT_REQUESTS = 2 * 10^6 requests generated for one client of a rate-only trace (ServeGen), MAX_REQUESTS =
  10^7 for one load: the busiest of the 73 ServeGen DeepSeek-R1 clients describes 396,000 in its day, all of them
  1.4 * 10^6. These files describe rates, not requests, so their readers' memory follows these caps (about 110
  bytes per request: 220 MB for one client at the cap), not the file's size.

Arrays: the count arrays of routing statistics ([windows, layers, experts] float64) take their layers and experts
from ids in the file. `check_cells` lets them hold at most max(MIN_CELLS, CELLS_PER_BYTE x the file's bytes, what
the caller vouches for: windows x the model's layers x experts) counts, checked before they are made. Measured
peak memory of a reader, as traced by tracemalloc: at most about 70 bytes per byte of file at that budget (64 of
counts, the rest parsing), 20 to 35 per byte where the ids are dense, and 8 MiB plus parsing for a small file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hwmodels.errors import InputError, excerpt

MAX_TOKENS = 10**8
MAX_TIME_S = 1e12
MAX_COUNT = 1e18
MAX_EXPERTS = 2**20
MAX_LAYERS = 100_000
MAX_REQUESTS = 10**7
MAX_CLIENT_REQUESTS = 2 * 10**6
MIN_CELLS = 2**20  # 8 MiB of float64: DeepSeek-V3's [61 layers, 256 experts] 67 times over, whatever the file's size
CELLS_PER_BYTE = 8  # 64 bytes of counts per byte of file: per-token decisions of a 384-expert model in windows of
#                     one token need 6 (a 68-byte line per (token, layer), 61 x 384 counts per token)
_NUMBER_TEXT_CHARS = 100  # a number in a text field: "-1.2345678901234567e+300" is 24; longer is not one we read


def bounded(value, where: str, what: str, upper: float, fix: str, *, whole: bool = False, lower: float = 0):
    """`value` (an int or float from a parsed file, not a bool) if it is in [lower, upper] (and whole, where asked),
    as an int when whole, else a float; otherwise one InputError. Compares before converting, so a 4,000-digit
    integer or an infinity is refused without overflowing."""
    kind = type(value)
    if (kind is int or kind is float) and lower <= value <= upper and (kind is int or not whole or value.is_integer()):
        return int(value) if whole else float(value)  # the common case, first: readers call this per number
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(where, f"{what} is {excerpt(value)}, not a number", fix)
    if not lower <= value <= upper:  # NaN fails both comparisons
        raise InputError(where, f"{what} is {excerpt(value)}, outside {_limit(lower)}..{_limit(upper)}", fix)
    if whole:
        if not isinstance(value, (int, np.integer)) and not float(value).is_integer():  # finite: checked above
            raise InputError(where, f"{what} is {excerpt(value)}, not a whole number", fix)
        return int(value)
    return float(value)


def _limit(x: float) -> str:
    """A bound as people read it: 1,048,575; 100,000,000; 1e+15; 0.1."""
    return f"{int(x):,}" if abs(x) < 1e9 and x == int(x) else f"{x:g}"


def bounded_text(text: str, where: str, what: str, upper: float, fix: str, *, whole: bool = False,
                 lower: float = 0):
    """A number written in a text field ("74", "74.0", " 1e3"), checked as `bounded` checks it."""
    if not isinstance(text, str) or len(text) > _NUMBER_TEXT_CHARS:
        raise InputError(where, f"{what} is {excerpt(text)}, not a number", fix)
    try:
        value = int(text) if whole and text.strip().lstrip("+-").isdigit() else float(text)  # both allow spaces
    except ValueError:
        raise InputError(where, f"{what} is {excerpt(text)}, not a number", fix) from None
    return bounded(value, where, what, upper, fix, whole=whole, lower=lower)


def check_cells(where: str, shape: tuple[int, ...], file_bytes: int, fix: str, trusted_cells: int = 0,
                what: str = "its ids make") -> None:
    """Refuse a count array of `shape` (its sizes read from ids in a file of file_bytes bytes) larger than
    max(MIN_CELLS, CELLS_PER_BYTE * file_bytes, trusted_cells), before anything is allocated. trusted_cells:
    what the caller's own sizes need (windows x the model's layers x experts), 0 when it gives none."""
    cells = math.prod(shape)
    limit = max(MIN_CELLS, CELLS_PER_BYTE * file_bytes, trusted_cells)
    if cells > limit:
        dims = " x ".join(f"{n:,}" for n in shape)
        raise InputError(where, f"{what} a {dims} array ({cells:,} numbers) from a file of {file_bytes:,} bytes, "
                         f"over the {limit:,} allowed for it", fix)


@dataclass(frozen=True)
class Sizes:
    """What the caller says about the sizes of one routing statistics file.

    num_experts: the recorded model's expert count where the caller gives it: an expert id at or over it is an
      error; without it ids may go up to MAX_EXPERTS - 1 and the count array has highest id + 1 experts.
    model_cells: layers x experts of the model the caller maps the statistics onto (load_routing), 0 when none:
      a count array of that many counts per window is the caller's to vouch for, whatever the file's size.
    """

    num_experts: int | None = None
    model_cells: int = 0

    @property
    def expert_limit(self) -> int:
        """One over the highest expert id accepted."""
        return self.num_experts or MAX_EXPERTS

    def expert(self, value, where: str, what: str = "expert id") -> int:
        """A whole expert id in 0..expert_limit - 1 (from a parsed file), else one InputError."""
        fix = ("pass the recorded model's expert count (num_experts, or source_num_experts for load_routing)"
               if self.num_experts else f"expert ids are below {MAX_EXPERTS:,}; the file is corrupt, fetch it again")
        return bounded(value, where, what, self.expert_limit - 1, fix, whole=True)

    def check(self, where: str, shape: tuple[int, ...], file_bytes: int, fix: str) -> None:
        """check_cells for a [windows, layers, experts] count array, trusting windows x model_cells."""
        check_cells(where, shape, file_bytes, fix, shape[0] * self.model_cells)


LAYER_FIX = f"layer ids are below {MAX_LAYERS:,}; the file is corrupt, fetch it again"
CELLS_FIX = ("the file's ids are far larger than what it holds: it is corrupt, or statistics of a larger model than "
             "the one it is read for; read it with that model's shape (load_routing)")
