"""Routing statistics files, one reader per format: tokens routed to each (layer, logical expert), window by
window, in the recorded model's own shape. Safe parsers only (hwmodels.ingest.safe_load); never plain pickle.

`read_windows` tells the formats apart by content and name (../shared/data/SOURCES.md):
- aggregated load matrices, one window:
  - JSON `{"logical_count": [[count] * E] * L}`: deepseek-ai/EPLB's `weight` and SGLang's
    `--init-expert-location` statistics (e.g. the SGLang team's DeepSeek-V3 files, sgl-project/sglang #6017);
  - JSON `{"schema_version": 1, "model": "...", "loads": [[count] * E] * L}`: moeplan's own (save_counts);
  - CSV with the header `layer_id,expert_id,count`: SGLang's expert-distribution dump
    (sgl-project/sglang `python/sglang/srt/managers/expert_distribution.py`, `dump_record`;
    `/dump_expert_distribution_record`, one file per rank: `expert_distribution_rank{r}_timestamp{t}.csv`);
    repeated (layer, expert) rows add up, and layers absent from the file (dense layers) are zero rows;
- SGLang expert-distribution `.pt` dumps (sgl-project/sglang `python/sglang/srt/eplb/expert_distribution.py`,
  `_StatAccumulator.dump` and `_DetailAccumulator.dump`), what later SGLang versions write instead of the CSV,
  read through torch.load(weights_only=True):
  stat mode `{"rank", "logical_count": int [steps, L, E], ...}`, one window per recorded forward pass
  (all-zero buffer slots dropped; a circular buffer that wrapped is not in time order and the dump does
  not say where it wrapped); per_token mode `{"records": [{"forward_pass_id", "topk_ids_of_layer":
  int [L, T, K] physical expert ids (-1: none), ...}], "last_physical_to_logical_map": int [L, P]}`,
  mapped to logical experts with that map (the last one of the run, as SGLang names it);
- TensorRT-LLM expert statistics (NVIDIA/TensorRT-LLM `tensorrt_llm/_torch/expert_statistic.py`, read as
  its `examples/wide_ep/ep_load_balancer/utils.py` does): a folder with `meta_info.json`
  `{"num_experts", "num_experts_per_token"}` and `rank{r}.safetensors`, one bincount [E] per key
  `"{iteration}_{layer}"`, summed over ranks; one window per iteration (`*_raw.safetensors` are not read);
- per-token top-k decisions as JSON lines `{"problem_id", "layer", "token_idx", "experts": [a, b], ...}`
  (Mario928/speculative-moe `routing_data_collected/`, Mixtral-8x7B under vLLM), tokens in time order
  (problems in file order, then token_idx) grouped into windows of `tokens_per_window` tokens;
- pickled `[Counter(expert id -> count) per layer]` (allenai/OLMoE `scripts/run_routing_analysis.py`, which
  keeps layers 0, 7 and 15 only), read with a restricted Unpickler (hwmodels.ingest.safe_load).
Every layer keeps its row, dense layers (all zeros) included, so a placement's layer index is the
model's; the placement functions skip layers without load.
"""

from __future__ import annotations

import csv
import json
import re

import numpy as np

from hwmodels.errors import InputError
from hwmodels.ingest.safe_load import (
    json_document,
    json_lines,
    load_counter_pickle,
    load_torch_weights_only,
    read_safetensors,
)
from hwmodels.ingest.source import Source

LOADS_SCHEMA_VERSION = 1
JSONL_TOKENS_PER_WINDOW = 64  # per-token files without steps of their own: a decode batch of 64 sequences
AGGREGATED = "aggregated expert loads"  # the kind of a JSON or CSV load matrix
_CSV_HEADER = ["layer_id", "expert_id", "count"]
_TRTLLM_KEY = re.compile(r"(\d+)_(\d+)")


