"""Per-token routing decisions into windows of counts: the JSON-lines files and SGLang's `.pt` dumps
(hwmodels.ingest.routing_formats lists the formats and their sources).

A decision is (token in time order, layer, logical expert). The windows are counted straight from the list of
decisions (np.bincount), never through a dense [tokens, layers, top-k] array: a file's largest layer id and
token count multiply there. The count array's size [windows, layers, experts] is checked (bounds.Sizes.check)
before it is made. Peak memory of the JSON lines: the file's text, some 40 bytes per decision (typed arrays of
the ids as parsed, then int64 arrays to sort them), and the count array (float64, at most 8 counts per byte of
file unless the model vouches for more): about 70 bytes per byte of file at most.
"""

from __future__ import annotations

import math
from array import array

import numpy as np

from hwmodels.errors import InputError, excerpt
from hwmodels.ingest.bounds import (
    CELLS_FIX,
    CELLS_PER_BYTE,
    LAYER_FIX,
    MAX_COUNT,
    MAX_LAYERS,
    MAX_TOKENS,
    MIN_CELLS,
    Sizes,
    bounded,
    check_cells,
)
from hwmodels.ingest.safe_load import json_lines, load_torch_weights_only
from hwmodels.ingest.source import Source

_ROW_FIX = "per-token rows hold problem_id, layer, token_idx and experts (a list of distinct expert ids)"


