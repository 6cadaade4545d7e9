"""Price tables (hwmodels.prices): the default rows, one cloud's rows, a user's file; how a spec and the CLI pick
them; and that a missing price is said, never a silent hole. Real plans, no mocks."""

import json

import pytest
import yaml

import checkout_cli
from hwmodels import catalog, prices
from hwmodels.deployment import Price
from hwmodels.errors import InputError
from moeplan import api
from moeplan.spec import example_path

SMALL = {"model": "deepseek-v3", "cluster": {"unit": "hgx-h20-96gb", "units": 2},
         "workload": {"input_tokens": 2048, "output_tokens": 512, "requests_per_s": 2.0},
         "slo": {"ttft_s": 5.0, "tpot_s": 0.1}}


def test_every_price_row_has_a_value_basis_date_and_source():
    table = catalog.price_table()
    rows = [*table.default.values(), *(p for cloud in table.clouds.values() for p in cloud.values())]
    assert len(rows) > len(table.default)  # the clouds add rows
    for p in rows:
        assert p.usd_per_device_hour > 0 and p.source and p.basis in ("assumption", "list", "on-demand") and p.date[:2] == "20"


def test_every_catalog_device_has_a_dated_sourced_price_or_a_dated_record_of_the_search():
    """The bar of issue 20: a device added to catalogs/devices.yaml without a default price row (value, basis, date,
    source) or a no_published_price entry (what was searched, and when) fails here."""
    table = catalog.price_table()
    assert prices.unaccounted(table, catalog.device_names()) == []
    for name in catalog.device_names():
        if name in table.default:
            p = table.default[name]
            assert p.source and p.basis in ("assumption", "list", "on-demand") and p.date[:2] == "20", name
        else:
            search = table.unpriced[name]
            assert len(search.searched) > 40 and search.date[:2] == "20", name
    assert not set(table.default) & set(table.unpriced)


def test_a_device_with_neither_a_price_nor_a_search_is_named():
    devices = catalog.device_names() + ("x-new-gpu",)
    raw = yaml.safe_load((catalog.CATALOG_DIR / "prices.yaml").read_text())
    assert prices.unaccounted(prices.parse_table(raw, "prices.yaml", devices), devices) == ["x-new-gpu"]
    raw["no_published_price"]["x-new-gpu"] = {"searched": "every cloud", "date": "2026-12-05"}
    assert prices.unaccounted(prices.parse_table(raw, "prices.yaml", devices), devices) == []


@pytest.mark.parametrize("entry, field, fix", [
    ({"h200-sxm": {"searched": "x", "date": "2026-12-05"}}, "no_published_price.h200-sxm", "remove it"),
    ({"h20-sxm": {"searched": "x", "date": "2026-12-05"}}, "no_published_price.h20-sxm", "did you mean"),
    ({"h20-96gb": {"date": "2026-12-05"}}, "h20-96gb.searched", "what was searched"),
    ({"h20-96gb": {"searched": "x", "date": "2026"}}, "h20-96gb.date", "YYYY-MM-DD"),
])
def test_a_bad_search_record_is_one_error_naming_the_entry(entry, field, fix):
    with pytest.raises(InputError) as e:
        prices.parse_table({"prices_usd_per_device_hour": {"h200-sxm": {"value": 2.3, "basis": "list", "date": "2026",
                                                                         "source": "s"}},
                            "no_published_price": entry}, "p.yaml", catalog.device_names())
    assert field in e.value.field and fix in e.value.fix


def test_a_cloud_row_takes_the_cloud_basis_date_and_source_unless_it_gives_its_own():
    oci = catalog.catalog_prices("oci")
    assert oci["h200-sxm"] == Price(12.25, oci["h200-sxm"].source, "list", "2026-04-14")
    assert oci["h200-sxm"].source.startswith("oci: oraclelicensingexperts.com")
    assert oci["mi300x"].date == "2026-05-18" and "cliffcenter" in oci["mi300x"].source
    assert "ascend-910b" not in oci  # a device the cloud does not offer has no price there, not another cloud's


def test_the_spec_picks_a_cloud_and_its_own_prices_still_win():
    assert api.deployment({**SMALL, "cluster": {"unit": "hgx-h200", "units": 1}}).price.usd_per_device_hour == 2.3
    d = api.deployment({**SMALL, "cluster": {"unit": "hgx-h200", "units": 1}, "prices": {"cloud": "oci"}})
    assert (d.price.usd_per_device_hour, d.price.basis) == (12.25, "list")
    d = api.deployment({**SMALL, "cluster": {"unit": "hgx-h200", "units": 1}, "prices": {"cloud": "oci", "h200-sxm": 3.0}})
    assert (d.price.usd_per_device_hour, d.price.source) == (3.0, "spec")
    assert api.deployment(example_path(), cloud="spheron").price.usd_per_device_hour == 4.54