def read_windows(source: Source, tokens_per_window: int | None, num_experts: int | None):
    """(windows float [W, L_src, E_src], recorded top-k or None, kind, per-token?, note on the file's coverage).

    tokens_per_window: per-token formats only: None keeps the recording's own steps (SGLang forward passes;
      JSONL_TOKENS_PER_WINDOW for the JSON lines), a number regroups the tokens in time order.
    num_experts: the recorded model's expert count where the file does not say it (SGLang CSV, per-token
      JSON lines and .pt dumps, OLMoE pickles; default: highest expert id + 1).
    """
    if source.is_dir():
        if not source.child("meta_info.json").is_file():
            raise InputError(source.name, "is a folder without meta_info.json",
                             "pass a TensorRT-LLM expert-statistic folder, or a statistics file")
        windows, k = _trtllm(source)
        return windows, k, "TensorRT-LLM expert statistics", False, ""
    suffix = source.suffix
    if suffix in (".pt", ".pth"):
        return _sglang_torch(source, tokens_per_window, num_experts)
    if suffix in (".pkl", ".pickle"):
        return _counter_pickle(source, num_experts)
    if suffix == ".safetensors":
        raise InputError(source.name, "is one rank of TensorRT-LLM statistics",
                         "pass the folder that holds meta_info.json and every rank*.safetensors")
    text = source.read_text("routing statistics")
    first = next((line for line in text.splitlines() if line.strip()), "")
    if suffix == ".jsonl" or (first.lstrip().startswith("{") and _is_token_line(first)):
        windows, k = _per_token_jsonl(source, text, tokens_per_window or JSONL_TOKENS_PER_WINDOW, num_experts)
        return windows, k, f"per-token top-{k} decisions", True, ""
    return _aggregated(source.name, text, num_experts)[None], None, AGGREGATED, False, ""


# --- aggregated load matrices: EPLB / SGLang JSON, moeplan JSON, SGLang CSV ------------------------------

def _aggregated(name: str, text: str, num_experts: int | None) -> np.ndarray:
    """[L, E] float token counts (num_experts: for the CSV dump, whose experts with no tokens have no row)."""
    if text.lstrip()[:1] in ("{", "["):
        return _from_json(name, text)
    return _from_csv(name, text, num_experts)


def _from_json(name: str, text: str) -> np.ndarray:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{name} line {e.lineno} column {e.colno}", f"not valid JSON: {e.msg}") from e
    if not isinstance(doc, dict):
        raise InputError(name, f"holds a JSON {type(doc).__name__}, not an object",
                         "expected {\"logical_count\": [[...]]} or {\"schema_version\": 1, \"loads\": [[...]]}")
    if "logical_count" in doc:
        key = "logical_count"
    elif "loads" in doc:
        key = "loads"
        if doc.get("schema_version") != LOADS_SCHEMA_VERSION:
            raise InputError(f"{name}: schema_version", f"is {doc.get('schema_version')!r}, this moeplan reads "
                             f"{LOADS_SCHEMA_VERSION}", "write the file with this moeplan's save_counts")
    else:
        raise InputError(name, f"has neither 'logical_count' nor 'loads' (keys: {', '.join(map(str, doc))})",
                         "pass EPLB/SGLang logical_count JSON, moeplan loads JSON or an SGLang CSV dump")
    rows = doc[key]
    if not isinstance(rows, list) or not rows or not all(isinstance(r, list) for r in rows):
        raise InputError(f"{name}: {key}", "is not a list of per-layer lists", "expected [layers][experts] counts")
    width = len(rows[0])
    for i, r in enumerate(rows):
        if len(r) != width:
            raise InputError(f"{name}: {key}[{i}]", f"has {len(r)} experts, layer 0 has {width}",
                             "every layer needs one count per expert")
        for j, v in enumerate(r):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0:
                raise InputError(f"{name}: {key}[{i}][{j}]", f"is {v!r}, not a count", "counts are numbers >= 0")
    return _checked(name, np.array(rows, dtype=float))


