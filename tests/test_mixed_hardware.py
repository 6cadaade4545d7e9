"""Prefill and decode on different hardware (spec `cluster.prefill`): each pool priced on its own device, at its
own price, the KV cache moving over the slower end's NIC, and the simulator replaying each pool on its device."""

import json

import pytest
import yaml

from hwmodels.calibrate.operator_costs import costs_of
from hwmodels.errors import InputError
from hwmodels.step import StepContext
from moeplan import api, example_path
from planner.plan import Mode
from planner.plan_json import plan_from_json, plan_to_json
from planner.prompt_times import sub_cluster

MIXED = example_path().parent / "kimi-k2-h200-prefill-b200-decode.yaml"


@pytest.fixture(scope="module")
def mixed():
    return api.plan(str(MIXED), replay=0).plan


def _spec(**cluster) -> dict:
    return {"model": "kimi-k2", "cluster": {"unit": "hgx-b200", "units": 4, **cluster},
            "workload": {"name": "mooncake-conversation"}, "slo": {"ttft_s": 10.0, "tpot_s": 0.05}}


def test_each_pool_runs_and_is_priced_on_its_own_hardware(mixed):
    d, r = mixed.deployment, mixed.recommendation
    assert d.mixed and r.mode == Mode.DISAGGREGATED
    assert (d.prefill_cluster.device.name, d.cluster.device.name) == ("h200-sxm", "b200-sxm")
    assert r.prefill.perf.memory.usable_bytes == pytest.approx(d.prefill_cluster.device.hbm_bytes * d.serving.hbm_utilization)
    assert r.decode.perf.memory.usable_bytes == pytest.approx(d.cluster.device.hbm_bytes * d.serving.hbm_utilization)
    bill = r.prefill_devices * d.prefill_price.usd_per_device_hour + r.decode_devices * d.price.usd_per_device_hour
    assert r.usd_per_hour == pytest.approx(bill)
    assert d.prefill_price.usd_per_device_hour != d.price.usd_per_device_hour  # so a single price would be wrong
    assert "x h200-sxm +" in mixed.describe() and "x b200-sxm" in mixed.describe()
    assert any("cluster.prefill" in a for a in mixed.assumptions)


def test_the_decode_pool_steps_at_its_own_devices_speed(mixed):
    """The same decode layout and load steps faster on B200 (8 TB/s HBM) than on H200 (4.8 TB/s)."""
    d, dc = mixed.deployment, mixed.recommendation.decode
    def step_s(role):
        ctx = StepContext(d.model, d.precision, sub_cluster(d, dc.instance_devices, role), dc.layout, dc.load,
                          costs_of(d, role), images=d.workload.images)
        return ctx.step("decode", dc.work_per_device, d.workload.input_tokens).time_s
    assert dc.step_s == pytest.approx(step_s("decode"), rel=0.05)
    assert step_s("decode") < 0.9 * step_s("prefill")


def test_the_kv_cache_moves_at_the_slower_ends_nic():
    h20 = api.deployment(_spec(prefill={"unit": "hgx-h20-96gb", "units": 4}))
    rates = [c.device.scaleout_bytes_per_s for c in (h20.cluster, h20.prefill_cluster)]
    assert h20.kv_link_bytes_per_s == min(rates)


def test_the_plan_round_trips_and_refuses_another_spec(mixed):
    doc = json.loads(json.dumps(plan_to_json(mixed)))
    assert doc["cluster"]["prefill"]["device"] == "h200-sxm"
    back = plan_from_json(doc, mixed.deployment)
    assert back.recommendation.devices == mixed.recommendation.devices
    single = api.deployment(str(example_path().parent / "kimi-k2-h200-128.yaml"))
    with pytest.raises(InputError):
        plan_from_json(doc, single)


def test_the_replay_runs_each_pool_on_its_device_and_blends_the_bill(mixed):
    run = api.simulate(mixed.deployment, mixed, requests=300, seed=1)
    r, d = mixed.recommendation, mixed.deployment
    blended = r.usd_per_hour / r.devices
    assert run.result.usd_per_device_hour == pytest.approx(blended)
    assert run.result.completed == 300


def test_spec_errors_name_the_prefill_cluster(tmp_path):
    with pytest.raises(InputError) as e:
        api.deployment(_spec(prefill={"unit": "hgx-nope", "units": 1}))
    assert e.value.field == "cluster.prefill.unit"
    with pytest.raises(InputError) as e:
        api.deployment(_spec(prefill={"unit": "hgx-h200", "devices": 12}))
    assert e.value.field == "cluster.prefill.devices"


def test_launch_files_size_each_pool_on_its_nodes(mixed):
    from dataclasses import replace
    from hwmodels.deployment import Serving
    d = mixed.deployment
    engine = replace(d, serving=Serving(d.serving.hbm_utilization, d.serving.tokens_per_step, "sglang"))
    files = api.launch_files(replace(mixed, deployment=engine))
    pools = {p["role"]: p for p in json.loads(files["launch.json"])["pools"]}
    assert pools["prefill"]["instance_devices"] == mixed.recommendation.prefill.instance_devices
    manifest = yaml.safe_load(files["dynamo.yaml"])
    assert manifest["spec"]["services"]["PrefillWorker"]["resources"]["limits"]["gpu"] == "8"
