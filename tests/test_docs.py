"""The worked what-if study in docs/ runs as written and its numbers behave as the text says."""

import runpy
import sys
from pathlib import Path

import pandas as pd

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_context_study_runs_and_cost_grows_with_context(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["whatif_kimi_k2_context.py", str(tmp_path)])
    runpy.run_path(str(DOCS / "whatif_kimi_k2_context.py"), run_name="__main__")
    frame = pd.read_csv(tmp_path / "whatif_kimi_k2_context.csv")
    assert (tmp_path / "whatif_kimi_k2_context.html").stat().st_size > 100_000
    assert set(frame["device"]) == {"h200-sxm", "b200-sxm", "gb200", "ascend-910c"} and len(frame) == 16
    feasible = frame[frame["feasible"]]
    assert (feasible["tpot_s"] <= 0.050 + 1e-9).all()
    assert frame.loc[~frame["feasible"], "reason"].str.len().gt(0).all()
    for device, rows in feasible.groupby("device"):
        cost = rows.sort_values("workload.input_tokens")["usd_per_million_output_tokens"].to_numpy()
        assert cost[-1] > cost[0], device  # 2K -> the longest feasible context costs more per output token
