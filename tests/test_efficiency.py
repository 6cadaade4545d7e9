"""Operator cost models at the stored fits (OperatorCosts): the roofline floor on every catalog device, the
counts each cost is built from, FlashMLA's published rates, and the sources every cost names. The fit itself is
tested in test_gemm_fit.py."""

import math

import pytest
import yaml
from hypothesis import given, settings, strategies as st

from catalogs import CATALOG_DIR
from hwmodels import efficiency as E
from hwmodels.calibrate.operator_costs import fitted_costs, flashmla_rates
from hwmodels.catalog import device_names, load_device
from hwmodels.errors import InputError
from hwmodels.precision import DTYPES

H800 = load_device("h800-sxm")
COSTS = fitted_costs()


@settings(max_examples=300, deadline=None)
@given(
    device=st.sampled_from(device_names()),
    dtype=st.sampled_from(["fp8", "bf16", "fp16", "fp4", "int8", "int4"]),
    layout=st.sampled_from(E.LAYOUTS),
    m=st.integers(1, 65536),
    n=st.integers(1, 65536),
    k=st.integers(1, 32768),
    groups=st.integers(1, 64),
    weight_bytes=st.none() | st.floats(0.25, 4.0),
)
def test_gemm_never_below_its_roofline(device, dtype, layout, m, n, k, groups, weight_bytes):
    dev = load_device(device)
    cost = COSTS.gemm(dev, m, n, k, dtype, groups, layout, weight_bytes_per_element=weight_bytes)
    assert cost.total_s >= cost.roofline_s > 0
    assert cost.roofline_s == pytest.approx(max(cost.flops / _peak_used(dev, dtype), cost.bytes / dev.hbm_bytes_per_s))
    assert cost.compute_s >= cost.flops / _peak_used(dev, dtype) and cost.memory_s >= cost.bytes / dev.hbm_bytes_per_s
    assert cost.overhead_s > 0 and cost.source.startswith("DeepGEMM h800-sxm fit")


def _peak_used(dev, dtype):
    want = DTYPES[dtype].peak
    while want not in dev.peak_flops_per_s:
        want = E.WIDER_PEAK[want]
    return dev.peak_flops_per_s[want]


def test_gemm_counts_bytes_and_flops_of_every_group():
    cost = COSTS.gemm(H800, 256, 4096, 7168, "fp8", groups=4, layout="masked", weight_bytes_per_element=0.53)
    assert cost.flops == 2 * 4 * 256 * 4096 * 7168
    assert cost.bytes == pytest.approx(4 * (256 * 7168 * 1.0 + 4096 * 7168 * 0.53 + 256 * 4096 * 2.0))


def test_large_and_decode_gemms_on_h800():
    big = COSTS.gemm(H800, 8192, 8192, 8192)
    assert big.bound == "compute" and 0.6 < big.flops / big.total_s / 1978e12 < 0.75
    decode = COSTS.gemm(H800, 8, 4096, 7168, groups=24, layout="masked")
    assert decode.bound == "memory" and decode.bytes / decode.total_s < 3.35e12


def test_sources_say_which_fit_scaling_and_peak_were_used():
    assert COSTS.gemm(H800, 128, 7168, 2048).source == "DeepGEMM h800-sxm fit"
    h200 = COSTS.gemm(load_device("h200-sxm"), 128, 7168, 2048).source
    assert "scaled to h200-sxm peaks" in h200 and "assumed" not in h200  # Hopper: 132 SMs known
    b200 = COSTS.gemm(load_device("b200-sxm"), 128, 7168, 2048).source
    assert "scaled to b200-sxm peaks" in b200 and "132 SMs assumed" in b200
    fp4 = COSTS.gemm(load_device("h100-sxm"), 128, 7168, 2048, "fp4")
    assert "no fp4 peak on h100-sxm, ran at its fp8 peak" in fp4.source
    assert fp4.roofline_s == pytest.approx(max(fp4.flops / 1978e12, fp4.bytes / 3.35e12))
    assert "ran at its bf16 peak" in COSTS.gemm(load_device("ascend-910b"), 128, 7168, 2048, "fp8").source


def test_bad_inputs_are_refused_with_the_field():
    with pytest.raises(InputError, match="no fp32 peak"):
        COSTS.gemm(H800, 128, 128, 128, "fp32")
    with pytest.raises(InputError, match="layout"):
        COSTS.gemm(H800, 128, 128, 128, layout="ragged")
    with pytest.raises(InputError, match="bad GEMM shape"):
        COSTS.gemm(H800, -1, 128, 128)
    empty = COSTS.gemm(H800, 0, 4096, 7168, groups=8, layout="masked")
    assert empty.total_s == 0 and empty.flops == 0


def test_flashmla_figures_match_the_published_notes():
    published = yaml.safe_load(open(CATALOG_DIR / "published" / "kernels.yaml"))["flashmla_decode"]
    notes = " ".join(published["notes"])
    assert "3000 GB/s" in notes and "3.35 TB/s" in notes and "660 TFLOPS" in notes
    assert float(published["memory_bound_bytes_per_s"]) == 3000e9 and float(published["compute_bound_flops_per_s"]) == 660e12
    rates = flashmla_rates()
    assert rates.memory_efficiency == pytest.approx(3000 / 3350) and rates.compute_efficiency == pytest.approx(660 / 989)


def test_mla_decode_reaches_flashmla_rates_and_no_more():
    # deepseek-ai/FlashMLA README: up to 3000 GB/s memory-bound, 660 TFLOP/s compute-bound on H800.
    mem = COSTS.mla_decode(H800, 128, 8192, 16, 512, 64, 2.0)
    assert mem.bound == "memory" and 0.95 * 3000e9 < mem.bytes / mem.total_s <= 3000e9
    assert mem.bytes == pytest.approx(128 * 8192 * 576 * 2 + 128 * 16 * (576 + 512) * 2)
    comp = COSTS.mla_decode(H800, 132, 8192, 128, 512, 64, 2.0)
    assert comp.bound == "compute" and 0.95 * 660e12 < comp.flops / comp.total_s <= 660e12
    assert comp.flops == 2 * 132 * 128 * 8192 * (2 * 512 + 64)
    assert "FlashMLA h800-sxm decode rates: 0.667 of bf16 peak" in comp.source
    assert "scaled to gb200 peaks" in COSTS.mla_decode(load_device("gb200"), 8, 1024, 16, 512, 64, 2.0).source


def test_prefill_attention_states_its_assumption():
    cost = COSTS.attention_prefill(load_device("b200-sxm"), 4096, 2048, 128, 192, 128)
    assert cost.flops == 2 * 4096 * 128 * 2048 * (192 + 128)
    assert cost.bound == "compute" and cost.compute_s == pytest.approx(cost.flops / (2250e12 * 660 / 989))
    assert "assumed for prefill" in cost.source and "no published prefill table" in cost.source


def test_elementwise_is_memory_bound_at_the_fitted_efficiency():
    fit = COSTS.gemm_fit
    cost = COSTS.elementwise(load_device("h200-sxm"), 1e9, "norms")
    assert cost.flops == 0 and cost.bound == "memory" and cost.total_s >= cost.roofline_s
    assert cost.total_s == pytest.approx(1e9 / (4.8e12 * fit.memory_efficiency) + fit.launch_overhead_s)
    assert "HBM efficiency" in cost.source and "scaled to h200-sxm" in cost.source
    assert math.isclose(cost.roofline_s, 1e9 / 4.8e12)
