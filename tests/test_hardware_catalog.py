"""The devices issue 20 adds or completes (H20 96/141 GB, H800, B300, GB300, Ascend 910B, AMD MI300X/MI325X/MI355X):
every figure the step model uses is present and cited, third-party figures stay flagged, each device has a cluster
unit, and a 910B and an H20 cluster plan from their example specs (real solves, the CLI of this checkout)."""

import json
from dataclasses import replace

import pytest

import checkout_cli
from hwmodels import catalog
from hwmodels.errors import InputError
from hwmodels.hardware import make_cluster
from moeplan import api
from moeplan.spec import example_path

NEW = ("h20-96gb", "h20-141gb", "mi300x", "mi325x", "mi355x")
STEP_FIGURES = ("hbm_bytes", "hbm_bytes_per_s", "scaleup_bytes_per_s")  # what every plan reads


@pytest.mark.parametrize("name", catalog.device_names())
def test_every_device_has_the_figures_a_plan_reads_each_with_a_source_and_a_unit(name):
    d = catalog.load_device(name)
    assert "bf16" in d.peak_flops_per_s and d.peak_flops_per_s["bf16"] > 0
    for key in STEP_FIGURES:
        assert getattr(d, key) > 0 and d.provenance[key].source
    for key, figure in d.provenance.items():
        assert figure.source, key
    assert catalog.units_for_device(name), f"no cluster unit in catalogs/clusters.yaml is built from {name}"


@pytest.mark.parametrize("name", ("b300-sxm", "gb300"))
def test_blackwell_ultra_is_complete(name):
    d = catalog.load_device(name)
    assert {"bf16", "fp8", "fp4"} <= set(d.peak_flops_per_s)
    assert d.scaleout_bytes_per_s and d.power_w and not d.unverified_fields()
    unit = catalog.load_unit(catalog.units_for_device(name)[0])
    assert unit.scaleup_domain_devices == (72 if name == "gb300" else 8)


def test_h20_figures_come_from_nvidia_aiconfigurator_and_the_96gb_capacity_is_flagged():
    small, large = catalog.load_device("h20-96gb"), catalog.load_device("h20-141gb")
    # a bf16 peak 15% of H100's, an H200-class HBM: the China-market Hopper
    assert small.peak_flops_per_s["bf16"] == 148e12 and large.peak_flops_per_s["fp8"] == 296e12
    assert (small.hbm_bytes_per_s, large.hbm_bytes_per_s) == (4.0e12, 4.917e12)
    assert small.scaleup_bytes_per_s == large.scaleup_bytes_per_s == 450e9
    assert "h20_sxm.yaml" in small.provenance["hbm_bytes_per_s"].source
    assert "h20_3e.yaml" in large.provenance["hbm_bytes"].source
    assert set(small.unverified_fields()) == {"hbm_bytes", "power_w", "num_sms"}
    assert set(large.unverified_fields()) == {"num_sms"} and small.num_sms == large.num_sms == 78


def test_h800_nvlink_is_nvidia_aiconfigurator_figure_and_the_measured_derate_stays():
    d = catalog.load_device("h800-sxm")
    assert d.scaleup_bytes_per_s == 200e9 and "h800_sxm.yaml" in d.provenance["scaleup_bytes_per_s"].source
    assert d.attainable["scaleup_bytes_per_s"] == 160e9 and not d.unverified_fields()


def test_910b_links_are_cited_and_flagged_and_a_plan_across_servers_needs_the_roce_figure():
    d = catalog.load_device("ascend-910b")
    assert d.scaleup_bytes_per_s == 196e9 and d.scaleout_bytes_per_s == 25e9
    assert {"scaleup_bytes_per_s", "scaleout_bytes_per_s", "peak_flops_per_s.int8"} <= set(d.unverified_fields())
    assert "HCCS" in d.provenance["scaleup_bytes_per_s"].source and "200GE" in d.provenance["scaleout_bytes_per_s"].source
    # without the RoCE figure (as before issue 20) DeepSeek-V3 on four Atlas 800 A2 servers cannot be planned: the
    # all-to-all between servers has no link to price, and the error names the missing field
    deployment = api.deployment(example_path("deepseek-v3-910b-32.yaml"))
    no_roce = replace(catalog.load_unit("atlas-800-a2"), device=replace(d, scaleout_bytes_per_s=None))
    with pytest.raises(InputError, match="device.scaleout_bytes_per_s: not published for ascend-910b"):
        api.plan(replace(deployment, cluster=make_cluster(no_roce, units=4)))


