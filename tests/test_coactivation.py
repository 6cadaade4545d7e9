"""Co-activation from per-token routing (moeplan issue 19): the cross-node copies of a placement counted from the
tokens' own expert sets (hwmodels.alltoall_placement.token_hits), and the pass that moves experts chosen together
onto one node (planner.coactivation), on hand-made cases and on Mixtral's per-token routing."""

import json
from pathlib import Path

import numpy as np
import pytest

import checkout_cli

from hwmodels.alltoall_placement import layer_hits, token_hits
from hwmodels.ingest.routing import read_counts_and_tokens
from planner.coactivation import coactivation_placement
from planner.eplb import contiguous_placement
from planner.ilp import ilp_placement
from planner.placement import cross_node_bytes_per_token, evaluate


def _tokens(sets, experts):
    out = np.zeros((len(sets), experts), dtype=bool)
    for t, chosen in enumerate(sets):
        out[t, list(chosen)] = True
    return out


def test_token_hits_by_hand():
    # experts 0, 1 on device 0 (domain 0); 2, 3 on device 1 (domain 1); expert 4 split over both
    expert_device = np.array([[1, 0], [1, 0], [0, 1], [0, 1], [0.5, 0.5]])
    domains = np.array([0, 1])
    device, domain = token_hits(_tokens([{0, 1}], 5), expert_device, domains)
    assert domain.tolist() == [1.0, 0.0] and device.tolist() == [1.0, 0.0]
    _, domain = token_hits(_tokens([{0, 2}], 5), expert_device, domains)
    assert domain.tolist() == [1.0, 1.0]
    _, domain = token_hits(_tokens([{4}], 5), expert_device, domains)  # its one replica drawn from the two
    assert domain.tolist() == pytest.approx([0.5, 0.5])
    _, domain = token_hits(_tokens([{0, 1}, {0, 2}, set()], 5), expert_device, domains)  # the empty token is left out
    assert domain.tolist() == pytest.approx([1.0, 0.5])


def test_independent_tokens_give_the_drawn_model():
    """Tokens drawing their experts uniformly and independently reach each device and domain as layer_hits says
    (exact for uniform routing), here with one expert split over two devices."""
    rng = np.random.default_rng(0)
    experts, top_k = 16, 4
    expert_device = np.eye(4)[np.arange(experts) % 4]
    expert_device[0] = [0.5, 0.5, 0, 0]
    domains = np.array([0, 0, 1, 1])
    sets = [rng.choice(experts, size=top_k, replace=False) for _ in range(40_000)]
    _, drawn_device, drawn_domain = layer_hits(np.full(experts, 1 / experts), expert_device, domains, top_k)
    device, domain = token_hits(_tokens(sets, experts), expert_device, domains)
    assert domain == pytest.approx(drawn_domain, abs=0.01)
    assert device == pytest.approx(drawn_device, abs=0.01)


def test_experts_chosen_together_end_on_one_node():
    """Tokens always pick pairs (0, 4), (1, 5), (2, 6), (3, 7); contiguous placement splits every pair over the
    two nodes, the pass brings each pair together and keeps every device's load."""
    rng = np.random.default_rng(1)
    pairs = [(0, 4), (1, 5), (2, 6), (3, 7)]
    sets = [pairs[i] for i in rng.integers(0, 4, size=400)]
    tokens = np.stack([_tokens(sets, 8)] * 2, axis=1)  # [T, 2 layers, 8]
    loads = tokens.sum(axis=0).astype(float)
    start = contiguous_placement(2, 8, 8, 4)  # 4 devices x 2 slots, 2 nodes: experts 0-3 on node 0
    placed = coactivation_placement(start, loads, tokens, nodes=2, time_limit_s=5)
    assert cross_node_bytes_per_token(start, loads, 2, 2, 1.0, tokens=tokens) == pytest.approx(2 * 1.0)
    # every token inside one node: half the tokens' sources are on the other node, one copy each
    assert cross_node_bytes_per_token(placed, loads, 2, 2, 1.0, tokens=tokens) == pytest.approx(2 * 0.5)
    assert evaluate(placed, loads)["step_cost"] <= evaluate(start, loads)["step_cost"] + 1e-12
    assert (np.sort(placed.logcnt, axis=1) == np.sort(start.logcnt, axis=1)).all()
    assert "co-activation pass over 2 MoE layer(s)" in placed.notes


def test_on_mixtral_per_token_routing_held_out(shared_data):
    """Fitted on GSM8K's tokens, scored on HumanEval's: fewer cross-node copies than the ILP and contiguous
    placement, no busier device on the fit counts; the drawn model cannot see the difference."""
    folder = shared_data / "routing" / "mixtral-8x7b-per-token"
    fit_loads, fit_tokens = read_counts_and_tokens(folder / "gsm8k_2_routing.jsonl")
    eval_loads, eval_tokens = read_counts_and_tokens(folder / "humaneval_2_routing.jsonl")
    assert fit_tokens.shape == (247, 32, 8) and fit_tokens.sum(axis=2).max() == 2
    assert (fit_tokens.sum(axis=0) == fit_loads).all()
    ilp = ilp_placement(fit_loads, 8, 8, 2, time_limit_s=5)
    placed = coactivation_placement(ilp, fit_loads, fit_tokens, nodes=2, time_limit_s=10)
    held_out = {name: cross_node_bytes_per_token(p, eval_loads, 2, 2, 1.0, tokens=eval_tokens)
                for name, p in (("contiguous", contiguous_placement(32, 8, 8, 8)), ("ilp", ilp), ("coactivation", placed))}
    assert held_out["coactivation"] < 0.97 * min(held_out["ilp"], held_out["contiguous"])
    assert evaluate(placed, fit_loads)["step_cost"] <= evaluate(ilp, fit_loads)["step_cost"] + 1e-12
    drawn = [cross_node_bytes_per_token(p, eval_loads, 2, 2, 1.0) for p in (ilp, placed)]
    assert drawn[0] == pytest.approx(drawn[1], rel=0.01)


def test_aggregated_counts_have_no_tokens(shared_data):
    counts, tokens = read_counts_and_tokens(shared_data / "routing" / "deepseek-v3-sglang-eplb" / "prefill_in512.json")
    assert tokens is None and counts.shape == (61, 256)


def test_place_adds_the_coactivation_method(tmp_path, shared_data):
    folder = shared_data / "routing" / "mixtral-8x7b-per-token"
    r = checkout_cli.run("place", "--loads", str(folder / "humaneval_2_routing.jsonl"), "--fit-loads",
                         str(folder / "gsm8k_2_routing.jsonl"), "--ep", "8", "--nodes", "2", "--model", "mixtral-8x7b",
                         "--time-limit", "20", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    cross = {name: m["cross_node_bytes_per_token"] for name, m in result["methods"].items()}
    assert set(cross) == {"contiguous", "eplb", "ilp", "coactivation"}
    assert cross["coactivation"] < cross["ilp"]
    assert "per-token routing" in result["cross_node_from"]
    steps = {m["step_cost"] for m in result["methods"].values()}
    assert len(steps) == 1  # one expert per GPU: every placement loads the GPUs alike
    readme = " ".join((Path(__file__).parents[1] / "README.md").read_text().split())
    mb = {name: f"{v / 1e6:.3f}" for name, v in cross.items()}
    assert (f"it sends {mb['coactivation']} MB per token across nodes against the ILP's {mb['ilp']} and contiguous "
            f"placement's {mb['contiguous']}, at the same step cost") in readme
