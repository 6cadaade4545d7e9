"""moeplan.engines: the local and Ray engines give the same rows, stream progress, retry and report failures.

The Ray tests share one local Ray instance (2 CPUs, no dashboard) for the module; they skip where Ray is
not installed and fail where CI=true, because CI installs it with the test extra.
"""

import dataclasses
import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import moeplan
from hwmodels.errors import InputError
from hwmodels.ingest.requests import synthetic_trace
from moeplan import cli, engines, study
from planner.search import plan as search
from sim import sharding

SMALL = {"schema_version": 1, "model": "qwen3-30b-a3b", "cluster": {"unit": "hgx-h100", "units": 1},
         "workload": {"input_tokens": 2000, "output_tokens": 400, "requests_per_s": 4.0},
         "slo": {"ttft_s": 3.0, "tpot_s": 0.05}}
VARY = {"workload.input_tokens": [1000, 4000], "slo.tpot_s": [0.03, 0.08, 0.0005]}  # 6 points, 2 infeasible


@pytest.fixture(scope="module")
def ray_cluster():
    if importlib.util.find_spec("ray") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but ray is not installed (pip install '.[test]' installs it)")
        pytest.skip("ray is not installed (pip install 'moeplan[ray]')")
    ray = engines.connect_ray(processes=2)  # what engine="ray" does: a local instance, this checkout's packages shipped
    yield ray
    ray.shutdown()


def _attempts(log: Path, item: int) -> int:
    return log.read_text().split().count(str(item)) if log.exists() else 0


def _raises_on_3(log: Path):
    """A task function (a closure, so it travels by value to any worker) that logs each call and fails on item 3."""
    def fn(offset: int, item: int) -> int:
        with open(log, "a") as f:
            f.write(f"{item}\n")
        if item == 3:
            raise ZeroDivisionError("item 3 divides by zero")
        return item + offset
    return fn


def test_local_processes_report_a_failed_point_as_a_row_with_its_point(tmp_path, monkeypatch):
    log = tmp_path / "calls"
    out = engines.run_tasks(_raises_on_3(log), 0, list(range(6)), processes=2, chunk_items=3)
    assert out == [0, 1, 2, engines.Failed("ZeroDivisionError: item 3 divides by zero"), 4, 5]
    assert _attempts(log, 3) == 2  # in its chunk, then alone

    plan = study.evaluate_point

    def flaky(raw, base_dir):
        if raw["slo"]["tpot_s"] == 0.08:
            raise RuntimeError("solver crashed\nwith a traceback")
        return plan(raw, base_dir)

    monkeypatch.setattr(study, "evaluate_point", flaky)  # forked workers inherit the patch
    rows = moeplan.sweep(SMALL, VARY, processes=2).rows
    failed = [r for r in rows if r["slo.tpot_s"] == 0.08]
    assert len(failed) == 2 and all(r == {"workload.input_tokens": r["workload.input_tokens"], "slo.tpot_s": 0.08,
                                          "feasible": False, "reason": "failed: RuntimeError: solver crashed"}
                                     for r in failed)
    assert sum(r["feasible"] for r in rows) == 2


def test_missing_ray_is_one_line_with_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(InputError) as e:
        moeplan.sweep(SMALL, VARY, engine="ray")
    assert str(e.value) == "engine: ray is not installed; fix: pip install 'moeplan[ray]'"
    assert cli.main(["compare", "--devices", "h200-sxm", "--engine", "ray", "--json"]) == cli.EXIT_BAD_INPUT


def test_engine_and_address_are_checked():
    with pytest.raises(InputError, match="unknown engine 'dask'"):
        moeplan.sweep(SMALL, VARY, engine="dask")
    with pytest.raises(InputError, match="address: a cluster address needs the ray engine"):
        moeplan.compare(SMALL, devices=["h100-sxm"], address="ray://head:10001")


def test_ray_gives_the_local_rows_and_progress_sees_every_point(ray_cluster):
    local = moeplan.sweep(SMALL, VARY, processes=1)
    seen = []
    on_ray = moeplan.sweep(SMALL, VARY, engine="ray", progress=lambda done, total: seen.append((done, total)))
    assert on_ray.rows == local.rows and on_ray.varied == local.varied
    assert sum(not r["feasible"] for r in on_ray.rows) == 2
    # one point a task here (6 points < 4 tasks x 2 CPUs): every point reported, in completion order
    assert [done for done, _ in seen] == list(range(1, 7)) and {total for _, total in seen} == {6}


def test_a_raising_task_is_retried_then_split_and_only_its_point_is_lost(ray_cluster, tmp_path):
    log = tmp_path / "calls"
    out = engines.run_tasks(_raises_on_3(log), 100, list(range(8)), "ray", chunk_items=4)
    assert out[:3] + out[4:] == [100, 101, 102, 104, 105, 106, 107]
    assert out[3] == engines.Failed(f"ZeroDivisionError: item 3 divides by zero (after {engines.RETRIES + 1} attempts)")
    # Ray retried the chunk, then item 3 alone, RETRIES + 1 times each; the other chunk ran once
    assert _attempts(log, 3) == 2 * (engines.RETRIES + 1) and _attempts(log, 7) == 1


def test_a_dead_worker_is_retried(ray_cluster, tmp_path):
    marker = tmp_path / "died"

    def dies_once(_, item: int) -> int:
        if item == 1 and not marker.exists():
            marker.touch()
            os._exit(1)  # the worker process dies mid-task, as on OOM or a lost node
        return item

    assert engines.run_tasks(dies_once, None, [0, 1, 2], "ray") == [0, 1, 2] and marker.exists()


def test_cli_sweep_on_ray(ray_cluster, tmp_path, capsys):
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump({"spec": SMALL, "vary": {"slo.tpot_s": [0.03, 0.0005]}}))
    assert cli.main(["sweep", str(sweep_file), "--engine", "ray", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["feasible"] for r in rows] == [True, False] and rows[0]["slo.tpot_s"] == 0.03


def test_replay_shards_on_ray_are_the_local_ones(ray_cluster):
    d = moeplan.deployment(moeplan.parse_spec({**SMALL, "cluster": {"unit": "hgx-h100", "units": 2}}))
    p = search(d)
    p = dataclasses.replace(p, recommendation=dataclasses.replace(p.recommendation, decode_instances=2))
    trace = synthetic_trace(600, 30.0, 2000, 200, seed=2)  # shipped once to the object store

    def tasks(engine):
        return lambda fn, shared, items: engines.run_tasks(fn, shared, items, engine, processes=1, chunk_items=1)

    local = sharding.simulate_sharded(p, trace, by="window", shards=3, tasks=tasks("local"))
    on_ray = sharding.simulate_sharded(p, trace, by="window", shards=3, tasks=tasks("ray"))
    assert on_ray.note == local.note and np.array_equal(on_ray.result.e2e_s, local.result.e2e_s, equal_nan=True)


def test_the_shipped_sweep_example_gives_the_same_rows_locally_and_on_ray(ray_cluster):
    """catalogs/examples/kimi-k2-sweep.yaml is the README's sweep: `moeplan sweep` of it, in worker processes and on Ray."""
    from moeplan.sweep_file import load_sweep
    sweep = load_sweep(moeplan.example_path("kimi-k2-sweep.yaml"))
    local = moeplan.sweep(sweep.spec, sweep.vary, processes=2)
    on_ray = moeplan.sweep(sweep.spec, sweep.vary, engine="ray")
    assert len(local.rows) == 8 and local.rows == on_ray.rows and local.warnings == on_ray.warnings
    assert any(r["feasible"] for r in local.rows)
