"""The notebook API's what-if surface: Plan tables and figures, sweeps and comparisons."""

import pandas as pd
import plotly.graph_objects as go
import pytest
import yaml

import moeplan
from hwmodels.errors import InputError
from moeplan import example_path
from moeplan import study
from moeplan.study import Sweep, apply, points
from planner.plan_json import plan_to_json

SMALL = {"schema_version": 1, "model": "qwen3-30b-a3b", "cluster": {"unit": "hgx-h100", "units": 1},
         "workload": {"input_tokens": 2000, "output_tokens": 400, "requests_per_s": 4.0},
         "slo": {"ttft_s": 3.0, "tpot_s": 0.05}}


@pytest.fixture(scope="module")
def kimi_plan():
    return moeplan.plan(example_path())


def test_plan_reads_like_its_result_and_adds_tables_and_figures(kimi_plan):
    assert kimi_plan.recommendation is kimi_plan.plan.recommendation and kimi_plan.infeasible == ""
    assert kimi_plan.to_json() == plan_to_json(kimi_plan.plan)
    frontier = kimi_plan.to_frame("frontier")
    assert frontier["chosen"].sum() <= 1 and len(frontier) == len(kimi_plan.frontier)
    rec = kimi_plan.to_frame()
    assert rec.loc[0, "usd_per_million_output_tokens"] == pytest.approx(kimi_plan.recommendation.usd_per_million_output)
    breakdown = kimi_plan.to_frame("breakdown")
    decode = breakdown[(breakdown["step"] == "decode") & (breakdown["component"] != "hidden by overlap")]
    hidden = breakdown[(breakdown["step"] == "decode") & (breakdown["component"] == "hidden by overlap")]
    assert decode["seconds"].sum() + hidden["seconds"].sum() == pytest.approx(kimi_plan.recommendation.decode.step_s)
    placement = kimi_plan.to_frame("placement")
    assert placement.groupby(["role", "layer"])["relative_load"].mean().round(9).eq(1.0).all()
    for name in ("frontier", "breakdown", "memory", "placement"):
        fig = kimi_plan.figure(name)
        assert isinstance(fig, go.Figure) and fig.data
    with pytest.raises(InputError, match="unknown table"):
        kimi_plan.to_frame("frontiers")


def test_sweep_is_the_cartesian_product_in_order_and_the_same_in_processes():
    vary = {"workload.input_tokens": [1000, 4000], "slo.tpot_s": [0.03, 0.08]}
    serial = moeplan.sweep(SMALL, vary, processes=1)
    seen = []
    parallel = moeplan.sweep(SMALL, vary, processes=2, progress=lambda done, total: seen.append((done, total)))
    assert serial.rows == parallel.rows and seen[-1] == (4, 4)
    frame = serial.to_frame()
    assert frame[["workload.input_tokens", "slo.tpot_s"]].values.tolist() == [[1000, 0.03], [1000, 0.08], [4000, 0.03], [4000, 0.08]]
    assert (frame.loc[frame["feasible"], "tpot_s"] <= frame.loc[frame["feasible"], "slo.tpot_s"]).all()
    assert isinstance(serial.figure(), go.Figure)


def test_a_bad_point_is_a_row_and_a_misspelt_field_fails_once():
    sweep = moeplan.sweep(SMALL, {"slo.tpot_s": [0.05, 0.0005]}, processes=1)
    good, impossible = sweep.rows
    assert good["feasible"] and not impossible["feasible"] and "no layout meets TPOT" in impossible["reason"]
    with pytest.raises(InputError, match="workload.input_tokns"):
        moeplan.sweep(SMALL, {"workload.input_tokns": [1, 2]}, processes=1)
    with pytest.raises(InputError, match="vary.slo.tpot_s"):
        points({"slo.tpot_s": 0.05})


def test_device_shorthand_swaps_the_unit_in_whole_nodes():
    raw = apply(SMALL, {"device": "gb200"})
    assert raw["cluster"] == {"unit": "gb200-nvl72", "devices": 8}
    raw = apply({**SMALL, "cluster": {"unit": "hgx-h100", "devices": 12}}, {"device": "ascend-910c"})
    assert raw["cluster"]["unit"] == "cloudmatrix384" and raw["cluster"]["devices"] % 8 == 0
    with pytest.raises(InputError, match="device"):
        apply(SMALL, {"device": "h300"})


