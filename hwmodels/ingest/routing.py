"""Routing statistics: how a model's tokens spread over its experts, window by window, in time order.

One set of formats for every reader (hwmodels.ingest.routing_formats lists them, with their sources:
EPLB / SGLang logical_count JSON, moeplan loads JSON, SGLang CSV and .pt dumps, TensorRT-LLM expert-statistic
folders, per-token JSON lines, OLMoE Counter pickles), from a path, bytes or an in-memory folder
(hwmodels.ingest.source), up to a size limit per file:
- `read_routing`: one file (or folder) in its own shape, a `RoutingFile` (windows, recorded top-k, kind,
  coverage note);
- `read_counts`: its windows summed, [L, E] in its own shape: what a placement is fitted on (`moeplan place`,
  the dashboard's placement page); `read_counts_and_tokens` adds a per-token file's expert sets (co-activation);
- `load_routing`: a `RoutingTrace` in the shape of the model being simulated (`fit_to_model` maps another
  model's statistics and the note says how); the spec's routing statistics are `read_counts` mapped the same way;
- `save_counts` writes [L, E] counts in moeplan's own JSON; `layer_cv` measures per-layer skew.
`synthetic_routing` draws windows whose per-layer skew is fitted to a measured load matrix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hwmodels.errors import InputError
from hwmodels.ingest.bounds import MAX_EXPERTS
from hwmodels.ingest.routing_formats import JSONL_TOKENS_PER_WINDOW, LOADS_SCHEMA_VERSION, read_windows
from hwmodels.ingest.source import Source, SourceLike

__all__ = ["JSONL_TOKENS_PER_WINDOW", "LOADS_SCHEMA_VERSION", "RoutingFile", "RoutingTrace", "fit_to_model", "layer_cv",
           "load_routing", "read_counts", "read_counts_and_tokens", "read_routing", "save_counts", "synthetic_routing"]


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


@dataclass(frozen=True)
class RoutingFile:
    """One statistics file (or folder) as recorded, before any mapping onto a model.

    windows: float [W, L_src, E_src], tokens routed to (layer, logical expert) per window in time order
      (W = 1 for aggregated statistics); dense layers are zero rows.
    top_k: experts per token where the file records it (per-token decisions, TensorRT-LLM), else None.
    kind: the format ("aggregated expert loads", "per-token top-2 decisions", ...). per_token: whether the
      windows are regrouped per-token decisions (tokens_per_window applies). note: what the file covers where
      that is less than the whole model (OLMoE's 3 sampled layers), "" otherwise. name: the file's name."""

    windows: np.ndarray
    top_k: int | None
    kind: str
    per_token: bool
    note: str
    name: str

    @property
    def source(self) -> str:
        """"name (kind)": how every report names the statistics."""
        return f"{self.name} ({self.kind})"

    @property
    def loads(self) -> np.ndarray:
        """[L_src, E_src] tokens over all windows."""
        return self.windows.sum(axis=0)


def read_routing(source: SourceLike | Source, *, name: str | None = None, max_bytes: int | None = None,
                 tokens_per_window: int | None = None, num_experts: int | None = None) -> RoutingFile:
    """The routing statistics in `source` in the recorded model's own shape (format by content and name, see
    hwmodels.ingest.routing_formats).

    source: a path (a file, or a TensorRT-LLM folder), the bytes of one file (name: its file name, whose
      suffix tells .pt and .pkl apart), or {file name: bytes} for a folder in memory. max_bytes: the most
      bytes read from one file (default hwmodels.ingest.source.MAX_FILE_BYTES).
    tokens_per_window: per-token formats only. None keeps the recording's own steps (SGLang forward passes);
      files without steps (the JSON lines) use JSONL_TOKENS_PER_WINDOW. A number regroups the tokens in time
      order into windows of that many (the last window may hold fewer).
    num_experts: the recorded model's expert count where the file does not say it (SGLang CSV, per-token
      JSON lines and .pt dumps, OLMoE pickles; default: highest expert id + 1).
    """
    return _read(source, name, max_bytes, tokens_per_window, num_experts, 0)


def _read(source, name, max_bytes, tokens_per_window, num_experts, model_cells: int) -> RoutingFile:
    """read_routing, with model_cells: layers x experts of the model the caller maps the statistics onto (0:
    none), which a count array per window may hold whatever the file's size (hwmodels.ingest.bounds.Sizes)."""
    for field, value in (("tokens_per_window", tokens_per_window), ("num_experts", num_experts)):
        _whole_or_none(field, value)
    if num_experts is not None and num_experts > MAX_EXPERTS:
        raise InputError("num_experts", f"is {num_experts:,}, over {MAX_EXPERTS:,}",
                         "the recorded model's expert count (the most published is 1024^2, PEER)")
    src = Source.of(source, name=name, max_bytes=max_bytes)
    windows, top_k, kind, per_token, note = read_windows(src, tokens_per_window, num_experts, model_cells)
    if tokens_per_window is not None and not per_token:
        raise InputError("tokens_per_window", f"{src.name} holds {kind}, not per-token decisions",
                         "leave tokens_per_window out for aggregated statistics")
    return RoutingFile(windows, top_k, kind, per_token, note, src.name)


