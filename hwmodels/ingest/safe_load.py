"""Safe readers for untrusted trace files: text, JSON lines, Python literals, safetensors, restricted pickles.

Nothing here executes code from a file. Every reader takes a `Source` (hwmodels.ingest.source: a path or
bytes in memory, read up to its size limit) or text already read from one, and `name`, what errors call the
file. Every failure is one `InputError` naming the file (and the line for text formats) and what to do,
never a traceback:
- text (Source.read_text, UTF-8) and JSON lines: parsed with `json`, errors carry the 1-based line number;
- Python literals (ServeGen's pdf strings): `ast.literal_eval`, which builds only literals;
- safetensors (TensorRT-LLM's expert statistics): read with numpy from the published layout
  (huggingface/safetensors README, "Format": 8-byte little-endian header size N, N bytes of JSON
  `{name: {"dtype", "shape", "data_offsets": [begin, end]}}` with optional `__metadata__`, then the
  little-endian, C-ordered bytes the offsets index);
- pickles of `collections.Counter` (allenai/OLMoE `scripts/run_routing_analysis.py`): a restricted
  Unpickler that resolves only `collections.Counter`, `numpy.dtype` and numpy's `scalar` (numpy 1 and 2
  spellings), and only numeric dtypes, so a crafted file cannot reach any other callable;
- PyTorch `.pt` dumps (SGLang's expert-distribution recorder): `torch.load(weights_only=True)`, PyTorch's
  own restricted unpickler (tensors, containers and primitives only), from an in-memory copy of the file;
  refused when PyTorch is absent.
"""

from __future__ import annotations

import ast
import collections
import io
import json
import pickle
import struct
from collections.abc import Iterator
from typing import Any

import numpy as np

from hwmodels.errors import InputError
from hwmodels.ingest.source import Source


def json_lines(name: str, text: str) -> Iterator[tuple[int, dict]]:
    """(line number, object) for every non-blank line; a broken or non-object line is an error naming it.

    A file cut off mid-line fails on that last line, so a truncated download is never read as shorter data.
    """
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{name} line {line_no}", f"not valid JSON ({e.msg} at column {e.colno})",
                             "the file is corrupt or truncated; fetch it again") from e
        if not isinstance(obj, dict):
            raise InputError(f"{name} line {line_no}", f"holds a JSON {type(obj).__name__}, not an object")
        yield line_no, obj


def json_document(name: str, text: str) -> Any:
    """A whole-file JSON document; a syntax error names its line."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{name} line {e.lineno}", f"not valid JSON ({e.msg} at column {e.colno})",
                         "the file is corrupt or truncated; fetch it again") from e


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


def literal_mapping(text: Any, where: str) -> dict:
    """A Python dict literal of numbers (ServeGen's `"{45: 0.0097, 46: 0.0117, ...}"`, maybe `"{}"`), via ast.literal_eval."""
    if not isinstance(text, str):
        raise InputError(where, f"is a {type(text).__name__}, not a string holding a Python dict literal")
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as e:
        raise InputError(where, f"is not a Python dict literal ({type(e).__name__}: {str(e)[:80]})",
                         "the file is corrupt or truncated; fetch it again") from e
    if not isinstance(value, dict):
        raise InputError(where, f"is a {type(value).__name__} literal, not a dict of value: probability")
    for key, prob in value.items():
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in (key, prob)):
            raise InputError(where, f"entry {key!r}: {prob!r} is not number: number")
    return value


# --- restricted pickles ---------------------------------------------------------------------------------

def _numeric_dtype(*args):
    """numpy.dtype as the pickle calls it, refusing object and other non-numeric dtypes."""
    dtype = np.dtype(*args)
    if dtype.kind not in "biuf":
        raise pickle.UnpicklingError(f"dtype {dtype} is not numeric")
    return dtype


def _numeric_scalar(dtype, data=b""):
    """numpy's scalar reconstructor (`numpy.core.multiarray.scalar`), for numeric dtypes only."""
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biuf" or not isinstance(data, bytes):
        raise pickle.UnpicklingError("only numeric numpy scalars are allowed")
    return np.frombuffer(data, dtype=dtype, count=1)[0] if data else dtype.type(0)


_ALLOWED_GLOBALS = {
    ("collections", "Counter"): collections.Counter,
    ("numpy", "dtype"): _numeric_dtype,
    ("numpy.core.multiarray", "scalar"): _numeric_scalar,   # numpy 1.x pickles
    ("numpy._core.multiarray", "scalar"): _numeric_scalar,  # numpy 2.x pickles
}


