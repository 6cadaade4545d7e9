"""Calibration: a kernels_ref CSV fitted with the roofline-plus-efficiency model, and the whole MoE
layer predicted from the per-kernel fits."""

import csv
import json

import pytest

from hwmodels.calibrate.kernels_measured import (
    CALIBRATION_BAR,
    fit_kernel,
    layer_report,
    load_measured,
    measured_csvs,
    predict_composite,
    report,
    report_table,
    summary,
)
from hwmodels.errors import InputError

COLUMNS = ("device", "date", "torch_version", "kernel", "phase", "impl", "dtype", "groups", "m_per_group", "tokens",
           "composition", "flops", "bytes", "seconds", "flops_per_s", "bytes_per_s", "peak_flops_per_s",
           "peak_bytes_per_s")
PEAK, BW = 400e9, 30e9


def write(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)


def synthetic(tmp_path, compute_eff=0.6, memory_eff=0.5, overhead_s=2e-5):
    """A GEMM-like kernel from 1 to 4096 tokens on a 400 GFLOP/s, 30 GB/s machine, timed by the model itself."""
    peak, bw = PEAK, BW
    rows = [{"device": "test cpu", "date": "2026-11-23", "torch_version": "x", "kernel": "matmul_bf16",
             "phase": "", "impl": "torch", "dtype": "bf16", "flops": 1, "bytes": 0, "seconds": 1, "flops_per_s": peak,
             "peak_flops_per_s": peak, "peak_bytes_per_s": bw}]
    for m in (1, 4, 16, 64, 256, 1024, 4096):
        flops, bytes_ = 2 * m * 4096 * 2048, 4096 * 2048 + m * 6144 * 2
        seconds = max(flops / (peak * compute_eff), bytes_ / (bw * memory_eff)) + overhead_s
        rows.append({"device": "test cpu", "date": "2026-11-23", "torch_version": "x", "kernel": "gemm", "phase": "decode",
                     "impl": "tiles", "dtype": "bf16", "m_per_group": m, "groups": 1, "flops": flops, "bytes": bytes_,
                     "seconds": seconds, "peak_flops_per_s": peak, "peak_bytes_per_s": bw})
    path = tmp_path / "kernels.csv"
    write(path, rows)
    return path


def test_fit_recovers_known_efficiencies(tmp_path):
    table = load_measured(synthetic(tmp_path))
    assert table.kernels() == ("gemm:decode:tiles",)  # the probe row is a peak, not a kernel
    fit = fit_kernel(table.of("gemm:decode:tiles"))
    assert fit.compute_efficiency == pytest.approx(0.6, rel=0.05)
    assert fit.memory_efficiency == pytest.approx(0.5, rel=0.05)
    for row in report(table):
        assert abs(row["error"]) < 0.05 and abs(row["loo_error"]) < 0.10


def test_predictions_never_below_the_roofline(tmp_path):
    table = load_measured(synthetic(tmp_path, compute_eff=1.0, memory_eff=1.0, overhead_s=0.0))
    fit = fit_kernel(table.of("gemm:decode:tiles"))
    for r in table.of("gemm:decode:tiles"):
        roofline = max(r.flops / r.peak_flops_per_s, r.bytes / r.peak_bytes_per_s)
        assert fit.seconds(r.flops, r.bytes, r.peak_flops_per_s, r.peak_bytes_per_s) >= roofline * (1 - 1e-9)


def test_corrupt_csv_names_the_line(tmp_path):
    path = synthetic(tmp_path)
    lines = path.read_text().splitlines()
    cells = lines[3].split(",")
    cells[COLUMNS.index("seconds")] = "fast"
    lines[3] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match="kernels.csv line 4: not a kernels_ref benchmark row"):
        load_measured(path)


