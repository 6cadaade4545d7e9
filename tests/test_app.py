"""The Streamlit dashboard through streamlit.testing's AppTest: every page renders without an exception and
shows its key elements; the planner's inputs drive the plan; bad input is one error line, never a traceback.

Uploads use small files written here (the dashboard's loaders are the project's own, tested in their modules)."""

import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from app import common
from hwmodels.errors import InputError
from moeplan import api
from moeplan.spec import example_path

APP = Path(__file__).resolve().parents[1] / "app" / "app.py"
TIMEOUT_S = 120  # a run plans, places or simulates; 2 slow CI cores


def _app() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S)
    at.run()
    assert not at.exception
    return at


def _page(name: str) -> AppTest:
    at = _app()
    at.switch_page(f"views/{name}.py").run()
    assert not at.exception, at.exception
    return at


def _errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def _routing_json(layers: int = 4, experts: int = 16, seed: int = 0) -> bytes:
    """EPLB/SGLang logical_count statistics with skewed (gamma) expert loads."""
    counts = np.random.default_rng(seed).gamma(0.5, 100.0, size=(layers, experts)).round() + 1
    return json.dumps({"logical_count": counts.tolist()}).encode()


def _mooncake_jsonl(requests: int = 40) -> bytes:
    """Mooncake trace lines: 2,000 input and 200 output tokens, one request every 250 ms (4 requests/s)."""
    return "\n".join(json.dumps({"timestamp": 250 * i, "input_length": 2000, "output_length": 200, "hash_ids": [i, i + 1]})
                     for i in range(requests)).encode()


# ------------------------------------------------------------------------------------------- planner

def test_planner_shows_the_example_plan_on_first_visit():
    at = _app()
    assert at.title[0].value == "Capacity planner"
    assert "16 x h200-sxm" in at.success[0].value and "per million output tokens" in at.success[0].value
    assert at.get("plotly_chart"), "the frontier chart"
    assert [m.label for m in at.metric][:4] == ["Devices", "TPOT", "TTFT", "Utilisation"]
    utilisation = at.metric[3]
    assert 0 < float(utilisation.value.removesuffix("%")) <= 100 and "when full, USD" in utilisation.help
    assert utilisation.value in at.success[0].value  # the headline says the same share
    assert at.selectbox(key="planner_model").value == "kimi-k2"
    assert at.number_input(key="planner_devices").value == 16


def test_planner_inputs_drive_the_plan():
    at = _app()
    at.selectbox(key="planner_device").set_value("b200-sxm").run()
    assert at.selectbox(key="planner_unit").value == "hgx-b200"
    at.number_input(key="planner_tpot_ms").set_value(40.0)
    at.button(key="planner_plan").click().run()
    assert not at.exception and not _errors(at)
    assert "b200-sxm" in at.success[0].value
    frontier = at.get("plotly_chart")[0].proto.spec
    assert "TPOT SLO 40 ms" in frontier
    assert float(at.metric[1].value.removesuffix(" ms")) <= 40.0


def test_planner_price_picker_costs_the_plan_at_a_clouds_rows():
    """The example plans 16 H200: at the default rows ($2.30/h, LMSYS's assumption) and at OCI's list price ($12.25/h,
    catalogs/prices.yaml) the same plan costs 12.25 / 2.30 times as much per token; TensorWave rents no H200, so
    there the plan has no price."""
    at = _app()
    assert at.selectbox(key="planner_cloud").value == common.DEFAULT_ROWS
    shown = at.selectbox(key="planner_cloud").options  # the default rows, then each cloud (what it is: the caption)
    assert shown == [common.DEFAULT_ROWS, *(c["name"] for c in api.clouds())]
    assert common.price_choices()[common.DEFAULT_ROWS] in [c.value for c in at.sidebar.caption]
    default_usd = float(at.metric[4].value)
    at.selectbox(key="planner_cloud").set_value("oci")
    at.button(key="planner_plan").click().run()
    assert not at.exception and not _errors(at)
    assert "16 x h200-sxm" in at.success[0].value
    assert float(at.metric[4].value) == pytest.approx(default_usd * 12.25 / 2.30, rel=2e-3)
    assert common.price_choices()["oci"] in [c.value for c in at.sidebar.caption]
    assert at.session_state["spec"]["prices"]["cloud"] == "oci"  # the other pages study the plan at the same prices
    assert at.number_input(key="planner_price").placeholder == "12.25"
    at.selectbox(key="planner_cloud").set_value("tensorwave")
    at.button(key="planner_plan").click().run()
    assert not at.exception and not _errors(at)
    assert at.metric[4].value == "no price" and at.metric[5].value == "no price"
    at.selectbox(key="planner_cloud").set_value(common.DEFAULT_ROWS)
    at.button(key="planner_plan").click().run()
    assert float(at.metric[4].value) == pytest.approx(default_usd, rel=1e-6)
    assert "cloud" not in at.session_state["spec"]["prices"]