def read_counts(source: SourceLike | Source, *, name: str | None = None, max_bytes: int | None = None,
                num_experts: int | None = None) -> np.ndarray:
    """[L, E] float token counts of one statistics file or folder in its own shape: its windows summed (see
    read_routing for the arguments). num_experts: for formats whose experts with no tokens have no entry
    (the SGLang CSV dump, per-token decisions, pickles; default: highest id + 1)."""
    return read_routing(source, name=name, max_bytes=max_bytes, num_experts=num_experts).loads


MAX_TOKEN_CELLS = 2**26  # tokens x layers x experts of per-token sets built for co-activation: 0.5 GB while counted


def read_counts_and_tokens(source: SourceLike | Source, *, name: str | None = None, max_bytes: int | None = None,
                           num_experts: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """(read_counts' [L, E], [T, L, E] bool: the experts each token chose in each layer, in time order), the second
    None where the file holds aggregated counts or its tokens x layers x experts pass MAX_TOKEN_CELLS (co-activation
    is then not read, and the counts alone serve). Per-token files are read twice: once counted, once per token."""
    routing = read_routing(source, name=name, max_bytes=max_bytes, num_experts=num_experts)
    if not routing.per_token:
        return routing.loads, None
    tokens_at_most = routing.loads.sum() / max(routing.top_k or 1, 1)  # every decision a token of its own
    if tokens_at_most * routing.windows[0].size > MAX_TOKEN_CELLS:
        return routing.loads, None
    tokens = read_routing(source, name=name, max_bytes=max_bytes, num_experts=routing.windows.shape[2],
                          tokens_per_window=1).windows
    return routing.loads, tokens > 0


def save_counts(loads: np.ndarray, path, model: str) -> None:
    """Write [L, E] counts in moeplan's own format (what `read_counts` reads back)."""
    rows = np.asarray(loads, dtype=float).tolist()
    Path(path).write_text(json.dumps({"schema_version": LOADS_SCHEMA_VERSION, "model": model, "loads": rows}))


def layer_cv(loads: np.ndarray) -> np.ndarray:
    """[L] coefficient of variation (std / mean over experts) of each layer's expert loads; NaN for layers
    without tokens. loads: [L, E], or [W, L, E] summed over windows."""
    loads = np.asarray(loads, dtype=float)
    if loads.ndim == 3:
        loads = loads.sum(axis=0)
    mean = loads.mean(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(mean > 0, loads.std(axis=1) / mean, np.nan)


def load_routing(source: SourceLike | Source, num_layers: int, moe_layers, num_experts: int, top_k: int, *,
                 name: str | None = None, max_bytes: int | None = None, tokens_per_window: int | None = None,
                 source_num_experts: int | None = None, source_top_k: int | None = None) -> RoutingTrace:
    """The routing statistics in `source` (format by content and name, see hwmodels.ingest.routing_formats) in
    the shape of a model with num_layers layers, MoE layers moe_layers, num_experts experts and top_k experts
    per token. source, name, max_bytes: as read_routing takes them.

    tokens_per_window: per-token formats only. None keeps the recording's own steps (SGLang forward passes);
      files without steps (the JSON lines) use JSONL_TOKENS_PER_WINDOW. A number regroups the tokens in time
      order into windows of that many (the last window may hold fewer).
    source_num_experts: the recorded model's expert count where the file does not say it (SGLang CSV,
      per-token JSON lines, OLMoE pickles; default: highest expert id + 1).
    source_top_k: the recorded model's experts per token where the file does not say it (default top_k).
    Statistics of another model shape are mapped with fit_to_model and the note says how; a different top-k
    scales every count by top_k / source top-k (tokens per window are kept) and says so.
    """
    moe_layers = _check_model(num_layers, moe_layers, num_experts, top_k)
    for field, value in (("tokens_per_window", tokens_per_window), ("source_num_experts", source_num_experts),
                         ("source_top_k", source_top_k)):
        _whole_or_none(field, value)
    # The model's shape vouches for count arrays that large, whatever the file's size; ids beyond it (statistics
    # of a larger model, mapped below) are bounded by what the file holds (hwmodels.ingest.bounds).
    recorded = _read(source, name, max_bytes, tokens_per_window, source_num_experts, num_layers * num_experts)
    if recorded.top_k is not None and source_top_k is not None and recorded.top_k != source_top_k:
        raise InputError("source_top_k", f"is {source_top_k}, but {recorded.name} records top-{recorded.top_k}",
                         "leave source_top_k out for this file")
    windows, note = fit_to_model(recorded.windows, num_layers, moe_layers, num_experts)
    k_src = recorded.top_k or source_top_k or top_k
    if k_src != top_k:
        windows = windows * (top_k / k_src)
        note = "; ".join(filter(None, [note, f"counts scaled by top-{top_k} / top-{k_src}"]))
    return RoutingTrace(windows, int(top_k), recorded.source, "; ".join(filter(None, [recorded.note, note])))


def synthetic_routing(num_layers: int, moe_layers, num_experts: int, top_k: int,
                      skew_from: np.ndarray | RoutingTrace | None = None, *, windows: int = 16,
                      tokens_per_window: int = 4096, seed: int = 0) -> RoutingTrace:
    """windows windows of tokens_per_window tokens each routed to top_k experts, per MoE layer:

    1. skew: without skew_from every expert is equally popular. With skew_from (an [L, E] or [W, L, E] load
       matrix, or a RoutingTrace), it is first mapped to this model's shape (fit_to_model,
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
            raise InputError("skew_from", f"is {loads.shape} with negative or non-finite entries, not [L, E] counts",
                             "pass a load matrix [layers, experts] of counts >= 0, or a RoutingTrace")
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


def _whole_or_none(field: str, value) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise InputError(field, f"is {value!r}", "a whole number >= 1, or None")


def fit_to_model(loads: np.ndarray, num_layers: int, moe_layers: tuple[int, ...] | list[int],
                 num_experts: int) -> tuple[np.ndarray, str]:
    """Routing statistics of one model replayed on another's shape: [L_src, E_src] -> [num_layers, num_experts],
    or windows [W, L_src, E_src] -> [W, num_layers, num_experts].

    Statistics of the model itself (same experts, same MoE layers) come back unchanged, with note "".
    Otherwise (e.g. Kimi K2's 384 experts and 60 MoE layers from DeepSeek-V3's 256 and 58) the mapping is:
    - layers by relative depth: target MoE layer i replays source MoE layer round(i (n_src - 1) / (n_tgt - 1));
    - experts by tiling: target expert j replays source expert j mod E_src, so every target expert's load
      is a real expert's load (the per-expert load distribution, hence the skew, is kept; averaging
      experts would flatten it), and experts j and j + E_src are correlated, which the note says;
    - each target layer is rescaled to its source layer's total routed pairs (per window).
    Which source layers are MoE is decided on the windows' sum, so a window in which a layer routed nothing
    keeps its place. Dense layers of the target are zero rows. The note names the mapping for every report.
    """
    loads = np.asarray(loads, dtype=float)
    windows = loads[None] if loads.ndim == 2 else loads
    total = windows.sum(axis=0)
    source_moe = np.nonzero(total.sum(axis=1) > 0)[0]
    target_moe = list(moe_layers)
    if total.shape == (num_layers, num_experts) and list(source_moe) == target_moe:
        return loads, ""
    if not len(source_moe) or not target_moe:
        raise InputError("routing", "no MoE layer to map", "pass routing statistics of a MoE model")
    n_src, n_tgt, e_src = len(source_moe), len(target_moe), total.shape[1]
    rows = [source_moe[round(i * (n_src - 1) / (n_tgt - 1)) if n_tgt > 1 else 0] for i in range(n_tgt)]
    source_rows = windows[:, rows]  # [W, n_tgt, E_src]
    tiled = source_rows[:, :, np.arange(num_experts) % e_src]  # [W, n_tgt, E]
    layer_total, tiled_total = source_rows.sum(axis=2, keepdims=True), tiled.sum(axis=2, keepdims=True)
    even = np.broadcast_to(layer_total / num_experts, tiled.shape).copy()
    out = np.zeros((len(windows), num_layers, num_experts))
    out[:, target_moe] = np.divide(tiled * layer_total, tiled_total, out=even, where=tiled_total > 0)
    note = (f"statistics of {n_src} MoE layers x {e_src} experts mapped to {n_tgt} x {num_experts}: layers by relative "
            f"depth, expert j replays source expert j mod {e_src}"
            + (f" (experts j and j+{e_src} are correlated copies)" if num_experts > e_src else "")
            + ", each layer rescaled to its source total")
    return (out[0] if loads.ndim == 2 else out), note
