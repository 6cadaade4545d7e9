"""The `moeplan` commands that show the catalogs and check a spec's memory: models, devices, clusters, model, check.
Rich tables for a person, `--json` for scripts (moeplan.cli wires them to their arguments)."""

from __future__ import annotations

import json
import sys

from rich.console import Console
from rich.table import Table

from moeplan import api
from moeplan.api import InputError, units

EXIT_NO = 1


def console() -> Console:
    # Piped output gets a wide table rather than rich's 80-column default.
    return Console() if sys.stdout.isatty() else Console(width=160)


def print_json(obj) -> None:
    print(json.dumps(obj, indent=2, default=float))


def models(args) -> int:
    rows = api.models()
    if args.json:
        print_json(rows)
        return 0
    t = Table(title="Catalog models (catalogs/models.yaml)")
    for col in ("name", "model", "total", "active", "experts", "layers", "attention", "weights", "format", "KV/token"):
        t.add_column(col, justify="right" if col in ("total", "active", "experts", "layers", "weights", "KV/token") else "left")
    for r in rows:
        experts = f"{r['experts']} (top-{r['experts_per_token']})" if r["experts"] else "dense"
        t.add_row(r["name"], r["display_name"], units.format_count(r["total_params"]), units.format_count(r["active_params"]), experts,
                  str(r["layers"]), r["attention"].upper(), units.format_bytes(r["weight_bytes"]), r["precision"], f"{r['kv_bytes_per_token']:,.0f} B")
    console().print(t)
    return 0


def devices(args) -> int:
    rows = api.devices(args.cloud, args.prices)
    if args.json:
        print_json(rows)
        return 0
    priced_by = f"cloud {args.cloud}" if args.cloud else "the default rows"
    t = Table(title=f"Catalog devices (dense peaks; * = unverified, from a third-party summary; prices: {priced_by})")
    for col in ("name", "bf16 TFLOP/s", "fp8", "fp4", "int8", "HBM GB", "HBM TB/s", "scale-up GB/s", "scale-out GB/s", "USD/h",
                "price: basis, date"):
        t.add_column(col, justify="left" if col in ("name", "price: basis, date") else "right")
    for r in rows:
        unverified = set(r["unverified"])

        def cell(value, key, scale, fmt="{:,.0f}"):
            if value is None:
                return "-"
            return fmt.format(value / scale) + ("*" if key in unverified else "")

        peaks = r["peak_flops_per_s"]
        t.add_row(
            r["name"],
            *(cell(peaks.get(p), f"peak_flops_per_s.{p}", units.TFLOPS) for p in ("bf16", "fp8", "fp4", "int8")),
            cell(r["hbm_bytes"], "hbm_bytes", units.GB, "{:,.1f}"),
            cell(r["hbm_bytes_per_s"], "hbm_bytes_per_s", 1e12, "{:.2f}"),
            cell(r["scaleup_bytes_per_s"], "scaleup_bytes_per_s", units.GB),
            cell(r["scaleout_bytes_per_s"], "scaleout_bytes_per_s", units.GB),
            "no price" if r["price_usd_per_hour"] is None else f"{r['price_usd_per_hour']:.2f}",
            _price_cell(r),
        )
    console().print(t)
    for r in rows:  # every price with its kind, date and source, and every missing one said (with the search, if any)
        if r["price_usd_per_hour"] is None:
            searched = f"; {r['price_searched']}" if r.get("price_searched") else ""
            print(f"price {r['name']}: {r['price_source']}{searched}")
        else:
            print(f"price {r['name']}: {r['price_usd_per_hour']:.2f} USD/h ({r['price_basis']}, "
                  f"{r['price_date'] or 'undated'}): {r['price_source']}")
    clouds = ", ".join(c["name"] for c in api.clouds())
    print(f"Sources: catalogs/devices.yaml and catalogs/prices.yaml (moeplan devices --json lists each figure's source); "
          f"other price rows: --cloud {{{clouds}}}, or --prices FILE.")
    return 0


def _price_cell(r: dict) -> str:
    if r["price_usd_per_hour"] is not None:
        return f"{r['price_basis']}, {r['price_date'] or 'undated'}"
    if r.get("price_searched"):
        return "none found: set prices." + r["name"]
    return "none published: set prices." + r["name"]


def clusters(args) -> int:
    rows = api.clusters()
    if args.json:
        print_json(rows)
        return 0
    t = Table(title="Cluster units (catalogs/clusters.yaml): a cluster is N units plus the scale-out fabric")
    for col in ("name", "device", "devices", "per node", "scale-up domain", "scale-up fabric", "scale-out fabric"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["name"], r["device"], str(r["devices"]), str(r["devices_per_node"]), str(r["scaleup_domain_devices"]),
                  r["scaleup_fabric"], r["scaleout_fabric"])
    console().print(t)
    return 0


