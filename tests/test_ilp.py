"""The robust placement MILP: its invariants, its lower bound, its solver-status handling, and its results
against EPLB on real routing statistics (in and out of sample)."""

import numpy as np
import pulp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hwmodels.errors import InputError
from hwmodels.ingest.routing import read_counts
from placement_checks import assert_valid, exact_busiest
from planner import ilp, milp_solver
from planner.compare_placements import compare_placements
from planner.eplb import Policy, eplb_placement
from planner.ilp import HbmBudget, ilp_placement
from planner.placement import evaluate

STATS = ("routing", "deepseek-v3-sglang-eplb")


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0.0, 10.0), min_size=2, max_size=4), st.sampled_from([(2, 2), (2, 3), (3, 2)]))
def test_lower_bound_never_exceeds_the_exact_optimum(weights, shape):
    num_devices, per_device = shape
    num_slots = num_devices * per_device
    w = np.array(weights)
    if w.sum() == 0 or len(w) > num_slots:
        return
    w = w * num_devices / w.sum()  # unit loads: the mean device carries 1
    exact = exact_busiest(w, num_slots, num_devices)
    assert ilp._layer_bound(w, num_slots, num_devices, exact) <= exact + 1e-9


@settings(max_examples=12, deadline=None)
@given(st.integers(1, 2), st.integers(1, 2), st.sampled_from([(4, 2, 3), (6, 3, 3), (8, 4, 3), (5, 2, 4)]),
       st.sampled_from(["mean", "worst"]), st.data())
def test_ilp_invariants_and_never_worse_than_eplb_in_sample(num_layers, num_windows, shape, rule, data):
    num_experts, num_devices, per_device = shape
    num_slots = num_devices * per_device
    counts = st.lists(st.integers(0, 1000), min_size=num_experts, max_size=num_experts)
    windows = [np.array([data.draw(counts) for _ in range(num_layers)], dtype=float) for _ in range(num_windows)]
    if not any(w.any() for w in windows):
        with pytest.raises(InputError, match="no layer"):
            ilp_placement(windows, num_slots, num_devices, workers=1)
        return
    p = ilp_placement(windows, num_slots, num_devices, time_limit_s=0.5, robust=rule, workers=1)
    assert_valid(p, windows[0])
    assert p.lp_bound <= p.objective + 1e-9 and 0 <= p.gap < 1
    if num_windows == 1 and windows[0].any():
        eplb = eplb_placement(windows[0], num_slots, num_devices, 1, Policy.GLOBAL)
        assert evaluate(p, windows[0])["step_cost"] <= evaluate(eplb, windows[0])["step_cost"] + 1e-9


def test_a_whole_layer_milp_reaches_the_exact_optimum():
    w = np.array([5.0, 3.0, 2.0, 1.0, 1.0])
    p = ilp_placement(w[None], 6, 2, time_limit_s=5.0, workers=1)
    exact = exact_busiest(w * 2 / w.sum(), 6, 2)
    assert evaluate(p, w[None])["step_cost"] == pytest.approx(exact)


def test_no_solution_from_the_solver_keeps_the_incumbent(monkeypatch):
    """The solver's status is read before its values: MILPs that found nothing change nothing."""
    calls = []

    def fail(self, *args, **kwargs):
        calls.append(self.name)
        self.status, self.sol_status = pulp.LpStatusNotSolved, pulp.LpSolutionNoSolutionFound
        return self.status

    monkeypatch.setattr(pulp.LpProblem, "solve", fail)
    loads = np.array([[9.0, 1, 1, 1, 1, 1, 1, 1]])
    p = ilp_placement(loads, 12, 4, time_limit_s=1.0, workers=1)
    assert calls and "stalled" in p.notes
    assert_valid(p, loads)
    assert p.objective <= evaluate(eplb_placement(loads, 12, 4, 1, Policy.GLOBAL), loads)["step_cost"] + 1e-9


