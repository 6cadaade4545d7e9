"""Two-batch overlap efficiency: fitted to the published prefill TBO ablation, checked on the held-out decode one."""

import pytest

from hwmodels.overlap_fit import fit_overlap_efficiency, load_ablations, overlap_report
from hwmodels.step import TBO_OVERLAP_EFFICIENCY


@pytest.fixture(scope="module")
def report():
    return {r["id"]: r for r in overlap_report()}


def test_the_constant_is_the_fit():
    assert TBO_OVERLAP_EFFICIENCY == pytest.approx(fit_overlap_efficiency(), abs=0.01)


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
    assert {r["role"] for r in load_ablations()} <= {"fit", "check"}