def model(args) -> int:
    overrides = {}
    for item in args.precision:
        part, sep, fmt = item.partition("=")
        if not sep:
            raise InputError("--precision", f"expected PART=FORMAT, got {item!r}", "e.g. --precision routed_experts=nvfp4")
        overrides[part.strip()] = fmt.strip()
    s = api.model_summary(args.name, overrides, args.context)
    if args.json:
        print_json(s)
        return 0
    c = console()
    c.print(f"[bold]{s['model']}[/bold] ({s['model_type']}, {s['attention'].upper()} attention, "
            f"{s['experts']} experts top-{s['experts_per_token']}, {s['layers']} layers of which {s['moe_layers']} MoE)")
    c.print(f"parameters: {units.format_count(s['total_params'])} total, {units.format_count(s['active_params'])} active per token"
            + (f" (+{units.format_count(s['mtp_params'])} in the MTP module, not counted)" if s["mtp_params"] else ""))
    c.print(f"precision: {s['precision_source']}")
    t = Table(title="Weights by part")
    for col in ("part", "params", "format", "bytes"):
        t.add_column(col, justify="left" if col in ("part", "format") else "right")
    for part, n in s["params_by_part"].items():
        if n:
            t.add_row(part, units.format_count(n), s["precision"][part], units.format_bytes(s["weight_bytes_by_part"][part]))
    t.add_row("total", units.format_count(s["total_params"]), "", units.format_bytes(s["weight_bytes"]))
    c.print(t)
    kinds = ", ".join(f"{n} {kind}" for kind, n in s["attention_layers"].items())
    c.print(f"KV cache: {s['kv_bytes_per_token']:,.0f} bytes per token ({s['precision']['kv_cache']}; attention layers: {kinds})")
    if s["window_bytes_per_sequence"] or s["linear_state_bytes_per_sequence"]:
        c.print(f"per sequence, whatever its context: sliding windows {units.format_bytes(s['window_bytes_per_sequence'])}, "
                f"linear-attention state {units.format_bytes(s['linear_state_bytes_per_sequence'])} (fp32)")
    if s["vision_params"]:
        c.print(f"vision tower: {units.format_count(s['vision_params'])} parameters (not counted above); a 1024 x 1024 image "
                f"adds {s['image_tokens_per_1024px_image']:,} prompt tokens and "
                f"{s['vision_flops_per_1024px_image'] / 1e12:,.1f} TFLOP of encoder work")
    c.print(f"FLOPs per token at {s['context_tokens']:,} tokens of context: prefill {s['prefill_flops_per_token'] / 1e9:,.1f} GFLOP, "
            f"decode {s['decode_flops_per_token'] / 1e9:,.1f} GFLOP")
    return 0


def check(args) -> int:
    report = api.check(args.spec)
    d = report.deployment
    rows = report.layouts if args.all else report.layouts[:8]
    if args.json:
        print_json(check_json(report))
    else:
        c = console()
        named = "" if d.name.endswith(d.cluster.describe()) else f"[bold]{d.name}[/bold]: "  # an unnamed spec's name says it all
        c.print(f"{named}{d.model_display_name} ({d.precision.label()}) on {d.cluster.describe()}, "
                f"workload {d.workload.input_tokens:,} in + {d.workload.output_tokens:,} out tokens")
        t = Table(title=f"Memory per device by layout (HBM x {d.serving.hbm_utilization:g} usable = {units.format_bytes(d.cluster.device.hbm_bytes * d.serving.hbm_utilization)})")
        for col in ("layout", "weights/device", "workspace", "KV room/device", "KV/sequence", "sequences", "fits"):
            t.add_column(col, justify="left" if col == "layout" else "right")
        for m in rows:
            t.add_row(m.layout_name, units.format_bytes(m.weight_bytes), units.format_bytes(m.workspace_bytes),
                      units.format_bytes(m.kv_capacity_bytes) if m.kv_capacity_bytes > 0 else
                      f"none: {units.format_bytes(-m.kv_capacity_bytes)} short",
                      units.format_bytes(m.kv_bytes_per_sequence), f"{m.concurrent_sequences:,}", "yes" if m.fits else "no")
        c.print(t)
        if len(report.layouts) > len(rows):
            c.print(f"({len(report.layouts) - len(rows)} more layouts: --all)")
        unverified = d.cluster.device.unverified_fields()
        if unverified:
            c.print(f"[yellow]unverified figures for {d.cluster.device.name} (third-party summaries): {', '.join(unverified)}[/yellow]")
        if report.fits:  # otherwise the error line below is the verdict, said once
            print(report.headline())
    if not report.fits:
        print(f"error: cluster: {report.headline()}; fix: {report.fix()}", file=sys.stderr)
        return EXIT_NO
    return 0


def check_json(report) -> dict:
    d = report.deployment

    def layout(m):
        return {"layout": m.layout_name, "tp": m.layout.tp, "dp": m.layout.dp, "pp": m.layout.pp, "ep": m.layout.ep,
                "weight_bytes": m.weight_bytes, "weights_by_part": m.weights_by_part, "workspace_bytes": m.workspace_bytes,
                "usable_bytes": m.usable_bytes, "kv_capacity_bytes": m.kv_capacity_bytes,
                "kv_bytes_per_sequence": m.kv_bytes_per_sequence, "concurrent_sequences": m.concurrent_sequences, "fits": m.fits}

    return {
        "name": d.name,
        "fits": report.fits,
        "headline": report.headline(),
        "fix": None if report.fits else report.fix(),
        "model": d.model.name,
        "precision": d.precision.label(),
        "model_weight_bytes": report.model_weight_bytes,
        "devices": d.cluster.num_devices,
        "device": d.cluster.device.name,
        "cluster_hbm_bytes": d.cluster.hbm_bytes_total,
        "context_tokens": d.workload.context_tokens,
        "unverified": list(d.cluster.device.unverified_fields()),
        "best": layout(report.best) if report.fits else None,
        "layouts": [layout(m) for m in report.layouts],
    }