@pytest.mark.skipif(not pulp.PULP_CBC_CMD().available(), reason="PuLP's bundled CBC is not available")
def test_cbc_runs_where_highs_is_missing(monkeypatch):
    monkeypatch.setattr(milp_solver, "_HiGHS", None)
    loads = np.array([[9.0, 5, 1, 1, 1, 1, 1, 1]])
    p = ilp_placement(loads, 12, 4, time_limit_s=1.0, workers=1)
    assert_valid(p, loads)
    assert p.solver.startswith("CBC") and "optimal" in p.notes


def test_scaleout_term_keeps_groups_on_fewer_domains():
    rng = np.random.default_rng(1)
    loads = rng.gamma(0.7, 100, size=(2, 16))
    kwargs = dict(num_slots=24, num_devices=8, num_nodes=4, time_limit_s=1.0, num_groups=4, workers=1)
    plain = ilp_placement(loads, **kwargs)
    local = ilp_placement(loads, scaleout_weight=0.5, **kwargs)
    assert_valid(local, loads)

    def spread(p):  # (group, domain) pairs holding a replica
        domain = (np.arange(24) // 3) // 2
        return sum(len(set(zip((row // 4).tolist(), domain.tolist()))) for row in p.phy2log)

    assert spread(local) < spread(plain)
    with pytest.raises(InputError, match="num_groups"):
        ilp_placement(loads, 24, 8, 4, scaleout_weight=0.5, workers=1)


def test_bad_input_is_named():
    with pytest.raises(InputError, match="robust"):
        ilp_placement(np.ones((1, 4)), 4, 2, robust="median")
    with pytest.raises(InputError, match="fit_loads"):
        ilp_placement([np.ones((1, 4)), np.ones((2, 4))], 4, 2)
    with pytest.raises(InputError, match="redundant"):
        ilp_placement(np.ones((1, 4)), 5, 2)
    with pytest.raises(InputError, match="hbm_bytes.*by 1e\\+09 B"):
        ilp_placement(np.ones((1, 4)), 4, 2, hbm=HbmBudget(hbm_bytes=5e9, expert_bytes=2e9, kv_bytes=2e9))


def test_in_sample_real_layers_beat_eplb_with_a_small_gap(shared_data):
    loads = read_counts(shared_data.joinpath(*STATS, "prefill_in2048.json"))[20:24]
    p = ilp_placement(loads, 288, 72, 9, time_limit_s=2.0, workers=1)
    assert_valid(p, loads)
    eplb = evaluate(eplb_placement(loads, 288, 72, 9, Policy.GLOBAL), loads)["step_cost"]
    assert evaluate(p, loads)["step_cost"] < eplb
    assert p.gap < 0.01 and p.solver.startswith(("HiGHS", "CBC"))


def test_out_of_sample_real_layers_beat_eplb_fitted_on_the_same_windows(shared_data):
    """Fitted on two decode runs (EPLB on their summed counts), served on a third: 8 MoE layers, EP72."""
    folder = shared_data.joinpath(*STATS)
    fit = [read_counts(folder / f)[3:11] for f in ("decode_in1000out1000.json", "decode_in2000out100.json")]
    held_out = read_counts(folder / "decode_in1800out100.json")[3:11]
    steps = []
    result = compare_placements(fit, held_out, ep=72, redundant=32, nodes=9, time_limit_s=1.5, workers=1,
                                progress=steps.append)
    assert steps == ["EPLB on 8 layers x 288 slots", "ILP on 8 layers, until it meets its bound or the time limit",
                     "scoring the placements"]  # what moeplan place's bar says
    methods = result["methods"]
    assert set(methods) == {"contiguous", "eplb", "ilp"}
    assert methods["ilp"]["step_cost"] < 0.9 * methods["eplb"]["step_cost"] < methods["contiguous"]["step_cost"]
    assert result["lp_bound"] <= result["objective"] and result["fit_windows"] == 2


def test_parallel_workers_give_a_valid_placement(shared_data):
    loads = read_counts(shared_data.joinpath(*STATS, "decode_in2000out100.json"))
    p = ilp_placement(loads[:9], 288, 72, 9, time_limit_s=1.5, workers=2)  # 6 MoE layers over two processes
    assert_valid(p, loads[:9])
    assert (p.phy2log[:3] == eplb_placement(loads[:9], 288, 72, 9, Policy.GLOBAL).phy2log[:3]).all()  # dense rows


# -- hostile sizes and arguments: bounded time, one named error

def _heavy_tailed(num_layers, num_experts, seed=0):
    return np.round(np.random.default_rng(seed).pareto(1.2, (num_layers, num_experts)) * 100)


def test_one_layer_of_200000_experts_returns_near_its_time_limit():
    """Once 38 s for a 0.5 s limit (the bound's pigeonhole loop ran 25,000 knapsacks, the greedy loops called
    numpy per item): now every long loop looks at the clock and the layer keeps its best placement so far."""
    import time
    loads = _heavy_tailed(1, 200_000)
    for limit in (0.5, 1.0):
        start = time.perf_counter()
        result = compare_placements(loads, loads, ep=8, redundant=200, time_limit_s=limit, workers=1)
        assert time.perf_counter() - start < limit + 2.5, limit
        assert result["methods"]["ilp"]["step_cost"] <= result["methods"]["eplb"]["step_cost"] + 1e-9
        assert result["lp_bound"] <= result["objective"] + 1e-9
        assert "cut short by the time limit" in result["notes"] or "ran out" in result["notes"]
    assert len(result["expert_location"]["physical_to_logical_map"][0]) == 200_200


def test_the_time_limit_covers_many_layers_and_several_windows():
    import time
    fit = [_heavy_tailed(61, 4096, seed) for seed in (1, 2)]
    start = time.perf_counter()
    result = compare_placements(fit, fit[0], ep=64, redundant=64, time_limit_s=1.0, workers=2)
    assert time.perf_counter() - start < 1.0 + 3.0
    assert result["fit_windows"] == 2 and result["lp_bound"] <= result["objective"] + 1e-9


def test_wide_devices_get_swaps_only_and_one_device_is_optimal_as_it_is():
    import time
    loads = _heavy_tailed(2, 4096)
    p = ilp_placement(loads, 4096, 2, time_limit_s=2.0, workers=1)  # 2,048 slots per device
    assert_valid(p, loads)
    a = ilp._unit_loads(loads[None], 2)[:, 0]  # [W, E] of layer 0
    row, top = p.phy2log[0], ilp._Topology(np.zeros(2, dtype=np.int64), None, 0.0)
    *_, why = ilp._search_layer(a, row, np.bincount(row, minlength=4096), "mean", top, a[0] / 2, 2048, 0.5,
                                time.perf_counter() + 60, np.random.default_rng(0))
    assert why == "too large"  # a MILP over 4,096 slots would take seconds to build: swaps only
    one = ilp_placement(loads[:, :64], 96, 1, time_limit_s=1.0, workers=1)  # once an IndexError in the swap search
    assert_valid(one, loads[:, :64])
    assert one.objective == one.lp_bound == 1.0
    result = compare_placements(loads[:, :64], loads[:, :64], ep=1, redundant=0, time_limit_s=1.0, workers=1)
    assert result["methods"]["ilp"]["step_cost"] == pytest.approx(1.0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(time_limit_s=float("nan")), "time_limit_s"), (dict(time_limit_s=float("inf")), "time_limit_s"),
    (dict(time_limit_s=0), "time_limit_s"), (dict(time_limit_s=-1), "time_limit_s"),
    (dict(time_limit_s=3601), "time_limit_s"), (dict(redundant=-1), "redundant"),
    (dict(redundant=65), "redundant: must be from 0 to 64"), (dict(redundant=1.5), "redundant"),
    (dict(nodes=3), "nodes: 3 nodes do not divide the EP group of 8"), (dict(ep=0), "ep"),
    (dict(ep=1000), "ep: 64 experts"), (dict(redundant=3), "fix: use redundant 0"),
])
def test_compare_placements_refuses_bad_arguments_before_any_work(kwargs, match):
    loads = np.ones((2, 64))
    args = dict(ep=8, redundant=0, nodes=1, time_limit_s=1.0) | kwargs
    with pytest.raises(InputError, match=match):
        compare_placements(loads, loads, workers=1, **args)


def test_placement_memory_is_estimated_before_any_work():
    from planner.compare_placements import MAX_PLACEMENT_BYTES, check_arguments, placement_bytes

    assert placement_bytes(1, 200_000, 100_000) > MAX_PLACEMENT_BYTES  # once 23 GB and still growing
    with pytest.raises(InputError, match="GiB for the placements"):
        check_arguments(1, 200_000, 8, 100_000, 1, 1.0, {})
    check_arguments(61, 384, 8, 384, 1, 60.0, {})  # Kimi K2 with a replica of every expert still fits
    with pytest.raises(InputError, match="--nodes"):
        check_arguments(61, 256, 72, 32, 5, 60.0, {"nodes": "--nodes"})


def test_ilp_names_nodes_that_do_not_divide_and_a_bad_time_limit():
    with pytest.raises(InputError, match="num_nodes"):  # once reported as devices_per_domain
        ilp_placement(np.ones((1, 8)), 8, 4, num_nodes=3)
    for bad in (float("nan"), float("inf"), 0.0, -1.0):
        with pytest.raises(InputError, match="time_limit_s"):
            ilp_placement(np.ones((1, 8)), 8, 4, time_limit_s=bad)


def test_group_aligned_start_keeps_each_group_in_one_domain():
    from planner.group_start import group_aligned_rows
    rng = np.random.default_rng(3)
    load = rng.gamma(0.7, 100, size=16)
    group, domain = np.arange(16) // 4, np.arange(8) // 2  # 4 groups of 4 experts; 4 domains of 2 devices x 3 slots
    rows = group_aligned_rows(load, group, domain, 3)
    assert len(rows) == 5  # any spill, then one per group
    for row in rows:
        assert len(row) == 24 and np.bincount(row, minlength=16).min() >= 1
        held_in = domain[np.arange(24) // 3]
        # every group fits its home domain with room to spare: replicas stay at home, one domain per group
        assert all(len(set(held_in[group[row] == g])) == 1 for g in range(4))
        # the hottest expert got a replica
        assert (row == np.argmax(load)).sum() >= 2
    assert group_aligned_rows(load, np.arange(16) // 8, domain, 3) == []  # a group of 8 does not fit 6 slots


def test_node_aware_ilp_sends_fewer_bytes_across_nodes(shared_data):
    """DeepSeek-V3 decode statistics (8 MoE layers), EP72 + 32 on 9 nodes: with the scale-out term the ILP sends
    fewer bytes across nodes than EPLB and contiguous placement; without it, each method still reports them."""
    from moeplan.api import placement_alltoall
    folder = shared_data.joinpath(*STATS)
    fit = [read_counts(folder / f)[3:11] for f in ("decode_in1000out1000.json", "decode_in2000out100.json")]
    held_out = read_counts(folder / "decode_in1800out100.json")[3:11]
    a2a = placement_alltoall("deepseek-v3")
    assert (a2a.top_k, a2a.num_groups, a2a.groups_per_token, a2a.token_bytes) == (8, 8, 4, 7168 * 3 + 56 * 4)
    plain = compare_placements(fit, held_out, ep=72, redundant=32, nodes=9, time_limit_s=2.0, workers=1)
    assert all(m["cross_node_bytes_per_token"] is None for m in plain["methods"].values())
    node = compare_placements(fit, held_out, ep=72, redundant=32, nodes=9, time_limit_s=3.0, workers=1, alltoall=a2a,
                              scaleout_weight=5.6)
    cross = {name: m["cross_node_bytes_per_token"] for name, m in node["methods"].items()}
    assert cross["ilp"] <= cross["eplb"] and cross["ilp"] < cross["contiguous"]
    # at most 4 remote nodes per token per layer when groups align; EPLB scatters them over up to 8
    assert 8 * a2a.token_bytes * 3.0 < cross["ilp"] < cross["eplb"] < 8 * a2a.token_bytes * 8
    with pytest.raises(InputError, match="scaleout_weight"):
        compare_placements(fit, held_out, ep=72, redundant=32, nodes=9, time_limit_s=1.0, workers=1, scaleout_weight=1.0)
