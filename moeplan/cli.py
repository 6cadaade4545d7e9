"""`moeplan` console command: a thin shell over the notebook API (moeplan.api).

Exit status: 0 success; 1 a valid question whose answer is "no" (the model does not fit);
2 bad input (one line on stderr naming the field and the fix, never a traceback), argparse's errors
included (moeplan.cli_args: every numeric option is finite and bounded, output paths are checked before
any work).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from moeplan import api, cli_estimate, cli_measured, cli_show, app_server, output_files, report
from moeplan.api import InputError, KVPolicy, Router, SimConfig
from moeplan.cli_show import EXIT_NO, console, print_json
from moeplan.cli_args import (Parser, bounds_help, check_argv, check_together, float_in, int_in, missing_command, names,
                             number, one_line, usage_error)
from moeplan.spec import example_path
from moeplan.sweep_file import load_sweep

EXIT_BAD_INPUT = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    try:
        args, extra = parser.parse_known_args(check_argv(argv))
        if extra:
            raise usage_error(getattr(args, "prog", parser.prog), f"unrecognized arguments: {' '.join(extra)}")
        if not getattr(args, "run", None):
            raise missing_command(parser)
        check_together(args)
        return args.run(args) or 0
    except InputError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of our output went away (moeplan devices --json | head): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _parser() -> argparse.ArgumentParser:
    p = Parser(prog="moeplan", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(metavar="COMMAND", parser_class=Parser)
    add_parser = sub.add_parser

    def add(name, **kwargs):  # each command knows its prog, for the errors argparse leaves to main
        s = add_parser(name, **kwargs)
        s.set_defaults(prog=s.prog)
        return s

    sub.add_parser = add

    s = sub.add_parser("models", help="list the catalog models")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(run=cli_show.models)

    s = sub.add_parser("devices", help="list the catalog devices with their cited figures and prices")
    s.add_argument("--json", action="store_true", help="print JSON")
    _price_args(s)
    s.set_defaults(run=cli_show.devices)

    s = sub.add_parser("clusters", help="list the cluster units (nodes, racks, supernodes)")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(run=cli_show.clusters)

    s = sub.add_parser("model", help="parameters, weight bytes, FLOPs and KV bytes of one model")
    s.add_argument("name", help="catalog model name or path to a HuggingFace config.json")
    s.add_argument("--context", type=int_in("--context"), default=4096,
                   help=f"context length in tokens for FLOPs per token ({bounds_help('--context')}, default 4096)")
    s.add_argument("--precision", action="append", default=[], metavar="PART=FORMAT",
                   help="override a part's format, e.g. routed_experts=nvfp4 or kv_cache=fp8 (repeatable)")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(run=cli_show.model)

    s = sub.add_parser("check", help="does the model of a spec fit its cluster, and how much KV cache is left")
    s.add_argument("spec", nargs="?", default=str(example_path()), help=f"spec YAML (default: the built-in {example_path().name})")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.add_argument("--all", action="store_true", help="show every candidate layout, not the best 8")
    s.set_defaults(run=cli_show.check)

    s = sub.add_parser("plan", help="search layouts and recommend the cheapest deployment that meets the SLOs")
    s.add_argument("spec", nargs="?", default=str(example_path()), help=f"spec YAML (default: the built-in {example_path().name})")
    s.add_argument("-o", "--output", metavar="DIR",
                   help="write report.html, summary.md, plan.json and CSVs into DIR (checked before planning; refused if DIR "
                        "is not empty, unless --force; missing parent folders are created)")
    s.add_argument("--force", action="store_true", help="write into a non-empty DIR, replacing the report files")
    s.add_argument("--json", action="store_true", help="print plan.json to stdout")
    s.add_argument("--trace", metavar="FILE",
                   help="size for a request trace (Mooncake JSONL, Azure CSV, BurstGPT CSV, ServeGen chunk or folder): its rate, its "
                        "swings from minute to minute, its burstiness and its prompt lengths replace the spec's workload "
                        "(as workload.trace: FILE would); the report's simulation replays it")
    _backend_arg(s)
    _device_profile_arg(s)
    _price_args(s)
    s.add_argument("--replay", type=int_in("--replay"), default=api.REPLAYED_OPTIONS, metavar="N",
                   help="replay the N cheapest options in the simulator and recommend the cheapest whose replay meets both "
                        f"SLOs ({bounds_help('--replay')}, default {api.REPLAYED_OPTIONS}; 0: the analytic ranking alone)")
    s.add_argument("--no-simulate", action="store_true",
                   help="leave the simulation out of the report (by default -o shows the recommendation's replay)")
    s.add_argument("--requests", type=int_in("--requests"), default=None,
                   help="requests each replay runs: the trace's first N (default "
                        f"{api.CHECK_TRACE_REQUESTS:,}), else N synthetic ones (default {api.CHECK_SYNTHETIC_REQUESTS:,}; "
                        f"{bounds_help('--requests')})")
    s.add_argument("--seed", type=int_in("--seed"), default=0,
                   help=f"seed of the replays' synthetic traffic ({bounds_help('--seed')}, default 0)")
    _shard_args(s, "each replay")
    s.set_defaults(run=_plan)

    s = sub.add_parser("estimate", help="score a layout you fix: TTFT, TPOT, throughput per device and cost")
    s.add_argument("spec", nargs="?", default=str(example_path()), help=f"spec YAML (default: the built-in {example_path().name})")
    _backend_arg(s)
    _price_args(s)
    cli_estimate.add_arguments(s)

    s = sub.add_parser("compare", help="the same workload and SLOs across devices and/or models, with a report")
    s.add_argument("spec", nargs="?", default=str(example_path()), help=f"spec YAML (default: the built-in {example_path().name})")
    s.add_argument("--devices", type=names, default=[], metavar="A,B,...", help="devices, e.g. h200-sxm,b200-sxm,gb200,ascend-910c")
    s.add_argument("--models", type=names, default=[], metavar="A,B,...", help="catalog models, e.g. kimi-k2,deepseek-v3")
    s.add_argument("--backends", type=names, default=[], metavar="A,B,...",
                   help="serving engines NAME[@VERSION] whose measured kernel tables price the operators, e.g. "
                        "sglang,trtllm,vllm: which engine (needs moeplan[measured]); fitted: the fitted kernel models")
    s.add_argument("--keep-devices", action="store_true",
                   help="plan every device on the spec's device count only (by default a device with too few is "
                        "sized: planned on as many whole nodes as the workload needs)")
    _price_args(s)
    _study_args(s)
    s.set_defaults(run=_compare)

    s = sub.add_parser("sweep", help="plan a spec over the product of varied fields (SWEEP.yaml), with a report")
    s.add_argument("sweep", metavar="SWEEP.yaml", help="{spec: PATH or mapping, vary: {field.path: [values]}, y: metric, title: ...}")
    _backend_arg(s)
    _price_args(s)
    _study_args(s)
    s.set_defaults(run=_sweep)

    s = sub.add_parser("app", help="start the Streamlit capacity-planning dashboard")
    s.add_argument("--port", type=int_in("--port"), default=8501, help=f"port to serve on ({bounds_help('--port')}, default 8501)")
    s.add_argument("--address", metavar="HOST", help="address to bind, e.g. 127.0.0.1 (default: Streamlit's, all "
                   "interfaces, or the STREAMLIT_SERVER_ADDRESS environment variable)")
    s.add_argument("--headless", action="store_true", help="do not open a browser")
    s.set_defaults(run=_app)

    s = sub.add_parser("place", help="place experts on an EP group: contiguous, EPLB and the robust ILP, compared")
    s.add_argument("--loads", required=True, metavar="FILE", help="routing statistics to evaluate on, in any format simulate --routing "
                   "reads (logical_count JSON, SGLang CSV or .pt dump, moeplan JSON, TensorRT-LLM folder, per-token JSONL, OLMoE .pkl)")
    s.add_argument("--fit-loads", nargs="+", metavar="FILE", help="windows to place on, each file's windows summed (default: --loads itself, in-sample)")
    s.add_argument("--ep", type=int_in("--ep"), required=True, help="devices in the EP group")
    s.add_argument("--redundant", type=int_in("--redundant"), default=0,
                   help="redundant expert slots over the group: 0 to the experts' count, experts + R must divide by EP")
    s.add_argument("--nodes", type=int_in("--nodes"), default=1, help="nodes the EP group spans, dividing it (default 1)")
    s.add_argument("--time-limit", type=float_in("--time-limit", open_low=True), default=60.0, metavar="S",
                   help=f"seconds the whole command may take, reading included: finite, > 0 and <= {api.MAX_PLACE_TIME_LIMIT_S:g} "
                        "(default 60); when it runs out the ILP keeps its best placement so far (at worst the greedy start)")
    s.add_argument("-o", "--output", metavar="FILE", help="write the ILP placement as SGLang's --init-expert-location JSON "
                   "(new file only, checked before placing; missing parent folders are created)")
    s.add_argument("--model", metavar="NAME|CONFIG", help="catalog model or config.json whose statistics these are: "
                   "each method then reports the bytes a token sends across nodes (cross_node_bytes_per_token), "
                   "priced by where the replicas sit with the model's top-k and node-limited routing")
    s.add_argument("--scaleout-weight", type=float_in("--scaleout-weight"), metavar="W",
                   help="weight of the ILP's cross-node term against load balance (default 0, or derived from --device: "
                        "balance only without either); > 0 needs --model with expert groups (DeepSeek-V3: n_group 8)")
    s.add_argument("--device", metavar="NAME", help="derive --scaleout-weight from this catalog device (h800-sxm: its "
                   "NIC against the routed experts' roofline; needs --model)")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(run=_place)

    s = sub.add_parser("bench-kernels", help="benchmark the reference fp8 MoE kernels on a model's layer shapes (needs torch)")
    s.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where to run (default cpu)")
    s.add_argument("--model", default="kimi-k2", help="catalog model or config.json whose layer shapes to run (default kimi-k2)")
    s.add_argument("--quick", action="store_true", help="fewer, smaller shapes (seconds, not minutes)")
    s.add_argument("-o", "--output", metavar="FILE.csv", help="CSV path (default: kernels-<device>.csv; never overwritten; "
                   "checked before benchmarking; missing parent folders are created)")
    s.set_defaults(run=_bench_kernels)

    s = sub.add_parser("validate", help="reproduce published deployments and print predicted vs published")
    s.add_argument("--deployments", metavar="PATH", help="a deployments YAML (default: the project's copy of the published set)")
    s.add_argument("--json", action="store_true", help="print a JSON list of {id, predicted, published, error, ...}")
    s.add_argument("--kernels", action="store_true",
                   help="also print the kernel-level fits: DeepGEMM rows (with leave-one-out error), DeepEP rows, the GQA "
                        "decode fit (each GPU held out) and the committed kernels_ref CSVs")
    s.add_argument("--measured", metavar="FILE.csv", help="predict TTFT and TPOT of every row of a measured-deployments CSV "
                   "(columns of ../shared/data/measured/aic-silicon-moe.csv) instead, beside the peer's predictions")
    s.add_argument("--backend", metavar="NAME[@VERSION]",
                   help="price every published deployment with this serving engine's measured kernel tables (by default "
                        "each by its own engine, where it names one; fitted: the fitted kernel models); with "
                        "--measured, only the rows it served")
    s.add_argument("-o", "--output", metavar="DIR", help="with --measured: write report.html (predicted against measured, "
                   "by engine and mode, beside the peer's), summary.md and rows.csv into DIR (checked first; refused "
                   "if not empty, unless --force)")
    s.add_argument("--force", action="store_true", help="write into a non-empty DIR, replacing the report files")
    s.set_defaults(run=_validate)

    s = sub.add_parser("simulate", help="replay a request trace through a plan: TTFT/TPOT percentiles, goodput, cost")
    s.add_argument("spec", nargs="?", default=str(example_path()), help=f"spec YAML (default: the built-in {example_path().name})")
    s.add_argument("--plan", metavar="plan.json", help="a plan of this spec (moeplan plan SPEC -o DIR); default: plan the spec now")
    s.add_argument("--trace", metavar="FILE", help="request trace: Mooncake JSONL, Azure CSV, BurstGPT CSV, length CSV (with --rate), ServeGen "
                   "chunk or folder; default: the spec's workload.trace, else Poisson arrivals at the spec's requests_per_s, "
                   "lengths lognormal around its means (its input_cv, output_cv)")
    _backend_arg(s)
    _device_profile_arg(s)
    _price_args(s)
    s.add_argument("--routing", nargs="+", metavar="FILE", help="routing statistics replayed in order (decode, and prefill "
                   "unless --prefill-routing); default: the spec's routing statistics, else uniform expert load")
    s.add_argument("--prefill-routing", nargs="+", metavar="FILE", help="routing statistics of the prefill phase")
    s.add_argument("--requests", type=int_in("--requests"), metavar="N",
                   help=f"the first N requests ({bounds_help('--requests')}; synthetic default 1000)")
    s.add_argument("--subsample", type=number("--subsample"), metavar="F",
                   help="keep each request with probability F in (0, 1] (seeded)")
    s.add_argument("--speedup", type=number("--speedup"), default=1.0, metavar="X",
                   help=f"replay arrivals X times faster ({bounds_help('--speedup')}, default 1)")
    s.add_argument("--rate", type=float_in("--rate"), metavar="R",
                   help=f"requests per second for a length CSV without arrival times ({bounds_help('--rate')})")
    s.add_argument("--seed", type=int_in("--seed"), default=0,
                   help=f"seed of the synthetic trace and the sub-sample ({bounds_help('--seed')}, default 0)")
    s.add_argument("--router", choices=[r.value for r in Router], default=SimConfig.router.value,
                   help=f"how prompts pick a DP rank (default {SimConfig.router.value})")
    s.add_argument("--kv-policy", choices=[k.value for k in KVPolicy], default=SimConfig.kv_policy.value,
                   help="when the KV cache is full: queue new sequences, or preempt and recompute (default queue)")
    s.add_argument("--max-batch", type=int_in("--max-batch"), metavar="B",
                   help=f"running sequences per device ({bounds_help('--max-batch')}; default: the plan's batch per device)")
    s.add_argument("--json", action="store_true", help="print the result as JSON")
    _shard_args(s, "the replay")
    s.set_defaults(run=_simulate)
    return p


def _shard_args(s, what: str) -> None:
    s.add_argument("--shards", type=int_in("--shards"), metavar="N",
                   help=f"cut {what} into N shards ({bounds_help('--shards')}; exact by instance where possible, else by time window)")
    s.add_argument("--shard-by", choices=("auto", "instance", "window"), default="auto", help="how to cut a sharded replay (default auto)")
    s.add_argument("--engine", choices=("local", "ray"), default="local", help="where shards run: local processes (default) or Ray")
    s.add_argument("--address", metavar="ADDR", help="with --engine ray, an existing cluster (ray://host:10001); default: a local instance")


def _study_args(s) -> None:
    s.add_argument("-o", "--output", metavar="DIR", help="write report.html, summary.md and points.csv into DIR (checked "
                   "before the points run; refused if not empty, unless --force; missing parent folders are created)")
    s.add_argument("--force", action="store_true", help="write into a non-empty DIR, replacing the report files")
    s.add_argument("--processes", type=int_in("--processes"),
                   help=f"worker processes ({bounds_help('--processes')}; default: the CPUs available), or the CPUs of a local Ray instance")
    s.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="run the points in local processes (default) or on Ray (needs: pip install 'moeplan[ray]')")
    s.add_argument("--address", metavar="ADDR",
                   help="with --engine ray, an existing cluster (ray://host:10001, host:6379); default: a local instance")
    s.add_argument("--json", action="store_true", help="print the points as JSON")


def _price_args(parser) -> None:
    parser.add_argument("--cloud", metavar="NAME", help="price the devices at this cloud's rows of catalogs/prices.yaml "
                        "(moeplan devices --cloud NAME lists them), as the spec's prices.cloud would; a device the cloud "
                        "does not offer has no price")
    parser.add_argument("--prices", metavar="FILE", help="a price file in catalogs/prices.yaml's format (a row may be a "
                        "bare number) replacing the catalog's, as the spec's prices.file would")


def _device_profile_arg(parser) -> None:
    parser.add_argument("--device-profile", metavar="FILE.csv",
                        help="price the kernels a `moeplan bench-kernels` CSV measured (routed experts, router, "
                             "quantisation, MLA decode) by its fits, on the machine that measured them, replacing the "
                             "spec's cluster.device_profile; each operator's source names the CSV or what it lacks")


def _backend_arg(parser) -> None:
    parser.add_argument("--backend", metavar="NAME[@VERSION]",
                        help="the serving engine (sglang, trtllm, vllm; a version, e.g. sglang@0.5.6) whose measured kernel "
                             "tables price the operators, replacing the spec's serving.engine (needs moeplan[measured]); "
                             "fitted: the fitted kernel models alone; default: the spec's, else the engine whose tables "
                             "cover the model best on the device (the assumptions say which)")


def _plan(args) -> int:
    out_dir = output_files.output_dir(args.output, args.force) if args.output is not None else None
    plan = api.plan(args.spec, trace=args.trace, backend=args.backend, cloud=args.cloud, prices=args.prices,
                    replay=args.replay, requests=args.requests, seed=args.seed, shards=args.shards,
                    shard_by=args.shard_by, engine=args.engine, address=args.address, device_profile=args.device_profile)
    if out_dir is not None:
        output_files.write_files(out_dir, report.plan_report(plan.plan, _report_simulation(args, plan)))
        if plan.recommendation is not None and plan.deployment.serving.engine is not None:
            output_files.write_files(out_dir / "launch", api.launch_files(plan))
    if args.json:
        print_json(plan.to_json())
    else:
        _print_plan(plan, out_dir)
    if plan.recommendation is None:
        print(f"error: {plan.infeasible_field}: {plan.infeasible}", file=sys.stderr)
        return EXIT_NO
    return 0


def _report_simulation(args, plan):
    """The replay the report shows: the one that checked the recommendation, else (--replay 0) the workload's trace
    (its first --requests), else synthetic arrivals at the workload's rate, through the recommendation."""
    if args.no_simulate or plan.recommendation is None:
        return None
    if plan.replay is not None:
        return plan.replay
    requests = args.requests or api.SYNTHETIC_REQUESTS
    try:
        with Console(stderr=True).status(f"simulating {requests:,} requests through the plan"):
            return api.simulate(plan.deployment, plan, requests=requests)
    except InputError as e:
        console().print(f"[yellow]no simulation in the report[/yellow]: {e}")
        return None


