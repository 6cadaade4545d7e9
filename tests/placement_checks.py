"""Checks the placement tests share (not a test module)."""

import itertools

import numpy as np
import pytest

from planner.placement import device_loads, device_tokens


def assert_valid(p, loads):
    num_layers, num_experts = loads.shape
    assert p.phy2log.shape[0] == num_layers and p.phy2log.shape[1] % p.slots_per_device == 0
    assert (p.logcnt >= 1).all(), "every logical expert needs a replica"
    assert (p.logcnt.sum(axis=1) == p.phy2log.shape[1]).all()
    for layer in range(num_layers):
        assert (np.bincount(p.phy2log[layer], minlength=num_experts) == p.logcnt[layer]).all()
        for e in range(num_experts):
            slots = p.log2phy[layer, e][p.log2phy[layer, e] >= 0]
            assert len(slots) == p.logcnt[layer, e] and (p.phy2log[layer, slots] == e).all()
    tokens = device_tokens(p, loads)
    assert tokens.sum(axis=1) == pytest.approx(loads.sum(axis=1))  # tokens in = tokens out
    if loads.any():
        assert device_loads(p, loads).sum(axis=1) == pytest.approx(1.0)



def exact_busiest(w, num_slots, num_devices):
    """Brute force over replica counts and packings of a tiny layer: the least possible busiest device."""
    best = np.inf
    for counts in itertools.product(range(1, num_slots - len(w) + 2), repeat=len(w)):
        if sum(counts) != num_slots:
            continue
        items = np.repeat(w / np.array(counts), counts)
        for order in itertools.permutations(range(num_slots)):
            best = min(best, items[list(order)].reshape(num_devices, -1).sum(axis=1).max())
    return best
