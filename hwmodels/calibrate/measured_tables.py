"""NVIDIA's measured kernel database, read in place from the installed `aiconfigurator-core` package.

`aiconfigurator-core` (PyPI, Apache-2.0; `pip install 'moeplan[measured]'`) ships kernel latencies measured per
GPU, serving engine and engine version under `aiconfigurator_core/systems/data/<system>/<op>/<engine>/<version>/`:
one parquet table per kernel family (`gemm_perf`, `moe_perf`, `generation_mla_perf`, `context_mla_perf`,
`custom_allreduce_perf`, ...), `latency` in milliseconds, with a `collection_meta.yaml` per folder and, where a
version re-uses another's collection, a `reuse.yaml` naming it. This module finds that folder without importing
the package (its Rust extension is not needed to read data), lists what is measured, and loads a table's rows.
Nothing is copied into this repository. Without the package, `database_root()` is None and every caller falls
back to the fitted model.

Version rule (`versions_to_try`), the package's own (systems/query_versions.yaml): each system and engine exposes at
most three queryable versions, `current` (the newest complete collection), `previous`, and `next` (the newest data
folder newer than current, where new models' single ops land); the other folders are backward-fill sources only.
A query takes the queryable version nearest the asked one (`nearest_version`: the asked version if queryable, else
the newest older, else the oldest newer; none asked: current), and an op that version lacks is read from the
newest older folder that has it, then, as a last resort, the oldest newer one. Versions compare by their numeric
parts (1.2.0rc6.post2 -> 1, 2, 0, 6, 2). Without the slots file every folder is queryable. Why not the folder
nearest the asked version: the package's older folders hold bridging collections it keeps for backfill, e.g.
H200 vLLM 0.19.0's int4 MoE (a legacy Marlin path 2.6x slower at 64 tokens than vLLM 0.24.0's, where Kimi-K2.5
served by vLLM 0.16 measured the faster).
"""

from __future__ import annotations

import importlib.util
import re
from functools import lru_cache
from pathlib import Path

import pandas as pd

from hwmodels import safe_yaml

PACKAGE = "aiconfigurator_core"
ENGINES = ("sglang", "trtllm", "vllm")
# catalog device -> the package's system folder (the SXM boards, the Grace-Blackwell GPUs and the PCIe boards it measured)
SYSTEMS = {"h100-sxm": "h100_sxm", "h200-sxm": "h200_sxm", "b200-sxm": "b200_sxm", "b300-sxm": "b300_sxm",
           "gb200": "gb200", "gb300": "gb300", "a100-sxm": "a100_sxm", "l40s": "l40s",
           "rtx-pro-6000": "rtx_pro_6000_server"}
# a system -> its NVLink twin: the same NVLink topology (the NVL72's 4-GPU trays; an 8-GPU HGX board) one GPU
# generation apart. An engine's all-reduce over a GPU count a system did not measure is read from the twin's table
# where the two agree at every point both measured (measured_costs.TWIN_TOLERANCE): across trays the engine's
# algorithm sets the time, not the GPU (GB300, 8 GPUs over 2 trays, 1 Ki elements: TensorRT-LLM 4.4 us, as on one
# tray; SGLang 28 us, 7x its 4-GPU time; vLLM 14 us).
NVLINK_TWINS = {"gb200": "gb300", "gb300": "gb200", "b200_sxm": "b300_sxm", "b300_sxm": "b200_sxm",
                "h100_sxm": "h200_sxm", "h200_sxm": "h100_sxm"}
# table -> the op folder it lives in
TABLE_FOLDERS = {"gemm_perf": "gemm", "moe_perf": "moe", "wideep_generation_moe_perf": "moe",
                 "wideep_context_moe_perf": "moe", "generation_mla_perf": "mla", "context_mla_perf": "mla",
                 "generation_attention_perf": "attention", "context_attention_perf": "attention",
                 "custom_allreduce_perf": "comm", "gdn_perf": "linear_attention",
                 "kda_perf": "kda", "nccl_perf": "comm",  # nccl_perf: the "engine" is NCCL, the versions NCCL's
                 "wideep_deepep_ll_perf": "comm", "wideep_deepep_normal_perf": "comm"}


