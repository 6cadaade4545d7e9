"""Figures the README quotes, recomputed: a change that moves one fails here until the README says the new value."""

from pathlib import Path

import pytest

import moeplan

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def _quoted(text: str) -> None:
    assert " ".join(text.split()) in " ".join(README.split()), f"README no longer says: {text}"


@pytest.fixture(scope="module")
def default_plan():
    return moeplan.plan(moeplan.example_path())


def test_the_default_examples_utilisation_and_cost_at_capacity(default_plan):
    r = default_plan.recommendation
    _quoted(f"The default example: {r.requests_per_s:g} requests/s use {r.utilization:.0%} of its capacity, "
            f"${r.usd_per_million_output:.2f} per million output tokens, ${r.usd_per_million_output_at_capacity:.2f} full.")
