"""Safe readers for untrusted trace files: text, JSON lines, Python literals, safetensors, restricted pickles.

Nothing here executes code from a file, and nothing is allocated at a size a file claims before the bytes are
there. Every reader takes a `Source` (hwmodels.ingest.source: a path or bytes in memory, read up to its size
limit) or text already read from one, and `name`, what errors call the file. Every failure is one `InputError`
naming the file (and the line for text formats) and what to do, never a traceback:
- text (Source.read_text, UTF-8), read line by line (`lines`, `csv_rows`: a list of every line of a file of short
  lines would take some 50 bytes a line); CSV rows the csv module refuses (a NUL, a field over 128 KiB) name
  their line;
- JSON and JSON lines (`parse_json`): `json`, its syntax errors, nesting past Python's recursion limit
  (RecursionError after work bounded by that depth), integers of over 4,300 digits and MemoryError all one
  error with the 1-based line; the values' bounds are the readers' (hwmodels.ingest.bounds);
- Python dict literals of numbers (ServeGen's pdf strings): a regular expression for `{number: number, ...}`,
  building what ast.literal_eval would without its AST (some 50 times the text's size);
- safetensors (TensorRT-LLM's expert statistics): read with numpy from the published layout
  (huggingface/safetensors README, "Format": 8-byte little-endian header size N, N bytes of JSON
  `{name: {"dtype", "shape", "data_offsets": [begin, end]}}` with optional `__metadata__`, then the
  little-endian, C-ordered bytes the offsets index); a shape must match the bytes its offsets span;
- pickles of `collections.Counter` (allenai/OLMoE `scripts/run_routing_analysis.py`): Python's pure-Python
  Unpickler, restricted to `collections.Counter`, `numpy.dtype` and numpy's `scalar` (numpy 1 and 2
  spellings) with numeric dtypes only, so a crafted file cannot reach any other callable (not the C Unpickler,
  which reserves what a file claims: see _CounterUnpickler);
- PyTorch `.pt` dumps (SGLang's expert-distribution recorder): `torch.load(weights_only=True)`, PyTorch's
  own restricted unpickler (tensors, containers and primitives only), from an in-memory copy of the file whose
  zip records claim no more than the file holds; refused when PyTorch is absent.
"""

from __future__ import annotations

import collections
import csv
import io
import json
import math
import pickle
import re
import struct
import zipfile
from collections.abc import Iterator
from typing import Any

import numpy as np

from hwmodels.errors import InputError, excerpt
from hwmodels.ingest.bounds import MAX_COUNT, bounded_text
from hwmodels.ingest.source import Source


_LINE = re.compile("([^\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]*)(?:\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]|\\Z)")
_CORRUPT = "the file is corrupt or truncated; fetch it again"


def lines(text: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, line) as `text.splitlines()` splits it, one at a time: holding every line of a file
    of short lines at once would take some 50 bytes per line (a list slot and a str each)."""
    for line_no, match in enumerate(_LINE.finditer(text), start=1):
        if match.end() == match.start():  # the empty match at the end of the text
            return
        yield line_no, match[1]


def first_line(text: str) -> str:
    """The first line with anything but whitespace on it ("" when none)."""
    return next((line for _, line in lines(text) if line.strip()), "")


def csv_rows(name: str, text: str, start: int = 1) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of every CSV row of `text` (rows numbered from `start`, as the lines they come from
    when no field spans lines); a row the csv module refuses (a NUL byte, a field over its 128 KiB limit) is an
    error naming its line."""
    reader = csv.reader(line for _, line in lines(text))
    line_no = start - 1
    while True:
        line_no += 1
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise InputError(f"{name} line {line_no}", f"is not a CSV row ({e})", _CORRUPT) from None
        yield line_no, fields


