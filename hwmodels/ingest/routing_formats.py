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

Sizes (hwmodels.ingest.bounds): a load matrix in JSON holds every count it has, so its size is the file's. The
other formats name layers and experts by id, and the count array's size follows the largest ids: an id at or over
the caller's expert count, MAX_EXPERTS or MAX_LAYERS is an error naming its line (or tensor), and the array may
hold at most what `bounds.check_cells` allows: 8 counts per byte of file, at least 2^20, or what the model the
caller maps the statistics onto needs. Counts are numbers in 0..MAX_COUNT. Peak memory (traced): at most about
70 bytes per byte of file where ids spread counts over the largest array allowed (64 of them the float64 counts),
20 to 35 per byte where they are dense, and 8 MiB plus parsing for a small file; `.pt` dumps as PyTorch holds
them, plus the same.
"""

from __future__ import annotations

import re
from array import array

import numpy as np

from hwmodels.errors import InputError, excerpt
from hwmodels.ingest.bounds import (
    CELLS_FIX,
    LAYER_FIX,
    MAX_COUNT,
    MAX_EXPERTS,
    MAX_LAYERS,
    Sizes,
    bounded,
    bounded_text,
)
from hwmodels.ingest.routing_tokens import per_token_jsonl, sglang_torch
from hwmodels.ingest.safe_load import (
    csv_rows,
    first_line,
    json_document,
    load_counter_pickle,
    parse_json,
    read_safetensors,
)
from hwmodels.ingest.source import Source

LOADS_SCHEMA_VERSION = 1
JSONL_TOKENS_PER_WINDOW = 64  # per-token files without steps of their own: a decode batch of 64 sequences
AGGREGATED = "aggregated expert loads"  # the kind of a JSON or CSV load matrix
_CSV_HEADER = ["layer_id", "expert_id", "count"]
_TRTLLM_KEY = re.compile(r"([0-9]{1,18})_([0-9]{1,18})")  # "<iteration>_<layer>"; longer is no id we read
_CORRUPT = "the file is corrupt or truncated; fetch it again"


def read_windows(source: Source, tokens_per_window: int | None, num_experts: int | None, model_cells: int = 0):
    """(windows float [W, L_src, E_src], recorded top-k or None, kind, per-token?, note on the file's coverage).

    tokens_per_window: per-token formats only: None keeps the recording's own steps (SGLang forward passes;
      JSONL_TOKENS_PER_WINDOW for the JSON lines), a number regroups the tokens in time order.
    num_experts: the recorded model's expert count where the file does not say it (SGLang CSV, per-token
      JSON lines and .pt dumps, OLMoE pickles; default: highest expert id + 1); a higher id is an error.
    model_cells: layers x experts of the model the caller maps the statistics onto, 0 when none (bounds.Sizes).
    """
    sizes = Sizes(num_experts, model_cells)
    if source.is_dir():
        if not source.child("meta_info.json").is_file():
            raise InputError(source.name, "is a folder without meta_info.json",
                             "pass a TensorRT-LLM expert-statistic folder, or a statistics file")
        windows, k = _trtllm(source, sizes)
        return windows, k, "TensorRT-LLM expert statistics", False, ""
    suffix = source.suffix
    if suffix in (".pt", ".pth"):
        return sglang_torch(source, tokens_per_window, sizes)
    if suffix in (".pkl", ".pickle"):
        return _counter_pickle(source, sizes)
    if suffix == ".safetensors":
        raise InputError(source.name, "is one rank of TensorRT-LLM statistics",
                         "pass the folder that holds meta_info.json and every rank*.safetensors")
    text = source.read_text("routing statistics")
    first = first_line(text)
    if suffix == ".jsonl" or (first.lstrip().startswith("{") and _is_token_line(first)):
        windows, k = per_token_jsonl(source, text, tokens_per_window or JSONL_TOKENS_PER_WINDOW, sizes)
        return windows, k, f"per-token top-{k} decisions", True, ""
    return _aggregated(source.name, text, sizes)[None], None, AGGREGATED, False, ""


def _is_token_line(line: str) -> bool:
    """Whether a first line is a whole JSON object of one routing decision (a JSON-lines file)."""
    try:
        row = parse_json("", line, 1)
    except InputError:
        return False
    return isinstance(row, dict) and "experts" in row


# --- aggregated load matrices: EPLB / SGLang JSON, moeplan JSON, SGLang CSV ------------------------------

def _aggregated(name: str, text: str, sizes: Sizes) -> np.ndarray:
    """[L, E] float token counts (sizes.num_experts: for the CSV dump, whose experts with no tokens have no row)."""
    if text.lstrip()[:1] in ("{", "["):
        return _from_json(name, text)
    return _from_csv(name, text, sizes)


def _from_json(name: str, text: str) -> np.ndarray:
    """A JSON load matrix: its size is what the file holds (every count is written out)."""
    doc = json_document(name, text)
    formats = "expected {\"logical_count\": [[...]]} or {\"schema_version\": 1, \"loads\": [[...]]}"
    if not isinstance(doc, dict):
        raise InputError(name, f"holds a JSON {type(doc).__name__}, not an object", formats)
    if "logical_count" in doc:
        key = "logical_count"
    elif "loads" in doc:
        key = "loads"
        if doc.get("schema_version") != LOADS_SCHEMA_VERSION:
            raise InputError(f"{name}: schema_version", f"is {excerpt(doc.get('schema_version'))}, this moeplan reads "
                             f"{LOADS_SCHEMA_VERSION}", "write the file with this moeplan's save_counts")
    else:
        raise InputError(name, f"has neither 'logical_count' nor 'loads' (keys: {excerpt(list(doc))})",
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
            if (type(v) is not int and type(v) is not float) or not 0 <= v <= MAX_COUNT:  # NaN fails too
                bounded(v, f"{name}: {key}[{i}][{j}]", "count", MAX_COUNT, "counts are numbers in 0..1e18")
    return _checked(name, np.array(rows, dtype=float))


def _from_csv(name: str, text: str, sizes: Sizes) -> np.ndarray:
    """SGLang's CSV dump: the largest layer and expert ids set the size, checked before the array is made.
    Rows are kept in typed arrays (24 bytes a row; a row is at least 6 bytes of text)."""
    rows = csv_rows(name, text)
    _, header = next(rows, (1, None))
    if [h.strip() for h in header or []] != _CSV_HEADER:
        raise InputError(f"{name} line 1", f"header is {excerpt(header)}, expected {','.join(_CSV_HEADER)}",
                         "pass an SGLang expert-distribution CSV, or JSON statistics")
    layers, experts, counts = array("q"), array("q"), array("d")
    top_layer = top_expert = (-1, 0)  # (id, line)
    for line, fields in rows:
        if not fields:
            continue
        where = f"{name} line {line}"
        if len(fields) < 3:
            raise InputError(where, f"{excerpt(','.join(fields))} is not layer_id,expert_id,count", _CORRUPT)
        layer = bounded_text(fields[0], where, "layer_id", MAX_LAYERS - 1, LAYER_FIX, whole=True)
        expert = sizes.expert(_id_text(fields[1], where, "expert_id"), where, "expert_id")
        counts.append(bounded_text(fields[2], where, "count", MAX_COUNT, "counts are numbers in 0..1e18"))
        layers.append(layer)
        experts.append(expert)
        top_layer, top_expert = max(top_layer, (layer, line)), max(top_expert, (expert, line))
    if not counts:
        raise InputError(name, "has no count rows", "pass a dump with at least one layer_id,expert_id,count row")
    shape = (top_layer[0] + 1, sizes.num_experts or top_expert[0] + 1)
    sizes.check(f"{name} line {max(top_layer, top_expert)[1]}", (1, *shape), len(text), CELLS_FIX)
    loads = np.zeros(shape)
    np.add.at(loads, (np.frombuffer(layers, dtype=np.int64), np.frombuffer(experts, dtype=np.int64)),
              np.frombuffer(counts, dtype=float))
    return _checked(name, loads)


def _id_text(text: str, where: str, what: str) -> int:
    """A whole number >= 0 written in a CSV field, for the caller's own bound ("x", "inf" are one InputError)."""
    return bounded_text(text, where, what, 2**63 - 1, _CORRUPT, whole=True)


