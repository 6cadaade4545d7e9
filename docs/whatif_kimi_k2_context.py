# %% [markdown]
# # What if the context grows? Kimi K2 on H200, B200, GB200 NVL72 and CloudMatrix384
#
# Cost per million output tokens at a 50 ms TPOT (p99) as the prompt grows from 2K to 128K tokens,
# on up to 64 devices of each kind. A what-if study in cells (open it in VS Code or Jupyter with
# jupytext, or run it as a script: `python docs/whatif_kimi_k2_context.py [OUT_DIR]`); the test suite
# executes it (tests/test_docs.py).
#
# Every number comes from moeplan's step model over its cited catalogs. The TTFT SLO is loose (30 s)
# so the study isolates the decode-speed constraint; the Ascend 910C price is this study's assumption
# (no published per-device-hour price), the others are catalogs/prices.yaml's.

# %%
import sys
from pathlib import Path

import moeplan

OUT_DIR = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".")

spec = {
    "schema_version": 1,
    "model": "kimi-k2",
    "cluster": {"unit": "hgx-h200", "devices": 64},  # the sweep swaps the unit per device, keeping 64 devices
    # no traffic volume: the most cost-efficient instance; every request at the lengths the study varies (cv 0)
    "workload": {"input_tokens": 2048, "output_tokens": 512, "input_cv": 0, "output_cv": 0},
    "slo": {"ttft_s": 30.0, "tpot_s": 0.050, "percentile": 99},
    "prices": {"ascend-910c": 2.0},  # an assumption of this study
}

# %% [markdown]
# One plan per (device, context length): 16 layout searches, spread over the machine's cores.

# %%
study = moeplan.sweep(spec, {
    "device": ["h200-sxm", "b200-sxm", "gb200", "ascend-910c"],
    "workload.input_tokens": [2048, 8192, 32768, 131072],
})
frame = study.to_frame()
columns = ["device", "workload.input_tokens", "feasible", "mode", "devices", "batch_per_device", "tpot_s",
           "usd_per_million_output_tokens", "reason"]
print(frame[columns].to_string(index=False))

# %% [markdown]
# Longer prompts shrink the batch a device's KV cache holds at the TPOT bound, so the same devices
# serve fewer tokens per second and every output token costs more; a point with no feasible layout
# says why in `reason` (the model, its KV cache and the SLO do not fit 64 devices).

# %%
fig = study.figure(x="workload.input_tokens", y="usd_per_million_output_tokens", color="device")
fig.update_xaxes(type="log", title="prompt tokens")
fig.update_yaxes(type="log", title="USD per million output tokens")
OUT_DIR.mkdir(parents=True, exist_ok=True)
fig.write_html(OUT_DIR / "whatif_kimi_k2_context.html", include_plotlyjs=True)
frame.to_csv(OUT_DIR / "whatif_kimi_k2_context.csv", index=False)