def test_amd_devices_are_all_flagged_third_party_and_leave_scale_out_to_the_platform():
    for name in ("mi300x", "mi325x", "mi355x"):
        d = catalog.load_device(name)
        assert set(d.provenance) == set(d.unverified_fields())  # no AMD data sheet in the sources: every figure
        assert d.scaleout_bytes_per_s is None
    assert catalog.load_device("mi355x").peak_flops_per_s["fp4"] == 10e15
    assert catalog.load_device("mi325x").hbm_bytes == 256e9


def _plan(tmp_path, spec: str) -> dict:
    r = checkout_cli.run("plan", str(example_path(spec)), "--json", cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_an_h20_cluster_plans(tmp_path):
    plan = _plan(tmp_path, "deepseek-v3-h20-16.yaml")
    d = api.deployment(example_path("deepseek-v3-h20-16.yaml"))
    assert d.cluster.device.name == "h20-96gb" and d.cluster.num_devices == 16
    rec = plan["recommendation"]
    assert rec is not None and rec["devices"] <= 16
    assert rec["tpot_s"] <= d.slo.tpot_s and rec["ttft_s"] <= d.slo.ttft_s
    # the 96 GB H20 is priced at StepFun's published assumption (Step-3 report, Table 4): $0.8 per card-hour
    assert plan["provenance"]["price"]["usd_per_device_hour"] == 0.8 and "Step-3" in plan["provenance"]["price"]["source"]
    assert rec["usd_per_hour"] == pytest.approx(rec["devices"] * 0.8)


def test_a_910b_cluster_plans_across_servers_over_roce(tmp_path):
    plan = _plan(tmp_path, "deepseek-v3-910b-32.yaml")
    d = api.deployment(example_path("deepseek-v3-910b-32.yaml"))
    assert d.cluster.device.name == "ascend-910b" and d.precision.label().startswith("int8")
    rec = plan["recommendation"]
    assert rec is not None and rec["tpot_s"] <= d.slo.tpot_s
    # DeepSeek-V3 in int8 (~671 GB) does not fit one 8 x 64 GB server: the instance spans servers, over RoCE
    assert rec["devices"] > 8


@pytest.mark.parametrize("name, system, unit", [("a100-sxm", "a100_sxm", "hgx-a100"), ("l40s", "l40s", "l40s-8"),
                                                ("rtx-pro-6000", "rtx_pro_6000_server", "rtx-pro-6000-8")])
def test_a100_and_l40s_restate_nvidias_system_files(name, system, unit):
    """A100 SXM and the PCIe L40S (MegaScale-Infer's expert device): every figure as aiconfigurator-core's own
    systems/<gpu>.yaml states it (read from the installed package where it is), and their kernels measured there
    price them (hwmodels.calibrate.measured_tables.SYSTEMS)."""
    from hwmodels.calibrate import measured_tables
    from hwmodels.safe_yaml import load

    d, u = catalog.load_device(name), catalog.load_unit(unit)
    assert measured_tables.SYSTEMS[name] == system and u.device.name == name and u.devices_per_node == 8
    root = measured_tables.database_root()
    if root is None:
        pytest.skip("aiconfigurator-core is not installed (pip install '.[measured]')")
    spec = load((root.parent / f"{system}.yaml").read_text(), f"{system}.yaml")
    gpu, node = spec["gpu"], spec["node"]
    assert d.hbm_bytes == gpu["mem_capacity"] and d.hbm_bytes_per_s == gpu["mem_bw"]
    assert d.peak_flops_per_s["bf16"] == gpu["bfloat16_tc_flops"] and d.peak_flops_per_s.get("fp8") == gpu.get("fp8_tc_flops")
    assert d.peak_flops_per_s.get("fp4") == gpu.get("fp4_tc_flops")
    assert d.scaleup_bytes_per_s == node["intra_node_bw"] and d.scaleout_bytes_per_s == node["inter_node_bw"]
    assert measured_tables.table_versions(system, "sglang", "gemm_perf")  # measured kernels to price it


def test_gpt_oss_on_l40s_is_priced_by_measured_tables():
    """README: gpt-oss-120b on an 8 x L40S server is priced by SGLang's tables, all five of its families."""
    from hwmodels.calibrate import measured_tables
    from hwmodels.calibrate.engine_choice import best_covered, engine_coverage
    from hwmodels.precision import default_plan

    if measured_tables.database_root() is None:
        pytest.skip("aiconfigurator-core is not installed (pip install '.[measured]')")
    arch = catalog.load_model("gpt-oss-120b")
    best = best_covered(engine_coverage(catalog.load_device("l40s"), arch, default_plan(arch.quantization_config)))
    assert best.engine == "sglang" and best.phrase() == "sglang 5 of 5"
