"""Routing traces: how a model's tokens spread over its experts, window by window, in time order.

Loaders for the public routing formats (../shared/data/SOURCES.md) return one `RoutingTrace` in the
shape of the model being simulated (planner.loads.fit_to_model maps another model's statistics and
the note says how). `load_routing` tells the formats apart by content and name:
- aggregated load matrices, read by planner.loads.load_counts: deepseek-ai/EPLB / SGLang
  `{"logical_count": [[count] * E] * L}` JSON, moeplan's own `{"schema_version": 1, "loads": ...}`,
  and SGLang's CSV dump `layer_id,expert_id,count` (sgl-project/sglang
  `python/sglang/srt/managers/expert_distribution.py`, `dump_record`); one window;
- SGLang expert-distribution `.pt` dumps (sgl-project/sglang `python/sglang/srt/eplb/expert_distribution.py`,
  `_StatAccumulator.dump` and `_DetailAccumulator.dump`), read through torch.load(weights_only=True):
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
  keeps layers 0, 7 and 15 only), read with a restricted Unpickler (sim.safe_load).
`synthetic_routing` draws windows whose per-layer skew is fitted to a measured load matrix.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hwmodels.errors import InputError
from planner.loads import fit_to_model, load_counts
from sim.safe_load import (
    json_document,
    json_lines,
    load_counter_pickle,
    load_torch_weights_only,
    read_safetensors,
    read_text,
)

JSONL_TOKENS_PER_WINDOW = 64  # per-token files without steps of their own: a decode batch of 64 sequences
_TRTLLM_KEY = re.compile(r"(\d+)_(\d+)")


@dataclass(frozen=True)
class RoutingTrace:
    """windows: float [W, L, E], tokens routed to (layer, logical expert) in each window of traffic,
    in time order (W = 1 for statistics aggregated over a whole run); dense layers are zero rows.
    top_k: experts per token. source: the file(s) or generator. note: how the statistics were mapped
    onto this model, "" when they are the model's own."""

    windows: np.ndarray
    top_k: int
    source: str
    note: str = ""

    @property
    def num_layers(self) -> int:
        return self.windows.shape[1]

    @property
    def num_experts(self) -> int:
        return self.windows.shape[2]

    @property
    def loads(self) -> np.ndarray:
        """[L, E] tokens over all windows: the statistics a placement is fitted on."""
        return self.windows.sum(axis=0)

    @property
    def moe_layers(self) -> tuple[int, ...]:
        """The layers that route any token."""
        return tuple(int(i) for i in np.nonzero(self.loads.sum(axis=1) > 0)[0])


