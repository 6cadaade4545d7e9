"""Operator efficiency model: calibration against the published DeepGEMM and FlashMLA figures, and the
roofline floor on every catalog device.

Calibration source: "deepseek-ai/DeepGEMM README at 55ab91f" (H800 SXM5, fp8), restated in
catalogs/published/kernels.yaml; tolerance 15% per row on TFLOP/s, leave-one-out below 16%.
"""

import math

import numpy as np
import pytest
import yaml
from hypothesis import given, settings, strategies as st

from catalogs import CATALOG_DIR
from hwmodels import efficiency as E
from hwmodels.catalog import device_names, load_device
from hwmodels.errors import InputError
from hwmodels.precision import DTYPES

H800 = load_device("h800-sxm")


def test_every_deepgemm_row_within_15_percent():
    # deepseek-ai/DeepGEMM README at 55ab91f: 18 dense, 4 grouped contiguous, 6 grouped masked rows.
    report = E.fit_report()
    assert [sum(r["table"] == t for r in report) for t in ("dense", "grouped_contiguous", "grouped_masked")] == [18, 4, 6]
    for r in report:
        assert r["predicted_tflops"] == pytest.approx(r["published_tflops"], rel=0.15), r
        assert r["error"] == pytest.approx(r["predicted_tflops"] / r["published_tflops"] - 1)


def test_leave_one_out_error_is_finite_and_bounded():
    # Refit without each DeepGEMM (55ab91f) row and predict it: measured max 15.3%, median 3.7%.
    loo = np.array([r["loo_error"] for r in E.fit_report()])
    assert np.all(np.isfinite(loo))
    assert np.max(np.abs(loo)) < 0.16
    assert np.median(np.abs(loo)) < 0.05


def test_fit_report_prints_as_a_table_with_its_summary():
    text = E.fit_report_table()
    assert len(text.splitlines()) == 2 + 28 + 3
    assert "grouped_masked: |error| max" in text and "|LOO| max" in text


def test_fitted_parameters_are_physical():
    fit = E.hopper_gemm_fit()
    assert fit.hardware == "h800-sxm" and "DeepGEMM README at commit 55ab91f" in fit.source
    assert 0.6 < fit.compute_efficiency < 0.85  # best published row: 1426 of 1978 TFLOP/s = 72%
    assert 0.6 < fit.split_scale_efficiency <= 1
    assert 0.75 < fit.memory_efficiency <= 1  # published small-m rows reach 2668 of 3350 GB/s
    assert 0.1e-6 < fit.tile_fill_s < 5e-6 and 0 < fit.launch_overhead_s < 10e-6
    assert 1 < fit.feed_to_hbm_bandwidth < 20 and fit.overlap_exponent > 1
    assert E.hopper_gemm_fit() is fit  # cached


@settings(max_examples=300, deadline=None)
@given(
    device=st.sampled_from(device_names()),
    dtype=st.sampled_from(["fp8", "bf16", "fp16", "fp4", "int8", "int4"]),
    layout=st.sampled_from(E.LAYOUTS),
    m=st.integers(1, 65536),
    n=st.integers(1, 65536),
    k=st.integers(1, 32768),
    groups=st.integers(1, 64),
    weight_bytes=st.none() | st.floats(0.25, 4.0),
)
def test_gemm_never_below_its_roofline(device, dtype, layout, m, n, k, groups, weight_bytes):
    dev = load_device(device)
    cost = E.gemm_cost(dev, m, n, k, dtype, groups, layout, weight_bytes_per_element=weight_bytes)
    assert cost.total_s >= cost.roofline_s > 0
    assert cost.roofline_s == pytest.approx(max(cost.flops / _peak_used(dev, dtype), cost.bytes / dev.hbm_bytes_per_s))
    assert cost.compute_s >= cost.flops / _peak_used(dev, dtype) and cost.memory_s >= cost.bytes / dev.hbm_bytes_per_s
    assert cost.overhead_s > 0 and cost.source.startswith("DeepGEMM h800-sxm fit")


def _peak_used(dev, dtype):
    want = DTYPES[dtype].peak
    while want not in dev.peak_flops_per_s:
        want = E.WIDER_PEAK[want]
    return dev.peak_flops_per_s[want]


def test_gemm_counts_bytes_and_flops_of_every_group():
    cost = E.gemm_cost(H800, 256, 4096, 7168, "fp8", groups=4, layout="masked", weight_bytes_per_element=0.53)
    assert cost.flops == 2 * 4 * 256 * 4096 * 7168
    assert cost.bytes == pytest.approx(4 * (256 * 7168 * 1.0 + 4096 * 7168 * 0.53 + 256 * 4096 * 2.0))


def test_vectorised_time_matches_gemm_cost():
    m = np.array([0, 1, 7, 64, 65, 300, 4096])
    dev = load_device("b200-sxm")
    times = E.gemm_time_s(dev, m, 7168, 2048, "fp4", groups=24, layout="masked", weight_bytes_per_element=0.5625)
    expected = [E.gemm_cost(dev, int(x), 7168, 2048, "fp4", 24, "masked", weight_bytes_per_element=0.5625).total_s for x in m]
    assert times == pytest.approx(expected, rel=1e-12)
    assert times[0] == 0.0