def _run_study(args, run, title: str, y: str = "usd_per_million_output_tokens") -> int:
    out_dir = output_files.output_dir(args.output, args.force) if args.output is not None else None
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True, disable=args.json or not sys.stderr.isatty()) as bar:
        task = bar.add_task(title, total=None)
        result = run(lambda done, total: bar.update(task, completed=done, total=total))
    frame = result.to_frame()
    if out_dir is not None:
        output_files.write_files(out_dir, report.sweep_report(result, title, y))
    if args.json:
        print_json(json.loads(frame.to_json(orient="records")))
        return 0
    t = Table(title=title)
    # the whole bill beside the output tokens' share: pools that differ in prefill devices differ there first
    shown = [c for c in list(result.varied) + ["feasible", "devices", "decode_layout", "tpot_s", "ttft_s", "utilization",
                                                 "usd_per_hour", "usd_per_million_output_tokens", "usd_per_device_hour",
                                                 "sized", "reason"]
             if c in frame.columns and frame[c].notna().any()]
    for col in shown:
        t.add_column(col, justify="left" if frame[col].dtype == object else "right")
    notes: dict[str, int] = {}  # a reason is a sentence: below the table, numbered, once per distinct reason
    for _, row in frame.iterrows():
        cells = [_cell(row[c]) for c in shown]
        if "reason" in shown and cells[-1]:
            cells[-1] = f"note {notes.setdefault(cells[-1], len(notes) + 1)}"
        t.add_row(*cells)
    c = console()
    c.print(t)
    for note, i in notes.items():
        c.print(f"note {i}: {note}")
    for warning in result.warnings:
        c.print(f"[yellow]warning[/yellow]: {warning}")
    if out_dir is not None:
        c.print(f"wrote {out_dir / 'report.html'}, summary.md, points.csv")
    return 0


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:,.4g}" if isinstance(value, float) else str(value)