def test_planner_bad_values_show_an_error_not_a_traceback():
    at = _app()
    at.number_input(key="planner_devices").set_value(12)  # not a whole number of 8-GPU nodes
    at.button(key="planner_plan").click().run()
    assert not at.exception
    assert any("cluster.devices" in e and "whole number" in e for e in _errors(at))
    assert not at.success, "no stale result beside the error"
    at.number_input(key="planner_devices").set_value(16)
    at.number_input(key="planner_tpot_ms").set_value(0.0)
    at.button(key="planner_plan").click().run()
    assert not at.exception
    assert any("slo.tpot_s" in e for e in _errors(at))


def test_planner_engine_picker_names_the_engine_that_prices_the_plan():
    at = _app()
    assert at.selectbox(key="planner_engine").value == "best covered"  # the example names no engine
    at.selectbox(key="planner_engine").set_value("sglang")
    at.button(key="planner_plan").click().run()
    assert not at.exception and not _errors(at)
    assert at.session_state["spec"]["serving"]["engine"] == {"name": "sglang"}
    said = " ".join(m.value for m in at.markdown)
    assert "sglang tables measured on h200-sxm" in said or "no measured sglang tables for h200-sxm" in said
    at.selectbox(key="planner_engine").set_value("best covered")
    at.button(key="planner_plan").click().run()
    assert "engine" not in at.session_state["spec"]["serving"]
    spec = example_path("qwen3-235b-h100.yaml")
    text = spec.read_text().replace("serving:", "serving:\n  engine: {name: vllm, version: 0.24.0}", 1) \
        if "serving:" in spec.read_text() else spec.read_text() + "\nserving: {engine: {name: vllm, version: 0.24.0}}\n"
    at.file_uploader(key="planner_spec_upload").set_value((spec.name, text.encode(), "application/yaml")).run()
    assert not at.exception and not _errors(at)
    assert at.selectbox(key="planner_engine").value == "vllm"
    assert at.session_state["spec"]["serving"]["engine"] == {"name": "vllm", "version": "0.24.0"}  # its version kept


def test_planner_infeasible_slo_says_why():
    at = _app()
    at.number_input(key="planner_tpot_ms").set_value(1.0)
    at.button(key="planner_plan").click().run()
    assert not at.exception
    assert at.warning and "No deployment meets the SLOs" in at.warning[0].value


def test_planner_a_model_that_does_not_fit_says_so_and_what_would():
    at = _app()
    at.selectbox(key="planner_device").set_value("h100-sxm").run()
    at.number_input(key="planner_devices").set_value(8)
    at.button(key="planner_plan").click().run()
    assert not at.exception and not at.warning
    message = _errors(at)[0]
    assert message.startswith("Does not fit: Kimi K2 Instruct fp8 needs 1.03 TB of weights")
    assert "use at least 16 x h100-sxm" in message and "SLO" not in message and "moeplan" not in message


def test_planner_tables_read_in_words_and_units():
    at = _app()
    frontier = at.dataframe[0].value
    assert "TPOT (ms)" in frontier.columns and not any("_" in c for c in frontier.columns)
    assert frontier["TPOT (ms)"].between(1, 1000).all()  # milliseconds, as the TPOT input, not 0.048 s
    memory = at.dataframe[1].value
    assert list(memory.columns) == ["Role", "Part", "GB"] and memory["GB"].max() < 200  # not 6.86e10 bytes
    cost = at.table[0].value.set_index("Quantity")["Value"]
    assert cost["USD per M output tokens"] == at.metric[4].value and cost["Devices"] == "16"


