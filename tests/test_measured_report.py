"""`moeplan validate --measured FILE.csv -o DIR`: report.html, summary.md and rows.csv of measured deployments
predicted beside the peer's, from the same rows and summary `validate --measured` prints."""

import csv
import io

import checkout_cli
from moeplan import api


def test_the_report_folder_holds_every_row_and_the_summary(measured, tmp_path):
    out = tmp_path / "report"
    done = checkout_cli.run("validate", "--measured", str(measured), "--backend", "vllm", "-o", str(out), cwd=tmp_path,
                            timeout=900)
    assert done.returncode == 0, done.stderr
    rows = api.validate_measured(measured, "vllm")
    table = list(csv.DictReader(io.StringIO((out / "rows.csv").read_text())))
    assert len(table) == len(rows) and {r["engine"] for r in table} == {"vllm"}
    overall = api.measured_summary(rows)[0]
    summary = (out / "summary.md").read_text()
    assert f"TPOT {overall['moeplan_tpot_median']:.1%}" in summary and "## By engine" in summary
    page = (out / "report.html").read_text()
    assert "TPOT: predicted against measured" in page and "plotly" in page.lower()


def test_o_needs_measured_and_a_fresh_folder(measured, tmp_path):
    bad = checkout_cli.run("validate", "-o", str(tmp_path / "x"), cwd=tmp_path)
    assert bad.returncode == 2 and "--measured" in bad.stderr and bad.stderr.count("\n") == 1
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine.txt").write_text("keep")
    refused = checkout_cli.run("validate", "--measured", str(measured), "-o", str(tmp_path / "full"), cwd=tmp_path)
    assert refused.returncode == 2 and (tmp_path / "full" / "mine.txt").read_text() == "keep"
