"""Every catalog figure has a source; the catalog agrees with the published hardware figures."""

import math

import pytest
import yaml

from hwmodels import catalog
from hwmodels.units import GiB, MiB

DEVICES = ("h100-sxm", "h200-sxm", "h800-sxm", "b200-sxm", "gb200", "b300-sxm", "gb300", "ascend-910b", "ascend-910c")
MODELS = ("kimi-k2", "kimi-k2.5", "deepseek-v3", "deepseek-r1", "qwen3-235b-a22b", "qwen3-30b-a3b", "mixtral-8x7b")


def test_required_devices_models_and_units_exist():
    assert set(DEVICES) <= set(catalog.device_names())
    assert set(MODELS) <= set(catalog.model_names())
    for unit in ("hgx-h100", "hgx-h200", "hgx-h800", "hgx-b200", "hgx-b300", "gb200-nvl72", "gb300-nvl72", "atlas-800-a2", "cloudmatrix384"):
        assert unit in catalog.unit_names()


@pytest.mark.parametrize("name", DEVICES)
def test_every_device_figure_has_a_source(name):
    d = catalog.load_device(name)
    for key in ("hbm_bytes", "hbm_bytes_per_s"):
        assert d.provenance[key].source
    for dtype_peak in d.peak_flops_per_s:
        assert d.provenance[f"peak_flops_per_s.{dtype_peak}"].source
    for key, value in (("scaleup_bytes_per_s", d.scaleup_bytes_per_s), ("scaleout_bytes_per_s", d.scaleout_bytes_per_s)):
        assert value is None or d.provenance[key].source


def test_ascend_figures_from_third_party_summaries_stay_unverified():
    assert "peak_flops_per_s.bf16" in catalog.load_device("ascend-910b").unverified_fields()
    c = catalog.load_device("ascend-910c").unverified_fields()
    assert {"peak_flops_per_s.bf16", "hbm_bytes_per_s", "scaleup_bytes_per_s"} <= set(c)
    assert not catalog.load_device("h200-sxm").unverified_fields()


def test_scaleup_domains():
    assert catalog.load_unit("hgx-h200").scaleup_domain_devices == 8
    nvl72 = catalog.load_unit("gb200-nvl72")
    assert (nvl72.scaleup_domain_devices, nvl72.devices_per_node, nvl72.devices) == (72, 4, 72)
    cm = catalog.load_unit("cloudmatrix384")
    assert (cm.scaleup_domain_devices, cm.devices, cm.device.name) == (384, 384, "ascend-910c")


def test_prices_have_sources():
    prices = catalog.catalog_prices()
    assert prices["h200-sxm"].usd_per_device_hour == 2.3
    assert all(p.source for p in prices.values())
    # what kind of figure and when: comparisons warn when these differ (moeplan.study.price_warnings)
    assert all(p.basis in ("assumption", "list", "on-demand") and p.date[:2] == "20" for p in prices.values())


def test_devices_match_published_hardware_file(shared_data):
    published = yaml.safe_load((shared_data / "published" / "hardware.yaml").read_text())["devices"]
    for name in DEVICES:
        pub, dev = published[name], catalog.load_device(name)
        unverified = pub.get("unverified", {}) if isinstance(pub.get("unverified"), dict) else {}
        if "hbm_gib" in pub:
            assert dev.hbm_bytes == pub["hbm_gib"] * GiB
        if "hbm_mib" in pub:
            assert dev.hbm_bytes == pub["hbm_mib"] * MiB
        if "hbm_gb" in pub:
            assert dev.hbm_bytes == pub["hbm_gb"] * 1e9
        for key, peak in (("bf16_tflops", "bf16"), ("fp8_tflops", "fp8"), ("fp4_tflops", "fp4")):
            if key in pub:
                assert math.isclose(dev.peak_flops_per_s[peak], pub[key] * 1e12, rel_tol=0.002)
        if "hbm_tb_per_s" in pub:
            assert dev.hbm_bytes_per_s == pub["hbm_tb_per_s"] * 1e12
        if "bf16_tflops" in unverified and isinstance(unverified["bf16_tflops"], (int, float)):
            assert dev.peak_flops_per_s["bf16"] == unverified["bf16_tflops"] * 1e12
            assert "peak_flops_per_s.bf16" in dev.unverified_fields()
        if "scaleup_gb_per_s_per_dir" in pub:
            assert dev.scaleup_bytes_per_s == pub["scaleup_gb_per_s_per_dir"] * 1e9
        if "scaleout_gb_per_s" in pub:
            assert dev.scaleout_bytes_per_s == pub["scaleout_gb_per_s"] * 1e9
    assert catalog.load_device("h800-sxm").attainable["scaleup_bytes_per_s"] == published["h800-sxm"]["scaleup_gb_per_s_achievable"] * 1e9


def test_prices_match_published_file(shared_data):
    published = yaml.safe_load((shared_data / "published" / "hardware.yaml").read_text())["prices_usd_per_device_hour"]
    prices = catalog.catalog_prices()
    for row in published:
        assert prices[row["device"]].usd_per_device_hour == row["price"]


@pytest.mark.parametrize("name", MODELS)
def test_every_catalog_model_loads(name):
    arch = catalog.load_model(name)
    assert arch.is_moe and arch.num_layers > 0
