"""The step model's caches (issue 17's speed bar: bench_step above 2,000 layouts/s with measured tables on) change no
figure: step times with SGLang's, TensorRT-LLM's and vLLM's measured H200 tables, recorded before the caches were
added, agree to 1e-12 relative, cold and with every cache warm; the scalar paths that replaced numpy on scalars agree
with it exactly. The table cases are skipped where aiconfigurator-core is absent, except under CI=true."""

import itertools
import os

import numpy as np
import pytest

from hwmodels.calibrate import measured_tables
from hwmodels.calibrate.measured_grid import Grid
from hwmodels.calibrate.operator_costs import costs_for
from hwmodels.catalog import load_model, load_unit
from hwmodels.efficiency import _tile_for, _tile_shape
from hwmodels.expert_load import ExpertLoad
from hwmodels.hardware import make_cluster
from hwmodels.layout import Layout
from hwmodels.precision import default_plan
from hwmodels.step import StepContext

needs_package = pytest.mark.skipif(measured_tables.database_root() is None and os.environ.get("CI") != "true",
                                   reason="aiconfigurator-core is not installed (pip install 'moeplan[measured]')")

# (model, engine, tp, two-batch overlap, redundant slots, moe_tp, phase, tokens per device, context, draft tokens,
#  busiest device's load over the mean (None: uniform)) -> step time in seconds, as priced before the caches
# (aiconfigurator-core 0.12.0 on h200_sxm), re-recorded when the measured MoE tables came to be keyed by the tokens of
# the whole expert group, and SGLang's and vLLM's experts behind DeepEP by DeepGEMM (SGLang's DeepEP MoE tables, else
# the fitted model): the caches' agreement, not the values, is what this guards
RECORDED = [
    (("kimi-k2", "sglang", 1, False, 0, 1, "decode", 8, 4096, 0, None), 0.015598644933754732),
    (("kimi-k2", "sglang", 8, True, 32, 1, "decode", 136, 4096, 0, None), 0.12644594147563162),
    (("kimi-k2", "sglang", 2, False, 128, 1, "prefill", 4096, 4096, 0, None), 1.1504059406329725),
    (("kimi-k2", "sglang", 4, True, 64, 1, "prefill", 16384, 4096, 0, None), 3.81452419524369),
    (("deepseek-v3", "sglang", 1, True, 0, 1, "decode", 64, 2048, 2, None), 0.0679401087154518),
    (("kimi-k2", "sglang", 8, False, 0, 1, "decode", 32, 8192, 0, 1.4), 0.057740162208984154),
    (("kimi-k2", "trtllm", 8, False, 0, 8, "decode", 48, 4096, 0, None), 0.1083598368273378),
    (("deepseek-v3", "vllm", 1, False, 0, 1, "prefill", 8192, 2048, 0, None), 2.0967384331879124),
    # its grouped-query attention of 400 sequences of 3,000 keys lies past the largest batch the table measured at
    # that context: since measured_grid's rule 2 holds within each slice, the table's time there (0.0622 s before,
    # priced by the fitted model)
    (("qwen3-235b-a22b", "sglang", 4, False, 0, 1, "decode", 100, 3000, 0, None), 0.05853851720896763),
    (("deepseek-v3.2", "sglang", 1, True, 0, 1, "prefill", 2048, 8192, 0, 1.2), 0.641137312302375),
]


def _step(case):
    model, engine, tp, overlap, redundant, moe_tp, phase, tokens, context, draft, imbalance = case
    cluster = make_cluster(load_unit("hgx-h200"), units=16)
    arch = load_model(model)
    layout = Layout(tp=tp, dp=cluster.num_devices // tp, redundant_experts=redundant, two_batch_overlap=overlap,
                    moe_tp=moe_tp)
    load = None if imbalance is None else ExpertLoad.from_imbalance(imbalance, layout.ep, len(arch.moe_layers), "skew")
    ctx = StepContext(arch, default_plan(arch.quantization_config, arch.torch_dtype), cluster, layout, load=load,
                      costs=costs_for("h200-sxm", engine))
    return ctx.step(phase, tokens, context, draft)


@needs_package
def test_step_times_with_tables_on_are_the_ones_recorded_before_the_caches():
    for _ in range(2):  # the second pass answers from the warm caches
        for case, recorded in RECORDED:
            step = _step(case)
            assert step.time_s == pytest.approx(recorded, rel=1e-12, abs=0), case
            assert any(source.startswith("measured:") for _, source, _ in step.operator_sources), case


@needs_package
def test_a_layout_search_reads_the_same_steps_from_the_caches():
    """Layouts that share their attention side (differing in redundant slots) give the steps they give alone."""
    base = ("kimi-k2", "sglang", 4, True, 0, 1, "decode", 40, 4096, 0, None)
    first = {r: _step(base[:4] + (r,) + base[5:]) for r in (0, 32, 64)}
    again = {r: _step(base[:4] + (r,) + base[5:]) for r in (64, 32, 0)}
    assert first == again


def test_tile_choice_in_python_is_numpys():
    for m, n, groups, layout, sms in itertools.product((0, 1, 63, 64, 65, 127, 129, 4096, 16385),
                                                       (7, 64, 129, 576, 2048, 7168, 20480), (1, 2, 48, 384),
                                                       ("dense", "masked", "contiguous"), (78, 132)):
        expected = tuple(int(x) for x in _tile_shape(m, n, groups, layout == "contiguous", sms))
        assert _tile_for(m, n, groups, layout, sms) == expected


def test_grid_lookup_agrees_with_numpy_interpolation():
    """The plain-Python lookup against the rule written with numpy: inside, on grid points, past the token axis."""
    m, n = np.array([1.0, 4.0, 16.0, 64.0]), np.array([8.0, 32.0, 128.0])
    log_latency = np.log(np.outer(m ** 0.7, n ** 0.4) + 1.0)
    log_latency[3, 2] = np.nan  # filled from m = 16 in its slice, linearly in m (rule 2 within a slice)
    grid = Grid(("m", "n"), (m, n), log_latency, 0)
    log_latency = log_latency.copy()
    log_latency[3, 2] = log_latency[2, 2] + np.log(64.0 / 16.0)
    for x, y in itertools.product((1.0, 3.0, 4.0, 50.0, 200.0, 0.5), (8.0, 20.0, 128.0, 100.0)):
        i, j = min(np.searchsorted(m, min(max(x, 1.0), 64.0)), 3), np.searchsorted(n, y)
        wx = 0.0 if m[i] == min(max(x, 1.0), 64.0) else np.log(m[i] / min(max(x, 1.0), 64.0)) / np.log(m[i] / m[i - 1])
        wy = 0.0 if n[j] == y else np.log(n[j] / y) / np.log(n[j] / n[j - 1])
        corners = [(i - (k > 0), j - (l > 0), (wx if k else 1 - wx) * (wy if l else 1 - wy)) for k in (0, 1) for l in (0, 1)]
        latency, beyond = grid.lookup((x, y))
        expected = np.exp(sum(w * log_latency[a, b] for a, b, w in corners if w > 0)) * max(x / 64.0, 1.0)
        assert latency == pytest.approx(expected, rel=1e-12)
        filled = 4.0 if any(w > 0 and (a, b) == (3, 2) for a, b, w in corners) else 1.0
        assert beyond == max(x / 64.0, 1.0 / x, filled, 1.0)
