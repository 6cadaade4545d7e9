"""Reads the cited catalogs (YAML/JSON under catalogs/) into typed objects: the I/O edge of hwmodels.

Unknown names raise InputError with the nearest known names. Results are cached per process because
the catalogs are read-only package data.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

from catalogs import CATALOG_DIR
from hwmodels import prices as price_tables, safe_yaml
from hwmodels.deployment import Price
from hwmodels.calibrate.measured_tables import model_config_path
from hwmodels.errors import InputError, excerpt, nearest_names
from hwmodels.hardware import ClusterUnit, Device, Figure
from hwmodels.model_arch import ModelArch, arch_from_config


def _read_yaml(name: str) -> dict:
    path = CATALOG_DIR / name
    return safe_yaml.load(safe_yaml.read_text(path, str(path), "reinstall moeplan", safe_yaml.CATALOG), str(path),
                          safe_yaml.CATALOG)


@lru_cache(maxsize=None)
def _devices_yaml() -> dict:
    return _read_yaml("devices.yaml")


def device_names() -> tuple[str, ...]:
    return tuple(_devices_yaml()["devices"])


def _figure(raw: Any, sources: Mapping[str, str]) -> tuple[float | None, Figure | None]:
    if raw is None:
        return None, None
    src = raw.get("source", "")
    return float(raw["value"]), Figure(sources.get(src, src), bool(raw.get("unverified", False)), raw.get("note", ""))


@lru_cache(maxsize=None)
def load_device(name: str) -> Device:
    data = _devices_yaml()
    if name not in data["devices"]:
        raise InputError("device", f"unknown device '{name}'", nearest_names(name, data["devices"]))
    raw, sources = data["devices"][name], data["sources"]
    provenance: dict[str, Figure] = {}
    values: dict[str, float | None] = {}
    for key in ("hbm_bytes", "hbm_bytes_per_s", "scaleup_bytes_per_s", "scaleout_bytes_per_s", "power_w"):
        values[key], fig = _figure(raw.get(key), sources)
        if fig:
            provenance[key] = fig
    peaks = {}
    for dtype_peak, fig_raw in raw["peak_flops_per_s"].items():
        peaks[dtype_peak], provenance[f"peak_flops_per_s.{dtype_peak}"] = _figure(fig_raw, sources)
    counts = {}
    for key in ("ranks_per_device", "num_sms"):
        counts[key], fig = _figure(raw.get(key), sources)
        if fig:
            provenance[key] = fig
    attainable = {}
    for key, fig_raw in raw.items():
        if key.startswith("attainable_"):
            attainable[key.removeprefix("attainable_")], provenance[key] = _figure(fig_raw, sources)
    return Device(
        name=name,
        vendor=raw["vendor"],
        display_name=raw["display_name"],
        peak_flops_per_s=peaks,
        ranks_per_device=int(counts["ranks_per_device"] or 1),
        num_sms=None if counts["num_sms"] is None else int(counts["num_sms"]),
        attainable=attainable,
        provenance=provenance,
        **values,
    )


@lru_cache(maxsize=None)
def _clusters_yaml() -> dict:
    return _read_yaml("clusters.yaml")


def unit_names() -> tuple[str, ...]:
    return tuple(_clusters_yaml()["units"])


@lru_cache(maxsize=None)
def load_unit(name: str, field: str = "cluster.unit") -> ClusterUnit:
    units = _clusters_yaml()["units"]
    if name not in units:
        raise InputError(field, f"unknown cluster unit '{name}'", nearest_names(name, units))
    raw = dict(units[name])
    return ClusterUnit(name=name, device=load_device(raw.pop("device")), **raw)


def units_for_device(device: str) -> tuple[str, ...]:
    return tuple(n for n, u in _clusters_yaml()["units"].items() if u["device"] == device)


@lru_cache(maxsize=None)
def price_table() -> price_tables.PriceTable:
    """catalogs/prices.yaml: the default rows and each cloud's."""
    return price_tables.parse_table(_read_yaml("prices.yaml"), str(CATALOG_DIR / "prices.yaml"), device_names())


def catalog_prices(cloud: str | None = None) -> Mapping[str, Price]:
    """USD per device-hour by device: the default rows, or one cloud's (an unknown cloud is an InputError)."""
    return price_table().for_cloud(cloud)


def unpriced_text(device: str) -> str:
    """Why `device` has no price, said wherever a plan lacks one: "no price for D (catalogs/prices.yaml: no published
    hourly price found, searched DATE)", the parenthesis only where prices.yaml records that search."""
    search = price_table().unpriced.get(device)
    return f"no price for {device}" + (f" (catalogs/prices.yaml: {search.short()})" if search else "")