def test_planner_spec_upload_fills_the_inputs_and_plans():
    at = _app()
    spec = example_path("qwen3-235b-h100.yaml")
    at.file_uploader(key="planner_spec_upload").set_value((spec.name, spec.read_bytes(), "application/yaml")).run()
    assert not at.exception and not _errors(at)
    assert at.selectbox(key="planner_model").value == "qwen3-235b-a22b"
    assert "h100-sxm" in at.success[0].value
    at.file_uploader(key="planner_spec_upload").set_value(("bad.yaml", b"model: [kimi-k2\n", "application/yaml")).run()
    assert not at.exception
    assert any("bad.yaml" in e and "malformed YAML" in e for e in _errors(at))
    at.file_uploader(key="planner_spec_upload").set_value(
        ("typo.yaml", spec.read_bytes() + b"\nslos: {}\n", "application/yaml")).run()
    assert any("slos" in e and "unknown field" in e for e in _errors(at))


BOMB = "\n".join(["l0: &l0 [" + ", ".join(["lol"] * 9) + "]"] +
                 [f"l{k}: &l{k} [" + ", ".join([f"*l{k - 1}"] * 9) + "]" for k in range(1, 9)]) + "\nname: *l8\n"


@pytest.mark.parametrize("key, name, data, said", [  # what the CLI refuses, refused the same way, quickly
    ("planner_spec_upload", "bomb.yaml", example_path().read_bytes() + BOMB.encode(), "aliases"),
    ("planner_spec_upload", "deep.yaml", b"model: " + b"[" * 100_000 + b"]" * 100_000 + b"\n", "nest"),
    ("planner_spec_upload", "twice.yaml", example_path().read_bytes() + b"\nname: again\n", "twice"),
    ("planner_spec_upload", "big.yaml", b"# " + b"x" * (2 * 2**20) + b"\n", "longer than 1,048,576 characters"),
    ("planner_trace", "deep.jsonl", b'{"timestamp": ' + b"[" * 100_000 + b"\n", "deep.jsonl"),
    ("planner_routing", "ids.csv", b"layer_id,expert_id,count\n1,1000000000000,5\n", "ids.csv"),
], ids=["alias bomb", "deep YAML", "duplicate key", "2 MiB YAML", "deep JSON trace", "expert id 10^12"])
def test_hostile_uploads_are_one_error_naming_the_file(key, name, data, said):
    at = _app()
    if key == "planner_trace":
        at.radio(key="planner_source").set_value("Trace file").run()
    at.file_uploader(key=key).set_value((name, data, "application/octet-stream")).run()
    if key == "planner_routing":  # read when planning
        at.button(key="planner_plan").click().run()
    assert not at.exception
    errors = _errors(at)
    assert len(errors) == 1 and said in errors[0] and "\n" not in errors[0], errors
    if key == "planner_trace":  # planning with it says why not, without repeating the file's error
        at.button(key="planner_plan").click().run()
        assert not at.exception and len(_errors(at)) == 2
        assert sum("fix the workload in the sidebar" in e for e in _errors(at)) == 1


def test_planner_trace_upload_sets_the_workload_means():
    at = _app()
    at.radio(key="planner_source").set_value("Trace file").run()
    assert any("no trace uploaded" in e for e in _errors(at))
    at.file_uploader(key="planner_trace").set_value(("conv.jsonl", _mooncake_jsonl(), "application/json")).run()
    assert not _errors(at)
    assert any("40 requests" in c.value and "2,000 in / 200 out" in c.value for c in at.caption)
    at.button(key="planner_plan").click().run()
    assert not at.exception and not _errors(at)
    assert at.success
    at.file_uploader(key="planner_trace").set_value(("x.jsonl", b"{not json\n", "application/json")).run()
    assert not at.exception
    assert any(e.startswith("x.jsonl") for e in _errors(at)), "the upload named, not the temporary folder"


def test_planner_routing_upload_places_experts_on_it():
    at = _app()
    at.file_uploader(key="planner_routing").set_value(
        [("mon.json", _routing_json(seed=1), "application/json"), ("tue.json", _routing_json(seed=2), "application/json")]).run()
    at.selectbox(key="planner_routing_evaluate").set_value("tue.json")
    at.multiselect(key="planner_routing_fit").set_value(["mon.json"])
    at.radio(key="planner_routing_method").set_value("eplb")  # the ILP's own tests cover it; this one stays fast
    # the synthetic statistics are skewed: 16 H200 meet the TTFT tail of the example's 1.1 requests/s only without skew
    at.number_input(key="planner_rate_override").set_value(0.8)
    at.button(key="planner_plan").click().run()
    assert not at.exception and not _errors(at)
    at.switch_page("views/placement.py").run()
    assert not at.exception
    assert any("fitted on mon.json, scored on tue.json" in c.value for c in at.caption)
    assert at.get("download_button")


# ------------------------------------------------------------------------------------------- other pages

