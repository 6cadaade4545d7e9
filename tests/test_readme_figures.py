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


def test_the_readmes_config_json_example_is_shipped_and_runs(capsys, monkeypatch):
    """The quick-start's `moeplan model <config.json>` line names a file in the checkout, and it runs as written."""
    import shlex

    from moeplan import cli
    line = next(ln for ln in README.splitlines() if ln.startswith("$ moeplan model ") and "config.json" in ln)
    argv = shlex.split(line[2:].split("#")[0])[1:]
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    assert cli.main(argv) == 0
    assert "14.3 B total" in capsys.readouterr().out  # Qwen's model card: 14.3 B parameters, 2.7 B activated