def _from_csv(name: str, text: str, num_experts: int | None) -> np.ndarray:
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if [h.strip() for h in header or []] != _CSV_HEADER:
        raise InputError(f"{name} line 1", f"header is {header!r}, expected {','.join(_CSV_HEADER)}",
                         "pass an SGLang expert-distribution CSV, or JSON statistics")
    entries = []
    for line, fields in enumerate(reader, start=2):
        if not fields:
            continue
        try:
            layer, expert, count = int(fields[0]), int(fields[1]), float(fields[2])
        except (ValueError, IndexError) as e:
            raise InputError(f"{name} line {line}", f"{','.join(fields)!r} is not layer_id,expert_id,count") from e
        if layer < 0 or expert < 0 or not np.isfinite(count) or count < 0:
            raise InputError(f"{name} line {line}", f"{','.join(fields)!r} has a negative or non-finite value")
        if num_experts is not None and expert >= num_experts:
            raise InputError(f"{name} line {line}", f"expert {expert} >= num_experts {num_experts}")
        entries.append((layer, expert, count))
    if not entries:
        raise InputError(name, "has no count rows")
    ids = np.array([(layer, expert) for layer, expert, _ in entries])
    loads = np.zeros((ids[:, 0].max() + 1, num_experts or ids[:, 1].max() + 1))
    np.add.at(loads, (ids[:, 0], ids[:, 1]), [c for _, _, c in entries])
    return _checked(name, loads)


def _checked(name: str, loads: np.ndarray) -> np.ndarray:
    if loads.ndim != 2 or loads.shape[1] < 1 or not loads.any():
        raise InputError(name, f"holds no routed tokens (shape {loads.shape})", "pass statistics of a MoE model")
    return loads


# --- per-token decisions --------------------------------------------------------------------------------

def _is_token_line(line: str) -> bool:
    """Whether a first line is a whole JSON object of one routing decision (a JSON-lines file)."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        return False
    return isinstance(row, dict) and "experts" in row


def _windows_from_choices(choices: np.ndarray, num_experts: int, tokens_per_window: int) -> np.ndarray:
    """choices: int [T, L, K] expert ids in time order, -1 where a token has no decision at a layer
    -> [ceil(T / tokens_per_window), L, E] counts."""
    num_tokens, num_layers, _ = choices.shape
    num_windows = -(-num_tokens // tokens_per_window)
    window = np.broadcast_to((np.arange(num_tokens) // tokens_per_window)[:, None, None], choices.shape)
    layer = np.broadcast_to(np.arange(num_layers)[None, :, None], choices.shape)
    valid = choices >= 0
    flat = ((window[valid] * num_layers + layer[valid]) * num_experts + choices[valid]).astype(np.int64)
    counts = np.bincount(flat, minlength=num_windows * num_layers * num_experts)
    return counts.reshape(num_windows, num_layers, num_experts).astype(float)


def _experts_of(ids: np.ndarray, source_num_experts: int | None, where: str) -> int:
    """The source expert count: source_num_experts (checked against the ids) or highest id + 1."""
    highest = int(ids.max()) if ids.size else -1
    if highest < 0:
        raise InputError(where, "holds no routed tokens", "pass routing decisions of a MoE model")
    if source_num_experts is not None and highest >= source_num_experts:
        raise InputError(where, f"routes to expert {highest} >= source_num_experts {source_num_experts}",
                         "pass the recorded model's expert count")
    return source_num_experts or highest + 1


def _per_token_jsonl(source: Source, text: str, tokens_per_window: int, source_num_experts):
    problems: dict = {}
    keys, layers, experts = [], [], []
    k = None
    for line_no, row in json_lines(source.name, text):
        where = f"{source.name} line {line_no}"
        missing = [f for f in ("problem_id", "layer", "token_idx", "experts") if f not in row]
        if missing:
            raise InputError(where, f"has no {', '.join(missing)}",
                             "per-token rows hold problem_id, layer, token_idx and experts")
        layer, token, ids = row["layer"], row["token_idx"], row["experts"]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (layer, token)):
            raise InputError(where, f"layer {layer!r} or token_idx {token!r} is not a whole number >= 0")
        if not isinstance(ids, list) or not ids or not all(isinstance(e, int) and not isinstance(e, bool) and e >= 0
                                                           for e in ids):
            raise InputError(where, f"experts is {ids!r}, not a list of expert ids")
        if k is None:
            k = len(ids)
        if len(ids) != k or len(set(ids)) != k:
            raise InputError(where, f"routes to {ids!r}; earlier rows route to {k} distinct experts")
        problem = row["problem_id"]
        if not isinstance(problem, (int, str)):
            raise InputError(where, f"problem_id is {problem!r}, not a number or string")
        keys.append((problems.setdefault(problem, len(problems)), token))
        layers.append(layer)
        experts.append(ids)
    if not keys:
        raise InputError(source.name, "holds no routing decisions")
    # Time order: problems as the file first meets them, then token_idx within a problem.
    unique, token_of_row = np.unique(np.array(keys), axis=0, return_inverse=True)
    token_of_row = token_of_row.reshape(-1)
    layers, experts = np.array(layers), np.array(experts)
    choices = np.full((len(unique), layers.max() + 1, k), -1, dtype=np.int64)
    duplicate = np.nonzero(np.bincount(token_of_row * choices.shape[1] + layers) > 1)[0]
    if len(duplicate):
        first = np.nonzero(token_of_row * choices.shape[1] + layers == duplicate[0])[0][1]
        raise InputError(f"{source.name} line {_line_no(text, first)}", "repeats a (problem, token, layer) seen before")
    choices[token_of_row, layers] = experts
    num_experts = _experts_of(experts, source_num_experts, source.name)
    return _windows_from_choices(choices, num_experts, tokens_per_window), k


def _line_no(text: str, row_index: int) -> int:
    """1-based line of the row_index-th non-blank line."""
    lines = [i for i, line in enumerate(text.splitlines(), start=1) if line.strip()]
    return lines[row_index]


# --- SGLang .pt dumps -----------------------------------------------------------------------------------

def _array(value, where: str, ndim: tuple[int, ...]) -> np.ndarray:
    """A torch tensor (or nested list) of numbers as a numpy array with one of the allowed ranks."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    try:
        array = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as e:
        raise InputError(where, f"is a {type(value).__name__}, not a tensor of numbers") from e
    if array.ndim not in ndim or not np.isfinite(array).all():
        raise InputError(where, f"has shape {array.shape} or non-finite values, expected {' or '.join(f'{n}-D' for n in ndim)}")
    return array