def with_layer(tmp_path, layer_seconds, parts=None):
    """synthetic()'s GEMM plus a copy kernel (10 to 40 MB at 20 GB/s + 50 us) and a layer row made of
    the GEMM at 100 and 300 tokens and a 40 MB copy; layer_seconds: its measured time."""
    path = synthetic(tmp_path)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    base = {"device": "test cpu", "date": "2026-11-23", "torch_version": "x", "peak_bytes_per_s": BW}
    for mb in (10, 20, 40):
        rows.append({**base, "kernel": "copy", "phase": "decode", "impl": "torch", "dtype": "", "tokens": mb,
                     "flops": 0, "bytes": mb * 1e6, "seconds": mb * 1e6 / 20e9 + 5e-5})
    if parts is None:
        parts = [{"part": "experts", "kernel": "gemm", "impl": "tiles", "dtype": "bf16",
                  "flops": 2 * m * 4096 * 2048, "bytes": 4096 * 2048 + m * 6144 * 2} for m in (100, 300)]
        parts.append({"part": "copy", "kernel": "copy", "impl": "torch", "dtype": None, "flops": 0, "bytes": 40e6})
    rows.append({**base, "kernel": "layer", "phase": "decode", "impl": "tiles", "dtype": "bf16", "tokens": 400,
                 "composition": json.dumps({"tokens_per_expert": [100, 300], "parts": parts}),
                 "flops": sum(p["flops"] for p in parts), "bytes": sum(p["bytes"] for p in parts),
                 "seconds": layer_seconds, "peak_flops_per_s": PEAK})
    write(path, rows)
    return path


def test_layer_is_predicted_as_the_sum_of_its_parts_fits(tmp_path):
    gemm = [max(2 * m * 4096 * 2048 / (PEAK * 0.6), (4096 * 2048 + m * 6144 * 2) / (BW * 0.5)) + 2e-5 for m in (100, 300)]
    exact = sum(gemm) + 40e6 / 20e9 + 5e-5
    table = load_measured(with_layer(tmp_path, layer_seconds=exact * 1.5))
    assert "layer:decode:tiles" not in table.kernels()  # a composite row is predicted, never fitted
    (layer,) = layer_report(table)
    assert layer["predicted_s"] == pytest.approx(exact, rel=0.03)
    assert layer["error"] == pytest.approx(1 / 1.5 - 1, abs=0.02)
    assert set(layer["parts"]) == {"experts", "copy"} and layer["tokens_per_expert"] == [100, 300]
    s = summary(table)
    assert s["layers"] == 1 and not s["layers_within_bar"] and s["rows_within_bar"]
    assert f"1 whole-layer rows: |error| max {abs(layer['error']):.1%} (bar 25%)" in report_table(table)


def test_a_malformed_composition_names_the_line(tmp_path):
    path = with_layer(tmp_path, 1e-3)
    lines = path.read_text().splitlines()
    lines[-1] = lines[-1].replace('"bytes"', '"bites"')  # the CSV doubles the JSON's quotes
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=f"kernels.csv line {len(lines)}: not a kernels_ref benchmark row"):
        load_measured(path)


def test_a_layer_part_without_measured_rows_is_a_one_line_error(tmp_path):
    parts = [{"part": "router", "kernel": "router_noaux_tc", "impl": "torch", "dtype": "fp32", "flops": 1e6, "bytes": 1e6}]
    table = load_measured(with_layer(tmp_path, 1e-3, parts))
    with pytest.raises(InputError, match="no measured rows of router_noaux_tc"):
        layer_report(table)


# The committed measurements: the 2-thread AMD EPYC's and the 2-thread Xeon's without AMX (python
# benchmarks/bench_kernels.py -o ..., nothing else running) are held to issue 4's bars: every benchmarked shape, and
# the whole MoE layer predicted from the per-kernel fits, within 25% of measured. The AMX Xeon's ran on a VM shared
# with other work (its probes swung 3.6x in bf16 rate within the run): `validate --kernels` reports it, not held to
# them.
COMMITTED = measured_csvs()
CALIBRATED = [p for p in COMMITTED if p.name in ("kernels-amd-epyc-2-threads.csv",
                                                 "kernels-intel-xeon-avx512-2-threads.csv")]