def _compare(args) -> int:
    what = ", ".join(args.devices + args.models + args.backends)
    return _run_study(args, lambda progress: api.compare(args.spec, args.devices, args.models, engine=args.engine,
                                                         processes=args.processes, progress=progress,
                                                         address=args.address, size=not args.keep_devices,
                                                         backends=args.backends, cloud=args.cloud,
                                                         prices=args.prices),
                      f"compare {what}")


def _sweep(args) -> int:
    sweep = load_sweep(args.sweep)
    return _run_study(args, lambda progress: api.sweep(sweep.spec, sweep.vary, engine=args.engine, processes=args.processes,
                                                       progress=progress, address=args.address, backend=args.backend,
                                                       cloud=args.cloud, prices=args.prices), sweep.title, sweep.y)


def _app(args) -> int:
    return app_server.run_forwarding_signals(app_server.app_command(args.port, args.headless, args.address))


def _print_plan(result, out_dir) -> None:
    d, r, c = result.deployment, result.recommendation, console()
    c.print(f"[bold]{d.name}[/bold]: {report.question_text(d)}")
    c.print(f"{result.candidates_scored:,} configurations scored in {result.seconds:.1f} s")
    if r is not None:
        is_moe = d.model.is_moe
        c.print(f"[bold green]Recommendation[/bold green]: {r.mode}, {report.devices_text(d, r) if d.mixed else f'{r.devices} devices'}")
        if r.prefill:
            c.print(f"  prefill: {r.prefill_instances} x [{r.prefill.describe(is_moe)}]")
        c.print(f"  {'decode' if r.prefill else 'instances'}: {r.decode_instances} x [{r.decode.describe(is_moe)}]")
        c.print(f"  TPOT {r.tpot_s * 1e3:.1f} ms, TTFT {r.ttft_s:.2f} s; {r.decode.tokens_per_s_per_device:,.0f} output tokens/s "
                f"per device and {r.decode.tokens_per_s_per_user:,.1f} tokens/s per user at a full batch")
        c.print(f"  load: {report.utilization_text(r)}")
        if r.usd_per_hour is not None:
            c.print(f"  cost: ${r.usd_per_hour:,.2f}/hour; ${r.usd_per_million_input:,.3f} per million input tokens, "
                    f"${r.usd_per_million_output:,.3f} per million output tokens ({report.prices_text(d)})")
            c.print(f"  at capacity: ${r.usd_per_million_input_at_capacity:,.3f} per million input tokens, "
                    f"${r.usd_per_million_output_at_capacity:,.3f} per million output tokens")
        for check in result.replays:
            c.print(f"  replayed: {check.describe()}")
        step = r.decode.perf.steps[0]
        parts = ", ".join(f"{k.replace('_', ' ')} {v * 1e3:.1f}" for k, v in step.breakdown_s.items() if v > 0)
        c.print(f"  decode step {step.time_s * 1e3:.1f} ms: {parts} ms (overlap hides {step.overlap_hidden_s * 1e3:.1f} ms)")
        c.print(f"  memory: {report.sequence_memory_text(d.model, r.decode.perf.memory)}")
    t = Table(title="Pareto frontier of decode layouts: output tokens/s per device vs tokens/s per user")
    for col in ("devices", "layout", "batch/device", "TPOT ms", "tok/s/device", "tok/s/user"):
        t.add_column(col, justify="left" if col == "layout" else "right")
    for f in result.frontier:
        t.add_row(str(f.instance_devices), f.layout.name(d.model.is_moe) + (", MTP" if f.speculation else ""),
                  str(f.work_per_device), f"{f.tpot_s * 1e3:.1f}",
                  f"{f.tokens_per_s_per_device:,.0f}", f"{f.tokens_per_s_per_user:,.1f}")
    c.print(t)
    for a in result.assumptions:
        c.print(f"[dim]assumed: {a}[/dim]")
    if out_dir is not None:
        engine = d.serving.engine
        c.print(f"wrote {out_dir / 'report.html'}, summary.md, plan.json and CSVs"
                + (f"; {out_dir / 'launch'}/ for {engine} (README.md: what to start, in which order)" if engine and r else ""))


