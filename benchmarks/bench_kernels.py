"""fp8 expert GEMM speed against this machine's own roofline, measured in one run, and the
calibration of that run.

Targets (on any machine, against rates measured alongside each kernel):
- prefill: the fp8 grouped SwiGLU experts reach at least 50% of the measured bf16 matmul rate;
- decode: where the shape is memory-bound on this machine, they move their bytes (fp8 weights,
  scales, activations) at at least 50% of the measured memory bandwidth.
Decode shapes with enough tokens per expert to be compute-bound are listed but not judged, and so
is the single expert: a calibration row (the fit needs the weight bytes to vary), not a device's
share of a layer, where a fixed cost per call (about 0.6 ms here) is a third of the 2 ms it takes.

Then hwmodels.calibrate.kernels_measured fits the run: every kernel row against its fitted roofline model, and
the whole MoE layer against the sum of its parts' fits (bar: 25%, reported, not judged here;
tests/test_calibration.py holds the committed CSV to it).

Run: python benchmarks/bench_kernels.py [--quick] [--device cpu|cuda] [-o FILE.csv]
     python benchmarks/bench_kernels.py --from FILE.csv   (an earlier run's CSV, not re-measured)
Exits 1 if a speed target is missed. Writes the headline figures of the rows it judged to
benchmarks/results/bench_kernels.json (the README quotes those of the committed CSV).
"""

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

from hwmodels.calibrate.kernels_measured import layer_report, load_measured, report, report_table, summary
from kernels_ref.bench import run_benchmarks, write_csv
from record import run_context, write_results

TARGET_FRACTION = 0.5
KERNEL = "grouped_swiglu_fp8"
_TEXT_COLUMNS = ("device", "device_type", "torch_version", "numpy_version", "date", "kernel", "phase", "impl",
                 "dtype", "composition", "bound")  # fmt: skip


def _read_rows(path: Path) -> list[dict]:
    """A kernels_ref CSV as run_benchmarks returns it: numbers as numbers, empty cells as None."""
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: (v if k in _TEXT_COLUMNS else float(v)) if v != "" else None for k, v in row.items()}
                for row in csv.DictReader(f)]  # fmt: skip


def target_ratio(row: dict) -> tuple[float, bool]:
    """A grouped-expert row's speed against what was measured alongside it (prefill: the bf16 matmul rate; decode:
    the memory bandwidth), and whether the target judges it (prefill, or memory-bound decode, over several experts)."""
    if row["phase"] == "prefill":
        ratio = row["flops_per_s"] / row["peak_flops_per_s"]
    else:
        ratio = row["bytes_per_s"] / row["peak_bytes_per_s"]
    return ratio, (row["phase"] == "prefill" or row["bound"] == "memory") and row["groups"] > 1


def headline(rows: list[dict], path: Path) -> dict:
    """What the README quotes of a run: the judged speed ratios, the memory probe's swing, and the calibration's
    worst kernel row and worst whole-layer row (hwmodels.calibrate.kernels_measured over the CSV at `path`)."""
    judged = [(row, target_ratio(row)[0]) for row in rows if row["kernel"] == KERNEL and target_ratio(row)[1]]
    table = load_measured(path)
    fitted, layers = report(table), layer_report(table)
    worst = max(fitted, key=lambda r: abs(r["error"]))
    bandwidth = [row["peak_bytes_per_s"] for row in rows if row["phase"] is not None]
    return {"csv": path.name, "device": rows[0]["device"], "threads": int(rows[0]["threads"]), "date": rows[0]["date"],
            "torch_version": rows[0]["torch_version"], "target_fraction": TARGET_FRACTION,
            "prefill_ratio_range": [min(r for row, r in judged if row["phase"] == "prefill"),
                                    max(r for row, r in judged if row["phase"] == "prefill")],
            "decode_memory_bound_ratio_range": [min(r for row, r in judged if row["phase"] == "decode"),
                                                max(r for row, r in judged if row["phase"] == "decode")],
            "probe_bytes_per_s_range": [min(bandwidth), max(bandwidth)],
            "calibration": summary(table, fitted, layers),
            "worst_row": {"kernel": worst["kernel"], "tokens": worst.get("tokens"), "error": worst["error"]},
            "layer_tokens": {phase: [r["tokens"] for r in layers if r["kernel"].split(":")[1] == phase]
                             for phase in ("decode", "prefill")},
            "layer_shape": {k: layers[0][k] for k in ("top_k", "experts", "experts_of_model")}}