def _checked(name: str, loads: np.ndarray) -> np.ndarray:
    if loads.ndim != 2 or loads.shape[1] < 1 or not loads.any():
        raise InputError(name, f"holds no routed tokens (shape {loads.shape})", "pass statistics of a MoE model")
    return loads


# --- TensorRT-LLM expert statistics ---------------------------------------------------------------------

def _trtllm(folder: Source, sizes: Sizes) -> tuple[np.ndarray, int]:
    """[iterations, layers, E] counts, E and top-k from meta_info.json, bincounts summed over the rank files."""
    meta_file = folder.child("meta_info.json")
    meta = json_document(meta_file.name, meta_file.read_text("TensorRT-LLM meta_info.json"))
    meta_fix = "pass the meta_info.json TensorRT-LLM wrote beside its rank files"
    if not isinstance(meta, dict) or not {"num_experts", "num_experts_per_token"} <= set(meta):
        raise InputError(meta_file.name, f"has no whole num_experts and num_experts_per_token ({excerpt(meta)})",
                         meta_fix)
    num_experts, k = ((bounded_text if isinstance(meta[f], str) else bounded)(meta[f], meta_file.name, f, MAX_EXPERTS,
                                                                               meta_fix, whole=True, lower=1)
                      for f in ("num_experts", "num_experts_per_token"))
    if not k <= num_experts:
        raise InputError(meta_file.name, f"num_experts {num_experts}, num_experts_per_token {k} do not fit", meta_fix)
    ranks = [folder.child(n) for n in folder.list("rank*.safetensors") if not n.endswith("_raw.safetensors")]
    if not ranks:
        raise InputError(folder.name, "has no rank*.safetensors", "pass the whole EXPERT_STATISTIC_PATH folder")
    counts: dict[tuple[int, int], np.ndarray] = {}
    file_bytes = 0
    for rank_file in ranks:
        for key, counts_of_key in read_safetensors(rank_file).items():
            at = f"{rank_file.name}: tensor {excerpt(key)}"
            match = _TRTLLM_KEY.fullmatch(key)
            if not match or counts_of_key.shape != (num_experts,):
                raise InputError(at, f"is not an '<iteration>_<layer>' bincount of {num_experts} experts (shape "
                                 f"{counts_of_key.shape})", "pass the rank files of the run meta_info.json describes")
            if not ((counts_of_key >= 0) & (counts_of_key <= MAX_COUNT)).all():  # NaN fails too
                raise InputError(at, f"has counts outside 0..{MAX_COUNT:g}, or not finite", _CORRUPT)
            layer = bounded(int(match[2]), at, "layer", MAX_LAYERS - 1, LAYER_FIX, whole=True)
            file_bytes += counts_of_key.nbytes
            at_key = (int(match[1]), layer)
            counts[at_key] = counts.get(at_key, 0) + counts_of_key.astype(float)
    if not counts:
        raise InputError(folder.name, "holds no routed tokens", "pass the statistics of a run that routed tokens")
    iterations = sorted({i for i, _ in counts})
    top_layer = max(layer for _, layer in counts)
    shape = (len(iterations), top_layer + 1, num_experts)
    sizes.check(f"{folder.name}: layer {top_layer}", shape, file_bytes, CELLS_FIX)
    windows = np.zeros(shape)
    row = {it: n for n, it in enumerate(iterations)}
    for (it, layer), value in counts.items():
        windows[row[it], layer] = value
    return windows, k


