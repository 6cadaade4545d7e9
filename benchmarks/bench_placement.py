"""ILP expert placement against EPLB's global policy on the DeepSeek-V3 routing statistics of the SGLang
team (../shared/data/routing/deepseek-v3-sglang-eplb: 3 decode and 7 prefill runs, 58 MoE layers each).

Bars (moeplan issue 5), step cost = sum over layers of the busiest device / sum of the mean device, every
method evaluated under the runtime even split of a replicated expert's tokens:
  (a) in sample (fitted and evaluated on the same file): the ILP is never worse than EPLB; its gap to a
      proven lower bound is reported;
  (b) out of sample (each file held out in turn, fitted on the other files of its phase): the ILP's step
      cost is on average at least 10% lower than EPLB's fitted on the same files (their summed counts);
  (c) EP144 with 58 layers solves within 60 s on 2 cores (the largest case: 3 slots per GPU, 6 windows).
Configurations: EP72 and EP144 (8 GPUs per node: 9 and 18 nodes) with 32 redundant slots and, for "64",
the nearest count above it that the EP size divides: 256 + 104 = 72 x 5 and 256 + 176 = 144 x 3 (64 divides
neither: 320 slots). Below it, 256 + 32 already is the 32-slot case.

Run: python benchmarks/bench_placement.py [--in-sample-s 5] [--out-of-sample-s 15] [--workers 2]
Takes about 15 minutes on 2 cores; exits 1 when a bar is missed. Writes its figures to
benchmarks/results/bench_placement.json (the README quotes them from there).
"""

import argparse
import time
from pathlib import Path

import numpy as np

from hwmodels.ingest.routing import read_counts
from planner.eplb import Policy, eplb_placement
from planner.ilp import ilp_placement
from planner.placement import evaluate
from record import run_context, write_results

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "routing" / "deepseek-v3-sglang-eplb"
CONFIGS = ((72, 32), (72, 104), (144, 32), (144, 176))  # (EP, redundant slots)
GPUS_PER_NODE = 8
BAR_IMPROVEMENT = 0.10
BAR_SECONDS = 60.0


def step_cost(p, loads) -> float:
    return evaluate(p, loads)["step_cost"]


