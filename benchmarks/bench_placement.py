"""ILP expert placement against EPLB's global policy on the DeepSeek-V3 routing statistics of the SGLang
team (../shared/data/routing/deepseek-v3-sglang-eplb: 3 decode and 7 prefill runs, 58 MoE layers each).

Bars (moeplan issue 5), step cost = sum over layers of the busiest device / sum of the mean device, every
method evaluated under the runtime even split of a replicated expert's tokens:
  (a) in sample (fitted and evaluated on the same file): the ILP is never worse than EPLB; its gap to a
      proven lower bound is reported;
  (b) out of sample (each file held out in turn, fitted on the other files of its phase): the ILP's step
      cost is on average at least 10% lower than EPLB's fitted on the same files (their summed counts);
  (c) EP144 with 58 layers solves within 60 s on 2 cores (the largest case: 3 slots per GPU, 6 windows).
  (d) (moeplan issue 19) cross-node bytes per token at EP72 + 32 slots on 9 nodes of 8 GPUs, each file held out
      as in (b): the node-aware ILP (its scale-out term weighted for DeepSeek-V3 on H800,
      moeplan.api.placement_scaleout_weight) sends no more than EPLB and less than contiguous placement in
      every case. Bytes: DeepEP normal mode, one copy per remote node a token's experts reach, dispatch plus
      combine, summed over the MoE layers (hwmodels.alltoall_placement states the assumptions). The step model's
      prefill step (9 x HGX H800, EP72, two-batch overlap) is printed for each placement, its all-to-all priced by
      the placement.
Configurations: EP72 and EP144 (8 GPUs per node: 9 and 18 nodes) with 32 redundant slots and, for "64",
the nearest count above it that the EP size divides: 256 + 104 = 72 x 5 and 256 + 176 = 144 x 3 (64 divides
neither: 320 slots). Below it, 256 + 32 already is the 32-slot case.

Run: python benchmarks/bench_placement.py [--in-sample-s 5] [--out-of-sample-s 15] [--workers 2]
Takes about 25 minutes on 2 cores; exits 1 when a bar is missed. Writes its figures to
benchmarks/results/bench_placement.json (the README quotes them from there).
"""

import argparse
import time
from pathlib import Path

import numpy as np

# every import at the top: a run takes 25 minutes, and a module imported late would be read from a tree that
# may have changed since the run started
from hwmodels.catalog import load_model, load_unit
from hwmodels.expert_load import ExpertLoad
from hwmodels.hardware import make_cluster
from hwmodels.ingest.routing import read_counts
from hwmodels.layout import Layout
from hwmodels.precision import default_plan
from hwmodels.step import StepContext
from moeplan.api import placement_alltoall, placement_scaleout_weight
from planner.eplb import Policy, contiguous_placement, eplb_placement
from planner.ilp import ilp_placement
from planner.placement import cross_node_bytes_per_token, device_loads, evaluate, placed_routing
from record import run_context, write_results

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "routing" / "deepseek-v3-sglang-eplb"
CONFIGS = ((72, 32), (72, 104), (144, 32), (144, 176))  # (EP, redundant slots)
GPUS_PER_NODE = 8
BAR_IMPROVEMENT = 0.10
BAR_SECONDS = 60.0
MODEL, DEVICE, UNIT = "deepseek-v3", "h800-sxm", "hgx-h800"  # (d): the statistics' model on the GPUs they ran on
PREFILL_TOKENS_PER_DEVICE, PROMPT_TOKENS = 4096, 4096  # (d): the prefill step the placements are priced at


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


def _prefill_step_ms(placement, loads, nodes) -> tuple[float, float]:
    """(step, dispatch + combine) in ms of DeepSeek-V3's prefill step on `nodes` HGX H800 nodes with this
    placement, its all-to-all priced by where the replicas sit."""
    arch = load_model(MODEL)
    layout = Layout(1, placement.num_devices, redundant_experts=placement.phy2log.shape[1] - arch.moe.num_experts,
                    two_batch_overlap=True)
    load = ExpertLoad(device_loads(placement, loads), placement.method, placed_routing(placement, loads))
    ctx = StepContext(arch, default_plan(arch.quantization_config, arch.torch_dtype),
                      make_cluster(load_unit(UNIT), units=nodes), layout, load)
    s = ctx.step("prefill", PREFILL_TOKENS_PER_DEVICE, PROMPT_TOKENS)
    return s.time_s * 1e3, (s.breakdown_s["dispatch"] + s.breakdown_s["combine"]) * 1e3


