"""moeplan.display: tables in words, in the units a person reads (GB, ms for TPOT, %), rounded."""

import math

import pandas as pd
import pytest

import moeplan
from moeplan import display, example_path


@pytest.fixture(scope="module")
def kimi():
    return moeplan.plan(example_path())


def test_readable_names_scales_and_rounds():
    raw = pd.DataFrame({"tpot_s": [0.048361], "bytes": [771244716.0], "utilisation": [0.99532],
                        "output_tokens_per_s_per_device": [1386.32], "requests_per_s": [3.40119], "prefill_layout": [None],
                        "odd_new_field": [1.5]})
    shown = display.readable(raw)
    assert list(shown.columns) == ["TPOT (ms)", "GB", "Utilisation (%)", "Output tokens/s per device", "Requests/s",
                                   "Odd new field"]  # a column with no value is left out; an unknown one in words
    row = shown.iloc[0]
    assert row["TPOT (ms)"] == 48.4 and row["GB"] == 0.77 and row["Utilisation (%)"] == 99.5
    assert row["Output tokens/s per device"] == 1386 and shown["Output tokens/s per device"].dtype.kind == "i"
    assert row["Requests/s"] == 3.401


def test_text_is_thousands_separated_and_missing_is_blank():
    assert display.text("bytes", 6.17e9) == "6.17"
    assert display.text("tpot_s", 0.0255) == "25.5"
    assert display.text("devices", 16) == "16" and display.text("steps", 15403) == "15,403"
    assert display.text("reason", None) == "" and display.text("ttft_s", math.nan) == ""
    assert display.text("chosen", True) == "yes"


def test_plan_tables_read_in_words(kimi):
    frontier = display.text_frame(kimi.to_frame("frontier"))
    assert "TPOT (ms)" in frontier.columns and not any("_" in c for c in frontier.columns)
    assert all(len(v.split(".")[-1]) == 1 for v in frontier["TPOT (ms)"])  # 48.4, not 0.048361
    memory = display.readable(kimi.to_frame("memory"))
    assert memory["GB"].max() < 200  # GB per device, not 6.8e10 bytes
    cost = display.quantities(kimi.to_frame("cost"))
    values = dict(zip(cost["Quantity"], cost["Value"]))
    assert values["USD per M output tokens"] == f"{kimi.recommendation.usd_per_million_output:,.3f}"
    assert values["Devices"] == "16" and values["Device"] == "h200-sxm"