def in_sample(files, limit_s, workers) -> dict:
    print("(a) in sample: fitted and evaluated on the same file")
    print(f"{'config':>10} {'file':<26} {'eplb':>7} {'ilp':>7} {'bound':>7} {'gap':>7} {'ilp s':>6}")
    ok, gaps, means = True, [], {}
    for ep, redundant in CONFIGS:
        costs = []
        for name, loads in files.items():
            eplb = step_cost(eplb_placement(loads, 256 + redundant, ep, ep // GPUS_PER_NODE, Policy.GLOBAL), loads)
            p = ilp_placement(loads, 256 + redundant, ep, ep // GPUS_PER_NODE, time_limit_s=limit_s, workers=workers)
            ilp = step_cost(p, loads)
            ok &= ilp <= eplb + 1e-9
            gaps.append(p.gap)
            costs.append((eplb, ilp))
            print(f"{f'EP{ep}+{redundant}':>10} {name:<26} {eplb:7.4f} {ilp:7.4f} {p.lp_bound:7.4f} {p.gap:7.2%} "
                  f"{p.seconds:6.1f}{'' if ilp <= eplb + 1e-9 else '  WORSE THAN EPLB'}")
        means[f"EP{ep}+{redundant}"] = {"eplb_step_cost": float(np.mean([c[0] for c in costs])),
                                        "ilp_step_cost": float(np.mean([c[1] for c in costs]))}
    print(f"    never worse than EPLB: {ok}; gap to the lower bound: median {np.median(gaps):.2%}, "
          f"max {max(gaps):.2%}")
    for config, m in means.items():
        print(f"    {config} mean over the {len(files)} files: EPLB {m['eplb_step_cost']:.4f}, ILP {m['ilp_step_cost']:.4f}")
    print()
    return {"never_worse_than_eplb": bool(ok), "files": len(files), "mean_step_cost_by_config": means,
            "median_gap": float(np.median(gaps)), "max_gap": float(max(gaps))}


def out_of_sample(files, limit_s, workers) -> dict:
    print("(b) out of sample: each file held out, fitted on the other files of its phase")
    print(f"{'config':>10} {'held out':<26} {'eplb':>7} {'eplb*':>7} {'ilp':>7} {'ilp/eplb':>9}")
    ratios, by_config = [], {}
    for ep, redundant in CONFIGS:
        nodes = ep // GPUS_PER_NODE
        for name, held_out in files.items():
            phase = name.split("_")[0]
            fit = [loads for other, loads in files.items() if other != name and other.startswith(phase)]
            eplb = step_cost(eplb_placement(sum(fit), 256 + redundant, ep, nodes, Policy.GLOBAL), held_out)
            # reference only: EPLB on the windows' counts normalised per layer first (each window weighs the same)
            normalised = sum(f / f.sum(axis=1, keepdims=True).clip(min=1) for f in fit)
            eplb_n = step_cost(eplb_placement(normalised, 256 + redundant, ep, nodes, Policy.GLOBAL), held_out)
            ilp = step_cost(ilp_placement(fit, 256 + redundant, ep, nodes, time_limit_s=limit_s, workers=workers),
                            held_out)
            ratios.append(ilp / eplb)
            by_config.setdefault((ep, redundant, phase), []).append(ilp / eplb)
            print(f"{f'EP{ep}+{redundant}':>10} {name:<26} {eplb:7.4f} {eplb_n:7.4f} {ilp:7.4f} {ilp / eplb:9.3f}")
    print("    eplb* = EPLB on per-window normalised counts (a reference, not the bar)")
    for (ep, redundant, phase), r in by_config.items():
        print(f"    EP{ep}+{redundant} {phase:<8} mean step cost vs EPLB: {np.mean(r):.3f} "
              f"({1 - np.mean(r):.1%} lower)")
    improvement = 1 - float(np.mean(ratios))
    print(f"    average over the {len(ratios)} cases: step cost {improvement:.1%} lower than EPLB "
          f"(bar {BAR_IMPROVEMENT:.0%}): {'met' if improvement >= BAR_IMPROVEMENT else 'MISSED'}\n")
    return {"cases": len(ratios), "mean_improvement_over_eplb": improvement, "bar": BAR_IMPROVEMENT,
            "met": improvement >= BAR_IMPROVEMENT}


def solve_time(files, workers) -> dict:
    ep, redundant = 144, 176
    fit = [loads for name, loads in files.items() if name.startswith("prefill")]
    print(f"(c) EP{ep}+{redundant} ({(256 + redundant) // ep} slots per GPU), 58 MoE layers, fitted on {len(fit)} "
          f"prefill windows, time limit {BAR_SECONDS:.0f} s, {workers} worker(s)")
    start = time.perf_counter()
    p = ilp_placement(fit, 256 + redundant, ep, ep // GPUS_PER_NODE, time_limit_s=BAR_SECONDS, workers=workers)
    wall = time.perf_counter() - start
    eplb = eplb_placement(sum(fit), 256 + redundant, ep, ep // GPUS_PER_NODE, Policy.GLOBAL)
    fit_eplb = np.mean([step_cost(eplb, f) for f in fit])
    fit_ilp = np.mean([step_cost(p, f) for f in fit])
    print(f"    wall {wall:.1f} s (bar {BAR_SECONDS:.0f} s); mean fit-window step cost: EPLB {fit_eplb:.4f}, "
          f"ILP {fit_ilp:.4f}; objective {p.objective:.4f}, bound {p.lp_bound:.4f}, gap {p.gap:.2%}")
    print(f"    {p.solver}; {p.notes.split('; ', 1)[1]}\n")
    return {"config": f"EP{ep}+{redundant}", "layers": int(fit[0].shape[0]), "wall_s": wall, "bar_s": BAR_SECONDS,
            "workers": workers, "met": wall <= BAR_SECONDS}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--in-sample-s", type=float, default=5.0, help="ILP time limit per in-sample case, seconds")
    parser.add_argument("--out-of-sample-s", type=float, default=15.0, help="ILP time limit per held-out case, seconds")
    parser.add_argument("--workers", type=int, default=2, help="processes per ILP solve")
    args = parser.parse_args()
    started, start_s = run_context(), time.perf_counter()
    if not DATA.is_dir():
        print(f"routing statistics not found at {DATA}")
        return 1
    files = {}
    for path in sorted(DATA.glob("*.json")):
        loads = read_counts(path)
        files[path.stem] = loads[loads.sum(axis=1) > 0]  # the 3 dense layers are all-zero rows
    figures = {"in_sample": in_sample(files, args.in_sample_s, args.workers),
               "out_of_sample": out_of_sample(files, args.out_of_sample_s, args.workers),
               "solve_time": solve_time(files, args.workers)}
    bars = {"(a) in sample never worse than EPLB": figures["in_sample"]["never_worse_than_eplb"],
            "(b) out of sample >= 10% lower step cost": figures["out_of_sample"]["met"],
            "(c) EP144 x 58 layers within 60 s": figures["solve_time"]["met"]}
    for bar, ok in bars.items():
        print(f"{bar}: {'met' if ok else 'MISSED'}")
    figures["wall_s"] = time.perf_counter() - start_s
    write_results("bench_placement", figures, started)
    return 0 if all(bars.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
