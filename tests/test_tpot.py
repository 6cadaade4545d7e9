"""TPOT at the SLO percentile for the traffic a decode pool carries (planner.tpot)."""

import numpy as np
import pytest

from hwmodels.step import StepContext
from moeplan import api, example_path
from planner import prompt_times, search, tpot
from planner.tpot import decode_tpot_s, instances_for_tpot


@pytest.fixture(scope="module")
def pool():
    d = api.deployment(example_path("kimi-k2-h200-128.yaml"))
    decode = search.score_decode(d, [16])
    dc = max((c for c in decode if c.layout.dp == 16), key=lambda c: c.work_per_device)  # DP16, its largest batch
    ctx = StepContext(d.model, d.precision, prompt_times.sub_cluster(d, 16), dc.layout, dc.load)
    return d, ctx, dc, prompt_times.prompt_lengths(d)


def _tpot(pool, rate, outputs, percentile=99.0):
    d, ctx, dc, prompts = pool
    return decode_tpot_s(d, ctx, dc, 1, rate, prompts, np.asarray(outputs, float), percentile)


def test_the_tpot_grows_with_the_load_and_stays_below_the_full_batch_step(pool):
    _, _, dc, _ = pool
    long = [400.0] * 8
    light, offered, heavy = (_tpot(pool, rate, long) for rate in (0.2, 3.4, 40.0))
    assert light < offered < heavy
    assert light < dc.step_s  # a pool sized for its traffic runs below the batch it was scored at


def test_requests_that_generate_few_tokens_share_the_join_wait_over_few_steps(pool):
    long, short = _tpot(pool, 3.4, [1000.0] * 8), _tpot(pool, 3.4, [2.0] * 8)
    assert 1.6 < short / long <= 2.0  # one step plus up to one step's wait to join, over one step


def test_the_same_question_the_same_answer(pool):
    assert _tpot(pool, 3.4, [343.0]) == _tpot(pool, 3.4, [343.0])  # seeded


def test_instances_grow_until_the_tpot_fits():
    assert instances_for_tpot(lambda n: 0.030 / n, 1, 10, 0.010) == 3
    assert instances_for_tpot(lambda n: 0.030, 1, 10, 0.010) is None


def test_compound_sums_stay_bounded_and_keep_their_mean():
    # a long decode on a busy group sees thousands of prompts: the sum keeps its mean without a draw per prompt
    rng = np.random.default_rng(0)
    values = np.array([0.01, 0.05, 0.2])
    counts = np.array([[0, 3, 10_000_000], [64, 65, 1]])
    sums = tpot._compound(rng, counts, values)
    assert sums[0, 0] == 0 and sums[0, 2] == pytest.approx(10_000_000 * values.mean(), rel=1e-3)
    assert sums[1, 2] in values and (sums >= 0).all()