def test_large_and_decode_gemms_on_h800():
    big = E.gemm_cost(H800, 8192, 8192, 8192)
    assert big.bound == "compute" and 0.6 < big.flops / big.total_s / 1978e12 < 0.75
    decode = E.gemm_cost(H800, 8, 4096, 7168, groups=24, layout="masked")
    assert decode.bound == "memory" and decode.bytes / decode.total_s < 3.35e12


def test_sources_say_which_fit_scaling_and_peak_were_used():
    assert E.gemm_cost(H800, 128, 7168, 2048).source == "DeepGEMM h800-sxm fit"
    h200 = E.gemm_cost(load_device("h200-sxm"), 128, 7168, 2048).source
    assert "scaled to h200-sxm peaks" in h200 and "assumed" not in h200  # Hopper: 132 SMs known
    b200 = E.gemm_cost(load_device("b200-sxm"), 128, 7168, 2048).source
    assert "scaled to b200-sxm peaks" in b200 and "132 SMs assumed" in b200
    fp4 = E.gemm_cost(load_device("h100-sxm"), 128, 7168, 2048, "fp4")
    assert "no fp4 peak on h100-sxm, ran at its fp8 peak" in fp4.source
    assert fp4.roofline_s == pytest.approx(max(fp4.flops / 1978e12, fp4.bytes / 3.35e12))
    assert "ran at its bf16 peak" in E.gemm_cost(load_device("ascend-910b"), 128, 7168, 2048, "fp8").source


def test_bad_inputs_are_refused_with_the_field():
    with pytest.raises(InputError, match="no fp32 peak"):
        E.gemm_cost(H800, 128, 128, 128, "fp32")
    with pytest.raises(InputError, match="layout"):
        E.gemm_cost(H800, 128, 128, 128, layout="ragged")
    with pytest.raises(InputError, match="bad GEMM shape"):
        E.gemm_cost(H800, -1, 128, 128)
    empty = E.gemm_cost(H800, 0, 4096, 7168, groups=8, layout="masked")
    assert empty.total_s == 0 and empty.flops == 0


def test_flashmla_figures_match_the_published_notes():
    notes = " ".join(yaml.safe_load(open(CATALOG_DIR / "published" / "kernels.yaml"))["flashmla_decode"]["notes"])
    assert "3000 GB/s" in notes and "3.35 TB/s" in notes and "660 TFLOPS" in notes
    assert E.FLASHMLA_MEMORY_EFFICIENCY == pytest.approx(3000 / 3350)
    assert E.FLASHMLA_COMPUTE_EFFICIENCY == pytest.approx(660 / 989)


def test_mla_decode_reaches_flashmla_rates_and_no_more():
    # deepseek-ai/FlashMLA README: up to 3000 GB/s memory-bound, 660 TFLOP/s compute-bound on H800.
    mem = E.mla_decode_cost(H800, 128, 8192, 16)
    assert mem.bound == "memory" and 0.95 * 3000e9 < mem.bytes / mem.total_s <= 3000e9
    assert mem.bytes == pytest.approx(128 * 8192 * 576 * 2 + 128 * 16 * (576 + 512) * 2)
    comp = E.mla_decode_cost(H800, 132, 8192, 128)
    assert comp.bound == "compute" and 0.95 * 660e12 < comp.flops / comp.total_s <= 660e12
    assert comp.flops == 2 * 132 * 128 * 8192 * (2 * 512 + 64)
    assert "FlashMLA h800-sxm decode rates: 0.667 of bf16 peak" in comp.source
    assert "scaled to gb200 peaks" in E.mla_decode_cost(load_device("gb200"), 8, 1024, 16).source


def test_prefill_attention_states_its_assumption():
    cost = E.attention_prefill_cost(load_device("b200-sxm"), 4096, 2048, 128, 192, 128)
    assert cost.flops == 2 * 4096 * 128 * 2048 * (192 + 128)
    assert cost.bound == "compute" and cost.compute_s == pytest.approx(cost.flops / (2250e12 * 660 / 989))
    assert "assumed for prefill" in cost.source and "no published prefill table" in cost.source


def test_elementwise_is_memory_bound_at_the_fitted_efficiency():
    fit = E.hopper_gemm_fit()
    cost = E.elementwise_cost(load_device("h200-sxm"), 1e9, "norms")
    assert cost.flops == 0 and cost.bound == "memory" and cost.total_s >= cost.roofline_s
    assert cost.total_s == pytest.approx(1e9 / (4.8e12 * fit.memory_efficiency) + fit.launch_overhead_s)
    assert "HBM efficiency" in cost.source and "scaled to h200-sxm" in cost.source
    assert math.isclose(cost.roofline_s, 1e9 / 4.8e12)
