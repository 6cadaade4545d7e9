"""`moeplan estimate`: a layout the user fixes, scored by the models the search ranks with (planner.estimate)."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import checkout_cli
from hwmodels import catalog
from hwmodels.errors import InputError
from hwmodels.layout import Layout
from hwmodels.layout_text import layout_text, parse_layout
from moeplan import api
from moeplan.spec import example_path
from planner.plan import Mode

EXAMPLE_128 = example_path().parent / "kimi-k2-h200-128.yaml"


@pytest.fixture(scope="module")
def kimi():
    return catalog.load_model("kimi-k2", "model", None)


@pytest.mark.parametrize("text, layout", [
    ("attention=dp16,experts=ep16", Layout(tp=1, dp=16)),
    ("attention=tp8", Layout(tp=8, dp=1)),
    ("attention=tp8,experts=tp8", Layout(tp=8, dp=1, moe_tp=8)),
    ("attention=tp2xdp4,experts=tp2xep4", Layout(tp=2, dp=4, moe_tp=2)),
    ("attention=tp2xdp8,experts=ep16,redundant=32,overlap=on", Layout(tp=2, dp=8, redundant_experts=32, two_batch_overlap=True)),
    (" Attention = DP16 , Experts = EP16 ", Layout(tp=1, dp=16)),
    ("attention=dp8,experts=ep8,pp=2", Layout(tp=1, dp=8, pp=2)),
    ("attention=dp8,experts=ep8,pp4,overlap=on", Layout(tp=1, dp=8, pp=4, two_batch_overlap=True)),
])
def test_layout_text_reads_and_writes_back(kimi, text, layout):
    assert parse_layout(text, kimi) == layout
    assert parse_layout(layout_text(layout), kimi) == layout


def test_layout_text_default_redundant_spreads_the_experts_evenly():
    deepseek = catalog.load_model("deepseek-v3", "model", None)  # 256 experts: EP72 needs 32 more slots at least
    assert parse_layout("attention=dp72", deepseek).redundant_experts == 32


@pytest.mark.parametrize("text, names", [
    ("", "--layout"),
    ("attention=dp16,experts=ep8", "--layout experts"),
    ("attention=tp3", "--layout attention"),
    ("attention=dp16,foo=1", "--layout foo"),
    ("attention=dp16,pp=0", "--layout pp"),
    ("attention=dp16,pp=62", "--layout pp"),
    ("attention=dp16,redundant=3", "--layout redundant"),
    ("attention=dp16,overlap=maybe", "--layout overlap"),
    ("attention=dp16,attention=dp8", "--layout attention"),
    ("experts=ep16", "--layout"),
    ("attention=ep16", "--layout attention"),
    ("attention=dp" + "9" * 40, "--layout attention"),
    ("attention=dp16," * 40, "--layout"),
])
def test_layout_text_refuses_with_the_key_and_a_fix(kimi, text, names):
    with pytest.raises(InputError) as e:
        parse_layout(text, kimi)
    assert e.value.field == names and e.value.fix


def test_the_plans_own_layout_estimates_to_the_plans_figures():
    """Pinned to the layout and batch the search recommends, the estimate is the same prediction."""
    r = api.plan(str(example_path()), replay=0).recommendation
    e = api.estimate(str(example_path()), layout=layout_text(r.decode.layout), batch=r.decode.work_per_device)
    got = e.plan.recommendation
    assert e.meets_slo and not e.missed and not e.why
    assert (got.mode, got.devices, got.decode.layout) == (r.mode, r.devices, r.decode.layout)
    assert got.ttft_s == pytest.approx(r.ttft_s) and got.tpot_s == pytest.approx(r.tpot_s)
    assert got.usd_per_million_output == pytest.approx(r.usd_per_million_output)
    assert 0 < e.unqueued_ttft_s < got.ttft_s


def test_a_disaggregated_pair_on_the_128_device_example():
    e = api.estimate(str(EXAMPLE_128), prefill="attention=tp8xdp2,experts=ep16", decode="attention=dp16,experts=ep16",
                     batch=64, prefill_tokens=4096)
    r = e.plan.recommendation
    assert r.mode == Mode.DISAGGREGATED and r.prefill.layout == Layout(tp=8, dp=2) and r.decode.work_per_device == 64
    assert r.prefill.work_per_device == 4096 and e.meets_slo and r.devices <= 128
    # a wider prefill attention group prefills each prompt faster: its TTFT is lower than TP2 x DP8's
    narrower = api.estimate(str(EXAMPLE_128), prefill="attention=tp2xdp8", decode="attention=dp16", batch=64,
                            prefill_tokens=4096)
    assert narrower.plan.recommendation.ttft_s > r.ttft_s


def test_a_layout_that_misses_the_ttft_slo_is_still_predicted_and_says_why():
    """DP16 prefills each prompt on one GPU: the p99 prompt alone takes longer than the 5 s SLO."""
    e = api.estimate(str(example_path()), layout="attention=dp16,experts=ep16")
    assert not e.meets_slo and "slo.ttft_s" in e.missed and e.field == "slo.ttft_s"
    assert e.unqueued_ttft_s > e.deployment.slo.ttft_s
    assert f"{e.plan.recommendation.ttft_s:,.2f} s > slo.ttft_s 5 s" in e.why
    assert e.plan.recommendation.ttft_s >= e.unqueued_ttft_s


def test_a_batch_past_the_kv_cache_is_refused_with_the_largest_that_fits():
    with pytest.raises(InputError) as e:
        api.estimate(str(example_path()), layout="attention=tp8xdp2", batch=999)
    assert e.value.field == "--batch" and "or less" in e.value.fix


def test_a_layout_whose_weights_do_not_fit_is_refused():
    with pytest.raises(InputError) as e:
        api.estimate(str(example_path()), layout="attention=dp8")
    assert e.value.field == "--layout" and "does not fit 8 x h200-sxm" in e.value.problem


def test_cli_json_and_errors(tmp_path):
    done = checkout_cli.run("estimate", "--layout", "attention=tp8xdp2,experts=ep16", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["layouts"] == {"aggregated": "attention=tp8xdp2,experts=ep16,redundant=0"}
    assert doc["meets_slo"] is True and doc["devices"] == 16 and doc["recommendation"]["mode"] == "aggregated"
    for key in ("ttft_s", "tpot_s", "output_tokens_per_s_per_device", "usd_per_million_output_tokens", "unqueued_ttft_s"):
        assert doc[key] > 0
    bad = checkout_cli.run("estimate", "--layout", "attention=tp3", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--layout attention" in bad.stderr
    both = checkout_cli.run("estimate", "--layout", "attention=dp16", "--decode", "attention=dp16", cwd=tmp_path)
    assert both.returncode == 2 and "--prefill and --decode together" in both.stderr


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(max_size=300), st.lists(st.sampled_from(
    ["attention=", "experts=", "redundant=", "overlap=", "pp=", "tp", "dp", "ep", "x", "*", ",", "=", "8", "16", "0",
     "-1", "on", "99999999", "\x00", "\u2028"]), max_size=12).map("".join)))
def test_any_layout_text_is_a_layout_or_one_input_error(kimi, text):
    try:
        layout = parse_layout(text, kimi)
    except InputError as e:
        assert e.field.startswith("--layout") and "\n" not in str(e)
    else:
        assert parse_layout(layout_text(layout), kimi) == layout