def test_compare_devices_keeps_the_workload():
    cmp = moeplan.compare(SMALL, devices=["h100-sxm", "h200-sxm"], processes=1)
    frame = cmp.to_frame()
    assert frame["device"].tolist() == ["h100-sxm", "h200-sxm"] and frame["feasible"].all()
    # more HBM bandwidth at the same TPOT bound: H200 serves each output token for no more than H100
    h100, h200 = frame["usd_per_million_output_tokens"]
    assert h200 < h100


def test_a_sweep_chart_draws_one_mark_per_point_never_a_sum():
    """Three varied fields, one charted: the other two make the series, every point is one mark at its own value
    (a stacked bar per device once drew the sum of four points)."""
    rows = [{"device": dev, "workload.input_tokens": it, "slo.tpot_s": tpot,
             "usd_per_million_output_tokens": 19.0 + it / 4096 + 100 * tpot + (dev == "gb200")}
            for dev in ("h200-sxm", "gb200") for it in (2048, 32768) for tpot in (0.03, 0.05)]
    sweep = Sweep(("device", "workload.input_tokens", "slo.tpot_s"), tuple(rows))
    values = sorted(r["usd_per_million_output_tokens"] for r in rows)
    for fig in (sweep.figure(), sweep.figure(x="workload.input_tokens", color="device")):
        drawn = sorted(float(v) for trace in fig.data for v in trace.y)
        assert drawn == values and all(trace.type == "scatter" for trace in fig.data)


def _untimed(plan_json: dict) -> dict:
    """plan.json less what the machine's speed sets: the search's and each replay's wall time."""
    replays = [{k: v for k, v in r.items() if k != "wall_s"} for r in plan_json["replays"]]
    recommendation = plan_json["recommendation"] and {**plan_json["recommendation"], "replay": None}
    return {**{k: v for k, v in plan_json.items() if k != "search_seconds"}, "replays": replays,
            "recommendation": recommendation}


def test_plan_check_and_simulate_take_a_dict_as_they_take_its_file(kimi_plan):
    raw = yaml.safe_load(example_path().read_text())
    from_dict = moeplan.plan(raw)
    assert _untimed(from_dict.to_json()) == _untimed(kimi_plan.to_json())
    assert moeplan.check(raw).fits and moeplan.check(raw).layouts == moeplan.check(example_path()).layouts
    typed = {k: v for k, v in SMALL.items() if k != "schema_version"}  # typed in a notebook: the current schema
    assert moeplan.plan(typed).recommendation is not None
    sim = moeplan.simulate(typed, requests=40)
    assert sim.completed == 40
    with pytest.raises(InputError, match="workload.input_tokns"):
        moeplan.plan({**SMALL, "workload": {**SMALL["workload"], "input_tokns": 2}})


def _at_20_ms(example: str) -> dict:
    """An example spec at TPOT 20 ms (the 128-H200 example then plans prefill and decode pools)."""
    raw = yaml.safe_load(example_path(example).read_text())
    return {**raw, "slo": {**raw["slo"], "tpot_s": 0.020}}


@pytest.mark.parametrize("example", ["kimi-k2-h200-128.yaml", "kimi-k2-h100-8.yaml"])
def test_a_plan_and_a_fit_report_print_in_at_most_20_lines(example):
    """print(plan.recommendation) once dumped ~250 lines (the expert-load arrays); the detail is in the tables."""
    view = moeplan.plan(_at_20_ms(example))
    report = moeplan.check(_at_20_ms(example))
    shown = [repr(view), repr(report), *([repr(view.recommendation)] if view.recommendation else [])]
    shown += [repr(c) for c in view.frontier]
    assert all(1 <= len(text.splitlines()) <= 20 for text in shown)
    if view.recommendation:  # the disaggregated one: both pools, its latency and its cost
        assert view.recommendation.mode == "disaggregated" and "prefill" in repr(view) and "TPOT" in repr(view)
        assert f"${view.recommendation.usd_per_million_output:,.2f} per million output" in repr(view)
    else:
        assert "no deployment" in repr(view) and "fix: use at least" in repr(report)