def test_a_user_price_file_replaces_the_catalog(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("prices_usd_per_device_hour:\n  h20-96gb: 1.2\n  ascend-910b: {value: 0.9, source: our contract, date: '2026-11'}\n")
    d = api.deployment(SMALL, prices=f)
    assert (d.price.usd_per_device_hour, d.price.basis, d.price.source) == (1.2, "user", "user price file")
    b = api.deployment({**SMALL, "cluster": {"unit": "atlas-800-a2", "units": 4}, "prices": {"file": str(f)}})
    assert (b.price.usd_per_device_hour, b.price.source, b.price.date) == (0.9, "our contract", "2026-11")
    # the file replaces the catalog: a device it does not price has none
    assert api.deployment({**SMALL, "cluster": {"unit": "hgx-h200", "units": 1}}, prices=f).price is None


@pytest.mark.parametrize("text, field, fix", [
    ("prices_usd_per_device_hour:\n  h20-sxm: 1.0\n", "prices_usd_per_device_hour.h20-sxm", "did you mean"),
    ("prices_usd_per_device_hour:\n  h20-96gb: -1\n", "h20-96gb.value", "a number > 0"),
    ("prices_usd_per_device_hour:\n  h20-96gb: {value: 1, basis: cheap}\n", "h20-96gb.basis", "use one of"),
    ("prices_usd_per_device_hour: [1, 2]\n", "prices_usd_per_device_hour", "catalogs/prices.yaml"),
    ("price: {h20-96gb: 1}\n", "price", "use prices_usd_per_device_hour, clouds and no_published_price"),
    ("- 1\n", "prices.file", "prices_usd_per_device_hour"),
])
def test_a_malformed_price_file_is_one_error_naming_the_entry(tmp_path, text, field, fix):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(InputError) as e:
        api.deployment(SMALL, prices=f)
    assert field in e.value.field and fix in e.value.fix


def test_an_unknown_cloud_is_one_error_naming_the_field_and_the_clouds():
    with pytest.raises(InputError, match=r"prices.cloud: unknown cloud 'ocii'; fix: did you mean oci"):
        api.deployment({**SMALL, "prices": {"cloud": "ocii"}})


def test_a_device_without_a_price_is_said_in_devices_plan_and_compare():
    records = {r["name"]: r for r in api.devices()}
    for name, r in records.items():
        # every device has a price and its source, or says that none is published and what to do
        assert (r["price_usd_per_hour"] is not None and r["price_source"] and r["price_basis"]) or \
            r["price_source"] == f"no price in catalogs/prices.yaml: set prices.{name} in the spec"
    plan = api.plan({**SMALL, "cluster": {"unit": "hgx-h20-141gb", "units": 2}})  # searched for, none published
    assert plan.recommendation is not None and plan.recommendation.usd_per_hour is None
    # the plan says that none is published and when that was searched, not only that it has none
    assert any(a.startswith("no price for h20-141gb (catalogs/prices.yaml: no published hourly price found, searched "
                            "2026-12-05): set prices.h20-141gb") for a in plan.assumptions)
    assert plan.to_frame("cost").set_index("quantity").loc["usd_per_device_hour", "source"].startswith("no price")


def test_the_prices_found_in_the_issue_20_search_are_sourced_and_dated():
    """MI355X: Vultr's on-demand list (the default row and a cloud that rents AMD and NVIDIA side by side), OCI's
    pay-as-you-go list, TensorWave's 'starting at'; the 96 GB H20: StepFun's Step-3 report (its H800 row is DeepSeek's
    $2, so one source prices both). A price never comes from another device's."""
    table = catalog.price_table()
    mi355x, h20 = table.default["mi355x"], table.default["h20-96gb"]
    assert (mi355x.usd_per_device_hour, mi355x.basis, mi355x.date) == (2.59, "on-demand", "2026-09-26")
    assert "vultr.com/pricing" in mi355x.source
    assert (h20.usd_per_device_hour, h20.basis, h20.date) == (0.8, "assumption", "2025-07") and "2507.19427" in h20.source
    vultr = catalog.catalog_prices("vultr")
    assert {d: p.usd_per_device_hour for d, p in vultr.items()} == {
        "h100-sxm": 2.30, "b200-sxm": 3.50, "mi300x": 1.85, "mi325x": 2.00, "mi355x": 2.59}
    assert {p.basis for p in vultr.values()} == {"on-demand"} and {p.date for p in vultr.values()} == {"2026-09-26"}
    assert catalog.catalog_prices("oci")["mi355x"].usd_per_device_hour == 8.60
    tw = catalog.catalog_prices("tensorwave")["mi355x"]
    assert (tw.usd_per_device_hour, tw.basis, tw.date) == (2.95, "list", "2026-07-31")  # 'starting at', not on-demand
    step3 = catalog.catalog_prices("stepfun-reference")
    assert {d: p.usd_per_device_hour for d, p in step3.items()} == {"h800-sxm": 2.0, "h20-96gb": 0.8}
    # the 910B figure of that table is scaled from A800's by FLOPs (the report says so): recorded, not used
    assert "ascend-910b" not in step3 and "0.67" in table.unpriced["ascend-910b"].searched
    assert set(table.unpriced) == {"h20-141gb", "ascend-910b", "ascend-910c", "rtx-pro-6000"}


def test_devices_cli_lists_each_price_with_its_source_and_refuses_an_unknown_cloud(tmp_path):
    r = checkout_cli.run("devices", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for name in catalog.device_names():
        assert f"price {name}: " in r.stdout
    assert "price ascend-910b: no price in catalogs/prices.yaml: set prices.ascend-910b" in r.stdout
    table = catalog.price_table()
    for name, p in table.default.items():  # each price with its value, kind, date and source
        assert f"price {name}: {p.usd_per_device_hour:.2f} USD/h ({p.basis}, {p.date}): {p.source}" in r.stdout
    for name, search in table.unpriced.items():  # each missing one with the search that found none, and when
        assert f"{search.describe()}" in " ".join(r.stdout.split()), name
    rows = {d["name"]: d for d in json.loads(checkout_cli.run("devices", "--json", cwd=tmp_path).stdout)}
    assert rows["h20-141gb"]["price_usd_per_hour"] is None and rows["h20-141gb"]["price_searched"].startswith(
        "no published hourly price found (searched 2026-12-05")
    assert rows["h200-sxm"]["price_searched"] is None
    r = checkout_cli.run("devices", "--cloud", "oci", "--json", cwd=tmp_path)
    rows = {d["name"]: d for d in json.loads(r.stdout)}
    assert rows["b200-sxm"]["price_usd_per_hour"] == 16.0 and rows["b200-sxm"]["price_basis"] == "list"
    assert rows["gb200"]["price_usd_per_hour"] is None and "cloud oci" in rows["gb200"]["price_source"]
    r = checkout_cli.run("devices", "--cloud", "nope", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.startswith("error: --cloud: unknown cloud 'nope'") and "Traceback" not in r.stderr
    bad = tmp_path / "p.yaml"
    bad.write_text("prices_usd_per_device_hour: {h200-sxm: {value: x}}\n")
    r = checkout_cli.run("plan", str(example_path()), "--prices", str(bad), cwd=tmp_path)
    assert r.returncode == 2 and "prices_usd_per_device_hour.h200-sxm.value: is 'x'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_compare_on_one_cloud_prices_every_device_from_it():
    sweep = api.compare({**SMALL, "cluster": {"unit": "hgx-h200", "units": 2}}, devices=["h200-sxm", "b200-sxm"],
                        processes=1, cloud="oci")
    rows = {r["device"]: r for r in sweep.rows}
    assert rows["h200-sxm"]["usd_per_device_hour"] == 12.25 and rows["b200-sxm"]["usd_per_device_hour"] == 16.0
    assert not any("different sources" in w for w in sweep.warnings)  # one provider, one date: nothing to warn about


def test_catalog_prices_stay_the_published_ones(shared_data):
    published = yaml.safe_load((shared_data / "published" / "hardware.yaml").read_text())["prices_usd_per_device_hour"]
    for row in published:  # the existing default rows are kept as they were
        assert catalog.catalog_prices()[row["device"]].usd_per_device_hour == row["price"]


def test_report_and_dashboard_tables_say_no_price_where_a_feasible_row_has_no_cost():
    from moeplan import display, report

    sweep = api.compare({**SMALL, "model": "qwen3-30b-a3b", "cluster": {"unit": "hgx-h100", "units": 1}},
                        devices=["h100-sxm", "h20-141gb"], processes=1, size=False)
    frame = sweep.to_frame()
    assert frame["feasible"].all()
    cells = display.text_frame(frame).set_index("Device")
    cost = display.label("usd_per_million_output_tokens")
    assert cells.loc["h20-141gb", cost] == display.NO_PRICE and cells.loc["h100-sxm", cost] != display.NO_PRICE
    only_unpriced = display.text_frame(frame[frame["device"] == "h20-141gb"])
    assert cost in only_unpriced.columns  # a cost column with no value in any row is said, not dropped
    assert "| no price |" in report.markdown_table(frame[frame["device"] == "h20-141gb"][["device", "usd_per_hour"]])
