"""The GEMM efficiency model fitted to DeepGEMM's published fp8 table (hwmodels.calibrate.gemm_fit), and the
stored fit the step model uses (catalogs/fits/deepgemm-h800.yaml) is what the fit gives.

Calibration source: "deepseek-ai/DeepGEMM README at 55ab91f" (H800 SXM5, fp8), restated in
catalogs/published/kernels.yaml; tolerance 15% per row on TFLOP/s, leave-one-out below 16%.
"""

import numpy as np
import pytest

from hwmodels import catalog
from hwmodels.calibrate import gemm_fit
from hwmodels.calibrate.operator_costs import fitted_costs

STORED = catalog.stored_fit("deepgemm-h800")


@pytest.fixture(scope="module")
def refit():
    return gemm_fit.fit_deepgemm()


def test_the_stored_fit_is_what_the_fit_gives(refit):
    stored = fitted_costs().gemm_fit
    for name in gemm_fit.PARAMETERS:
        assert getattr(stored, name) == pytest.approx(getattr(refit, name), rel=1e-6), name
    assert stored.source == refit.source and stored.hardware == refit.hardware == "h800-sxm"


def test_the_stored_report_is_what_the_fit_reports(refit):
    fresh = gemm_fit.fit_report(refit)
    assert len(fresh) == len(STORED["report"])
    for new, old in zip(fresh, STORED["report"]):
        assert {k: new[k] for k in ("table", "m", "n", "k", "groups")} == {k: old[k] for k in ("table", "m", "n", "k", "groups")}
        for key in ("predicted_tflops", "error", "loo_error"):
            assert new[key] == pytest.approx(old[key], rel=1e-4, abs=1e-6), (old, key)


def test_every_deepgemm_row_within_15_percent():
    # deepseek-ai/DeepGEMM README at 55ab91f: 18 dense, 4 grouped contiguous, 6 grouped masked rows.
    report = STORED["report"]
    assert [sum(r["table"] == t for r in report) for t in ("dense", "grouped_contiguous", "grouped_masked")] == [18, 4, 6]
    for r in report:
        assert r["predicted_tflops"] == pytest.approx(r["published_tflops"], rel=0.15), r
        assert r["error"] == pytest.approx(r["predicted_tflops"] / r["published_tflops"] - 1)


def test_leave_one_out_error_is_finite_and_bounded():
    # Refit without each DeepGEMM (55ab91f) row and predict it: measured max 15.3%, median 3.7%.
    loo = np.array([r["loo_error"] for r in STORED["report"]])
    assert np.all(np.isfinite(loo))
    assert np.max(np.abs(loo)) < 0.16
    assert np.median(np.abs(loo)) < 0.05


def test_fit_report_prints_as_a_table_with_its_summary():
    text = gemm_fit.fit_report_table(STORED["report"])
    assert len(text.splitlines()) == 2 + 28 + 3
    assert "grouped_masked: |error| max" in text and "|LOO| max" in text


def test_fitted_parameters_are_physical():
    fit = fitted_costs().gemm_fit
    assert fit.hardware == "h800-sxm" and "DeepGEMM README at commit 55ab91f" in fit.source
    assert 0.6 < fit.compute_efficiency < 0.85  # best published row: 1426 of 1978 TFLOP/s = 72%
    assert 0.6 < fit.split_scale_efficiency <= 1
    assert 0.75 < fit.memory_efficiency <= 1  # published small-m rows reach 2668 of 3350 GB/s
    assert 0.1e-6 < fit.tile_fill_s < 5e-6 and 0 < fit.launch_overhead_s < 10e-6
    assert 1 < fit.feed_to_hbm_bandwidth < 20 and fit.overlap_exponent > 1
    assert fitted_costs() is fitted_costs()  # read once per process
