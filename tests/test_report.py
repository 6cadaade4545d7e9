"""Reports on disk: report.html and friends, never overwriting a user's files, and the CLI around them; report.html
leads with its summary and fits a 1,400 px window in headless Chromium (screenshots kept in tests/artifacts)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import checkout_cli

import moeplan
from hwmodels.units import format_bytes
from moeplan import example_path
from moeplan.output_files import output_dir, write_files
from moeplan.report import plan_report, summary_points
from hwmodels.errors import InputError


def run(*args, cwd):
    return checkout_cli.run(*args, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def files():
    return plan_report(moeplan.plan(example_path()))


def test_plan_report_is_self_contained_with_every_table(files):
    assert {"report.html", "summary.md", "plan.json", "frontier.csv", "breakdown.csv", "memory.csv", "placement.csv",
            "cost.csv", "recommendation.csv"} <= set(files)
    page = files["report.html"]
    assert "<script src=" not in page and len(page) > 3_000_000  # plotly.js inline: it opens offline, alone
    for heading in ("Pareto frontier", "Step time by component", "Memory per device", "Where attention, experts and KV sit",
                    "Expert placement", "Cost per million tokens"):
        assert f"<h2>{heading}</h2>" in page
    assert json.loads(files["plan.json"])["feasible"] is True
    assert "per million output tokens" in files["summary.md"]


# Kimi K2 on 16 HGX H200 nodes at a 20 ms TPOT: a disaggregated recommendation, the widest options table
KIMI_DISAGG = {"schema_version": 1, "model": "kimi-k2", "cluster": {"unit": "hgx-h200", "units": 16},
               "workload": {"name": "mooncake-conversation"}, "slo": {"ttft_s": 10.0, "tpot_s": 0.02}}


def test_report_leads_with_the_answer_its_cost_utilisation_and_assumptions(files):
    page = files["report.html"]
    assert page.index("<h2>Summary</h2>") < page.index("<h2>Pareto frontier</h2>") < page.index("<h2>Options</h2>")
    plan = moeplan.plan(example_path())
    points = dict(summary_points(plan))
    assert list(points) == ["Answer", "Cost", "Utilisation", "Memory per sequence", "Checked", "Assumed"]
    assert points["Checked"].startswith("replayed in the simulator before it was recommended") and ": holds." in points["Checked"]
    mem = plan.recommendation.decode.perf.memory  # Kimi K2: all 61 layers full MLA, no linear-attention state
    assert points["Memory per sequence"].startswith(f"KV cache {format_bytes(mem.kv_bytes_per_sequence)} per sequence")
    assert "61 full" in points["Memory per sequence"] and "linear-attention" not in points["Memory per sequence"]
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
    write_files(out, {"a.json": "1", "b.csv": "2"})
    assert sorted(p.name for p in out.iterdir()) == [".moeplan-files.json", "a.json", "b.csv"]  # the set, recorded
    assert [p.name for p in out.parent.iterdir()] == ["report"]  # no staging left behind
    (out / "mine.txt").write_text("keep me")
    (out / "notes.md").write_text("mine too")  # a report-like name the last report did not write
    write_files(out, {"a.json": "3"})
    assert (out / "a.json").read_text() == "3" and not (out / "b.csv").exists()  # the last set's extra file goes
    assert (out / "mine.txt").read_text() == "keep me" and (out / "notes.md").read_text() == "mine too"
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [".moeplan-files.json"]
    (out / ".moeplan-files.json").write_text('{"files": ["mine.txt", "../x.json", "notes.md", ' + "[" * 10_000 + "]}")
    write_files(out, {"a.json": "4"})  # a manifest that is not moeplan's removes nothing
    assert (out / "mine.txt").exists() and (out / "notes.md").exists() and (out / "a.json").read_text() == "4"


def test_cli_compare_and_sweep_write_reports(tmp_path):
    small = example_path("qwen3-235b-h100.yaml")
    r = run("compare", str(small), "--devices", "h100-sxm,h200-sxm", "-o", str(tmp_path / "cmp"), "--processes", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "h200-sxm" in r.stdout and (tmp_path / "cmp" / "report.html").exists()
    assert "usd_per_hour" in r.stdout  # the whole bill beside the output tokens' share
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


# -- hostile destinations, kills and leftovers

def _cli(*args, cwd, env=None):
    """python -m moeplan.cli in a subprocess (an environment variable reaches it only this way)."""
    return subprocess.Popen([*checkout_cli.COMMAND, *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=checkout_cli.env(**(env or {})))


def _wait_for(predicate, timeout_s=120):
    import time
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _complete_plan_report(out):
    """report.html parses to its closing tag, plan.json reads back, nothing hidden is left in or beside out."""
    from html.parser import HTMLParser

    page = (out / "report.html").read_text()
    parser = HTMLParser()
    parser.feed(page)
    parser.close()
    assert page.rstrip().endswith("</html>")
    assert moeplan.load_plan(out / "plan.json", example_path()).recommendation is not None
    assert not [p.name for p in out.parent.iterdir() if p.name.startswith(".")]
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [".moeplan-files.json"]  # the set's record


def test_kill_9_while_writing_a_new_report_leaves_nothing_the_next_run_keeps(tmp_path):
    """kill -9 in the middle of report.html (MOEPLAN_TEST_SLOW_WRITE_S pauses halfway through each file): the
    staging folder is the only trace; the next run removes it (its process is gone) and writes the report."""
    out = tmp_path / "out"
    run = _cli("plan", "-o", str(out), "--requests", "20", cwd=tmp_path, env={"MOEPLAN_TEST_SLOW_WRITE_S": "30"})
    staged = lambda: [p for p in tmp_path.glob(".out.moeplan-*") if (p / "report.html").exists()]  # noqa: E731
    try:
        assert _wait_for(staged), run.communicate()
    finally:
        run.kill()  # SIGKILL
        run.communicate()
    truncated = staged()[0] / "report.html"
    assert not truncated.read_text().rstrip().endswith("</html>") and not out.exists()
    (tmp_path / ".out.notes").write_text("mine")  # a user's file with a look-alike name: never touched
    again = _cli("plan", "-o", str(out), "--requests", "20", cwd=tmp_path)
    _, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr
    assert (tmp_path / ".out.notes").read_text() == "mine"
    (tmp_path / ".out.notes").unlink()
    _complete_plan_report(out)


def test_kill_9_during_a_force_replacement_leaves_the_old_set_or_the_new_one(tmp_path):
    """--force stages the new set whole with a commit record, then renames: killed in the renames, the next run
    on the folder (even one refused for a non-empty folder) finishes them, so the set is the new one whole."""
    out = tmp_path / "out"
    first = _cli("plan", "-o", str(out), "--requests", "20", cwd=tmp_path)
    assert first.wait(timeout=300) == 0
    (out / "mine.txt").write_text("keep me")
    run = _cli("plan", "-o", str(out), "--requests", "30", "--force", cwd=tmp_path, env={"MOEPLAN_TEST_SLOW_WRITE_S": "0.4"})

    def installing():
        return [s for s in out.glob(".out.moeplan-*") if (s / ".commit").exists() and len(list(s.iterdir())) < 12]

    try:
        assert _wait_for(installing, 300), run.communicate()
    finally:
        run.kill()
        run.communicate()
    assert json.loads((out / "plan.json").read_text())  # renamed whole, never half-written
    with pytest.raises(InputError, match="not empty"):
        output_dir(out, force=False)  # the check finishes the killed run's renames first
    assert json.loads((out / "simulation.json").read_text())["requests"] == 30
    assert len((out / "simulation_requests.csv").read_text().splitlines()) == 31  # header + the new set's rows
    assert (out / "mine.txt").read_text() == "keep me"
    _complete_plan_report(out)


def test_stale_staging_is_cleaned_and_nothing_else(tmp_path):
    import os
    import time
    from moeplan.output_files import clean_stale

    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    gone = tmp_path / f".out.moeplan-{dead.pid}-abcd1234"  # a killed run's stage: its process is gone
    gone.mkdir()
    (gone / "report.html").write_text("<html>")
    live = tmp_path / f".out.moeplan-{os.getpid()}-abcd1234"  # a running writer's (this process): left alone
    live.mkdir()
    legacy = tmp_path / ".out.k3j4h5g6"  # an earlier version's stage, report files only, an hour old
    legacy.mkdir()
    (legacy / "report.html").write_text("<html>")
    legacy_mine = tmp_path / ".out.q1w2e3r4"  # the same name form holding a user's file: not provably ours
    legacy_mine.mkdir()
    (legacy_mine / "notes.txt").write_text("mine")
    old_tmp = out / ".plan.json.a1b2c3d4"  # an earlier version's per-file temporary inside the folder
    old_tmp.write_text("{")
    others = [tmp_path / ".out.notes", tmp_path / ".outside.moeplan-1-abcd1234", tmp_path / "out.moeplan-1-abcd1234",
              out / ".hidden", out / "plan.json.a1b2c3d4"]
    for p in others:
        p.write_text("mine")
    hour_ago = time.time() - 3600
    for p in (legacy, legacy / "report.html", legacy_mine, legacy_mine / "notes.txt", old_tmp, *others):
        os.utime(p, (hour_ago, hour_ago))
    handled = clean_stale(out)
    assert sorted(handled) == sorted([gone, legacy, old_tmp])
    assert live.exists() and legacy_mine.exists() and all(p.read_text() == "mine" for p in others)


@pytest.mark.parametrize("make, target, match", [
    (lambda d: None, "/proc/moeplan-out", "cannot write in '/proc'"),
    (lambda d: (d / "file").write_text("mine"), "file/sub/out", "is not a directory"),
    (lambda d: (d / "link").symlink_to(d / "file") or (d / "file").write_text("mine"), "link", "symlink"),
    (lambda d: None, "", "is empty"),
])
def test_output_dir_refuses_what_cannot_be_written_before_any_work(tmp_path, make, target, match):
    make(tmp_path)
    with pytest.raises(InputError, match=match):
        output_dir(tmp_path / target if target and not target.startswith("/") else target, force=True)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # the probe leaves nothing


def test_single_files_are_new_only_and_errors_are_input_errors(tmp_path):
    from moeplan.output_files import output_file, write_atomic

    (tmp_path / "mine.json").write_text("mine")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    for name in ("mine.json", "dangling"):
        with pytest.raises(InputError, match="exists"):
            output_file(tmp_path / name)
    target = output_file(tmp_path / "new" / "deeper" / "loc.json")  # missing parents: created when writing
    assert not (tmp_path / "new").exists()
    write_atomic(target, "{}", new=True)
    assert target.read_text() == "{}"
    with pytest.raises(InputError, match="appeared while this ran"):
        write_atomic(tmp_path / "mine.json", "{}", new=True)
    assert (tmp_path / "mine.json").read_text() == "mine" and not (tmp_path / "nowhere").exists()
    with pytest.raises(InputError, match="-o: cannot write"):
        write_files(Path("/proc/moeplan-out"), {"a.txt": "1"})
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.txt").mkdir()  # a folder where the report writes a file: refused before any rename
    (tmp_path / "out" / "b.txt").write_text("old")
    with pytest.raises(InputError, match="is a directory"):
        write_files(tmp_path / "out", {"b.txt": "new", "a.txt": "1"})
    assert (tmp_path / "out" / "b.txt").read_text() == "old"


@pytest.mark.parametrize("args", [
    ["plan", "-o", "/proc/moeplan-out"], ["plan", "-o", "f/sub"], ["compare", "-o", "f/sub"],
    ["place", "--loads", "loads.json", "--ep", "2", "-o", "/proc/x.json"], ["place", "--loads", "loads.json", "--ep", "2", "-o", "f"],
    ["bench-kernels", "--quick", "-o", "f/k.csv"], ["sweep", "sweep.yaml", "-o", "f/sub"],
])
def test_cli_destinations_are_checked_first_one_line_and_files_untouched(tmp_path, monkeypatch, capsys, args):
    """In this process (the subprocess tests above and below run the same code as a user does)."""
    import time
    from moeplan.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "f").write_text("mine")
    (tmp_path / "loads.json").write_text(json.dumps({"logical_count": [[1, 2, 3, 4]]}))
    (tmp_path / "sweep.yaml").write_text(f"spec: {example_path()}\nvary: {{slo.tpot_s: [0.05]}}\n")
    start = time.perf_counter()
    code = main(args)
    lines = capsys.readouterr().err.splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: -o:"), lines
    assert (tmp_path / "f").read_text() == "mine" and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert time.perf_counter() - start < 5  # refused before planning, placing or benchmarking


def test_place_writes_into_a_missing_folder(tmp_path):
    (tmp_path / "loads.json").write_text(json.dumps({"logical_count": [[5, 1, 1, 1], [1, 1, 1, 5]]}))
    r = run("place", "--loads", "loads.json", "--ep", "2", "--time-limit", "1", "-o", "new/folder/loc.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert len(json.loads((tmp_path / "new" / "folder" / "loc.json").read_text())["physical_to_logical_map"]) == 2