def cross_node(files, limit_s, workers) -> dict:
    ep, redundant, nodes = 72, 32, 72 // GPUS_PER_NODE
    a2a, weight = placement_alltoall(MODEL), placement_scaleout_weight(MODEL, DEVICE)
    print(f"(d) cross-node MB per token (and the {MODEL} prefill step, ms, on {nodes} x {UNIT}) at EP{ep}+{redundant} "
          f"on {nodes} nodes, each file held out; ILP-node: scale-out weight {weight:.2f} ({MODEL} on {DEVICE})")
    methods = ("contiguous", "eplb", "ilp", "ilp_node")
    print(f"{'held out':<26} " + " ".join(f"{m:>22}" for m in methods))
    rows, ok = [], True
    for name, held_out in files.items():
        phase = name.split("_")[0]
        fit = [loads for other, loads in files.items() if other != name and other.startswith(phase)]
        eplb = eplb_placement(sum(fit), 256 + redundant, ep, nodes, Policy.GLOBAL)
        placements = {
            "contiguous": contiguous_placement(held_out.shape[0], 256, 256 + redundant, ep), "eplb": eplb,
            "ilp": ilp_placement(fit, 256 + redundant, ep, nodes, time_limit_s=limit_s, workers=workers, start=eplb.phy2log),
            "ilp_node": ilp_placement(fit, 256 + redundant, ep, nodes, time_limit_s=limit_s, workers=workers,
                                      start=eplb.phy2log, scaleout_weight=weight, num_groups=a2a.num_groups)}
        row = {"file": name}
        for m, p in placements.items():
            mb = cross_node_bytes_per_token(p, held_out, nodes, a2a.top_k, a2a.token_bytes, a2a.num_groups,
                                            a2a.groups_per_token) / 1e6
            step_ms, comm_ms = _prefill_step_ms(p, held_out, nodes)
            row[m] = {"cross_node_mb_per_token": mb, "step_cost": step_cost(p, held_out), "prefill_step_ms": step_ms,
                      "prefill_alltoall_ms": comm_ms}
        met = row["ilp_node"]["cross_node_mb_per_token"] <= row["eplb"]["cross_node_mb_per_token"] and \
            row["ilp_node"]["cross_node_mb_per_token"] < row["contiguous"]["cross_node_mb_per_token"]
        ok &= met
        rows.append(row)
        print(f"{name:<26} " + " ".join(f"{row[m]['cross_node_mb_per_token']:6.3f} MB {row[m]['prefill_step_ms']:7.1f} ms"
                                          f"{'' if m != 'ilp_node' or met else ' MISSED':>7}" for m in methods))
    mean = {m: {k: float(np.mean([r[m][k] for r in rows])) for k in rows[0][m]} for m in methods}
    for m in methods:
        print(f"    {m:<11} mean: {mean[m]['cross_node_mb_per_token']:.3f} MB per token across nodes, step cost "
              f"{mean[m]['step_cost']:.3f}, prefill step {mean[m]['prefill_step_ms']:.1f} ms (all-to-all "
              f"{mean[m]['prefill_alltoall_ms']:.1f} ms)")
    print(f"    ILP-node <= EPLB and < contiguous in every case: {'met' if ok else 'MISSED'}\n")
    return {"config": f"EP{ep}+{redundant}", "nodes": nodes, "scaleout_weight": weight, "device": DEVICE,
            "token_bytes": a2a.token_bytes, "cases": len(rows), "mean_by_method": mean, "per_file": rows, "met": bool(ok)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--in-sample-s", type=float, default=5.0, help="ILP time limit per in-sample case, seconds")
    parser.add_argument("--out-of-sample-s", type=float, default=15.0, help="ILP time limit per held-out case, seconds")
    parser.add_argument("--workers", type=int, default=2, help="processes per ILP solve")
    parser.add_argument("--cross-node-s", type=float, default=15.0, help="ILP time limit per cross-node case, seconds")
    parser.add_argument("--only", choices=("in_sample", "out_of_sample", "solve_time", "cross_node"),
                        help="run one section (its figures are printed, not recorded)")
    args = parser.parse_args()
    started, start_s = run_context(), time.perf_counter()
    if not DATA.is_dir():
        print(f"routing statistics not found at {DATA}")
        return 1
    files = {}
    for path in sorted(DATA.glob("*.json")):
        loads = read_counts(path)
        files[path.stem] = loads[loads.sum(axis=1) > 0]  # the 3 dense layers are all-zero rows
    sections = {"in_sample": lambda: in_sample(files, args.in_sample_s, args.workers),
                "out_of_sample": lambda: out_of_sample(files, args.out_of_sample_s, args.workers),
                "solve_time": lambda: solve_time(files, args.workers),
                "cross_node": lambda: cross_node(files, args.cross_node_s, args.workers)}
    figures = {name: run() for name, run in sections.items() if args.only in (None, name)}
    bars = {"(a) in sample never worse than EPLB": ("in_sample", "never_worse_than_eplb"),
            "(b) out of sample >= 10% lower step cost": ("out_of_sample", "met"),
            "(c) EP144 x 58 layers within 60 s": ("solve_time", "met"),
            "(d) cross-node bytes: ILP-node <= EPLB and < contiguous": ("cross_node", "met")}
    bars = {bar: figures[section][key] for bar, (section, key) in bars.items() if section in figures}
    for bar, ok in bars.items():
        print(f"{bar}: {'met' if ok else 'MISSED'}")
    figures["wall_s"] = time.perf_counter() - start_s
    if args.only is None:  # the record holds whole runs only
        write_results("bench_placement", figures, started)
    return 0 if all(bars.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
