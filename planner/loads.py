"""Routing statistics: tokens routed to each (layer, logical expert), read from the files serving
systems write. Safe parsers only (json, csv); never pickle.

Formats, told apart by content:
- JSON `{"logical_count": [[count] * E] * L}`: deepseek-ai/EPLB's `weight` and SGLang's
  `--init-expert-location` statistics (e.g. the SGLang team's DeepSeek-V3 files, sgl-project/sglang #6017);
- JSON `{"schema_version": 1, "model": "...", "loads": [[count] * E] * L}`: moeplan's own;
- CSV with the header `layer_id,expert_id,count`: SGLang's expert-distribution dump
  (`/dump_expert_distribution_record`, one file per rank: `expert_distribution_rank{r}_timestamp{t}.csv`);
  repeated (layer, expert) rows add up, and layers absent from the file (dense layers) are zero rows.
  Later SGLang versions dump a torch `.pt` file instead: it needs pickle, so it is not read here; save its
  `logical_count` tensor with `json.dump({"logical_count": t.tolist()}, f)` first.
Every layer keeps its row, dense layers (all zeros) included, so a placement's layer index is the
model's; the placement functions skip layers without load.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from hwmodels.errors import InputError

LOADS_SCHEMA_VERSION = 1
_CSV_HEADER = ["layer_id", "expert_id", "count"]


def load_counts(path, num_experts: int | None = None) -> np.ndarray:
    """[L, E] float token counts from one statistics file (see the module docstring for the formats).

    num_experts: for the CSV dump, whose experts with no tokens have no row (default: highest id + 1).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(str(path), f"cannot read routing statistics: {e}", "pass a readable JSON or CSV file") from e
    if text.lstrip()[:1] in ("{", "["):
        return _from_json(path, text)
    return _from_csv(path, text, num_experts)


def save_counts(loads: np.ndarray, path, model: str) -> None:
    """Write [L, E] counts in moeplan's own format (what `load_counts` reads back)."""
    rows = np.asarray(loads, dtype=float).tolist()
    Path(path).write_text(json.dumps({"schema_version": LOADS_SCHEMA_VERSION, "model": model, "loads": rows}))


def _from_json(path: Path, text: str) -> np.ndarray:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{path} line {e.lineno} column {e.colno}", f"not valid JSON: {e.msg}") from e
    if not isinstance(doc, dict):
        raise InputError(str(path), f"holds a JSON {type(doc).__name__}, not an object",
                         "expected {\"logical_count\": [[...]]} or {\"schema_version\": 1, \"loads\": [[...]]}")
    if "logical_count" in doc:
        key = "logical_count"
    elif "loads" in doc:
        key = "loads"
        if doc.get("schema_version") != LOADS_SCHEMA_VERSION:
            raise InputError(f"{path}: schema_version", f"is {doc.get('schema_version')!r}, this moeplan reads "
                             f"{LOADS_SCHEMA_VERSION}", "write the file with this moeplan's save_counts")
    else:
        raise InputError(str(path), f"has neither 'logical_count' nor 'loads' (keys: {', '.join(map(str, doc))})",
                         "pass EPLB/SGLang logical_count JSON, moeplan loads JSON or an SGLang CSV dump")
    rows = doc[key]
    if not isinstance(rows, list) or not rows or not all(isinstance(r, list) for r in rows):
        raise InputError(f"{path}: {key}", "is not a list of per-layer lists", "expected [layers][experts] counts")
    width = len(rows[0])
    for i, r in enumerate(rows):
        if len(r) != width:
            raise InputError(f"{path}: {key}[{i}]", f"has {len(r)} experts, layer 0 has {width}",
                             "every layer needs one count per expert")
        for j, v in enumerate(r):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0:
                raise InputError(f"{path}: {key}[{i}][{j}]", f"is {v!r}, not a count", "counts are numbers >= 0")
    return _checked(path, np.array(rows, dtype=float))


def _from_csv(path: Path, text: str, num_experts: int | None) -> np.ndarray:
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if [h.strip() for h in header or []] != _CSV_HEADER:
        raise InputError(f"{path} line 1", f"header is {header!r}, expected {','.join(_CSV_HEADER)}",
                         "pass an SGLang expert-distribution CSV, or JSON statistics")
    entries = []
    for line, fields in enumerate(reader, start=2):
        if not fields:
            continue
        try:
            layer, expert, count = int(fields[0]), int(fields[1]), float(fields[2])
        except (ValueError, IndexError) as e:
            raise InputError(f"{path} line {line}", f"{','.join(fields)!r} is not layer_id,expert_id,count") from e
        if layer < 0 or expert < 0 or not np.isfinite(count) or count < 0:
            raise InputError(f"{path} line {line}", f"{','.join(fields)!r} has a negative or non-finite value")
        if num_experts is not None and expert >= num_experts:
            raise InputError(f"{path} line {line}", f"expert {expert} >= num_experts {num_experts}")
        entries.append((layer, expert, count))
    if not entries:
        raise InputError(str(path), "has no count rows")
    ids = np.array([(layer, expert) for layer, expert, _ in entries])
    loads = np.zeros((ids[:, 0].max() + 1, num_experts or ids[:, 1].max() + 1))
    np.add.at(loads, (ids[:, 0], ids[:, 1]), [c for _, _, c in entries])
    return _checked(path, loads)


def _checked(path: Path, loads: np.ndarray) -> np.ndarray:
    if loads.ndim != 2 or loads.shape[1] < 1 or not loads.any():
        raise InputError(str(path), f"holds no routed tokens (shape {loads.shape})", "pass statistics of a MoE model")
    return loads


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
