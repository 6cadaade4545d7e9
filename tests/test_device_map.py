"""Where a pool's attention and KV sit, device by device and layer by layer (planner.device_map; plan.json's
placement.attention and placement.kv; the Placement page's device-by-layer picture)."""

from dataclasses import replace

import pytest

from hwmodels.layout import Layout
from moeplan import api, example_path
from planner.device_map import attention_map, kv_map


@pytest.fixture(scope="module")
def planned():
    return api.plan(example_path(), replay=0)


def test_tp_ranks_fill_each_dp_rank_in_device_order(planned):
    c, arch = planned.recommendation.decode, planned.deployment.model
    assert (c.layout.tp, c.layout.dp, c.layout.pp) == (8, 2, 1)
    att = attention_map(c, arch)
    assert att["dp_rank_of_device"] == [0] * 8 + [1] * 8
    assert att["tp_rank_of_device"] == list(range(8)) * 2
    assert att["stage_of_device"] == [0] * 16 and att["stage_of_layer"] == [0] * arch.num_layers
    assert att["heads_per_device"] == arch.attention.num_heads // 8


def test_pipeline_stages_split_devices_and_layers(planned):
    c, arch = planned.recommendation.decode, planned.deployment.model
    staged = replace(c, layout=Layout(tp=4, dp=2, pp=2))
    att = attention_map(staged, arch)
    assert att["stage_of_device"] == [0] * 8 + [1] * 8
    assert att["dp_rank_of_device"][:8] == [0] * 4 + [1] * 4 == att["dp_rank_of_device"][8:]
    layers = att["stage_of_layer"]
    assert len(layers) == arch.num_layers and layers == sorted(layers) and set(layers) == {0, 1}
    assert abs(layers.count(0) - layers.count(1)) <= 1


def test_kv_is_each_ranks_sequences_at_the_pools_batch(planned):
    c = planned.recommendation.decode
    kv, mem = kv_map(c), c.perf.memory
    assert kv["sequences_per_device"] == c.work_per_device * c.layout.tp
    assert kv["bytes_per_device"] == pytest.approx(kv["sequences_per_device"] * mem.kv_bytes_per_sequence)
    assert 0 < kv["bytes_per_device"] <= kv["capacity_bytes_per_device"]


def test_the_device_map_table_and_figure_cover_every_device_and_layer(planned):
    frame = planned.to_frame("device_map")
    d, c = planned.deployment, planned.recommendation.decode
    assert len(frame) == c.instance_devices * d.model.num_layers
    moe = frame[frame["layer"].isin(d.model.moe_layers)]
    assert moe["relative_expert_load"].notna().all() and frame["runs_layer"].all()
    fig = planned.figure("device_map")
    assert "Where attention, experts and KV sit" in fig.layout.title.text
    assert fig.data[0].z.shape == (c.instance_devices, d.model.num_layers)