def test_compare_sizes_each_device_for_the_workload():
    """16 H100 cannot hold Kimi K2 at these SLOs and traffic: compare says how many can, not only 'grow the cluster'."""
    sized = moeplan.compare(example_path(), devices=["h100-sxm", "h200-sxm"], processes=1).to_frame().set_index("device")
    kept = moeplan.compare(example_path(), devices=["h100-sxm"], processes=1, size=False).to_frame().set_index("device")
    assert not kept.loc["h100-sxm", "feasible"] and kept.loc["h100-sxm", "infeasible_field"] in study.TOO_FEW_DEVICES
    h100 = sized.loc["h100-sxm"]
    assert h100["feasible"] and h100["devices"] > 16 and h100["sized"] == "grown from 16 devices"
    slo = yaml.safe_load(example_path().read_text())["slo"]
    assert h100["tpot_s"] <= slo["tpot_s"] and h100["ttft_s"] <= slo["ttft_s"]
    # the same question planned on exactly the grown cluster recommends the same deployment
    raw = apply(yaml.safe_load(example_path().read_text()), {"device": "h100-sxm"})
    raw["cluster"]["devices"] = int(h100["cluster_devices"])
    assert moeplan.plan(raw).recommendation.devices == h100["devices"]
    assert sized.loc["h200-sxm", "devices"] == 16 and pd.isna(sized.loc["h200-sxm", "sized"])


def test_a_comparison_names_each_price_and_warns_when_sources_differ_or_are_missing():
    frame_rows = moeplan.compare(SMALL, devices=["h100-sxm", "h200-sxm"], processes=1)
    rows = {r["device"]: r for r in frame_rows.rows}
    assert rows["h100-sxm"]["price_basis"] == "list" and rows["h200-sxm"]["price_basis"] == "assumption"
    assert rows["h100-sxm"]["usd_per_device_hour"] == 4.25 and "vidur" in rows["h100-sxm"]["price_source"]
    assert len(frame_rows.warnings) == 1 and "different sources or dates" in frame_rows.warnings[0]
    # one price for both: no warning; a device with no price is shown as missing, never as free
    own = {**SMALL, "prices": {"h100-sxm": 3.0, "h200-sxm": 3.5, "b300-sxm": 6.0}}
    assert moeplan.compare(own, devices=["h100-sxm", "h200-sxm"], processes=1).warnings == ()
    unpriced = moeplan.compare(SMALL, devices=["h20-141gb"], processes=1)  # no published hourly price found
    assert unpriced.rows[0]["feasible"] and unpriced.rows[0]["usd_per_million_output_tokens"] is None
    assert unpriced.rows[0]["price_source"] == "no price: set prices.h20-141gb"
    assert any("no price for h20-141gb" in w for w in unpriced.warnings)


def test_a_point_without_a_value_stays_on_the_chart_labelled():
    unpriced = moeplan.compare(SMALL, devices=["h100-sxm", "h20-141gb"], processes=1).figure()
    labels = [(list(t.x), list(t.text)) for t in unpriced.data if t.mode == "text"]
    assert labels == [(["h20-141gb"], ["no price"])]


@pytest.mark.parametrize("example, why", [("kimi-k2-h200.yaml", "also prefills"), ("kimi-k2-h200-128.yaml", "instances of 128+")])
def test_the_frontier_chart_says_why_the_star_is_below_the_curve(example, why):
    spec = _at_20_ms(example) if example == "kimi-k2-h200-128.yaml" else example_path(example)
    fig = moeplan.plan(spec).figure("frontier")
    assert any(why in a.text for a in fig.layout.annotations)


def test_an_api_sweep_past_the_point_bound_is_refused_before_the_grid_is_built():
    with pytest.raises(InputError, match="100 workload.input_tokens x 101 slo.tpot_s = 10,100 points"):
        moeplan.sweep(SMALL, {"workload.input_tokens": list(range(1, 101)), "slo.tpot_s": [0.05] * 101})