class _CounterUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused {module}.{name} (only Counter and numpy numbers are "
                                         "allowed)") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refused a persistent id")


def load_counter_pickle(source: Source) -> list[collections.Counter]:
    """A pickled list of Counters {expert id: count} (OLMoE's expert_counts files), restricted unpickling."""
    where = source.name
    data = source.read_bytes("a pickle of expert Counters", "pass a readable .pkl file")
    try:
        value = _CounterUnpickler(io.BytesIO(data)).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            struct.error, MemoryError, RecursionError) as e:
        raise InputError(where, f"not a pickle of expert Counters: {type(e).__name__}: {str(e)[:120]}",
                         "pass an OLMoE expert_counts .pkl (a list of Counter per layer), or JSON statistics") from e
    if not isinstance(value, list) or not value or not all(isinstance(c, collections.Counter) for c in value):
        raise InputError(where, f"holds a {type(value).__name__}, not a list of Counter per layer")
    for i, counter in enumerate(value):
        for expert, count in counter.items():
            if not (isinstance(expert, (int, np.integer)) and not isinstance(expert, bool) and expert >= 0
                    and isinstance(count, (int, float, np.integer, np.floating)) and np.isfinite(count) and count >= 0):
                raise InputError(f"{where}: layer entry {i}", f"{expert!r}: {count!r} is not expert id: count")
    return value


# --- safetensors ----------------------------------------------------------------------------------------

_SAFETENSORS_DTYPES = {"U8": "<u1", "I8": "<i1", "U16": "<u2", "I16": "<i2", "U32": "<u4", "I32": "<i4",
                       "U64": "<u8", "I64": "<i8", "F16": "<f2", "F32": "<f4", "F64": "<f8", "BF16": "<u2"}


def read_safetensors(source: Source) -> dict[str, np.ndarray]:
    """Every tensor of a .safetensors file as a numpy array (BF16 widened to float32)."""
    where = source.name
    data = source.read_bytes("safetensors", "pass a readable .safetensors file")
    if len(data) < 8:
        raise InputError(where, f"is {len(data)} bytes, shorter than a safetensors header",
                         "the file is truncated; fetch it again")
    (header_bytes,) = struct.unpack("<Q", data[:8])
    if header_bytes > len(data) - 8:
        raise InputError(where, f"header claims {header_bytes} bytes, the file has {len(data) - 8} after it",
                         "the file is truncated or not safetensors; fetch it again")
    try:
        header = json.loads(data[8:8 + header_bytes].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(where, f"safetensors header is not JSON: {e}", "the file is corrupt; fetch it again") from e
    if not isinstance(header, dict):
        raise InputError(where, "safetensors header is not a JSON object")
    buffer = data[8 + header_bytes:]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = np.dtype(_SAFETENSORS_DTYPES[info["dtype"]])
            shape = tuple(int(n) for n in info["shape"])
            begin, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"{where}: tensor {name!r}", f"has an unreadable or unsupported entry {info!r}",
                             f"dtypes read: {', '.join(_SAFETENSORS_DTYPES)}") from e
        if not 0 <= begin <= end <= len(buffer) or end - begin != int(np.prod(shape)) * dtype.itemsize:
            raise InputError(f"{where}: tensor {name!r}", f"offsets {begin}..{end} do not hold {shape} x {info['dtype']} "
                             f"within the {len(buffer)} data bytes", "the file is truncated or corrupt; fetch it again")
        array = np.frombuffer(buffer[begin:end], dtype=dtype).reshape(shape)
        if info["dtype"] == "BF16":  # bfloat16 is the top half of a float32
            array = (array.astype(np.uint32) << 16).view(np.float32)
        tensors[name] = array
    return tensors


# --- PyTorch dumps --------------------------------------------------------------------------------------

def load_torch_weights_only(source: Source) -> Any:
    """A torch.save file through torch.load(weights_only=True) on the CPU; tensors stay torch tensors.

    PyTorch's weights_only unpickler admits only tensors, containers and primitives, so a dump cannot run
    code. Without PyTorch installed the file is refused (plain pickle is never used).
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
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises RuntimeError, UnpicklingError, EOFError, ... on a bad file
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise InputError(where, f"not a readable PyTorch dump of tensors: {first_line[:160]}",
                         "pass the .pt file SGLang's expert-distribution recorder wrote, whole") from e