def cloud_names() -> tuple[str, ...]:
    return tuple(price_table().clouds)


def read_price_file(path: str | Path, field: str = "--prices") -> price_tables.PriceTable:
    """A user's price file (catalogs/prices.yaml's format; a row may be a bare number): errors name the file and entry."""
    path = Path(path)
    text = safe_yaml.read_text(path, field, "give a YAML price file in catalogs/prices.yaml's format")
    return price_tables.parse_table(safe_yaml.load(text, f"{field} {path}"), f"{field} {path}", device_names(), user=True)


@lru_cache(maxsize=None)
def _models_yaml() -> dict:
    return _read_yaml("models.yaml")


def model_names() -> tuple[str, ...]:
    return tuple(_models_yaml()["models"])


def model_entry(name: str) -> Mapping[str, str]:
    models = _models_yaml()["models"]
    if name not in models:
        raise InputError("model", f"unknown model '{name}'", nearest_names(name, models) + " (or give a path to a config.json)")
    return models[name]


def load_model(name_or_path: str, field: str = "model", base_dir: Path | None = None) -> ModelArch:
    """A catalog model by name, or any HuggingFace config.json on disk (a file or a folder holding one), or, with the
    measured extra installed, a HuggingFace id whose config.json aiconfigurator-core ships (read in place)."""
    config, name, where = _config_of(name_or_path, field, base_dir)
    return arch_from_config(config, name, where)


def model_config(name_or_path: str, field: str = "model") -> dict:
    """The config.json fields of a model (a multimodal wrapper's text_config), as kernels_ref takes them."""
    config, name, where = _config_of(name_or_path, field, None)
    arch_from_config(config, name, where)  # the same checks as planning it: a decoder, sizes within bounds
    return dict(config.get("text_config") or config) if "hidden_size" not in config else dict(config)


def model_by_hf_id(hf_id: str) -> str | None:
    """The catalog name whose HuggingFace repository (`hf_repo`, or one of its `aliases`) is `hf_id`, ignoring case."""
    wanted = hf_id.strip().lower()
    for name, entry in _models_yaml()["models"].items():
        if wanted in (r.lower() for r in [entry.get("hf_repo", ""), *entry.get("aliases", [])]):
            return name
    return None


def _config_of(name_or_path: str, field: str, base_dir: Path | None) -> tuple[Any, str, str]:
    looks_like_path = name_or_path.endswith(".json") or "/" in name_or_path or name_or_path.startswith(".")
    by_hf_id = model_by_hf_id(name_or_path) if looks_like_path and not name_or_path.endswith(".json") else None
    if by_hf_id is not None and not _exists(name_or_path, base_dir):  # a path on disk wins over a catalog id
        name_or_path, looks_like_path = by_hf_id, False
    if not looks_like_path:
        entry = model_entry(name_or_path)
        path = CATALOG_DIR / entry["config"]
        return _read_config(path, field), name_or_path, str(path)
    fix = "give a catalog model name or HuggingFace id (moeplan models) or an existing config.json path"
    try:
        path = Path(name_or_path).expanduser()
        if base_dir is not None and not path.is_absolute():
            path = base_dir / path
        if path.is_dir():
            path = path / "config.json"
        found = path.is_file()
    except (OSError, ValueError, RuntimeError) as e:  # a name too long, a NUL character, ~nobody/
        raise InputError(field, f"cannot use '{excerpt(name_or_path)[1:-1]}' as a path ({e.__class__.__name__})", fix) from None
    if not found:
        shipped = None if name_or_path.endswith(".json") else model_config_path(name_or_path)
        if shipped is None:
            raise InputError(field, f"no config.json at '{excerpt(name_or_path)[1:-1]}'", fix + " (or, with "
                             "moeplan[measured], a HuggingFace id whose config.json aiconfigurator-core ships)")
        name = name_or_path.strip().split("/")[-1].lower()
        return _with_hf_quant(_read_config(shipped, field), shipped, field), name, str(shipped)
    return _read_config(path, field), path.parent.name if path.name == "config.json" else path.stem, str(path)


