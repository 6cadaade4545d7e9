"""moeplan.figures: what a reader sees in the step-time panels, the expert-load heatmap and the sweep charts."""

import pandas as pd
import pytest

import moeplan
from moeplan import example_path, figures


@pytest.fixture(scope="module")
def kimi():
    return moeplan.plan(example_path())  # aggregated: a 28 ms decode step and a 1.2 s prefill step


def test_each_step_is_a_panel_on_its_own_scale_named_once(kimi):
    fig = kimi.figure("breakdown")
    titles = [a.text for a in fig.layout.annotations]
    assert [t.split(":")[0] for t in titles] == ["decode step (aggregated)", "prefill step (aggregated)"]
    assert all(t.endswith(" ms") for t in titles)
    assert fig.layout.yaxis2.matches is None  # the decode step is not a sliver on the prefill step's axis
    assert figures.step_name("decode", "decode") == "decode step"  # not 'decode decode step'


def test_uniform_expert_load_is_a_mid_colour_not_blank(kimi):
    heatmap = kimi.figure("placement").data[0]
    assert (heatmap.z == 1.0).all()  # the example has no routing statistics: uniform
    assert heatmap.zmin == 0.0 and heatmap.zmax == 2.0  # 1.0 sits in the middle of the scale
    middle = min(heatmap.colorscale, key=lambda stop: abs(stop[0] - 0.5))[1]
    assert middle.lower() not in ("#ffffff", "#f7f7f7", "rgb(247,247,247)", "white")  # RdBu's middle drew nothing


def test_a_comparison_shows_tpot_in_ms_under_a_label_in_words():
    frame = pd.DataFrame({"device": ["a", "b"], "tpot_s": [0.0484, 0.0312]})
    fig = figures.comparison_figure(frame, "device", "tpot_s")
    assert fig.layout.yaxis.title.text == "TPOT (ms)" and list(fig.data[0].y) == pytest.approx([48.4, 31.2])
    assert fig.layout.showlegend is False  # one series: no legend saying 'points'
