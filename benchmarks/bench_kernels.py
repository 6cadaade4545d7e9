"""fp8 expert GEMM speed against this machine's own roofline, measured in one run, and the
calibration of that run.

Targets (on any machine, against rates measured alongside each kernel):
- prefill: the fp8 grouped SwiGLU experts reach at least 50% of the measured bf16 matmul rate;
- decode: where the shape is memory-bound on this machine, they move their bytes (fp8 weights,
  scales, activations) at at least 50% of the measured memory bandwidth.
Decode shapes with enough tokens per expert to be compute-bound are listed but not judged, and so
is the single expert: a calibration row (the fit needs the weight bytes to vary), not a device's
share of a layer, where a fixed cost per call (about 0.6 ms here) is a third of the 2 ms it takes.

Issue 24's bar, reported per row class (not judged in the exit status): every expert row (grouped
and masked SwiGLU) and every whole-layer row at >= 0.70 of its roofline, every glue row (router,
quantisation, dispatch, combine, MLA decode) at >= 0.40, and the median over all kernel rows
>= 0.60. A row's roofline is the larger of its bytes over the memory bandwidth and its FLOPs over
the matmul rate of its dtype, both measured alongside it (the best of the probes: on an AMX CPU
PyTorch's bf16 matmul runs on AMX), so memory-bound decode shapes are held to the bandwidth and
compute-bound ones to the bf16 matmul rate.

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
import statistics
import sys
import tempfile
import time
from pathlib import Path

from hwmodels.calibrate.kernels_measured import layer_report, load_measured, report, report_table, summary
from kernels_ref.bench import run_benchmarks, write_csv
from record import run_context, write_results

TARGET_FRACTION = 0.5
KERNEL = "grouped_swiglu_fp8"
# issue 24's bar: row class -> (kernels, the least roofline fraction each row must reach)
ROW_CLASSES = {
    "experts": (("grouped_swiglu_fp8", "masked_swiglu_fp8"), 0.70),
    "layer": (("moe_layer",), 0.70),
    "glue": (("router_noaux_tc", "quantize_fp8", "dispatch_fp8", "combine_bf16", "mla_decode_absorbed"), 0.40),
}
MEDIAN_TARGET = 0.60
_TEXT_COLUMNS = ("device", "device_type", "torch_version", "numpy_version", "date", "kernel", "phase", "impl",
                 "tuning", "dtype", "composition", "bound")  # fmt: skip


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


def bar_report(rows: list[dict]) -> dict:
    """Issue 24's bar: per row class the least and the median roofline fraction and the rows below
    the class's target; the median over all kernel rows."""
    kernels = [row for row in rows if row["phase"] is not None]
    out = {}
    for name, (names, target) in ROW_CLASSES.items():
        fractions = [row["roofline_fraction"] for row in kernels if row["kernel"] in names]
        out[name] = {"target": target, "rows": len(fractions), "min": min(fractions),
                     "median": statistics.median(fractions), "below": sum(f < target for f in fractions)}
    median = statistics.median(row["roofline_fraction"] for row in kernels)
    out["all"] = {"target": MEDIAN_TARGET, "rows": len(kernels), "median": median, "met": median >= MEDIAN_TARGET}
    return out


def print_bar(rows: list[dict]) -> None:
    bar = bar_report(rows)
    print("roofline fractions by row class (issue 24's bar):")
    for name in ROW_CLASSES:
        b = bar[name]
        print(f"  {name:<8} {b['rows']:>3} rows: min {b['min']:.2f}, median {b['median']:.2f}; "
              f"{b['below']} below {b['target']:.2f}")
    print(f"  all      {bar['all']['rows']:>3} rows: median {bar['all']['median']:.2f} (target {MEDIAN_TARGET:.2f})")
    for row in rows:
        if row["phase"] is not None:
            print(f"    {row['kernel']:<20} {row['phase']:<8} {row['impl'] or '':<22} "
                  f"{_shape(row):<28} {row['roofline_fraction']:.2f} ({row['bound']})")


def _shape(row: dict) -> str:
    keys = ("groups", "m_per_group", "tokens", "batch", "context")
    return " ".join(f"{k}={row[k]:.0f}" for k in keys if row.get(k) is not None)


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
            "layer_shape": {k: layers[0][k] for k in ("top_k", "experts", "experts_of_model")},
            "roofline_bar": bar_report(rows)}


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
        print_bar(rows)
        print()
        print(report_table(load_measured(path)))
        # a CSV judged again (--from) was measured elsewhere: no run time, and the machine is the CSV's device
        write_results("bench_kernels", {**headline(rows, path), "measured_wall_s": measured_s, "quick": args.quick},
                      started)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