def _sglang_torch(source: Source, tokens_per_window, source_num_experts):
    path = source.name
    doc = load_torch_weights_only(source)
    if not isinstance(doc, dict) or not ({"logical_count", "records"} & set(doc)):
        keys = ", ".join(map(str, doc)) if isinstance(doc, dict) else type(doc).__name__
        raise InputError(path, f"is not an SGLang expert-distribution dump (holds {keys})",
                         "pass the .pt file of expert_distribution_recorder_mode stat or per_token")
    if "logical_count" in doc:
        counts = _array(doc["logical_count"], f"{path}: logical_count", (2, 3))
        if (counts < 0).any():
            raise InputError(f"{path}: logical_count", "has negative counts")
        counts = counts[None] if counts.ndim == 2 else counts[counts.sum(axis=(1, 2)) > 0]
        if not counts.any():
            raise InputError(f"{path}: logical_count", "holds no routed tokens")
        return counts, None, "SGLang expert-distribution dump, stat mode", False, ""
    records, p2l = doc["records"], doc.get("last_physical_to_logical_map")
    if not isinstance(records, list) or not all(isinstance(r, dict) and "topk_ids_of_layer" in r for r in records):
        raise InputError(f"{path}: records", "is not a list of per-pass records with topk_ids_of_layer")
    if p2l is None:
        raise InputError(path, "has no last_physical_to_logical_map", "pass the whole per_token dump")
    p2l = _array(p2l, f"{path}: last_physical_to_logical_map", (2,)).astype(np.int64)
    passes = []
    for i, record in sorted(enumerate(records), key=lambda r: (r[1].get("forward_pass_id", r[0]), r[0])):
        where = f"{path}: records[{i}].topk_ids_of_layer"
        physical = _array(record["topk_ids_of_layer"], where, (3,)).astype(np.int64)  # [L, T, K]
        if physical.shape[0] != p2l.shape[0] or physical.max(initial=-1) >= p2l.shape[1] or (physical < -1).any():
            raise InputError(where, f"shape {physical.shape} or ids do not fit the {p2l.shape} physical-to-logical map")
        logical = np.where(physical >= 0, p2l[np.arange(p2l.shape[0])[:, None, None], np.maximum(physical, 0)], -1)
        if logical.shape[1]:
            passes.append(logical.transpose(1, 0, 2))  # [T, L, K]
    if not passes or all((p < 0).all() for p in passes):
        raise InputError(path, "holds no routed tokens")
    num_experts = _experts_of(np.concatenate([p.reshape(-1) for p in passes]), source_num_experts, path)
    k = max(int((p >= 0).sum(axis=2).max()) for p in passes)
    if tokens_per_window is None:
        windows = np.concatenate([_windows_from_choices(p, num_experts, len(p)) for p in passes])
    else:
        windows = _windows_from_choices(np.concatenate(passes), num_experts, tokens_per_window)
    return windows, k, f"SGLang expert-distribution dump, per_token mode, top-{k}", True, ""


