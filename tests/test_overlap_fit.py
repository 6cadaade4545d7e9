"""Two-batch overlap efficiency: fitted to the published prefill TBO ablation, checked on the held-out decode one,
and stored (catalogs/fits/overlap.yaml) as the fit gives it, rounded."""

import pytest

from hwmodels import catalog
from hwmodels.calibrate.operator_costs import fitted_costs
from hwmodels.calibrate.overlap_fit import fit_overlap_efficiency, load_ablations, overlap_report

STORED = catalog.stored_fit("overlap")


@pytest.fixture(scope="module")
def report():
    return {r["id"]: r for r in overlap_report()}


def test_the_stored_constant_is_the_fit():
    fitted = fit_overlap_efficiency()
    assert STORED["unrounded"]["overlap_efficiency"] == pytest.approx(fitted, rel=1e-9)
    assert fitted_costs().overlap_efficiency == pytest.approx(fitted, abs=0.01)


def test_the_stored_report_is_the_report(report):
    for row in STORED["report"]:
        assert report[row["id"]] == pytest.approx(row)


def test_fit_row_lands_in_its_published_range(report):
    assert report["sglang-h100-prefill-tbo"]["error"] == 0.0


def test_held_out_decode_ablation_at_256(report):
    # fitted on prefill (DeepEP normal mode) only; the decode ablation (low-latency mode) is out of sample
    assert abs(report["sglang-h100-decode-tbo-256"]["error"]) <= 0.05


def test_small_batch_decode_loss_is_a_known_gap(report):
    """LMSYS measured TBO losing 27% at 32 sequences per device; the model gets the sign (a loss) but
    not the size: the fixed costs of small half-batch kernels beyond the GEMM fit's launch overhead."""
    row = report["sglang-h100-decode-tbo-32"]
    assert row["modelled"] < 1.0
    assert row["error"] > 0.1  # when this fails the gap closed: tighten it


def test_every_row_says_its_role():
    assert {r.role for r in load_ablations()} <= {"fit", "check"}
