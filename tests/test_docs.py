"""The worked what-if study in docs/ runs as written and its numbers behave as the text says."""

import pandas as pd
import pytest


@pytest.mark.xdist_group("context_study")
def test_context_study_runs_and_cost_grows_with_context(context_study):
    frame = pd.read_csv(context_study / "whatif_kimi_k2_context.csv")
    assert (context_study / "whatif_kimi_k2_context.html").stat().st_size > 100_000
    assert set(frame["device"]) == {"h200-sxm", "b200-sxm", "gb200", "ascend-910c"} and len(frame) == 16
    feasible = frame[frame["feasible"]]
    assert (feasible["tpot_s"] <= 0.050 + 1e-9).all()
    assert all(isinstance(reason, str) and reason for reason in frame.loc[~frame["feasible"], "reason"])  # none unsaid
    for device, rows in feasible.groupby("device"):
        cost = rows.sort_values("workload.input_tokens")["usd_per_million_output_tokens"].to_numpy()
        assert cost[-1] > cost[0], device  # 2K -> the longest feasible context costs more per output token
