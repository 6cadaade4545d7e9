"""Price tables in USD per device-hour: the default rows and the per-cloud rows of catalogs/prices.yaml, or a user's
file of the same format, read into typed Prices with every bad entry named.

A table is {prices_usd_per_device_hour: {DEVICE: {value, basis, date, source}}, clouds: {NAME: {display_name, basis,
date, source, prices_usd_per_device_hour: {DEVICE: {value, [basis, date, source, note]}}}}, no_published_price:
{DEVICE: {searched, date}}}; a cloud's rows take the cloud's basis, date and source unless they give their own;
no_published_price records a device searched for and not priced (what was searched, and when), so that a device
without a default row is a recorded absence, not an oversight (`unaccounted` names the others). `where` names the
file in every error.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from hwmodels.deployment import Price
from hwmodels.errors import InputError, excerpt, nearest_names

BASES = ("assumption", "list", "on-demand", "user")  # what kind of figure a price is (moeplan.study warns on a mix)
MAX_USD_PER_DEVICE_HOUR = 10_000.0  # 1,000x a data-center GPU's hourly price: past it is a typo (cents, a node's price)
_FIX = "see catalogs/prices.yaml for the format"


@dataclass(frozen=True)
class PriceSearch:
    """A search for a device's published hourly price that found none: what was searched, and when (YYYY-MM-DD)."""

    searched: str
    date: str

    def describe(self) -> str:
        return f"no published hourly price found (searched {self.date}: {self.searched})"

    def short(self) -> str:
        """The finding and its date, without what was searched (plans and reports; `moeplan devices` says all)."""
        return f"no published hourly price found, searched {self.date}"


@dataclass(frozen=True)
class PriceTable:
    """default: one price per device; clouds: cloud name -> its rows; display: cloud name -> what it is;
    unpriced: device -> the search that found no published price (devices without a default row, on purpose)."""

    default: Mapping[str, Price]
    clouds: Mapping[str, Mapping[str, Price]] = field(default_factory=dict)
    display: Mapping[str, str] = field(default_factory=dict)
    unpriced: Mapping[str, PriceSearch] = field(default_factory=dict)

    def for_cloud(self, cloud: str | None, field_name: str = "prices.cloud") -> Mapping[str, Price]:
        """The rows that price a plan: the cloud's (None: the default rows)."""
        if cloud is None:
            return self.default
        if cloud not in self.clouds:
            known = nearest_names(cloud, self.clouds) if self.clouds else "this price table names no cloud"
            raise InputError(field_name, f"unknown cloud '{excerpt(cloud)[1:-1]}'", known)
        return self.clouds[cloud]


def parse_table(raw: Any, where: str, devices: tuple[str, ...], user: bool = False) -> PriceTable:
    """The PriceTable of a loaded YAML document; `devices`: the catalog's names (a row for another is an error);
    `user`: a user's file, whose rows may leave basis and date out (basis 'user')."""
    if not isinstance(raw, Mapping):
        raise InputError(where, "is not a YAML mapping", f"give prices_usd_per_device_hour and/or clouds; {_FIX}")
    unknown = set(raw) - {"schema_version", "prices_usd_per_device_hour", "clouds", "no_published_price"}
    if unknown:
        key = sorted(map(str, unknown))[0]
        raise InputError(f"{where}: {key}", "unknown field", "use prices_usd_per_device_hour, clouds and no_published_price")
    rows = raw.get("prices_usd_per_device_hour") or {}
    default = _rows(rows, f"{where}: prices_usd_per_device_hour", devices, {} if not user else {"basis": "user"}, user)
    clouds, display = {}, {}
    cloud_rows = raw.get("clouds") or {}
    if not isinstance(cloud_rows, Mapping):
        raise InputError(f"{where}: clouds", "is not a mapping of cloud names", _FIX)
    for name, cloud in cloud_rows.items():
        field_name = f"{where}: clouds.{name}"
        if not isinstance(cloud, Mapping):
            raise InputError(field_name, "is not a mapping", f"give display_name, basis, date, source and prices_usd_per_device_hour; {_FIX}")
        shared = {k: cloud[k] for k in ("basis", "date", "source") if k in cloud}
        if user:
            shared.setdefault("basis", "user")
        clouds[str(name)] = _rows(cloud.get("prices_usd_per_device_hour") or {}, f"{field_name}.prices_usd_per_device_hour",
                                  devices, shared, user, prefix=str(name))
        display[str(name)] = str(cloud.get("display_name", name))
    unpriced = _searches(raw.get("no_published_price") or {}, f"{where}: no_published_price", devices, default)
    return PriceTable(default, clouds, display, unpriced)


def unaccounted(table: PriceTable, devices: tuple[str, ...]) -> list[str]:
    """The devices with neither a default row nor a recorded search (no_published_price): a device added to the
    catalog without either is named here."""
    return [d for d in devices if d not in table.default and d not in table.unpriced]


def _searches(rows: Any, field_name: str, devices: tuple[str, ...], default: Mapping[str, Price]) -> dict[str, PriceSearch]:
    if not isinstance(rows, Mapping):
        raise InputError(field_name, "is not a mapping of device names to searches", _FIX)
    out = {}
    for device, row in rows.items():
        at = f"{field_name}.{device}"
        if device not in devices:
            raise InputError(at, "unknown device", nearest_names(str(device), devices))
        if device in default:
            raise InputError(at, "the device has a default row", "remove it from no_published_price")
        if not isinstance(row, Mapping) or not str(row.get("searched") or "").strip():
            raise InputError(f"{at}.searched", "missing", "say what was searched for a published price")
        date = str(row.get("date") or "")
        if not re.fullmatch(r"20\d\d-\d\d-\d\d", date):
            raise InputError(f"{at}.date", f"is {excerpt(row.get('date'))}", "give the day of the search, YYYY-MM-DD")
        out[str(device)] = PriceSearch(str(row["searched"]).strip(), date)
    return out


def _rows(rows: Any, field_name: str, devices: tuple[str, ...], shared: Mapping[str, Any], user: bool,
          prefix: str = "") -> dict[str, Price]:
    if not isinstance(rows, Mapping):
        raise InputError(field_name, "is not a mapping of device names to prices", _FIX)
    out = {}
    for device, row in rows.items():
        at = f"{field_name}.{device}"
        if device not in devices:
            raise InputError(at, "unknown device", nearest_names(str(device), devices))
        row = {"value": row} if user and _is_number(row) else row  # a user's file may give the bare number
        if not isinstance(row, Mapping):
            raise InputError(at, f"is {excerpt(row)}", "give {value: USD per device-hour, source: ..., date: ...}")
        merged = {**shared, **row}
        value = merged.get("value")
        if not _is_number(value) or not 0 < value <= MAX_USD_PER_DEVICE_HOUR:
            raise InputError(f"{at}.value", f"is {excerpt(value)}",
                             f"give USD per device-hour, a number > 0 and <= {MAX_USD_PER_DEVICE_HOUR:,.0f}")
        basis = str(merged.get("basis", ""))
        if basis not in BASES:
            raise InputError(f"{at}.basis", f"is {excerpt(merged.get('basis'))}", f"use one of {', '.join(BASES)}")
        source = str(merged.get("source", "") or ("user price file" if user else ""))
        if not source:
            raise InputError(f"{at}.source", "missing", "say where the price was published")
        if prefix:
            source = f"{prefix}: {source}"
        out[str(device)] = Price(float(value), source, basis, str(merged.get("date", "")))
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
