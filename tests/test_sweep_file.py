"""The sweep file: loaded in bounded work, its size bounded before any point is planned."""

import time

import pytest

from hwmodels.errors import InputError
from moeplan.spec import example_path
from moeplan.study import MAX_POINTS
from moeplan.sweep_file import load_sweep


def test_a_sweep_of_too_many_points_is_refused_before_planning_naming_the_product(tmp_path):
    path = tmp_path / "sweep.yaml"
    values = ", ".join(str(i) for i in range(1, 101))
    path.write_text(f"spec: {example_path()}\nvary:\n  workload.input_tokens: [{values}]\n"
                    f"  workload.output_tokens: [{values}]\n  slo.tpot_s: [0.05, 0.1]\n")
    start = time.perf_counter()
    with pytest.raises(InputError) as e:
        load_sweep(path)
    assert time.perf_counter() - start < 2
    assert e.value.field == f"{path}: vary"
    assert e.value.problem == (f"100 workload.input_tokens x 100 workload.output_tokens x 2 slo.tpot_s = 20,000 points, "
                               f"past the bound of {MAX_POINTS:,}")
    assert "fewer values" in e.value.fix


def test_a_sweep_at_the_bound_loads(tmp_path):
    path = tmp_path / "sweep.yaml"
    values = ", ".join(str(i) for i in range(1, 101))
    path.write_text(f"spec: {example_path()}\nvary:\n  workload.input_tokens: [{values}]\n"
                    f"  workload.output_tokens: [{values}]\n")
    assert len(load_sweep(path).vary["workload.output_tokens"]) == 100


@pytest.mark.parametrize("text, field, fix", [
    ("spec: x.yaml\nvary: {slo.tpot_s: [0.1]}\ntitle: " + "t" * 300 + "\n", "title", "at most 200 characters"),
    ("spec: x.yaml\nvary: {slo.tpot_s: 0.1}\n", "vary.slo.tpot_s", "give a list"),
    ("spec: x.yaml\nvary: [1]\n", "vary", "give a mapping"),
    ("spec: x.yaml\nvary: {slo.tpot_s: [0.1]}\ny: speed\n", "y", "one of usd_per_million_output_tokens"),
])
def test_bad_fields_name_the_field_and_a_fix(tmp_path, text, field, fix):
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as e:
        load_sweep(path)
    assert e.value.field == f"{path}: {field}" and fix in e.value.fix and e.value.fix != "fix the value"
