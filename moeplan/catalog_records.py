"""The catalogs as plain records: what `moeplan models / devices / clusters --json` print and the dashboard lists.
Every figure keeps its source."""

from __future__ import annotations

from typing import Any

from hwmodels import arithmetic, catalog
from hwmodels.precision import DTYPES, SCHEMES, default_plan


def model_records() -> list[dict[str, Any]]:
    """Per catalog model: its name, size, experts, layers, attention, weight bytes, format and KV bytes per token."""
    rows = []
    for name in catalog.model_names():
        arch = catalog.load_model(name)
        s = arithmetic.summary(arch, default_plan(arch.quantization_config, arch.torch_dtype))
        entry = catalog.model_entry(name)
        rows.append({"name": name, "display_name": entry["display_name"]} | {
            k: s[k] for k in ("total_params", "active_params", "experts", "experts_per_token", "layers", "attention",
                              "weight_bytes", "kv_bytes_per_token")
        } | {"precision": s["precision"]["routed_experts"], "source": entry["source"]})
    return rows


def device_record(name: str, rows=None, where: str = "catalogs/prices.yaml", searches=None) -> dict[str, Any]:
    """One device's figures and sources; its price from `rows` (device -> Price; default: the catalog's default rows);
    `searches` (device -> PriceSearch; default: the catalog's, for its default rows) says what was searched where
    none was found."""
    d = catalog.load_device(name)
    price = (catalog.catalog_prices() if rows is None else rows).get(name)
    search = (catalog.price_table().unpriced if rows is None else searches or {}).get(name)
    return {
        "name": name,
        "display_name": d.display_name,
        "vendor": d.vendor,
        "peak_flops_per_s": dict(d.peak_flops_per_s),
        "hbm_bytes": d.hbm_bytes,
        "hbm_bytes_per_s": d.hbm_bytes_per_s,
        "scaleup_bytes_per_s": d.scaleup_bytes_per_s,
        "scaleout_bytes_per_s": d.scaleout_bytes_per_s,
        "power_w": d.power_w,
        "attainable": dict(d.attainable),
        "price_usd_per_hour": price.usd_per_device_hour if price else None,
        "price_source": price.source if price else f"no price in {where}: set prices.{name} in the spec",
        "price_basis": price.basis if price else None,
        "price_date": price.date if price else None,
        "price_searched": search.describe() if search and not price else None,
        "unverified": list(d.unverified_fields()),
        "sources": {k: f.source for k, f in d.provenance.items()},
        "cluster_units": list(catalog.units_for_device(name)),
    }


def device_records(cloud: str | None = None, prices_file=None) -> list[dict[str, Any]]:
    """Every catalog device, priced by the default rows, one cloud's (`cloud`) or a price file's (`prices_file`)."""
    table = catalog.price_table() if prices_file is None else catalog.read_price_file(prices_file)
    rows = table.for_cloud(cloud, "--cloud")
    where = (f"cloud {cloud} of " if cloud else "") + (str(prices_file) if prices_file is not None else "catalogs/prices.yaml")
    searches = table.unpriced if cloud is None else {}  # a cloud that does not offer a device was not searched for it
    return [device_record(n, rows, where, searches) for n in catalog.device_names()]


def cloud_records() -> list[dict[str, Any]]:
    """The clouds of catalogs/prices.yaml and the devices each prices."""
    table = catalog.price_table()
    return [{"name": name, "display_name": table.display[name], "devices": sorted(rows)} for name, rows in table.clouds.items()]


def cluster_records() -> list[dict[str, Any]]:
    rows = []
    for name in catalog.unit_names():
        u = catalog.load_unit(name)
        rows.append({"name": name, "display_name": u.display_name, "device": u.device.name, "devices": u.devices,
                     "devices_per_node": u.devices_per_node, "scaleup_domain_devices": u.scaleup_domain_devices,
                     "scaleup_fabric": u.scaleup_fabric, "scaleout_fabric": u.scaleout_fabric, "source": u.source})
    return rows


def workload_records() -> dict[str, dict[str, Any]]:
    """The named workloads (catalogs/workloads.yaml): mean lengths, traffic and source."""
    return {name: dict(w) for name, w in catalog.workloads().items()}


def number_formats() -> dict[str, tuple[str, ...]]:
    """The formats a spec's precision may name: weight schemes, and dtypes of the KV cache and activations."""
    return {"weights": tuple(SCHEMES), "kv_cache": tuple(DTYPES)}