# --- OLMoE Counter pickles ------------------------------------------------------------------------------

def _counter_pickle(source: Source, sizes: Sizes):
    """One window [1, layers, E] of a pickled list of Counters; the list's length and the largest expert id set
    the size, checked before the array is made."""
    counters, file_bytes = load_counter_pickle(source)
    if len(counters) > MAX_LAYERS:
        raise InputError(source.name, f"holds {len(counters):,} layers, over {MAX_LAYERS:,}", LAYER_FIX)
    first_layer = {}  # each distinct Counter (a list may repeat one) and the first layer it is
    for layer, counter in enumerate(counters):
        first_layer.setdefault(id(counter), (layer, counter))
    top = -1
    for layer, counter in first_layer.values():
        for expert in counter:
            top = max(top, sizes.expert(expert, f"{source.name}: layer entry {layer}"))
    if top < 0:
        raise InputError(source.name, "holds no routed tokens", "pass the expert counts of a MoE model")
    num_experts = sizes.num_experts or top + 1
    sizes.check(source.name, (1, len(counters), num_experts), file_bytes, CELLS_FIX)
    # one (layer, expert) cell per entry, each written once: the list's repeats index their Counter's entries
    which = {key: n for n, key in enumerate(first_layer)}
    experts = [np.array([int(e) for e in c], dtype=np.int64) for _, c in first_layer.values()]
    values = [np.array([float(v) for v in c.values()]) for _, c in first_layer.values()]
    entries = np.array([len(e) for e in experts])
    counter_of_layer = np.array([which[id(c)] for c in counters])
    per_layer = entries[counter_of_layer]
    at = np.repeat(np.cumsum(entries)[counter_of_layer] - per_layer - (np.cumsum(per_layer) - per_layer), per_layer) \
        + np.arange(per_layer.sum())
    loads = np.zeros((len(counters), num_experts))
    loads[np.repeat(np.arange(len(counters)), per_layer), np.concatenate(experts)[at]] += np.concatenate(values)[at]
    coverage = (f"{source.filename} holds {len(counters)} sampled layers (allenai/OLMoE's analysis keeps layers 0, 7, 15)"
                if len(counters) == 3 else "")
    return loads[None], None, "pickled expert Counters", False, coverage