def test_every_machines_measured_csv_is_committed():
    assert {p.name for p in COMMITTED} >= {"kernels-amd-epyc-2-threads.csv", "kernels-intel-xeon-2-threads.csv",
                                           "kernels-intel-xeon-avx512-2-threads.csv"}
    assert len(CALIBRATED) == 2


@pytest.mark.parametrize("path", CALIBRATED, ids=lambda p: p.name)
def test_committed_csv_every_shape_within_the_bar(path):
    table = load_measured(path)
    worst = max(report(table), key=lambda r: abs(r["error"]))
    assert abs(worst["error"]) <= CALIBRATION_BAR, worst


@pytest.mark.parametrize("path", CALIBRATED, ids=lambda p: p.name)
def test_committed_csv_layer_within_the_bar(path):
    table = load_measured(path)
    layers = layer_report(table)
    assert {r["kernel"].split(":")[1] for r in layers} == {"decode", "prefill"}
    for r in layers:
        assert sum(r["tokens_per_expert"]) == r["tokens"] * r["top_k"]
        assert abs(r["error"]) <= CALIBRATION_BAR, r
    assert summary(table)["layers_within_bar"]


def test_validate_kernels_prints_the_measured_calibration(capsys):
    from moeplan.cli import main

    assert main(["validate", "--kernels"]) == 0
    out = capsys.readouterr().out
    assert "Measured kernels and the whole MoE layer" in out and "whole-layer rows: |error| max" in out
    assert out.count("Measured kernels and the whole MoE layer") == len(COMMITTED)
    assert "on AMD EPYC (2 threads)" in out and "on Intel(R) Xeon(R) Processor (2 threads)" in out
    assert "GQA decode attention where no engine table prices it" in out and "h200-sxm" in out
    assert main(["validate", "--kernels", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    measured = printed["measured"]
    assert set(printed["gqa_decode"]["parameters"]) == {"bfloat16", "fp8"}
    assert len(measured) == len(COMMITTED) and all(m["layers"] for m in measured)
    devices = {m["summary"]["source"].split(" on ")[1].split(",")[0] for m in measured}
    assert {"AMD EPYC (2 threads)", "Intel(R) Xeon(R) Processor (2 threads)"} <= devices
    assert all(isinstance(m["summary"]["rows_within_bar"], bool) for m in measured)


@pytest.mark.parametrize("path", CALIBRATED, ids=lambda p: p.name)
def test_a_layer_part_is_priced_by_the_fit_whose_rows_cover_its_tokens_per_expert(path):
    # 1,024 prefill tokens give each of the layer's 32 experts about 256, the shape of the decode rows of 128 and 256
    # tokens per expert: where the CSV has decode rows of an expert's path, those price it, not the prefill rows of
    # 384 to 2,048 tokens per expert (the AMD EPYC ran its tiles there, the Xeon without AMX its AVX-512 kernel)
    table = load_measured(path)
    layer = next(r for r in table.composites() if r.kernel.startswith("moe_layer:prefill") and r.shape["tokens"] == 1024)
    parts = {p["part"]: p["kernel"] for p in predict_composite(layer, table)}
    routed = {part.removeprefix("routed experts (").removesuffix(")"): kernel for part, kernel in parts.items()
              if part.startswith("routed experts (")}
    decode_paths = {k.split(":")[2] for k in table.kernels() if k.startswith("grouped_swiglu_fp8:decode:")}
    assert routed and any(path in decode_paths for path in routed)
    for path, kernel in routed.items():
        assert kernel == f"grouped_swiglu_fp8:{'decode' if path in decode_paths else 'prefill'}:{path}"
    assert parts["shared expert"] == "grouped_swiglu_fp8:prefill:tiles"  # 1,024 tokens on one expert