@lru_cache(maxsize=1)
def database_root() -> Path | None:
    """`.../aiconfigurator_core/systems/data` of the installed package, or None where it is not installed."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations))) / "systems" / "data"
    return root if root.is_dir() else None


def model_config_path(hf_id: str) -> Path | None:
    """The config.json the installed package ships for a HuggingFace id (`model_configs/<owner>--<name>_config.json`,
    the case ignored), or None: not installed, not an owner/name id, or a model it does not hold."""
    root = database_root()
    owner, _, name = hf_id.strip().partition("/")
    if root is None or not owner or not name or "/" in name:
        return None
    wanted = f"{owner}--{name}_config.json".lower()
    return next((p for p in (root.parents[1] / "model_configs").glob("*_config.json") if p.name.lower() == wanted), None)


@lru_cache(maxsize=1)
def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("aiconfigurator-core")
    except PackageNotFoundError:
        return "not installed"


def version_key(version: str) -> tuple[int, ...]:
    """Numeric parts in order: '1.2.0rc6.post2' -> (1, 2, 0, 6, 2); a pre-release sorts by its numbers only."""
    return tuple(int(x) for x in re.findall(r"\d+", version))


def nearest_version(measured: list[str], asked: str | None) -> str | None:
    """See the module docstring; None asked: the newest measured."""
    if not measured:
        return None
    ordered = sorted(measured, key=version_key)
    if asked is None:
        return ordered[-1]
    if asked in measured:
        return asked
    older = [v for v in ordered if version_key(v) < version_key(asked)]
    return older[-1] if older else ordered[0]


@lru_cache(maxsize=64)
def queryable_versions(system: str, engine: str) -> tuple[str | None, tuple[str, ...]]:
    """(current, every queryable version) of an engine on a system from the package's query_versions.yaml; (None, ())
    without it, or where it names no current version."""
    root = database_root()
    path = root.parent / "query_versions.yaml" if root is not None else None
    if path is None or not path.is_file():
        return None, ()
    record = safe_yaml.load(path.read_text(), str(path)) or {}
    overrides = (record.get("overrides") or {}).get(system) or {}
    slots = overrides.get(engine) or (record.get("defaults") or {}).get(engine) or {}
    current = slots.get("current")
    if not current:
        return None, ()
    declared = [v.name for v in (root / system).glob(f"*/{engine}/*") if v.is_dir()]
    newer = [v for v in declared if version_key(v) > version_key(str(current))]
    # systems with an override stay out of the `next` derivation (query_versions.yaml's comment)
    next_ = [max(newer, key=version_key)] if newer and engine not in overrides else []
    return str(current), tuple(str(v) for v in (current, slots.get("previous"), *next_) if v)


def _start(asked: str | None, current: str | None, queryable: tuple[str, ...]) -> str | None:
    """The queryable version a query of `asked` starts from: current where none is asked, else the nearest."""
    if not queryable:
        return None
    return current if asked is None else nearest_version(list(queryable), asked)


def query_version(system: str, engine: str, asked: str | None) -> str | None:
    """The version a query of `asked` starts from (module docstring); None where the package declares no slots."""
    return _start(asked, *queryable_versions(system, engine))


def versions_to_try(measured: list[str], asked: str | None, current: str | None, queryable: tuple[str, ...]) -> list[str]:
    """The measured versions of one table in the order a query tries them (module docstring)."""
    if not measured:
        return []
    start = _start(asked, current, queryable) or nearest_version(measured, asked)
    older = sorted((v for v in measured if version_key(v) <= version_key(start)), key=version_key, reverse=True)
    return older + sorted((v for v in measured if version_key(v) > version_key(start)), key=version_key)


@lru_cache(maxsize=512)
def table_versions(system: str, engine: str, table: str) -> tuple[str, ...]:
    """Engine versions with `table` measured (or re-used from another version's collection) on `system`."""
    root = database_root()
    if root is None:
        return ()
    folder = root / system / TABLE_FOLDERS[table] / engine
    if not folder.is_dir():
        return ()
    return tuple(sorted((v.name for v in folder.iterdir() if table_path(system, engine, table, v.name)), key=version_key))


@lru_cache(maxsize=512)
def table_path(system: str, engine: str, table: str, version: str) -> Path | None:
    """The parquet file of `table` for that version: its own, or the one its reuse.yaml names."""
    root = database_root()
    if root is None:
        return None
    folder = root / system / TABLE_FOLDERS[table] / engine / version
    own = folder / f"{table}.parquet"
    if own.is_file():
        return own
    reuse = folder / "reuse.yaml"
    if reuse.is_file():
        record = safe_yaml.load(reuse.read_text(), str(reuse)) or {}
        for item in record.get("reuse", []) if isinstance(record, dict) else []:
            if isinstance(item, dict) and item.get("table") == table and item.get("from_version") != version:
                return table_path(system, engine, table, str(item.get("from_version")))
    return None


@lru_cache(maxsize=64)
def load_table(path: Path) -> pd.DataFrame:
    """A table's rows as the package stores them (latency in ms); cached per process, read only."""
    return pd.read_parquet(path)