def _with_hf_quant(config: Any, path: Path, field: str) -> Any:
    """A ModelOpt checkpoint's format from its hf_quant_config.json beside the config.json (as aiconfigurator-core
    ships NVIDIA's nvidia/*-NVFP4 and *-FP8 checkpoints), where config.json states none: NVFP4 (groups of 16) or FP8
    (per tensor) on every linear layer but its `exclude_modules` globs."""
    side = path.with_name(path.name.replace("_config.json", "_hf_quant_config.json"))
    if not isinstance(config, dict) or config.get("quantization_config") or not side.is_file():
        return config
    side_config = _read_config(side, field)
    quant = (side_config.get("quantization") if isinstance(side_config, dict) else None) or {}
    bits = {"NVFP4": (4, quant.get("group_size") or 16), "FP8": (8, None)}.get(quant.get("quant_algo"))
    if bits is None:  # a mixed-precision recipe names its formats per layer: read as bf16 it would be priced wrong
        raise InputError(f"{side.name} quantization.quant_algo", f"{excerpt(quant.get('quant_algo'))} is not a format "
                         "moeplan reads from an hf_quant_config.json (NVFP4, FP8)",
                         "set the precision of each part in the spec (precision.routed_experts: nvfp4, ...)")
    weights = {"num_bits": bits[0], "type": "float"} | ({"group_size": bits[1]} if bits[1] else {"strategy": "tensor"})
    return config | {"quantization_config": {"quant_method": "modelopt", "config_groups": {"group_0": {"weights": weights}},
                                             "ignore": list(quant.get("exclude_modules") or [])}}


def _exists(name_or_path: str, base_dir: Path | None) -> bool:
    try:
        path = Path(name_or_path).expanduser()
        return (base_dir / path if base_dir is not None and not path.is_absolute() else path).exists()
    except (OSError, ValueError, RuntimeError):
        return False


MAX_CONFIG_BYTES = 4 * 2**20  # a config.json is a few KB; one that lists every quantised module a few hundred
MAX_CONFIG_DEPTH = 32  # a config.json nests 6 levels (text_config.quantization_config.config_groups.group_0.weights)


def _read_config(path: Path, field: str) -> Any:
    """The JSON object of a config.json, read in bounded work: at most MAX_CONFIG_BYTES, MAX_CONFIG_DEPTH levels."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(field, f"cannot read '{path}': {e}", "check the path and permissions") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise InputError(field, f"'{path}' is larger than {MAX_CONFIG_BYTES:,} bytes", "give the model's config.json "
                         "(a few KB), not its weights or tokenizer")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(field, f"'{path}' is not valid JSON (line {e.lineno}: {e.msg})", "fix the file") from None
    except (ValueError, RecursionError) as e:  # a number of over 4,300 digits; thousands of nested brackets
        problem = "nests too deep" if isinstance(e, RecursionError) else f"holds a value that cannot be read ({str(e).split(';')[0]})"
        raise InputError(field, f"'{path}' {problem}", "give the model's own config.json") from None
    if _depth_past(config, MAX_CONFIG_DEPTH):
        raise InputError(field, f"'{path}' nests deeper than {MAX_CONFIG_DEPTH} levels", "give the model's own config.json")
    return config


def _depth_past(value: Any, limit: int) -> bool:
    """Whether JSON `value` nests more than `limit` objects and arrays (iteratively: no recursion)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return False


@lru_cache(maxsize=None)
def published_kernels() -> Mapping[str, Any]:
    """catalogs/published/kernels.yaml: the published kernel tables the operator models are fitted to."""
    return _read_yaml("published/kernels.yaml")


@lru_cache(maxsize=None)
def published_amendments() -> Mapping[str, Any]:
    """catalogs/published/amendments.yaml: per published entry id, the fields it leaves out that its source states."""
    return _read_yaml("published/amendments.yaml")["amendments"]


@lru_cache(maxsize=None)
def stored_fit(name: str) -> Mapping[str, Any]:
    """catalogs/fits/<name>.yaml: a fit hwmodels.calibrate made, its parameters and its report."""
    return _read_yaml(f"fits/{name}.yaml")


@lru_cache(maxsize=None)  # read once per engine, not at every spec a sweep resolves
def request_overhead_s(engine: str) -> float:
    """A serving engine's per-request TTFT overhead fitted to measured closed loops (catalogs/fits/closed-loop.yaml,
    hwmodels.calibrate.closed_loop_fit); 0 for an engine the fit lacks."""
    return float(stored_fit("closed-loop")["parameters"]["request_overhead_s"].get(engine, 0.0))


def gpu_generation(device: Device) -> str:
    """The generation key of the engine constants fitted per GPU generation: "blackwell" for an NVIDIA device with fp4
    tensor cores (B200, B300, GB200, GB300, RTX PRO 6000), "earlier" for any other (H100, H200, H20, A100, ...)."""
    return "blackwell" if device.vendor == "nvidia" and "fp4" in device.peak_flops_per_s else "earlier"