# --- TensorRT-LLM expert statistics ---------------------------------------------------------------------

def _trtllm(folder: Source) -> tuple[np.ndarray, int]:
    meta_file = folder.child("meta_info.json")
    meta = json_document(meta_file.name, meta_file.read_text("TensorRT-LLM meta_info.json"))
    try:
        num_experts, k = int(meta["num_experts"]), int(meta["num_experts_per_token"])
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(meta_file.name, f"has no whole num_experts and num_experts_per_token ({meta!r:.80})",
                         "pass the meta_info.json TensorRT-LLM wrote beside its rank files") from e
    if num_experts < 1 or not 1 <= k <= num_experts:
        raise InputError(meta_file.name, f"num_experts {num_experts}, num_experts_per_token {k} do not fit")
    ranks = [folder.child(n) for n in folder.list("rank*.safetensors") if not n.endswith("_raw.safetensors")]
    if not ranks:
        raise InputError(folder.name, "has no rank*.safetensors", "pass the whole EXPERT_STATISTIC_PATH folder")
    counts: dict[tuple[int, int], np.ndarray] = {}
    for rank_file in ranks:
        for key, counts_of_key in read_safetensors(rank_file).items():
            match = _TRTLLM_KEY.fullmatch(key)
            if not match or counts_of_key.shape != (num_experts,) or (counts_of_key < 0).any():
                raise InputError(f"{rank_file.name}: tensor {key!r}", f"is not an '<iteration>_<layer>' bincount of "
                                 f"{num_experts} experts (shape {counts_of_key.shape})")
            at = (int(match[1]), int(match[2]))
            counts[at] = counts.get(at, 0) + counts_of_key.astype(float)
    if not counts:
        raise InputError(folder.name, "holds no routed tokens")
    iterations = sorted({i for i, _ in counts})
    windows = np.zeros((len(iterations), max(layer for _, layer in counts) + 1, num_experts))
    row = {it: n for n, it in enumerate(iterations)}
    for (it, layer), value in counts.items():
        windows[row[it], layer] = value
    return windows, k


# --- OLMoE Counter pickles ------------------------------------------------------------------------------

def _counter_pickle(source: Source, source_num_experts):
    counters = load_counter_pickle(source)
    ids = np.array([int(e) for c in counters for e in c], dtype=np.int64)
    num_experts = _experts_of(ids, source_num_experts, source.name)
    loads = np.zeros((len(counters), num_experts))
    for layer, counter in enumerate(counters):
        for expert, count in counter.items():
            loads[layer, int(expert)] += float(count)
    coverage = (f"{source.filename} holds {len(counters)} sampled layers (allenai/OLMoE's analysis keeps layers 0, 7, 15)"
                if len(counters) == 3 else "")
    return loads[None], None, "pickled expert Counters", False, coverage