def print_targets(rows: list[dict]) -> list[dict]:
    """Print the speed targets; returns the rows that missed theirs."""
    print(f"device: {rows[0]['device']}, torch {rows[0]['torch_version']}, {rows[0]['date']}")
    peaks = {row["kernel"]: row for row in rows if row["phase"] is None}
    memory_bytes_per_s = max(peaks["memory_copy"]["bytes_per_s"], peaks["memory_sum"]["bytes_per_s"])
    print(f"measured alone: bf16 matmul {peaks['matmul_bf16']['flops_per_s'] / 1e9:.0f} GFLOP/s, "
          f"memory {memory_bytes_per_s / 1e9:.1f} GB/s")  # fmt: skip
    print(f"{'phase':<8} {'impl':<11} {'experts':>7} {'m/expert':>8} {'ms':>9} {'GFLOP/s':>8} {'GB/s':>6} "
          f"{'ratio':>6}  {'against (measured alongside)':<34} target")  # fmt: skip
    missed = []
    for row in (row for row in rows if row["kernel"] == KERNEL):
        ratio, judged = target_ratio(row)
        if row["phase"] == "prefill":
            against, peak = "bf16 matmul", f"{row['peak_flops_per_s'] / 1e9:.0f} GFLOP/s"
        else:
            against, peak = "memory bandwidth", f"{row['peak_bytes_per_s'] / 1e9:.1f} GB/s"
        verdict = ("ok" if ratio >= TARGET_FRACTION else "MISSED") if judged else (
            "- (compute-bound)" if row["groups"] > 1 else "- (one expert: calibration)")
        if verdict == "MISSED":
            missed.append(row)
        print(f"{row['phase']:<8} {row['impl']:<11} {row['groups']:>7.0f} {row['m_per_group']:>8.0f} {row['seconds'] * 1e3:>9.2f} "
              f"{row['flops_per_s'] / 1e9:>8.0f} {row['bytes_per_s'] / 1e9:>6.1f} {ratio:>6.2f}  "
              f"{against + ' ' + peak:<34} {verdict}")  # fmt: skip
    print(f"{len(missed)} target(s) missed" if missed else f"all targets met (>= {TARGET_FRACTION:.0%})")
    return missed


def print_steadiness(rows: list[dict]) -> None:
    """How much the probes timed alongside the kernels varied over the run: on a shared machine
    other load changes its speed, and then every ratio and fit carries that noise."""
    kernels = [row for row in rows if row["phase"] is not None]
    flops = [row["peak_flops_per_s"] for row in kernels if row["dtype"] == "bf16"]
    bandwidth = [row["peak_bytes_per_s"] for row in kernels]
    print(f"probes alongside the kernels: bf16 matmul {min(flops) / 1e9:.0f} to {max(flops) / 1e9:.0f} GFLOP/s "
          f"(max/min {max(flops) / min(flops):.2f}), memory {min(bandwidth) / 1e9:.1f} to {max(bandwidth) / 1e9:.1f} "
          f"GB/s (max/min {max(bandwidth) / min(bandwidth):.2f})")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer shapes (about 30 s on 2 cores)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("-o", "--output", type=Path, help="also write every row to this CSV (a new file)")
    parser.add_argument("--from", dest="source", type=Path, metavar="FILE.csv",
                        help="judge and calibrate an earlier run's CSV instead of running")
    args = parser.parse_args()
    if args.output and args.output.exists():
        parser.error(f"{args.output} exists; give a new file name")
    if args.source and not args.source.is_file():
        parser.error(f"--from: no file {args.source}")
    started, start_s, measured_s = run_context(), time.perf_counter(), None
    with tempfile.TemporaryDirectory() as tmp:
        if args.source:
            path = args.source
            rows = _read_rows(path)
        else:
            rows = run_benchmarks(args.device, quick=args.quick)
            measured_s = time.perf_counter() - start_s
            path = args.output or Path(tmp) / "kernels.csv"
            write_csv(rows, path)
        missed = print_targets(rows)
        print_steadiness(rows)
        print()
        print(report_table(load_measured(path)))
        # a CSV judged again (--from) was measured elsewhere: no run time, and the machine is the CSV's device
        write_results("bench_kernels", {**headline(rows, path), "measured_wall_s": measured_s, "quick": args.quick},
                      started)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
