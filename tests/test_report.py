"""Reports on disk: report.html and friends, never overwriting a user's files, and the CLI around them; report.html
leads with its summary and fits a 1,400 px window in headless Chromium (screenshots kept in tests/artifacts)."""

import json
import shutil
import subprocess
import sys

import pytest

import moeplan
from moeplan import example_path
from moeplan.report import output_dir, plan_report, summary_points, write_files
from hwmodels.errors import InputError


def run(*args, cwd):
    exe = shutil.which("moeplan")
    cmd = [exe, *args] if exe else [sys.executable, "-m", "moeplan.cli", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def files():
    return plan_report(moeplan.plan(example_path()))


def test_plan_report_is_self_contained_with_every_table(files):
    assert {"report.html", "summary.md", "plan.json", "frontier.csv", "breakdown.csv", "memory.csv", "placement.csv",
            "cost.csv", "recommendation.csv"} <= set(files)
    page = files["report.html"]
    assert "<script src=" not in page and len(page) > 3_000_000  # plotly.js inline: it opens offline, alone
    for heading in ("Pareto frontier", "Step time by component", "Memory per device", "Expert placement", "Cost per million tokens"):
        assert f"<h2>{heading}</h2>" in page
    assert json.loads(files["plan.json"])["feasible"] is True
    assert "per million output tokens" in files["summary.md"]


# Kimi K2 on 16 HGX H200 nodes at a 20 ms TPOT: a disaggregated recommendation, the widest options table
KIMI_DISAGG = {"schema_version": 1, "model": "kimi-k2", "cluster": {"unit": "hgx-h200", "units": 16},
               "workload": {"name": "mooncake-conversation"}, "slo": {"ttft_s": 2.0, "tpot_s": 0.02}}


def test_report_leads_with_the_answer_its_cost_utilisation_and_assumptions(files):
    page = files["report.html"]
    assert page.index("<h2>Summary</h2>") < page.index("<h2>Pareto frontier</h2>") < page.index("<h2>Options</h2>")
    plan = moeplan.plan(example_path())
    points = dict(summary_points(plan))
    assert list(points) == ["Answer", "Cost", "Utilisation", "Assumed"]
    assert points["Answer"].startswith("serve Kimi K2 Instruct aggregated on 16 x h200-sxm")
    assert f"${plan.recommendation.usd_per_million_output:,.3f} per million output tokens" in points["Cost"]
    r = plan.recommendation
    assert points["Utilisation"].startswith(f"the offered 1.1 requests/s use {r.decode_utilization:.0%} of the decode capacity")
    assert f"${r.usd_per_million_output_at_capacity:,.3f}" in points["Utilisation"]  # what a full deployment would cost
    assert all(a in points["Assumed"] for a in plan.assumptions)
    assert ">TPOT (ms)</th>" in page and "_s</th>" not in page  # columns in words and the inputs' units
    assert files["summary.md"].splitlines()[4].startswith("- **Answer**: serve Kimi K2")


def test_a_report_with_nothing_recommended_says_why_first():
    small = {"model": "kimi-k2", "cluster": {"unit": "hgx-h100", "devices": 8}, "workload": {"name": "mooncake-conversation"},
             "slo": {"ttft_s": 2.0, "tpot_s": 0.05}}
    files = plan_report(moeplan.plan(small))
    page = files["report.html"]
    assert '<section class="summary none"><h2>Summary</h2><p><strong>Answer</strong>: Does not fit: Kimi K2' in page
    assert "<h2>Options</h2>" not in page and "<h2>Step time by component</h2>" not in page


@pytest.mark.parametrize("spec", ["example", "disaggregated"])
def test_report_fits_a_1400_px_window(browser, artifacts, tmp_path, spec):
    files = plan_report(moeplan.plan(example_path() if spec == "example" else KIMI_DISAGG))
    report = tmp_path / "report.html"
    report.write_text(files["report.html"], encoding="utf-8")
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(report.as_uri())
    page.locator("div.js-plotly-plot").first.wait_for()
    page.screenshot(path=str(artifacts / f"report-{spec}.png"), full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth") <= 1400, "the page scrolls sideways"
    tables = page.evaluate("""() => Array.from(document.querySelectorAll('.table-wrap')).map(w => ({
        heading: w.closest('section').querySelector('h2').innerText, table: w.firstElementChild.scrollWidth,
        wrap: w.clientWidth}))""")
    assert len(tables) >= 4
    assert [t for t in tables if t["table"] > t["wrap"]] == [], "a table wider than the page"
    page.close()


def test_output_dir_refuses_a_non_empty_dir_and_a_file(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(InputError, match="not empty"):
        output_dir(tmp_path, force=False)
    with pytest.raises(InputError, match="not a directory"):
        output_dir(tmp_path / "mine.txt", force=True)


def test_write_files_stages_a_new_dir_and_replaces_with_force(tmp_path):
    out = tmp_path / "new" / "report"
    write_files(out, {"a.txt": "1", "b.txt": "2"})
    assert sorted(p.name for p in out.iterdir()) == ["a.txt", "b.txt"]
    assert [p.name for p in out.parent.iterdir()] == ["report"]  # no staging left behind
    (out / "mine.txt").write_text("keep me")
    write_files(out, {"a.txt": "3"})
    assert (out / "a.txt").read_text() == "3" and (out / "mine.txt").read_text() == "keep me"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_cli_compare_and_sweep_write_reports(tmp_path):
    small = example_path("qwen3-235b-h100.yaml")
    r = run("compare", str(small), "--devices", "h100-sxm,h200-sxm", "-o", str(tmp_path / "cmp"), "--processes", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "h200-sxm" in r.stdout and (tmp_path / "cmp" / "report.html").exists()
    # prices of different kinds and dates: said below the table and in the report
    assert "warning: prices come from different sources" in r.stdout
    assert "prices come from different sources" in (tmp_path / "cmp" / "summary.md").read_text()
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"spec: {small}\nvary:\n  slo.tpot_s: [0.03, 0.1]\ny: tpot_s\ntitle: tpot sweep\n")
    r = run("sweep", str(sweep), "--json", "--processes", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [row["slo.tpot_s"] for row in rows] == [0.03, 0.1]


@pytest.mark.parametrize("text, pattern", [
    ("spec: x.yaml\nvary: {slo.tpot_s: [0.1]}\nz: 1\n", r"sweep.yaml: z: unknown field"),
    ("spec: x.yaml\nvary: {slo.tpot_s: [0.1]}\ny: speed\n", r"y: unknown metric 'speed'"),
    ("spec: [x\n", r"malformed YAML"),
    ("spec: missing.yaml\nvary: {slo.tpot_s: [0.1]}\n", r"SPEC: no file"),
])
def test_bad_sweep_files_are_one_line(tmp_path, text, pattern):
    import re
    (tmp_path / "sweep.yaml").write_text(text)
    r = run("sweep", "sweep.yaml", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and re.search(pattern, r.stderr), r.stderr


def test_plan_report_carries_the_simulation(tmp_path):
    plan = moeplan.plan(example_path())
    sim = moeplan.simulate(plan.deployment, plan.to_json(), requests=200)
    assert isinstance(sim, moeplan.Simulation) and sim.completed == 200  # SimResult fields read through
    summary = sim.to_frame("summary")
    assert summary.set_index("metric").loc["tpot", "p50_s"] == pytest.approx(sim.percentile("tpot", 50))
    assert len(sim.to_frame("requests")) == 200 and "output_tokens_per_s" in sim.to_frame("timeline")
    files = plan_report(plan, sim)
    assert "<h2>Latency distributions (simulated)</h2>" in files["report.html"]
    assert {"simulation.json", "simulation_summary.csv", "simulation_requests.csv", "simulation_timeline.csv"} <= set(files)
    assert "## Simulation" in files["summary.md"]
    r = run("plan", str(example_path()), "-o", str(tmp_path / "out"), "--requests", "100", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "out" / "simulation.json").read_text())["requests"] == 100