def test_placement_page_shows_the_plan_load_and_compares_methods():
    at = _page("placement")
    charts = at.get("plotly_chart")
    # where attention, experts and KV sit, device by layer; then the expert load and its imbalance per layer
    assert len(charts) == 3 and "Where attention, experts and KV sit" in charts[0].proto.spec
    assert "Expert load per device and layer" in charts[1].proto.spec
    at.file_uploader(key="placement_fit").set_value(("mon.json", _routing_json(seed=1), "application/json"))
    at.file_uploader(key="placement_evaluate").set_value(("tue.json", _routing_json(seed=2), "application/json"))
    at.number_input(key="placement_ep").set_value(4)
    at.number_input(key="placement_redundant").set_value(4)
    at.number_input(key="placement_nodes").set_value(1)
    at.slider(key="placement_limit").set_value(1)
    at.button(key="placement_run").click().run()
    assert not at.exception and not _errors(at)
    methods = at.dataframe[-1].value
    assert list(methods["Method"]) == ["contiguous", "eplb-global", "ilp"]
    assert (methods["Step cost (sum over layers of busiest / mean)"] >= 1.0).all()
    at.number_input(key="placement_redundant").set_value(3)  # 19 slots do not divide over 4 devices
    at.button(key="placement_run").click().run()
    assert not at.exception
    assert any("redundant" in e for e in _errors(at))


def test_simulation_page_replays_synthetic_and_uploaded_traces():
    at = _page("simulation")
    assert "500 of 500 requests served" in at.info[0].value
    titles = " ".join(c.proto.spec for c in at.get("plotly_chart"))
    for title in ("Time to first token", "Time per output token", "End-to-end latency", "Throughput over time",
                  "KV cache occupancy", "Utilisation"):
        assert title in titles
    assert [m.label for m in at.metric][:2] == ["TTFT p99", "TPOT p99"]
    pools, percentiles = (t.value for t in at.table)
    assert 0 < float(pools["Utilisation (%)"].iloc[0]) <= 100  # a share of the replay, in %, never over 100
    tpot = percentiles.set_index("Latency").loc["TPOT (ms)"]
    assert 1 < float(tpot["p50"]) < float(tpot["SLO"]) == 100  # in ms, as the TPOT input is
    at.radio(key="sim_source").set_value("Trace file")
    at.button[0].click().run()
    assert not at.exception
    assert any("no file uploaded" in e for e in _errors(at))
    at.file_uploader(key="sim_trace").set_value(("conv.jsonl", _mooncake_jsonl(), "application/json"))
    at.button[0].click().run()
    assert not at.exception and not _errors(at)
    assert "40 of 40 requests served" in at.info[0].value


def test_hardware_page_compares_devices():
    at = _page("hardware")
    assert at.get("plotly_chart")
    assert {"h200-sxm", "b200-sxm"} <= set(at.table[0].value["Device"])
    at.multiselect(key="hardware_devices").set_value(["h100-sxm", "h200-sxm"])
    at.selectbox(key="hardware_metric").set_value("tpot_s")
    at.button[0].click().run()
    assert not at.exception
    table = at.table[0].value
    assert list(table["Device"]) == ["h100-sxm", "h200-sxm"]
    assert list(table["Sized"]) == ["grown from 16 devices", ""]  # 16 H100 are too few: compare sized it up
    assert "TPOT (ms)" in at.get("plotly_chart")[0].proto.spec


def test_hardware_page_costs_every_device_at_the_picked_clouds_rows():
    """OCI's list prices (catalogs/prices.yaml): H200 $12.25/h, B200 $16.00/h; TensorWave rents neither: no price."""
    at = _page("hardware")
    assert at.selectbox(key="hardware_cloud").value == common.DEFAULT_ROWS
    at.multiselect(key="hardware_devices").set_value(["h200-sxm", "b200-sxm"])
    at.selectbox(key="hardware_cloud").set_value("oci")
    at.button[0].click().run()
    assert not at.exception and not _errors(at)
    table = at.table[0].value.set_index("Device")
    assert list(table["USD per device-hour"]) == ["12.25", "16.00"]
    for device, price in (("h200-sxm", 12.25), ("b200-sxm", 16.0)):  # the bill is the devices at the cloud's price
        assert float(table.loc[device, "USD per hour"].replace(",", "")) == pytest.approx(
            int(table.loc[device, "Devices"]) * price, abs=0.01)
    at.selectbox(key="hardware_cloud").set_value("tensorwave")
    at.button[0].click().run()
    assert not at.exception and not _errors(at)
    table = at.table[0].value
    assert set(table["USD per device-hour"]) == {"no price"} and set(table["USD per M output tokens"]) == {"no price"}


