"""Grouped-query decode attention for the fitted models (hwmodels/calibrate/gqa_decode_fit.py, stored in
catalogs/fits/gqa-decode.yaml): fitted to NVIDIA's measured kernels, it beats the KV-read model it replaced, held out
GPU by GPU, and the fitted models price GQA decode with it where no engine table does."""

import os

import pytest

from hwmodels import catalog
from hwmodels.calibrate import gqa_decode_fit, measured_tables
from hwmodels.calibrate.operator_costs import fitted_costs, stored_gqa_decode_fit

needs_package = pytest.mark.skipif(measured_tables.database_root() is None and os.environ.get("CI") != "true",
                                   reason="aiconfigurator-core is not installed (pip install 'moeplan[measured]')")


@pytest.fixture(scope="module")
def refitted():
    return gqa_decode_fit.record(gqa_decode_fit.observed())


@needs_package
def test_the_stored_fit_is_what_fitting_gives_today(refitted):
    stored = catalog.stored_fit("gqa-decode")
    assert refitted["parameters"] == stored["parameters"]
    for dtype, report in stored["report"].items():
        assert refitted["report"][dtype]["rows"] == report["rows"] > 10_000
        assert refitted["report"][dtype]["held_out_by_gpu"] == pytest.approx(report["held_out_by_gpu"], abs=1e-3)


@needs_package
def test_held_out_gpu_by_gpu_it_beats_the_kv_read_it_replaced(refitted):
    for dtype, report in refitted["report"].items():
        assert len(report["held_out_by_gpu"]) >= 8  # Hopper, Blackwell, Ampere, Ada
        assert max(report["median_abs_error"], report["held_out_median"]) < report["kv_read_model_median_abs_error"], dtype
        assert max(report["held_out_by_gpu"].values()) < 0.35, dtype


def test_the_fitted_models_price_gqa_decode_with_it():
    fit, device = stored_gqa_decode_fit(), catalog.load_device("h20-96gb")  # a GPU no engine table measures
    bf16, fp8 = fit.terms(2.0), fit.terms(1.0)
    assert fit.terms(0.5) == fp8 and bf16.memory_efficiency > fp8.memory_efficiency
    kv_bytes = 64 * 2048 * 2 * 4 * 128 * 2.0  # 64 sequences of 2,048 keys, 4 KV heads of 128, bf16
    cost = fitted_costs().gqa_decode(device, 64, 2048, 64, 4, 128, 2.0)
    assert cost.bytes == kv_bytes and "GQA decode fit" in cost.source
    expected = bf16.launch_s + 64 * bf16.per_sequence_s + kv_bytes / (bf16.memory_efficiency * device.hbm_bytes_per_s)
    assert cost.total_s == pytest.approx(expected)
    # an FP8 cache reads half the bytes, at its own (lower) efficiency: more than half the time
    half = fitted_costs().gqa_decode(device, 64, 2048, 64, 4, 128, 1.0)
    assert 0.5 * cost.total_s < half.total_s < cost.total_s
