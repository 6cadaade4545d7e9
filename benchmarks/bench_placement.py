"""ILP expert placement against EPLB's global policy on the DeepSeek-V3 routing statistics of the SGLang
team (../shared/data/routing/deepseek-v3-sglang-eplb: 3 decode and 7 prefill runs, 58 MoE layers each).

Bars (moeplan issue 5), step cost = sum over layers of the busiest device / sum of the mean device, every
method evaluated under the runtime even split of a replicated expert's tokens:
  (a) in sample (fitted and evaluated on the same file): the ILP is never worse than EPLB; its gap to a
      proven lower bound is reported;
  (b) out of sample (moeplan issue 19), each file held out in turn and the placement fitted on one window (the
      file before it in its phase) and on several (the other files of its phase): the ILP's step cost is on
      average at least 10% below the stronger EPLB baseline and never above it, case by case. The baselines are
      EPLB fitted on the same windows' summed counts and on their per-window normalised counts. Fitting on the
      other phase's files (another workload) is reported beside the bar, and so is each held-out file's own
      lower bound: the most any placement with those slots could gain there, even one fitted on that file.
  (c) EP144 with 58 layers solves within 60 s on 2 cores (the largest case: 3 slots per GPU, 6 windows).
  (d) (moeplan issue 19) cross-node bytes per token at EP72 + 32 slots on 9 nodes of 8 GPUs, each file held out
      and fitted on several windows as in (b): the node-aware ILP (its scale-out term weighted for DeepSeek-V3 on H800,
      moeplan.api.placement_scaleout_weight) sends no more than EPLB and less than contiguous placement in
      every case. Bytes: DeepEP normal mode, one copy per remote node a token's experts reach, dispatch plus
      combine, summed over the MoE layers (hwmodels.alltoall_placement states the assumptions). The step model's
      prefill step (9 x HGX H800, EP72, two-batch overlap) is printed for each placement, its all-to-all priced by
      the placement.
Configurations: EP72 and EP144 (8 GPUs per node: 9 and 18 nodes) with 32 redundant slots and, for "64",
the nearest count above it that the EP size divides: 256 + 104 = 72 x 5 and 256 + 176 = 144 x 3 (64 divides
neither: 320 slots). Below it, 256 + 32 already is the 32-slot case.

Run: python benchmarks/bench_placement.py [--in-sample-s 5] [--out-of-sample-s 10] [--workers 2]
Takes about 35 minutes on 2 cores; exits 1 when a bar is missed. Writes its figures to
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
from planner.placement_bound import layer_bound
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


FIT_MODES = {
    "one": "fitted on one window: the file before it in its phase (cyclically)",
    "several": "fitted on every other file of its phase",
    "other_workload": "fitted on every file of the other phase (prefill for decode, decode for prefill)",
}
BAR_FIT_MODES = ("one", "several")  # the bar; other_workload is reported beside it


def _fit_windows(files: dict, name: str, mode: str) -> list:
    phase = name.split("_")[0]
    if mode == "one":
        same = [other for other in files if other.startswith(phase)]
        return [files[same[same.index(name) - 1]]]
    if mode == "several":
        return [loads for other, loads in files.items() if other != name and other.startswith(phase)]
    return [loads for other, loads in files.items() if not other.startswith(phase)]


def _own_bound(loads, num_slots: int, ep: int) -> float:
    """A proven lower bound on the step cost of any placement with these slots serving `loads`, even one
    fitted on `loads` itself: how much any method could gain over EPLB on this held-out file."""
    unit = loads * ep / loads.sum(axis=1, keepdims=True)
    return float(np.mean([layer_bound(layer, num_slots, ep, upper=float(unit.max())) for layer in unit]))


def out_of_sample(files, limit_s, workers) -> dict:
    print("(b) out of sample: each file held out; the ILP against the stronger of EPLB on the fit windows' summed "
          "counts (eplb) and on their per-window normalised counts (eplb*), case by case; 'own' is a proven lower "
          "bound for any placement, even one fitted on the held-out file itself")
    print(f"{'config':>10} {'fit':<15} {'held out':<26} {'eplb':>7} {'eplb*':>7} {'ilp':>7} {'own':>7} {'ilp/strong':>10}")
    modes, ok = {}, True
    for mode, what in FIT_MODES.items():
        rows = []
        for ep, redundant in CONFIGS:
            nodes, slots = ep // GPUS_PER_NODE, 256 + redundant
            for name, held_out in files.items():
                fit = _fit_windows(files, name, mode)
                eplb = step_cost(eplb_placement(sum(fit), slots, ep, nodes, Policy.GLOBAL), held_out)
                normalised = sum(f / f.sum(axis=1, keepdims=True).clip(min=1) for f in fit)
                eplb_n = step_cost(eplb_placement(normalised, slots, ep, nodes, Policy.GLOBAL), held_out)
                ilp = step_cost(ilp_placement(fit, slots, ep, nodes, time_limit_s=limit_s, workers=workers), held_out)
                strong, own = min(eplb, eplb_n), _own_bound(held_out, slots, ep)
                rows.append({"config": f"EP{ep}+{redundant}", "held_out": name, "eplb": eplb, "eplb_normalised": eplb_n,
                             "ilp": ilp, "own_bound": own, "ratio": ilp / strong})
                print(f"{f'EP{ep}+{redundant}':>10} {mode:<15} {name:<26} {eplb:7.4f} {eplb_n:7.4f} {ilp:7.4f} {own:7.4f} "
                      f"{ilp / strong:10.3f}{'  ABOVE EPLB' if ilp > strong + 1e-9 else ''}")
        ratios = [r["ratio"] for r in rows]
        headroom = [r["own_bound"] / min(r["eplb"], r["eplb_normalised"]) for r in rows]
        summary = {"fit": what, "cases": len(rows), "mean_ratio_to_stronger_eplb": float(np.mean(ratios)),
                   "max_ratio_to_stronger_eplb": float(max(ratios)),
                   "cases_above_stronger_eplb": sum(r > 1 + 1e-9 for r in ratios),
                   "mean_ratio_to_summed_eplb": float(np.mean([r["ilp"] / r["eplb"] for r in rows])),
                   "mean_own_bound_ratio": float(np.mean(headroom)), "rows": rows}
        summary["met"] = bool(1 - summary["mean_ratio_to_stronger_eplb"] >= BAR_IMPROVEMENT
                              and summary["cases_above_stronger_eplb"] == 0)
        modes[mode] = summary
        if mode in BAR_FIT_MODES:
            ok &= summary["met"]
        print(f"    {mode}: ILP / stronger EPLB {summary['mean_ratio_to_stronger_eplb']:.3f} on average (max "
              f"{summary['max_ratio_to_stronger_eplb']:.3f}, {summary['cases_above_stronger_eplb']} of {len(rows)} above), "
              f"/ summed-count EPLB {summary['mean_ratio_to_summed_eplb']:.3f}; the held-out files' own bound / stronger "
              f"EPLB {summary['mean_own_bound_ratio']:.3f}" + ("" if mode not in BAR_FIT_MODES else
              f"; bar (>= {BAR_IMPROVEMENT:.0%} lower, never above): {'met' if summary['met'] else 'MISSED'}"))
    print()
    return {"bar": BAR_IMPROVEMENT, "met": bool(ok), "modes": modes}


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
    parser.add_argument("--out-of-sample-s", type=float, default=10.0, help="ILP time limit per held-out case, seconds")
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
            "(b) out of sample, one window and several: >= 10% below the stronger EPLB, never above": ("out_of_sample", "met"),
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