def test_validation_page_shows_predicted_vs_published():
    at = _page("validation")
    assert at.get("plotly_chart")
    table = at.table[0].value
    assert {"Scenario", "Published", "Predicted", "Error"} <= set(table.columns)
    assert "sglang-h100-decode" in set(table["Scenario"])
    assert table.set_index("Scenario").loc["sglang-h100-decode", "Predicted"].replace(",", "").isdigit()  # 21,707, not 21707.387
    assert at.metric[0].label == "Scenarios"
    at.selectbox(key="validation_set").set_value("deployments-trtllm-perf-overview-rest.yaml").run()
    table = at.table[0].value
    assert "trtllm-perf-overview-qwen3-235b-b200-1024-8192" in set(table["Scenario"]) and at.metric[0].value == "47"
    at.file_uploader(key="validation_upload").set_value(
        ("mine.yaml", b"deployments:\n  - id: x\n    model: deepseek-v3\n", "application/yaml")).run()
    assert not at.exception
    assert any(e.startswith("mine.yaml") for e in _errors(at))


# ------------------------------------------------------------------------------------------- helpers

class _Upload:
    def __init__(self, name: str, size: int):
        self.name, self.size = name, size

    def getvalue(self) -> bytes:
        return bytes(self.size)


def test_uploads_over_the_limit_are_refused():
    assert common.upload_bytes(_Upload("ok.json", 10)) == bytes(10)
    with pytest.raises(InputError, match="over the dashboard's 50 MB limit"):
        common.upload_bytes(_Upload("big.json", common.MAX_UPLOAD_BYTES + 1))


def test_upload_names_stay_inside_the_temporary_folder():
    assert common.safe_name("../../etc/passwd") == "passwd"
    assert common.safe_name("..") == "upload"
    assert common.safe_name("my stats (1).json") == "my_stats__1_.json"
    with common.temp_files({"../x.json": b"{}"}) as folder:
        assert [p.name for p in folder.iterdir()] == ["x.json"]


def test_spec_uploads_plan_catalog_models_only():
    with pytest.raises(InputError, match="not a catalog model"):
        common.spec_from_upload(example_path().read_bytes().replace(b"model: kimi-k2 ", b"model: /etc/config.json "))
    with pytest.raises(InputError, match="not UTF-8"):
        common.spec_from_upload(b"\xff\xfe")


def test_trace_and_routing_uploads_are_read_from_their_bytes_up_to_the_limit():
    trace = common.trace((("conv.jsonl", _mooncake_jsonl()),))
    assert len(trace) == 40 and trace.source == "conv.jsonl (Mooncake JSONL)"  # the upload named, no temporary folder
    assert common.routing_counts(_routing_json(), "mon.json").shape == (4, 16)
    decisions = "\n".join(json.dumps({"problem_id": 0, "layer": layer, "token_idx": t, "experts": [t % 8, (t + layer) % 8 or 1]})
                          for t in range(64) for layer in range(2) if t % 8 != ((t + layer) % 8 or 1)).encode()
    result = common.compare_placements((("decisions.jsonl", decisions),), (), 4, 0, 1, 1.0)  # a format beyond JSON/CSV
    assert set(result["methods"]) == {"contiguous", "eplb", "ilp"}
    too_big = b" " * (common.MAX_UPLOAD_BYTES + 1)
    with pytest.raises(InputError, match=r"^big\.jsonl: is 52,428,801 bytes, over the 50 MiB limit"):
        common.trace((("big.jsonl", too_big),))
    with pytest.raises(InputError, match=r"^big\.json: is 52,428,801 bytes, over the 50 MiB limit"):
        common.routing_counts(too_big, "big.json")


def test_validation_page_predicts_an_uploaded_measured_csv(shared_data):
    path = shared_data / "measured" / "aic-silicon-moe.csv"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    head = b"".join(path.read_bytes().splitlines(keepends=True)[:41])  # the header and 40 rows
    at = _page("validation")
    at.file_uploader(key="measured_upload").set_value(("rows.csv", head, "text/csv")).run()
    assert not at.exception and not _errors(at)
    labels = {m.label: m.value for m in at.metric}
    assert labels["Rows modelled"].endswith("of 40")
    assert any(t.value.columns[0] == "engine" for t in at.table)