_PLACE_OPTIONS = {"ep": "--ep", "redundant": "--redundant", "nodes": "--nodes", "time_limit_s": "--time-limit",
                  "eval_loads": "--loads", "fit_windows": "--fit-loads", "model": "--model",
                  "scaleout_weight": "--scaleout-weight"}


def _spent_s(task) -> float:
    return min(time.perf_counter() - task.fields["started"], task.total)


class _TimeLimitBar(ProgressColumn):
    """The seconds spent since the task's `started` (time.perf_counter()) against its total in seconds."""

    def render(self, task) -> ProgressBar:
        return ProgressBar(total=task.total, completed=_spent_s(task), width=40)


class _TimeLimitText(ProgressColumn):
    def render(self, task) -> Text:
        return Text(f"{_spent_s(task):.0f} s of at most {task.total:g} s")


def _place(args) -> int:
    started = time.perf_counter()  # --time-limit bounds the whole command, reading included
    output = output_files.output_file(args.output) if args.output is not None else None
    eval_loads, eval_tokens = api.read_routing_tokens(args.loads)  # windows summed, in its own shape; per-token sets
    api.check_placement_args(*eval_loads.shape, args.ep, args.redundant, args.nodes, args.time_limit, names=_PLACE_OPTIONS)
    fit = [api.read_routing_tokens(f) for f in args.fit_loads] if args.fit_loads else [(eval_loads, eval_tokens)]
    windows, fit_tokens = [counts for counts, _ in fit], [tokens for _, tokens in fit]
    if args.device is not None and args.model is None:
        raise InputError("--device", "derives the ILP's scale-out weight for a model", "add --model (e.g. deepseek-v3)")
    weight = args.scaleout_weight if args.scaleout_weight is not None else \
        api.placement_scaleout_weight(args.model, args.device) if args.device is not None else 0.0
    # the ILP runs until its bound or the time limit, so the bar is the time limit: the most it can still take
    with Progress(TextColumn("{task.description}"), _TimeLimitBar(), _TimeLimitText(), console=Console(stderr=True),
                  transient=True, disable=args.json or not sys.stderr.isatty()) as bar:
        task = bar.add_task("checking the arguments", total=args.time_limit, started=started)
        try:
            result = api.compare_placements(windows, eval_loads, args.ep, args.redundant, args.nodes,
                                            time_limit_s=max(1e-3, args.time_limit - (time.perf_counter() - started)),
                                            progress=lambda step: bar.update(task, description=step),
                                            model=args.model, scaleout_weight=weight, fit_tokens=fit_tokens,
                                            eval_tokens=eval_tokens)
        except InputError as e:  # the API names its parameters; say the options
            raise InputError(_PLACE_OPTIONS.get(e.field, e.field), e.problem, e.fix) from None
    location = result.pop("expert_location")
    if output is not None:
        output_files.write_atomic(output, json.dumps(location), new=True)
    if args.json:
        print_json(result)
        return 0
    t = Table(title=f"Expert placement on EP{args.ep} + {args.redundant} redundant slots, evaluated on {args.loads}"
                    f"{' (in-sample)' if not args.fit_loads else ''}")
    for col in ("method", "step cost", "mean imbalance", "worst layer", "cross-node MB/token", "seconds"):
        t.add_column(col, justify="left" if col == "method" else "right")
    for name, m in result["methods"].items():
        cross = m["cross_node_bytes_per_token"]
        t.add_row(name, f"{m['step_cost']:.3f}", f"{m['mean_imbalance']:.3f}", f"{m['worst_layer_imbalance']:.3f}",
                  "-" if cross is None else f"{cross / api.units.MB:.3f}", f"{m['seconds']:.1f}")
    c = console()
    c.print(t)
    c.print(f"ILP ({result['solver']}, robust rule '{result['robust']}'): proven lower bound {result['lp_bound']:.4f}, "
            f"gap {result['gap']:.2%}" if result["lp_bound"] is not None else f"ILP ({result['solver']})")
    if result["cross_node_from"] is not None:
        c.print(f"cross-node bytes from {result['cross_node_from']}")
    if output is not None:
        c.print(f"wrote {output} (SGLang --init-expert-location)")
    return 0


