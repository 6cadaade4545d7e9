"""Calibration: a kernels_ref CSV fitted with the roofline-plus-efficiency model."""

import csv

import pytest

from hwmodels.calibration import fit_kernel, load_measured, report
from hwmodels.errors import InputError

COLUMNS = ("device", "date", "torch_version", "kernel", "phase", "impl", "dtype", "groups", "m_per_group", "tokens",
           "flops", "bytes", "seconds", "peak_flops_per_s", "peak_bytes_per_s")


def write(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)


def synthetic(tmp_path, compute_eff=0.6, memory_eff=0.5, overhead_s=2e-5):
    """A GEMM-like kernel from 1 to 4096 tokens on a 400 GFLOP/s, 30 GB/s machine, timed by the model itself."""
    peak, bw = 400e9, 30e9
    rows = [{"device": "test cpu", "date": "2026-11-23", "torch_version": "x", "kernel": "matmul_bf16",
                                     "phase": "", "impl": "torch", "dtype": "bf16", "flops": 1, "bytes": 0, "seconds": 1,
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