def windows_of(window: np.ndarray, layer: np.ndarray, expert: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """window, layer, expert: int64 [N], one routing decision each -> float [W, L, E] counts (shape), each
    decision counted once. The caller has checked shape (Sizes.check), so the flat index fits int64."""
    num_windows, num_layers, num_experts = shape
    flat = (window * num_layers + layer) * num_experts + expert
    counts = np.bincount(flat, weights=np.ones(len(flat)), minlength=num_windows * num_layers * num_experts)
    return counts.reshape(shape)


# --- JSON lines -----------------------------------------------------------------------------------------

def per_token_jsonl(source: Source, text: str, tokens_per_window: int, sizes: Sizes) -> tuple[np.ndarray, int]:
    """([W, L, E] counts, top-k) of a per-token JSON-lines file: tokens in time order (problems as the file first
    meets them, then token_idx), grouped tokens_per_window at a time."""
    problems: dict = {}
    keys, layers, experts, line_of_row = array("q"), array("q"), array("q"), array("q")
    k = None
    top_layer = top_expert = (-1, 0)  # (id, line)
    for line_no, row in json_lines(source.name, text):
        where = f"{source.name} line {line_no}"
        missing = [f for f in ("problem_id", "layer", "token_idx", "experts") if f not in row]
        if missing:
            raise InputError(where, f"has no {', '.join(missing)}", _ROW_FIX)
        layer, token, ids, problem = row["layer"], row["token_idx"], row["experts"], row["problem_id"]
        for value, what, upper in ((layer, "layer", MAX_LAYERS - 1), (token, "token_idx", MAX_TOKENS - 1)):
            if type(value) is not int:  # JSON's whole numbers only: 1.0 is not a layer
                raise InputError(where, f"{what} is {excerpt(value)}, not a whole number >= 0", _ROW_FIX)
            bounded(value, where, what, upper, LAYER_FIX if what == "layer" else _ROW_FIX, whole=True)
        if type(ids) is not list or not ids or not all(type(e) is int for e in ids):
            raise InputError(where, f"experts is {excerpt(ids)}, not a list of expert ids", _ROW_FIX)
        for e in ids:
            sizes.expert(e, where)
        if k is None:
            k = len(ids)
        if len(ids) != k or len(set(ids)) != k:
            raise InputError(where, f"routes to {excerpt(ids)}; earlier rows route to {k} distinct experts", _ROW_FIX)
        if type(problem) not in (int, str):
            raise InputError(where, f"problem_id is {excerpt(problem)}, not a number or string", _ROW_FIX)
        keys.append(problems.setdefault(problem, len(problems)) * MAX_TOKENS + token)  # < 2^31 x 10^8 < 2^63
        layers.append(layer)
        experts.extend(ids)
        line_of_row.append(line_no)
        top_layer, top_expert = max(top_layer, (layer, line_no)), max(top_expert, (max(ids), line_no))
    if not keys:
        raise InputError(source.name, "holds no routing decisions", "pass a file of per-token routing decisions")
    # 1. tokens in time order (np.unique sorts by problem, then token_idx)
    unique, token_of_row = np.unique(np.frombuffer(keys, dtype=np.int64), return_inverse=True)
    token_of_row = token_of_row.reshape(-1)
    layer_of_row = np.frombuffer(layers, dtype=np.int64)
    num_layers = top_layer[0] + 1
    # 2. a (token, layer) decided twice: its second row in file order (a stable sort keeps file order among equals)
    pair = token_of_row * num_layers + layer_of_row
    order = np.argsort(pair, kind="stable")
    repeated = np.nonzero(pair[order][1:] == pair[order][:-1])[0]
    if len(repeated):
        raise InputError(f"{source.name} line {line_of_row[order[repeated[0] + 1]]}",
                         "repeats a (problem, token, layer) seen before", "keep one decision per token and layer")
    # 3. the count array, its size checked before it is made
    num_experts = sizes.num_experts or top_expert[0] + 1
    shape = (-(-len(unique) // tokens_per_window), num_layers, num_experts)
    sizes.check(f"{source.name} line {max(top_layer, top_expert)[1]}", shape, len(text), CELLS_FIX)
    window = np.repeat(token_of_row // tokens_per_window, k)
    return windows_of(window, np.repeat(layer_of_row, k), np.frombuffer(experts, dtype=np.int64), shape), k


# --- SGLang .pt dumps -----------------------------------------------------------------------------------

def _array(value, where: str, ndim: tuple[int, ...], file_bytes: int, lower: float, upper: float) -> np.ndarray:
    """A torch tensor (or nested list) of numbers as a float numpy array with one of the allowed ranks, its values
    in lower..upper. Its element count is checked first: a tensor may claim more elements than its storage holds
    (stride 0), and a nested list may repeat one memo reference."""
    fix = "pass the .pt file SGLang's expert-distribution recorder wrote, whole"
    if hasattr(value, "detach"):
        check_cells(where, tuple(value.shape), file_bytes, fix, what="claims")
        value = value.detach().cpu().numpy()
    elif _nested_size(value, max(MIN_CELLS, CELLS_PER_BYTE * file_bytes)) > max(MIN_CELLS, CELLS_PER_BYTE * file_bytes):
        raise InputError(where, "is a nested list larger than the file could hold", fix)
    try:
        array_ = np.asarray(value, dtype=float)
    except (TypeError, ValueError, RecursionError) as e:
        raise InputError(where, f"is a {type(value).__name__}, not a tensor of numbers", fix) from e
    if array_.ndim not in ndim or not ((array_ >= lower) & (array_ <= upper)).all():
        raise InputError(where, f"has shape {array_.shape} or values outside {lower:g}..{upper:g} (or not finite), "
                         f"expected {' or '.join(f'{n}-D' for n in ndim)}", fix)
    return array_


def _nested_size(value, limit: int) -> int:
    """Containers and items in a nested list or tuple, counted up to just over limit (bounded work)."""
    seen, stack = 0, [value]
    while stack and seen <= limit:
        item = stack.pop()
        seen += 1
        if isinstance(item, (list, tuple)):
            stack.extend(item[:limit])
    return seen


def sglang_torch(source: Source, tokens_per_window: int | None, sizes: Sizes):
    """(windows, top-k, kind, per-token?, note) of an SGLang expert-distribution .pt dump (stat or per_token)."""
    path = source.name
    fix = "pass the .pt file of expert_distribution_recorder_mode stat or per_token"
    doc, file_bytes = load_torch_weights_only(source)
    if not isinstance(doc, dict) or not ({"logical_count", "records"} & set(doc)):
        keys = excerpt(list(doc)) if isinstance(doc, dict) else type(doc).__name__
        raise InputError(path, f"is not an SGLang expert-distribution dump (holds {keys})", fix)
    if "logical_count" in doc:
        counts = _array(doc["logical_count"], f"{path}: logical_count", (2, 3), file_bytes, 0, MAX_COUNT)
        counts = counts[None] if counts.ndim == 2 else counts[counts.sum(axis=(1, 2)) > 0]
        if not counts.any():
            raise InputError(f"{path}: logical_count", "holds no routed tokens", "pass statistics of a MoE model")
        return counts, None, "SGLang expert-distribution dump, stat mode", False, ""
    records, p2l = doc["records"], doc.get("last_physical_to_logical_map")
    if not isinstance(records, list) or not all(isinstance(r, dict) and "topk_ids_of_layer" in r for r in records):
        raise InputError(f"{path}: records", "is not a list of per-pass records with topk_ids_of_layer", fix)
    if p2l is None:
        raise InputError(path, "has no last_physical_to_logical_map", "pass the whole per_token dump")
    p2l = _array(p2l, f"{path}: last_physical_to_logical_map", (2,), file_bytes, -1, sizes.expert_limit - 1)
    p2l = p2l.astype(np.int64)
    passes, total, limit = [], 0, max(MIN_CELLS, CELLS_PER_BYTE * file_bytes)
    for i, record in sorted(enumerate(records), key=lambda r: (_pass_id(r[1], r[0]), r[0])):
        where = f"{path}: records[{i}].topk_ids_of_layer"
        ids = record["topk_ids_of_layer"]
        total += math.prod(ids.shape) if hasattr(ids, "detach") else _nested_size(ids, limit)
        if total > limit:  # one tensor in many records (memo references) is many passes
            raise InputError(where, f"the records up to here hold {total:,} ids, more than {limit:,} for a file of "
                             f"{file_bytes:,} bytes", fix)
        physical = _array(ids, where, (3,), file_bytes, -1, p2l.shape[1] - 1).astype(np.int64)  # [L, T, K]
        if physical.shape[0] != p2l.shape[0]:
            raise InputError(where, f"shape {physical.shape} does not fit the {p2l.shape} physical-to-logical map", fix)
        logical = np.where(physical >= 0, p2l[np.arange(p2l.shape[0])[:, None, None], np.maximum(physical, 0)], -1)
        if logical.shape[1]:
            passes.append(logical.transpose(1, 0, 2))  # [T, L, K]
    if not passes or all((p < 0).all() for p in passes):
        raise InputError(path, "holds no routed tokens", "pass a per_token dump of a run that routed tokens")
    k = max(int((p >= 0).sum(axis=2).max()) for p in passes)
    num_experts = sizes.num_experts or max(int(p.max()) for p in passes) + 1
    # decisions: (window, layer, expert) of every id >= 0; a window is one forward pass, or tokens_per_window tokens
    first_token = np.cumsum([0] + [len(p) for p in passes])
    token, layer, expert = (np.concatenate(parts) for parts in zip(*(_decisions(p, first_token[n])
                                                                      for n, p in enumerate(passes))))
    if tokens_per_window is None:
        window = np.searchsorted(first_token, token, side="right") - 1
        shape = (len(passes), p2l.shape[0], num_experts)
    else:
        window = token // tokens_per_window
        shape = (-(-int(first_token[-1]) // tokens_per_window), p2l.shape[0], num_experts)
    sizes.check(path, shape, file_bytes, CELLS_FIX)
    return windows_of(window, layer, expert, shape), k, f"SGLang expert-distribution dump, per_token mode, top-{k}", True, ""


def _pass_id(record: dict, index: int):
    """A record's forward_pass_id for ordering (its index where it has none, or a non-number)."""
    value = record.get("forward_pass_id", index)
    return value if type(value) is int else index


def _decisions(logical: np.ndarray, first_token: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(token, layer, expert) int64 of every decision (id >= 0) of one pass [T, L, K], tokens from first_token."""
    token, layer, _ = np.nonzero(logical >= 0)
    return token + first_token, layer, logical[logical >= 0]