def _bench_kernels(args) -> int:
    output = output_files.output_file(args.output if args.output is not None else api.default_kernel_csv(args.device))
    _, csv_text, table = api.bench_kernels(args.device, args.model, args.quick)
    print(table)
    output_files.write_atomic(output, csv_text, new=True)
    print(f"wrote {output}")
    return 0


def _validate(args) -> int:
    if args.measured is not None:
        return cli_measured.run(args)
    if args.output is not None:
        raise InputError("-o", "a report folder is written for --measured FILE.csv", "add --measured, or leave -o out")
    rows = api.validate(args.deployments, args.backend)
    fits = api.kernel_fits() if args.kernels else None
    if args.json:
        out = [r.to_json() for r in rows]
        if fits is not None:
            measured = [{k: v for k, v in m.items() if k != "text"} for m in fits["measured"]]
            out = {"deployments": out, "deepgemm": fits["deepgemm"], "deepep": fits["deepep"], "measured": measured,
                   "gqa_decode": fits["gqa_decode"]}
        print_json(out)
        return 0
    if fits is not None:
        print("DeepGEMM fp8 GEMMs on H800 (deepseek-ai/DeepGEMM README at 55ab91f): published vs fitted, with leave-one-out error")
        print(fits["deepgemm_text"])
        t = Table(title="DeepEP all-to-all (deepseek-ai/DeepEP docs/legacy.md; DeepEP-Ascend: sgl-project/sgl-kernel-npu)")
        for col in ("table", "EP", "metric", "published", "predicted", "error"):
            t.add_column(col, justify="left" if col in ("table", "metric") else "right")
        for r in fits["deepep"]:
            t.add_row(r["table"], str(r["ep"]), r["metric"], f"{r['published']:,.0f}", f"{r['predicted']:,.0f}", f"{r['error']:+.1%}")
        console().print(t)
        gqa = fits["gqa_decode"]
        t = Table(title=f"GQA decode attention where no engine table prices it ({gqa['fitted_on']})")
        for col in ("KV", "launch us", "ns a sequence", "of HBM", "rows", "median |error|", "each GPU held out", "KV read alone"):
            t.add_column(col, justify="left" if col in ("KV", "each GPU held out") else "right")
        for kv, p in gqa["parameters"].items():
            r = gqa["report"][kv]
            t.add_row(kv, f"{p['launch_s'] * 1e6:.2f}", f"{p['per_sequence_s'] * 1e9:.1f}", f"{p['memory_efficiency']:.3f}",
                      f"{r['rows']:,}", f"{r['median_abs_error']:.1%}",
                      ", ".join(f"{g} {e:.1%}" for g, e in r["held_out_by_gpu"].items()), f"{r['kv_read_model_median_abs_error']:.1%}")
        console().print(t)
        for m in fits["measured"]:
            print(f"Measured kernels and the whole MoE layer ({m['summary']['source']}): measured vs fitted, with leave-one-out error")
            print(m["text"])
    t = Table(title="Published deployments reproduced from moeplan's catalogs (error = predicted / published - 1)")
    for col in ("id", "metric", "published", "predicted", "error", "assumed"):
        t.add_column(col, justify="right" if col in ("published", "predicted", "error") else "left")
    for r in rows:
        t.add_row(r.id, r.metric, f"{r.published:,.0f}", "-" if r.predicted is None else f"{r.predicted:,.0f}",
                  f"not modelled: {r.reason}" if r.error is None else f"{r.error:+.1%}", "; ".join(r.assumptions))
    c = console()
    c.print(t)
    s = api.validation_summary(rows)
    c.print(f"{s['modelled']} of {s['scenarios']} scenarios modelled; median |error| {s['median_abs_error']:.1%}, "
            f"max |error| {s['max_abs_error']:.1%}" if s["modelled"] else "no scenario modelled")
    return 0


def _simulate(args) -> int:
    config = SimConfig(router=Router(args.router), kv_policy=KVPolicy(args.kv_policy), max_batch_per_device=args.max_batch)
    result = api.simulate(args.spec, args.plan, args.trace, args.routing, prefill_routing=args.prefill_routing,
                          requests=args.requests, speedup=args.speedup, subsample=args.subsample, rate_per_s=args.rate,
                          seed=args.seed, config=config, shards=args.shards, shard_by=args.shard_by, engine=args.engine,
                          address=args.address, backend=args.backend, cloud=args.cloud, prices=args.prices,
                          device_profile=args.device_profile)
    if args.json:
        print_json(result.to_json())
    else:
        print(result.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