@lru_cache(maxsize=None)
def shared_expert_overlap(engine: str, generation: str) -> float:
    """The share of the shorter of a decode step's shared and routed experts a serving engine hides by running them
    side by side, on a GPU generation (gpu_generation), fitted to measured closed loops' TPOT
    (catalogs/fits/closed-loop.yaml, hwmodels.calibrate.closed_loop_fit); 0 for an engine or generation the fit lacks."""
    fitted = stored_fit("closed-loop")["parameters"].get("shared_expert_overlap", {})
    return float(fitted.get(engine, {}).get(generation, 0.0))


def closed_loop_held_out(engine: str) -> tuple[float, float] | None:
    """(TPOT, TTFT) median |predicted / measured - 1| of moeplan on the measured closed loops an engine served, each
    held out of the fit that priced it (catalogs/fits/closed-loop.yaml's 5-fold cross-validation by configuration);
    None for an engine the file lacks."""
    cv = stored_fit("closed-loop")["report"]["cross_validation"]
    keys = (f"{engine}_tpot_median_abs_error", f"{engine}_ttft_median_abs_error")
    return (float(cv[keys[0]]), float(cv[keys[1]])) if all(k in cv for k in keys) else None


@lru_cache(maxsize=None)
def layer_overhead_s(engine: str) -> float:
    """A serving engine's host time per layer of a forward step outside its kernels (a step of L layers takes L times
    it), fitted to measured closed loops' TPOT (catalogs/fits/closed-loop.yaml, hwmodels.calibrate.closed_loop_fit);
    0 for an engine the fit lacks."""
    return float(stored_fit("closed-loop")["parameters"]["layer_overhead_s"].get(engine, 0.0))


def step_constants(engine: str, device: Device, num_layers: int) -> tuple[float, float]:
    """A serving engine's fitted step constants for a model of `num_layers` layers on `device`: (the host time every
    step adds, layer_overhead_s x num_layers; the shared-expert overlap on the device's GPU generation)."""
    return layer_overhead_s(engine) * num_layers, shared_expert_overlap(engine, gpu_generation(device))


def step_constant_notes(engine: str, arch, step_overhead_s: float, overlap: float) -> list[str]:
    """The assumption lines for an engine's step constants (step_constants) on `arch` (a ModelArch), one per constant
    that applies: a plan's (planner.engine_notes) and a validated run's (hwmodels.calibrate.deployments) alike."""
    fit, out = "catalogs/fits/closed-loop.yaml", []
    if step_overhead_s:
        out.append(f"every step includes {engine}'s host time, {step_overhead_s * 1e3:.2f} ms ({arch.num_layers} layers "
                   f"at {step_overhead_s / arch.num_layers * 1e6:.1f} us: launch gaps, scheduling, sampling, output "
                   f"handling; fitted to measured closed loops' TPOT, {fit})")
    if overlap and arch.moe is not None and arch.moe.shared_intermediate_size:
        out.append(f"{engine} runs the shared experts beside the routed ones in decode: {overlap:.0%} of the shorter of "
                   f"the two is hidden (fitted per engine and GPU generation to measured closed loops' TPOT, {fit})")
    return out


@lru_cache(maxsize=None)
def sliding_kv_share(engine: str) -> float:
    """The share of a full layer's KV per token of context a serving engine reserves for each sliding-window layer
    (catalogs/engine_kv.yaml: TensorRT-LLM 1, SGLang 0.8, vLLM 0); 0, the window only, for an engine it lacks."""
    entry = _read_yaml("engine_kv.yaml")["engines"].get(engine)
    return float(entry["sliding_kv_share"]) if entry else 0.0


@lru_cache(maxsize=None)
def workloads() -> Mapping[str, Mapping[str, Any]]:
    return _read_yaml("workloads.yaml")["workloads"]


@lru_cache(maxsize=None)
def _routing_skew_yaml() -> dict:
    return _read_yaml("routing_skew.yaml")["models"]


def routing_skew(model: str) -> Mapping[str, Any] | None:
    """The measured contiguous-placement imbalance table that applies to a model, if one was published."""
    return next((entry for entry in _routing_skew_yaml().values() if model in entry["applies_to"]), None)


@lru_cache(maxsize=None)
def engine_flags() -> Mapping[str, Any]:
    """Each serving engine's documented launch flags at a pinned version, with their source (moeplan.launch
    checks the flags it writes against these)."""
    return _read_yaml("engine_flags.yaml")