def layer_cv(loads: np.ndarray) -> np.ndarray:
    """[L] coefficient of variation (std / mean over experts) of each layer's expert loads; NaN for layers
    without tokens. loads: [L, E], or [W, L, E] summed over windows."""
    loads = np.asarray(loads, dtype=float)
    if loads.ndim == 3:
        loads = loads.sum(axis=0)
    mean = loads.mean(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(mean > 0, loads.std(axis=1) / mean, np.nan)


def load_routing(path, num_layers: int, moe_layers, num_experts: int, top_k: int, *,
                 tokens_per_window: int | None = None, source_num_experts: int | None = None,
                 source_top_k: int | None = None) -> RoutingTrace:
    """The routing statistics in `path` (format by content, see the module docstring) in the shape of a
    model with num_layers layers, MoE layers moe_layers, num_experts experts and top_k experts per token.

    tokens_per_window: per-token formats only. None keeps the recording's own steps (SGLang forward passes);
      files without steps (the JSON lines) use JSONL_TOKENS_PER_WINDOW. A number regroups the tokens in time
      order into windows of that many (the last window may hold fewer).
    source_num_experts: the recorded model's expert count where the file does not say it (SGLang CSV,
      per-token JSON lines, OLMoE pickles; default: highest expert id + 1).
    source_top_k: the recorded model's experts per token where the file does not say it (default top_k).
    Statistics of another model shape are mapped with planner.loads.fit_to_model and the note says how; a
    different top-k scales every count by top_k / source top-k (tokens per window are kept) and says so.
    """
    moe_layers = _check_model(num_layers, moe_layers, num_experts, top_k)
    path = Path(path)
    for name, value in (("tokens_per_window", tokens_per_window), ("source_num_experts", source_num_experts),
                        ("source_top_k", source_top_k)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise InputError(name, f"is {value!r}", "a whole number >= 1, or None")
    windows, recorded_k, kind, per_token, extra_note = _read(path, tokens_per_window, source_num_experts)
    if tokens_per_window is not None and not per_token:
        raise InputError("tokens_per_window", f"{path} holds {kind}, not per-token decisions",
                         "leave tokens_per_window out for aggregated statistics")
    if recorded_k is not None and source_top_k is not None and recorded_k != source_top_k:
        raise InputError("source_top_k", f"is {source_top_k}, but {path} records top-{recorded_k}",
                         "leave source_top_k out for this file")
    windows, note = fit_to_model(windows, num_layers, moe_layers, num_experts)
    k_src = recorded_k or source_top_k or top_k
    if k_src != top_k:
        windows = windows * (top_k / k_src)
        note = "; ".join(filter(None, [note, f"counts scaled by top-{top_k} / top-{k_src}"]))
    return RoutingTrace(windows, int(top_k), f"{path} ({kind})", "; ".join(filter(None, [extra_note, note])))


def synthetic_routing(num_layers: int, moe_layers, num_experts: int, top_k: int,
                      skew_from: np.ndarray | RoutingTrace | None = None, *, windows: int = 16,
                      tokens_per_window: int = 4096, seed: int = 0) -> RoutingTrace:
    """windows windows of tokens_per_window tokens each routed to top_k experts, per MoE layer:

    1. skew: without skew_from every expert is equally popular. With skew_from (an [L, E] or [W, L, E] load
       matrix, or a RoutingTrace), it is first mapped to this model's shape (planner.loads.fit_to_model,
       note kept), and each layer's coefficient of variation c of per-expert load is measured;
    2. popularity: the layer's expert shares p ~ Dirichlet(alpha, ..., alpha) over E experts, drawn once
       (hot experts stay hot across windows), with alpha = ((E - 1) / c^2 - 1) / E, the concentration whose
       expected CV of shares is c (Var p_e = (E - 1) / (E^2 (E alpha + 1)), mean 1 / E); alpha is floored at
       1e-3 (c near sqrt(E - 1) means one expert takes everything);
    3. counts: each window draws Multinomial(tokens_per_window * top_k, p): per-window sampling noise on top
       of the fitted skew, as in a real batch (a token may pick one expert twice here; with E >> top_k the
       per-expert loads, which are all a step reads, are unaffected).
    Only the amount of skew is fitted, not which experts are hot: the Dirichlet is exchangeable, so a
    placement fitted on skew_from's own experts gains nothing here. Same seed, same windows.
    """
    moe_layers = _check_model(num_layers, moe_layers, num_experts, top_k)
    for name, value in (("windows", windows), ("tokens_per_window", tokens_per_window)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(name, f"is {value!r}", "a whole number >= 1")
    if skew_from is None:
        cv, note, fitted = np.zeros(num_layers), "", "uniform expert popularity"
    else:
        base_note = skew_from.note if isinstance(skew_from, RoutingTrace) else ""
        name = skew_from.source if isinstance(skew_from, RoutingTrace) else f"a {np.shape(skew_from)} load matrix"
        loads = skew_from.loads if isinstance(skew_from, RoutingTrace) else np.asarray(skew_from, dtype=float)
        if loads.ndim == 3:
            loads = loads.sum(axis=0)
        if loads.ndim != 2 or not np.isfinite(loads).all() or (loads < 0).any():
            raise InputError("skew_from", f"is {loads.shape} with negative or non-finite entries, not [L, E] counts")
        mapped, note = fit_to_model(loads, num_layers, moe_layers, num_experts)
        cv, note = layer_cv(mapped), "; ".join(filter(None, [base_note, note]))
        fitted = f"per-layer Dirichlet expert popularity fitted to the expert-load CV of {name}"
    rng = np.random.default_rng(seed)
    out = np.zeros((windows, num_layers, num_experts))
    for layer in moe_layers:
        c = cv[layer]
        if not c > 0:
            shares = np.full(num_experts, 1.0 / num_experts)
        else:
            alpha = max(1e-3, ((num_experts - 1) / c**2 - 1) / num_experts)
            shares = rng.dirichlet(np.full(num_experts, alpha))
        out[:, layer] = rng.multinomial(tokens_per_window * top_k, shares, size=windows)
    return RoutingTrace(out, int(top_k), f"synthetic routing: {windows} windows x {tokens_per_window} tokens, top-{top_k}, "
                        f"{fitted} (seed {seed})", note)


# --- shape mapping --------------------------------------------------------------------------------------

def _check_model(num_layers, moe_layers, num_experts, top_k) -> tuple[int, ...]:
    layers = tuple(int(i) for i in moe_layers)
    if not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1 for n in (num_layers, num_experts)):
        raise InputError("model", f"num_layers {num_layers!r}, num_experts {num_experts!r}", "whole numbers >= 1")
    if not layers or len(set(layers)) != len(layers) or min(layers) < 0 or max(layers) >= num_layers:
        raise InputError("moe_layers", f"is {moe_layers!r}", f"distinct layer indices in 0..{num_layers - 1}")
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or not 1 <= top_k <= num_experts:
        raise InputError("top_k", f"is {top_k!r}", f"a whole number in 1..{num_experts}")
    return tuple(sorted(layers))


# --- formats --------------------------------------------------------------------------------------------

def _read(path: Path, tokens_per_window, source_num_experts):
    """(windows [W, L_src, E_src], recorded top-k or None, kind, per-token?, note on the file's coverage)."""
    if path.is_dir():
        if not (path / "meta_info.json").is_file():
            raise InputError(str(path), "is a folder without meta_info.json",
                             "pass a TensorRT-LLM expert-statistic folder, or a statistics file")
        windows, k = _trtllm(path)
        return windows, k, "TensorRT-LLM expert statistics", False, ""
    suffix = path.suffix.lower()
    if suffix in (".pt", ".pth"):
        return _sglang_torch(path, tokens_per_window, source_num_experts)
    if suffix in (".pkl", ".pickle"):
        return _counter_pickle(path, source_num_experts)
    if suffix == ".safetensors":
        raise InputError(str(path), "is one rank of TensorRT-LLM statistics",
                         "pass the folder that holds meta_info.json and every rank*.safetensors")
    text = read_text(path, "routing statistics")
    first = next((line for line in text.splitlines() if line.strip()), "")
    if suffix == ".jsonl" or (first.lstrip().startswith("{") and _is_token_line(first)):
        windows, k = _per_token_jsonl(path, text, tokens_per_window or JSONL_TOKENS_PER_WINDOW, source_num_experts)
        return windows, k, f"per-token top-{k} decisions", True, ""
    return load_counts(path, source_num_experts)[None], None, "aggregated expert loads", False, ""


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


def _per_token_jsonl(path: Path, text: str, tokens_per_window: int, source_num_experts):
    problems: dict = {}
    keys, layers, experts = [], [], []
    k = None
    for line_no, row in json_lines(path, text):
        where = f"{path} line {line_no}"
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
        raise InputError(str(path), "holds no routing decisions")
    # Time order: problems as the file first meets them, then token_idx within a problem.
    unique, token_of_row = np.unique(np.array(keys), axis=0, return_inverse=True)
    token_of_row = token_of_row.reshape(-1)
    layers, experts = np.array(layers), np.array(experts)
    choices = np.full((len(unique), layers.max() + 1, k), -1, dtype=np.int64)
    duplicate = np.nonzero(np.bincount(token_of_row * choices.shape[1] + layers) > 1)[0]
    if len(duplicate):
        first = np.nonzero(token_of_row * choices.shape[1] + layers == duplicate[0])[0][1]
        raise InputError(f"{path} line {_line_no(text, first)}", "repeats a (problem, token, layer) seen before")
    choices[token_of_row, layers] = experts
    num_experts = _experts_of(experts, source_num_experts, str(path))
    return _windows_from_choices(choices, num_experts, tokens_per_window), k


def _line_no(text: str, row_index: int) -> int:
    """1-based line of the row_index-th non-blank line."""
    lines = [i for i, line in enumerate(text.splitlines(), start=1) if line.strip()]
    return lines[row_index]


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


def _sglang_torch(path: Path, tokens_per_window, source_num_experts):
    doc = load_torch_weights_only(path)
    if not isinstance(doc, dict) or not ({"logical_count", "records"} & set(doc)):
        keys = ", ".join(map(str, doc)) if isinstance(doc, dict) else type(doc).__name__
        raise InputError(str(path), f"is not an SGLang expert-distribution dump (holds {keys})",
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
        raise InputError(str(path), "has no last_physical_to_logical_map", "pass the whole per_token dump")
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
        raise InputError(str(path), "holds no routed tokens")
    num_experts = _experts_of(np.concatenate([p.reshape(-1) for p in passes]), source_num_experts, str(path))
    k = max(int((p >= 0).sum(axis=2).max()) for p in passes)
    if tokens_per_window is None:
        windows = np.concatenate([_windows_from_choices(p, num_experts, len(p)) for p in passes])
    else:
        windows = _windows_from_choices(np.concatenate(passes), num_experts, tokens_per_window)
    return windows, k, f"SGLang expert-distribution dump, per_token mode, top-{k}", True, ""


def _trtllm(path: Path) -> tuple[np.ndarray, int]:
    meta_path = path / "meta_info.json"
    meta = json_document(meta_path, read_text(meta_path, "TensorRT-LLM meta_info.json"))
    try:
        num_experts, k = int(meta["num_experts"]), int(meta["num_experts_per_token"])
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(str(meta_path), f"has no whole num_experts and num_experts_per_token ({meta!r:.80})",
                         "pass the meta_info.json TensorRT-LLM wrote beside its rank files") from e
    if num_experts < 1 or not 1 <= k <= num_experts:
        raise InputError(str(meta_path), f"num_experts {num_experts}, num_experts_per_token {k} do not fit")
    ranks = sorted(p for p in path.glob("rank*.safetensors") if not p.name.endswith("_raw.safetensors"))
    if not ranks:
        raise InputError(str(path), "has no rank*.safetensors", "pass the whole EXPERT_STATISTIC_PATH folder")
    counts: dict[tuple[int, int], np.ndarray] = {}
    for rank_path in ranks:
        for key, counts_of_key in read_safetensors(rank_path).items():
            match = _TRTLLM_KEY.fullmatch(key)
            if not match or counts_of_key.shape != (num_experts,) or (counts_of_key < 0).any():
                raise InputError(f"{rank_path}: tensor {key!r}", f"is not an '<iteration>_<layer>' bincount of "
                                 f"{num_experts} experts (shape {counts_of_key.shape})")
            at = (int(match[1]), int(match[2]))
            counts[at] = counts.get(at, 0) + counts_of_key.astype(float)
    if not counts:
        raise InputError(str(path), "holds no routed tokens")
    iterations = sorted({i for i, _ in counts})
    windows = np.zeros((len(iterations), max(layer for _, layer in counts) + 1, num_experts))
    row = {it: n for n, it in enumerate(iterations)}
    for (it, layer), value in counts.items():
        windows[row[it], layer] = value
    return windows, k


def _counter_pickle(path: Path, source_num_experts):
    counters = load_counter_pickle(path)
    ids = np.array([int(e) for c in counters for e in c], dtype=np.int64)
    num_experts = _experts_of(ids, source_num_experts, str(path))
    loads = np.zeros((len(counters), num_experts))
    for layer, counter in enumerate(counters):
        for expert, count in counter.items():
            loads[layer, int(expert)] += float(count)
    coverage = (f"{path.name} holds {len(counters)} sampled layers (allenai/OLMoE's analysis keeps layers 0, 7, 15)"
                if len(counters) == 3 else "")
    return loads[None], None, "pickled expert Counters", False, coverage
