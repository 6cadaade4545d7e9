"""Memory per device and the fit check, against hand computation."""

from dataclasses import replace

import pytest
from hypothesis import given, settings, strategies as st

from hwmodels import arithmetic as A
from hwmodels.catalog import load_model
from hwmodels.fit import fit
from hwmodels.layout import Layout
from hwmodels.layouts import layout_space
from hwmodels.memory import kv_bytes_per_token_per_device, stage_layers, weights_per_device
from hwmodels.precision import default_plan
from hwmodels.step import StepContext
from moeplan import api, example_path


def kimi():
    arch = load_model("kimi-k2")
    return arch, default_plan(arch.quantization_config, arch.torch_dtype)


def test_default_example_kimi_k2_on_16_h200_fits_with_hand_checked_numbers():
    report = api.check(example_path())
    d = report.deployment
    assert d.cluster.num_devices == 16 and d.cluster.device.name == "h200-sxm"
    assert report.fits
    arch, plan = kimi()
    # DP16 attention + EP16: each GPU holds 384 / 16 = 24 experts of each of the 60 MoE layers plus a full copy
    # of everything else (attention, dense layer, shared experts, router, norms, embedding, LM head).
    dp16 = next(m for m in report.layouts if (m.layout.tp, m.layout.dp, m.layout.pp) == (1, 16, 1))
    by_part = A.weight_bytes_by_part(arch, plan)
    expected = by_part["routed_experts"] * 24 / 384 + sum(v for k, v in by_part.items() if k != "routed_experts")
    assert dp16.weight_bytes == pytest.approx(expected)
    usable = 151397597184 * 0.90
    assert dp16.kv_capacity_bytes == pytest.approx(usable - expected - dp16.workspace_bytes)
    per_sequence = 70_272 * (12035 + 343)
    assert dp16.kv_bytes_per_sequence == per_sequence
    assert dp16.concurrent_sequences == 16 * int(dp16.kv_capacity_bytes // per_sequence)
    assert "1.03 TB" in report.headline() and "2.42 TB" in report.headline()


def test_mla_cache_is_not_sharded_by_attention_tp_but_gqa_is():
    arch, plan = kimi()
    assert kv_bytes_per_token_per_device(arch, plan, Layout(tp=8, dp=1, pp=1)) == 70_272
    qwen = load_model("qwen3-235b-a22b")
    qplan = default_plan(None)
    full = A.kv_bytes_per_token(qwen, qplan)
    assert kv_bytes_per_token_per_device(qwen, qplan, Layout(tp=2, dp=4, pp=1)) == full / 2
    assert kv_bytes_per_token_per_device(qwen, qplan, Layout(tp=8, dp=1, pp=1)) == full / 4  # 4 KV heads


def test_kimi_k2_on_8_h100_does_not_fit_and_says_what_would():
    d = api.deployment(example_path("kimi-k2-h100-8.yaml"))
    report = fit(d)
    assert not report.fits
    assert report.headline() == "Kimi K2 Instruct fp8 needs 1.03 TB of weights; 8 x h100-sxm hold 687 GB (85.9 GB each)"
    assert report.smallest_fitting_cluster.num_devices == 16
    assert "int4" in report.fix()


def test_redundant_experts_add_slots():
    arch, plan = kimi()
    base = weights_per_device(arch, plan, Layout(tp=1, dp=16, pp=1))
    more = weights_per_device(arch, plan, Layout(tp=1, dp=16, pp=1, redundant_experts=32))
    assert more["routed_experts"] == pytest.approx(base["routed_experts"] * 26 / 24)


@given(st.integers(1, 128), st.integers(1, 64))
def test_stages_cover_every_layer_once(layers, pp):
    stages = stage_layers(layers, pp)
    assert [i for r in stages for i in r] == list(range(layers))
    assert max(map(len, stages)) - min(map(len, stages)) <= 1


@settings(max_examples=30, deadline=None)
@given(st.sampled_from([(1, 16, 1), (2, 8, 1), (8, 2, 1), (16, 1, 1), (1, 8, 2), (8, 1, 2)]))
def test_weights_spread_over_a_layout_never_lose_bytes(layout):
    arch, plan = kimi()
    tp, dp, pp = layout
    per_device = sum(weights_per_device(arch, plan, Layout(tp, dp, pp)).values())
    assert per_device * tp * dp * pp >= A.weight_bytes(arch, plan) * 0.999


def test_more_hbm_utilisation_means_more_sequences():
    d = api.deployment(example_path())
    lo = fit(replace(d, serving=replace(d.serving, hbm_utilization=0.8))).best.concurrent_sequences
    hi = fit(d).best.concurrent_sequences
    assert hi > lo


@pytest.mark.parametrize("spec", ["kimi-k2-h200.yaml", "qwen3-235b-h100.yaml", "deepseek-v3-gb200-nvl72.yaml"])
def test_check_ranks_only_layouts_the_planner_and_the_simulator_price(spec):
    """One layout space (hwmodels.layouts): every layout `check` lists is one the search scores on the same devices,
    and the step model prices it (pipeline stages included)."""
    d = api.deployment(example_path(spec))
    report = fit(d)
    planned = {(l.tp, l.dp, l.pp, l.redundant_experts) for l in layout_space(d.model, d.cluster)}
    assert report.layouts and all((m.layout.tp, m.layout.dp, m.layout.pp, m.layout.redundant_experts) in planned
                                  for m in report.layouts)
    best = report.best.layout
    assert StepContext(d.model, d.precision, d.cluster, best).step("decode", 8, 4096).time_s > 0
