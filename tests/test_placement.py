"""Placement as data: evaluation under the runtime even split, by hand."""

import numpy as np
import pytest

from planner.eplb import contiguous_placement
from planner.placement import build_placement, device_loads, device_tokens, evaluate, expert_location_json


def test_even_split_evaluation_by_hand():
    # 2 devices x 2 slots; expert 0 has two replicas on different devices and splits its 6 tokens 3 + 3
    p = build_placement(np.array([[0, 1, 0, 2]]), 3, 2, "hand", 0.0)
    loads = np.array([[6.0, 1.0, 2.0]])
    assert device_tokens(p, loads).tolist() == [[4.0, 5.0]]
    result = evaluate(p, loads)
    assert result["step_cost"] == pytest.approx(5 / 4.5) and result["per_layer"] == [pytest.approx(5 / 4.5)]
    assert device_loads(p, loads).tolist() == [[4 / 9, 5 / 9]]
    assert expert_location_json(p) == {"physical_to_logical_map": [[0, 1, 0, 2]]}


def test_layers_without_load_are_skipped():
    p = contiguous_placement(3, 4, 4, 2)
    loads = np.array([[0.0] * 4, [1, 1, 1, 1], [4, 0, 0, 0]])
    assert evaluate(p, loads)["per_layer"] == [1.0, 2.0]
    assert device_loads(p, loads).shape == (2, 2)
