"""fp8 expert GEMM speed against this machine's own roofline, measured in one run.

Targets (on any machine, against rates measured alongside each kernel):
- prefill: the fp8 grouped SwiGLU experts reach at least 50% of the measured bf16 matmul rate;
- decode: where the shape is memory-bound on this machine, they move their bytes (fp8 weights,
  scales, activations) at at least 50% of the measured memory bandwidth.
Decode shapes with enough tokens per expert to be compute-bound are listed but not judged.

Run: python benchmarks/bench_kernels.py [--quick] [--device cpu|cuda] [-o FILE.csv]
Exits 1 if a target is missed.
"""

import argparse
import sys

from kernels_ref.bench import run_benchmarks, write_csv

TARGET_FRACTION = 0.5
KERNEL = "grouped_swiglu_fp8"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer shapes (about 15 s on 2 cores)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("-o", "--output", help="also write every row to this CSV")
    args = parser.parse_args()
    rows = run_benchmarks(args.device, quick=args.quick)
    if args.output:
        write_csv(rows, args.output)

    print(f"device: {rows[0]['device']}, torch {rows[0]['torch_version']}")
    peaks = {row["kernel"]: row for row in rows if row["phase"] is None}
    memory_bytes_per_s = max(peaks["memory_copy"]["bytes_per_s"], peaks["memory_sum"]["bytes_per_s"])
    print(f"measured alone: bf16 matmul {peaks['matmul_bf16']['flops_per_s'] / 1e9:.0f} GFLOP/s, "
          f"memory {memory_bytes_per_s / 1e9:.1f} GB/s")  # fmt: skip
    print(f"{'phase':<8} {'impl':<11} {'m/expert':>8} {'ms':>9} {'GFLOP/s':>8} {'GB/s':>6} "
          f"{'ratio':>6}  {'against (measured alongside)':<34} target")  # fmt: skip
    missed = []
    for row in (row for row in rows if row["kernel"] == KERNEL):
        if row["phase"] == "prefill":
            ratio, against = row["flops_per_s"] / row["peak_flops_per_s"], "bf16 matmul"
            peak = f"{row['peak_flops_per_s'] / 1e9:.0f} GFLOP/s"
        else:
            ratio, against = row["bytes_per_s"] / row["peak_bytes_per_s"], "memory bandwidth"
            peak = f"{row['peak_bytes_per_s'] / 1e9:.1f} GB/s"
        judged = row["phase"] == "prefill" or row["bound"] == "memory"
        verdict = ("ok" if ratio >= TARGET_FRACTION else "MISSED") if judged else "- (compute-bound)"
        if verdict == "MISSED":
            missed.append(row)
        print(f"{row['phase']:<8} {row['impl']:<11} {row['m_per_group']:>8} {row['seconds'] * 1e3:>9.2f} "
              f"{row['flops_per_s'] / 1e9:>8.0f} {row['bytes_per_s'] / 1e9:>6.1f} {ratio:>6.2f}  "
              f"{against + ' ' + peak:<34} {verdict}")  # fmt: skip
    print(f"{len(missed)} target(s) missed" if missed else f"all targets met (>= {TARGET_FRACTION:.0%})")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
