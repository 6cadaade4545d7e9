"""`moeplan estimate SPEC --layout L [--batch N] [--prefill L --decode L] [--json]`: score a layout the user fixes."""

from __future__ import annotations

import sys

from hwmodels import catalog
from moeplan import api, report
from moeplan.cli_args import bounds_help, int_in
from moeplan.cli_show import EXIT_NO, console, print_json

LAYOUT_HELP = ("attention=tpNxdpM,experts=epN[,redundant=R][,overlap=on][,pp=P][,cp=C][,afd=on]: e.g. "
               "attention=dp16,experts=ep16 (experts=tpN: each expert split N ways; pp=P: P pipeline stages of that "
               "layout, decode only; cp=C: each prompt split over C attention groups, prefill only; afd=on: the "
               "experts' EP group on devices of their own, decode only)")


def add_arguments(s) -> None:
    s.add_argument("--layout", metavar="LAYOUT", help=f"the aggregated instance's layout, {LAYOUT_HELP}")
    s.add_argument("--prefill", metavar="LAYOUT", help="the prefill pool's layout (with --decode: disaggregated)")
    s.add_argument("--decode", metavar="LAYOUT", help="the decode pool's layout (with --prefill)")
    s.add_argument("--batch", type=int_in("--batch"), metavar="N",
                   help="decode (or aggregated) sequences per device (default: the cheapest the KV cache admits that "
                        f"meets the SLOs; {bounds_help('--batch')})")
    s.add_argument("--prefill-tokens", type=int_in("--prefill-tokens"), metavar="N",
                   help=f"prompt tokens per prefill device per step (default: the cheapest; {bounds_help('--prefill-tokens')})")
    s.add_argument("--mtp", choices=("on", "off"), help="decode with the model's MTP drafts or without (default: "
                   "whichever is cheaper; a model with MTP modules, disaggregated)")
    s.add_argument("--trace", metavar="FILE", help="size for a request trace's traffic, as `plan --trace` does")
    s.add_argument("--json", action="store_true", help="print the estimate as JSON")
    s.set_defaults(run=run)


def run(args) -> int:
    e = api.estimate(args.spec, layout=args.layout, batch=args.batch, prefill=args.prefill, decode=args.decode,
                     prefill_tokens=args.prefill_tokens, trace=args.trace, backend=args.backend, cloud=args.cloud,
                     prices=args.prices, mtp=None if args.mtp is None else args.mtp == "on")
    doc = api.estimate_json(e)
    if args.json:
        print_json(doc)
    else:
        _print(e, doc)
    if e.plan is None:
        print(f"error: {e.field}: {e.why}", file=sys.stderr)
        return EXIT_NO
    return 0


def _print(e, doc: dict) -> None:
    c, d = console(), e.deployment
    c.print(f"[bold]{d.name}[/bold]: the layout {', '.join(f'{k} {v}' for k, v in doc['layouts'].items())}")
    r = e.plan.recommendation if e.plan else None
    if r is None:
        c.print(f"[bold red]cannot serve[/bold red]: {e.why}")
        return
    is_moe, p = d.model.is_moe, f"p{d.slo.percentile:g}"
    verdict = "[bold green]meets the SLOs[/bold green]" if e.meets_slo else f"[bold yellow]does not meet the spec[/bold yellow]: {e.why}"
    c.print(verdict)
    if r.prefill:
        c.print(f"  prefill: {r.prefill_instances} x [{r.prefill.describe(is_moe)}]")
    c.print(f"  {'decode' if r.prefill else 'instances'}: {r.decode_instances} x [{r.decode.describe(is_moe)}], "
            f"{r.devices:,} devices (the cluster has {d.cluster.num_devices:,})")
    c.print(f"  {p} TTFT {r.ttft_s:,.2f} s (SLO {d.slo.ttft_s:g} s), {p} TPOT {r.tpot_s * 1e3:,.1f} ms "
            f"(SLO {d.slo.tpot_s * 1e3:g} ms) at {r.requests_per_s:,.3g} requests/s")
    c.print(f"  {r.decode.tokens_per_s_per_device:,.0f} output tokens/s per device at a full batch, "
            f"{doc['output_tokens_per_s_per_device_at_offered_load']:,.1f} at the offered load "
            f"({r.utilization:.0%} of capacity)")
    if r.usd_per_hour is None:
        name = d.cluster.device.name
        c.print(f"  cost: {catalog.unpriced_text(name)}: prices.{name} sets one")
    else:
        c.print(f"  cost: ${r.usd_per_hour:,.2f}/hour; ${r.usd_per_million_input:,.3f} per million input tokens, "
                f"${r.usd_per_million_output:,.3f} per million output tokens ({report.prices_text(d)})")
