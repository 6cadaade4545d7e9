"""The routing-skew catalog restates measurements of public routing statistics: recompute them."""

import json

import numpy as np
import pytest

from hwmodels import catalog
from hwmodels.step import ExpertLoad


def contiguous_imbalance(files, ep):
    per_file = []
    for f in files:
        counts = np.array(json.loads(f.read_text())["logical_count"], dtype=float)
        moe = counts[counts.sum(axis=1) > 0]  # the dense layers are all-zero rows
        devices = moe.reshape(moe.shape[0], ep, -1).sum(axis=2)
        per_file.append((devices.max(axis=1) / devices.mean(axis=1)).mean())
    return float(np.mean(per_file))


@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_deepseek_v3_contiguous_imbalance_matches_the_statistics(shared_data, phase):
    folder = shared_data / "routing" / "deepseek-v3-sglang-eplb"
    files = sorted(folder.glob(f"{phase}_*.json"))
    table = catalog.routing_skew("deepseek-v3")["contiguous_imbalance"][phase]
    for ep, factor in table.items():
        assert contiguous_imbalance(files, int(ep)) == pytest.approx(factor, abs=0.006)


def test_skew_applies_to_r1_and_not_to_other_models():
    assert catalog.routing_skew("deepseek-r1") is catalog.routing_skew("deepseek-v3")
    assert catalog.routing_skew("kimi-k2") is None


def test_loads_from_the_tables():
    skew = catalog.routing_skew("deepseek-v3")
    load = ExpertLoad.measured_contiguous(skew, "prefill", 32, 58)
    assert load.imbalance == pytest.approx(np.full(58, 2.36))
    assert np.allclose(load.shares.sum(axis=1), 1.0)
    # between measured EP sizes: log-log interpolation stays between the neighbours
    assert 2.36 < ExpertLoad.measured_contiguous(skew, "prefill", 48, 58).imbalance[0] < 2.97
    eplb = skew["eplb_held_out_imbalance"]
    assert ExpertLoad.measured_eplb(skew, "decode", 72, 58).imbalance[0] == pytest.approx(eplb["decode"][72])
    assert ExpertLoad.measured_eplb(skew, "decode", 144, 58).imbalance[0] == pytest.approx(eplb["decode"][144])
    assert 1.0 < ExpertLoad.measured_eplb(skew, "prefill", 32, 58).imbalance[0] < eplb["prefill"][72]
