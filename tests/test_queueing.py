"""TTFT at a percentile over spread prompt lengths and queueing waits (planner.queueing), against closed forms and
a Monte Carlo of the same model."""

import math

import numpy as np
import pytest

from planner import queueing


def test_erlang_c_matches_known_values_and_one_slot_is_mm1():
    assert queueing.erlang_c(2, 1.0) == pytest.approx(1.0 / 3.0)
    assert queueing.erlang_c(4, 4.0) == 1.0
    for rho in (0.3, 0.7, 0.95):
        one_slot, mm1 = queueing.slot_wait(1, 2.0, rho / 2.0), queueing.mm1_wait(2.0, rho)
        assert one_slot.p_wait == pytest.approx(mm1.p_wait) and one_slot.rate_per_s == pytest.approx(mm1.rate_per_s)
    assert queueing.slot_wait(32, 20.0, 1.6).unbounded  # 32 Erlangs offered to 32 slots
    assert queueing.slot_wait(64, 20.0, 1.0).p_wait < 1e-3  # 20 of 64 slots busy: almost never a wait


def test_one_prompt_length_and_one_wait_is_the_mm1_percentile():
    for rho in (0.2, 0.6, 0.9):
        wait = queueing.mm1_wait(0.5, rho)
        expected = 1.0 + max(0.0, 0.5 * math.log(rho / 0.01) / (1 - rho))  # P(W > t) = rho exp(-(1 - rho) t / s)
        assert queueing.ttft_percentile_s(np.array([1.0]), queueing.steady(wait), 99) == pytest.approx(expected, rel=1e-9)


def test_spread_lengths_and_two_waits_match_a_monte_carlo():
    rng = np.random.default_rng(0)
    prompts = queueing.lognormal_lengths(12_000, 1.3, 120_000)
    prefill_s = prompts / 20_000  # 20,000 tokens/s
    waits = (queueing.mm1_wait(0.2, 0.7), queueing.slot_wait(8, 6.0, 1.0))
    n = 400_000
    sampled = rng.choice(prefill_s, n)
    for w in waits:
        sampled = sampled + np.where(rng.random(n) < w.p_wait, rng.exponential(1 / w.rate_per_s, n), 0.0)
    for p in (50, 90, 99):
        assert queueing.ttft_percentile_s(prefill_s, queueing.steady(*waits), p) == pytest.approx(np.percentile(sampled, p), rel=0.03)


def test_prompt_lengths_keep_the_mean_and_the_cut():
    lengths = queueing.lognormal_lengths(12_035, 1.31)
    assert lengths.mean() == pytest.approx(12_035, rel=0.02) and lengths.std() / lengths.mean() == pytest.approx(1.31, rel=0.1)
    assert queueing.lognormal_lengths(12_035, 1.31, 50_000).max() == 50_000
    assert list(queueing.lognormal_lengths(2_000, 0.0)) == [2_000.0]
    assert queueing.ttft_percentile_s(np.ones(4), queueing.steady(queueing.Wait(1.0, 0.0)), 99) == math.inf


def test_bursty_arrivals_stretch_the_waits_by_allen_cunneen():
    service_s = queueing.lognormal_lengths(12_000, 1.3) / 20_000
    poisson, bursty = queueing.mgc_wait(service_s, 0.6), queueing.mgc_wait(service_s, 0.6, arrival_scv=4.0)
    cs2 = float(np.mean(service_s ** 2) / service_s.mean() ** 2 - 1)
    assert bursty.p_wait == poisson.p_wait
    assert poisson.rate_per_s / bursty.rate_per_s == pytest.approx((4.0 + cs2) / (1.0 + cs2))
    # exponential service and Poisson arrivals: M/M/1
    mm1, exp_like = queueing.mm1_wait(2.0, 0.5), queueing.slot_wait(1, 2.0, 0.25, arrival_scv=1.0)
    assert exp_like.rate_per_s == pytest.approx(mm1.rate_per_s)
    assert queueing.slot_wait(1, 2.0, 0.25, arrival_scv=3.0).rate_per_s == pytest.approx(mm1.rate_per_s / 2.0)


def test_rate_levels_mix_their_tails_by_their_share_of_the_requests():
    prefill_s = np.array([0.5, 1.0])
    quiet, busy = (queueing.mm1_wait(0.3, 0.3),), (queueing.mm1_wait(0.3, 0.9),)
    mixed = (queueing.Regime(0.75, quiet), queueing.Regime(0.25, busy))
    for x in (1.0, 2.0, 4.0):
        expected = 0.75 * queueing.ttft_tail(x, prefill_s, queueing.steady(*quiet)) + \
            0.25 * queueing.ttft_tail(x, prefill_s, queueing.steady(*busy))
        assert queueing.ttft_tail(x, prefill_s, mixed) == pytest.approx(expected)
    # a busy level that overloads holds its share of the requests past any TTFT
    overloaded = (queueing.Regime(0.995, quiet), queueing.Regime(0.005, (queueing.Wait(1.0, 0.0),)))
    assert math.isfinite(queueing.ttft_percentile_s(prefill_s, overloaded, 99))
    assert queueing.ttft_percentile_s(prefill_s, overloaded, 99.9) == math.inf