def parse_json(where: str, text: str, line_no: int | None = None) -> Any:
    """json.loads(text), every failure one InputError naming `where` and the line (line_no: the line `text` is,
    for a JSON-lines file). Nesting deeper than Python's recursion limit (about 1,000 levels, far beyond what any
    format here needs: 3) fails inside json's C parser after work bounded by that depth."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        field = f"{where} line {line_no}" if line_no is not None else f"{where} line {e.lineno} column {e.colno}"
        problem = f"not valid JSON ({e.msg} at column {e.colno})" if line_no is not None else f"not valid JSON: {e.msg}"
        raise InputError(field, problem, _CORRUPT) from None
    except RecursionError:
        problem = "not valid JSON: nested too deep to read (the formats read here nest 3 levels)"
    except ValueError as e:  # an integer of over 4,300 digits (Python's int_max_str_digits)
        problem = "not valid JSON: " + ("holds an integer of over 4,300 digits" if "digits" in str(e) else str(e)[:100])
    except MemoryError:
        problem = "not valid JSON: too large to parse in memory"
    raise InputError(f"{where} line {line_no}" if line_no is not None else where, problem, _CORRUPT)


def json_lines(name: str, text: str) -> Iterator[tuple[int, dict]]:
    """(line number, object) for every non-blank line; a broken or non-object line is an error naming it.

    A file cut off mid-line fails on that last line, so a truncated download is never read as shorter data.
    """
    for line_no, line in lines(text):
        if not line.strip():
            continue
        obj = parse_json(name, line, line_no)
        if not isinstance(obj, dict):
            raise InputError(f"{name} line {line_no}", f"holds a JSON {type(obj).__name__}, not an object",
                             "every line of a JSON-lines file is one object {...}")
        yield line_no, obj


def json_document(name: str, text: str) -> Any:
    """A whole-file JSON document; a syntax error names its line and column."""
    return parse_json(name, text)


def line_of(text: str, *needles: str) -> int:
    """1-based line of the last of `needles`, each searched after the previous one (1 when not found):
    where a value inside a valid JSON document sits, for an error about its content."""
    at = 0
    for needle in needles:
        found = text.find(needle, at)
        if found < 0:
            break
        at = found
    return text.count("\n", 0, at) + 1


_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_PAIR = re.compile(rf"\s*({_NUMBER})\s*:\s*({_NUMBER})\s*(?:,|(?=\}}))")
_OPEN, _CLOSE = re.compile(r"\s*\{"), re.compile(r"\s*\}\s*")


def literal_mapping(text: Any, where: Any, key_bound: float = MAX_COUNT, value_bound: float = MAX_COUNT) -> dict:
    """A Python dict literal of numbers (ServeGen's `"{45: 0.0097, 46: 0.0117, ...}"`, maybe `"{}"`) as the dict
    ast.literal_eval would build, read with a regular expression: the AST of a long literal takes some 50 times
    its size. Keys are whole numbers in 0..key_bound, values numbers in 0..value_bound.
    where: the field for errors (anything str() names it, computed only when there is an error)."""
    if not isinstance(text, str):
        raise InputError(where, f"is a {type(text).__name__}, not a string holding a Python dict literal",
                         "pdfs are strings \"{length: probability, ...}\"")
    opened = _OPEN.match(text)
    pos, value = opened.end() if opened else 0, {}
    while opened and (pair := _PAIR.match(text, pos)):
        key_text, prob_text = pair[1], pair[2]
        key = bounded_text(key_text, where, f"entry {key_text[:24]}", key_bound, _CORRUPT, whole=True)
        value[key] = bounded_text(prob_text, where, f"entry {key_text[:24]}: {prob_text[:24]}", value_bound, _CORRUPT)
        pos = pair.end()
    if not opened or not _CLOSE.fullmatch(text, pos):
        raise InputError(where, f"is not a Python dict literal {{number: number, ...}} (at character {pos}: "
                         f"{excerpt(text[pos:pos + 24])})", _CORRUPT)
    return value


# --- restricted pickles ---------------------------------------------------------------------------------

def _plain_numeric(dtype) -> bool:
    """A numeric dtype without fields or sub-arrays: what a pickled numpy number may be (a BUILD opcode can give a
    dtype state after it is made, so the dtype is checked again where it is used)."""
    return (isinstance(dtype, np.dtype) and dtype.kind in "biuf" and dtype.fields is None and dtype.subdtype is None
            and dtype.itemsize <= 16)


def _numeric_dtype(obj, align=False, copy=False):
    """numpy.dtype as the pickle calls it ("i8", False, True), refusing object and other non-numeric dtypes. Always a
    copy: the pickle's BUILD opcode then sets its state, which must never reach numpy's shared int64 dtype."""
    if not isinstance(obj, str) or len(obj) > 8:
        raise pickle.UnpicklingError(f"dtype {excerpt(obj)} is not a numeric type code")
    dtype = np.dtype(obj, align=bool(align), copy=True)
    if not _plain_numeric(dtype):
        raise pickle.UnpicklingError(f"dtype {dtype} is not numeric")
    return dtype


def _numeric_scalar(dtype, data=b""):
    """numpy's scalar reconstructor (`numpy.core.multiarray.scalar`), for numeric dtypes only."""
    if not _plain_numeric(dtype) or not isinstance(data, bytes) or len(data) not in (0, dtype.itemsize):
        raise pickle.UnpicklingError("only numeric numpy scalars are allowed")
    return np.frombuffer(data, dtype=dtype, count=1)[0] if data else dtype.type(0)


_ALLOWED_GLOBALS = {
    ("collections", "Counter"): collections.Counter,
    ("numpy", "dtype"): _numeric_dtype,
    ("numpy.core.multiarray", "scalar"): _numeric_scalar,   # numpy 1.x pickles
    ("numpy._core.multiarray", "scalar"): _numeric_scalar,  # numpy 2.x pickles
}


class _CounterUnpickler(pickle._Unpickler):
    """Python's own (pure-Python) unpickler, restricted. Not the C one: it allocates what a file claims before
    reading it (a BYTEARRAY8 of 2^60 bytes, a memo array sized by the largest LONG_BINPUT index), so a few
    bytes could reserve gigabytes; here the memo is a dict and every read is of bytes the file holds. Protocol 5's
    out-of-band buffer opcodes, which the Python one also sizes from the claim, are refused (no Counter pickle
    uses them). About a microsecond per opcode: OLMoE's files take milliseconds."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def _refuse_buffer(self):
        raise pickle.UnpicklingError("refused a protocol 5 buffer opcode (Counter pickles have none)")

    for _opcode in (pickle.BYTEARRAY8, pickle.NEXT_BUFFER, pickle.READONLY_BUFFER):
        dispatch[_opcode[0]] = _refuse_buffer
    del _opcode

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused {module[:60]}.{name[:60]} (only Counter and numpy numbers are "
                                         "allowed)") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refused a persistent id")


def load_counter_pickle(source: Source) -> tuple[list[dict], int]:
    """(a pickled list of Counters {expert id: count} as plain dicts, the file's size in bytes): OLMoE's
    expert_counts files, restricted unpickling. Expert ids are whole numbers >= 0 (int or numpy integers), counts
    numbers in 0..MAX_COUNT; how large the ids may be is the caller's to bound.

    A Counter may appear many times in the list (each time a 2-byte memo reference): each distinct one is checked
    and copied once, and its repeats share that copy, so the work and memory stay proportional to the file.
    Entries are read through dict's own methods: a pickle may set instance attributes (BUILD) that shadow
    Counter's."""
    where = source.name
    fix = "pass an OLMoE expert_counts .pkl (a list of Counter per layer), or JSON statistics"
    data = source.read_bytes("a pickle of expert Counters", "pass a readable .pkl file")
    try:
        value = _CounterUnpickler(io.BytesIO(data)).load()
    except Exception as e:  # noqa: BLE001 - a corrupt pickle fails in many ways (struct, Overflow, System, Memory...)
        raise InputError(where, f"not a pickle of expert Counters: {type(e).__name__}: {str(e)[:120]}", fix) from None
    if type(value) is not list or not value or not all(isinstance(c, collections.Counter) for c in value):
        raise InputError(where, f"holds {excerpt(value)}, not a list of Counter per layer", fix)
    plain: dict[int, dict] = {}
    for i, counter in enumerate(value):
        if id(counter) in plain:
            continue
        entries = plain[id(counter)] = dict(dict.items(counter))
        for expert, count in entries.items():
            whole_id = isinstance(expert, (int, np.integer)) and not isinstance(expert, (bool, np.bool_)) \
                and expert >= 0
            if not whole_id or isinstance(count, (bool, np.bool_)) \
                    or not isinstance(count, (int, float, np.integer, np.floating)) or not 0 <= count <= MAX_COUNT:
                raise InputError(f"{where}: layer entry {i}", f"{excerpt(expert)}: {excerpt(count)} is not expert id: "
                                 f"count (ids whole numbers >= 0, counts in 0..{MAX_COUNT:g})", fix)
    return [plain[id(c)] for c in value], len(data)


# --- safetensors ----------------------------------------------------------------------------------------

_SAFETENSORS_DTYPES = {"U8": "<u1", "I8": "<i1", "U16": "<u2", "I16": "<i2", "U32": "<u4", "I32": "<i4",
                       "U64": "<u8", "I64": "<i8", "F16": "<f2", "F32": "<f4", "F64": "<f8", "BF16": "<u2"}
_SAFETENSORS_MAX_DIMS = 8  # the statistics are 1-D; numpy refuses over 64


def read_safetensors(source: Source) -> dict[str, np.ndarray]:
    """Every tensor of a .safetensors file as a numpy array (BF16 widened to float32). Each tensor's shape must
    match the bytes its offsets span, so no array is larger than the file (twice it for BF16)."""
    where = source.name
    data = source.read_bytes("safetensors", "pass a readable .safetensors file")
    if len(data) < 8:
        raise InputError(where, f"is {len(data)} bytes, shorter than a safetensors header", _CORRUPT)
    (header_bytes,) = struct.unpack("<Q", data[:8])
    if header_bytes > len(data) - 8:
        raise InputError(where, f"header claims {header_bytes} bytes, the file has {len(data) - 8} after it",
                         "the file is truncated or not safetensors; fetch it again")
    try:
        text = data[8:8 + header_bytes].decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(where, f"safetensors header is not UTF-8 JSON: {e}", _CORRUPT) from None
    header = parse_json(f"{where}: safetensors header", text)
    if not isinstance(header, dict):
        raise InputError(where, "safetensors header is not a JSON object", _CORRUPT)
    buffer = memoryview(data)[8 + header_bytes:]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        at = f"{where}: tensor {excerpt(name)}"
        try:
            dtype = np.dtype(_SAFETENSORS_DTYPES[info["dtype"]])
            shape = tuple(info["shape"])
            begin, end = info["data_offsets"]
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(at, f"has an unreadable or unsupported entry {excerpt(info)}",
                             f"dtypes read: {', '.join(_SAFETENSORS_DTYPES)}") from e
        numbers = (begin, end, *shape)
        if len(shape) > _SAFETENSORS_MAX_DIMS or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                                                          for n in numbers):
            raise InputError(at, f"shape {excerpt(list(shape))} or offsets {excerpt([begin, end])} are not whole "
                             f"numbers >= 0 (at most {_SAFETENSORS_MAX_DIMS} dimensions)", _CORRUPT)
        # math.prod on Python ints: a claimed [2**32, 2**32] must not wrap to 0 as int64 would
        if not begin <= end <= len(buffer) or end - begin != math.prod(shape) * dtype.itemsize:
            raise InputError(at, f"offsets {begin}..{end} do not hold {excerpt(list(shape))} x {info['dtype']} "
                             f"within the {len(buffer)} data bytes", "the file is truncated or corrupt; fetch it again")
        array = np.frombuffer(buffer[begin:end], dtype=dtype).reshape(shape)
        if info["dtype"] == "BF16":  # bfloat16 is the top half of a float32
            array = (array.astype(np.uint32) << 16).view(np.float32)
        tensors[name] = array
    return tensors


# --- PyTorch dumps --------------------------------------------------------------------------------------

def load_torch_weights_only(source: Source) -> tuple[Any, int]:
    """(a torch.save file through torch.load(weights_only=True) on the CPU, the file's size in bytes); tensors
    stay torch tensors.

    PyTorch's weights_only unpickler admits only tensors, containers and primitives, so a dump cannot run
    code. Without PyTorch installed the file is refused (plain pickle is never used). Only the zip format
    torch.save has written since PyTorch 1.6 is read, and only when its records together are no larger than
    the file: PyTorch allocates each record at the size the zip directory claims before reading it. A tensor
    may still claim more elements than its storage holds (stride 0): its reader checks numel before use.
    """
    where = source.name
    try:
        import torch
    except ImportError as e:
        raise InputError(where, "is a PyTorch dump, and reading it safely needs PyTorch "
                         "(torch.load(weights_only=True)), which is not installed",
                         "pip install 'moeplan[kernels]', or on the serving machine save its logical_count as "
                         "JSON: json.dump({'logical_count': t.sum(0).tolist()}, f)") from e
    data = source.read_bytes("a PyTorch dump", "pass a readable .pt file")
    fix = "pass the .pt file SGLang's expert-distribution recorder wrote, whole"
    try:
        claimed = sum(info.file_size for info in zipfile.ZipFile(io.BytesIO(data)).infolist())
    except Exception as e:  # noqa: BLE001 - zipfile raises BadZipFile, OSError, ValueError, ... on a bad file
        raise InputError(where, f"not a readable PyTorch dump of tensors (not a zip archive: {str(e)[:80]})",
                         fix) from None
    if claimed > len(data):
        raise InputError(where, f"not a readable PyTorch dump of tensors: its records claim {claimed:,} bytes, the "
                         f"file has {len(data):,}", fix)
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True), len(data)
    except Exception as e:  # torch raises RuntimeError, UnpicklingError, EOFError, ... on a bad file
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise InputError(where, f"not a readable PyTorch dump of tensors: {first_line[:160]}", fix) from e
