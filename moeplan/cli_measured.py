"""`moeplan validate --measured FILE.csv [--json]`: measured deployments predicted, with the peer's error beside."""

from __future__ import annotations

from rich.table import Table

from moeplan import api, output_files
from moeplan.cli_show import console, print_json

_GROUPS = ("model", "system", "engine", "mode")


def _pct(value) -> str:
    return "" if value is None else f"{value:.1%}"


def run(args) -> int:
    out_dir = output_files.output_dir(args.output, args.force) if args.output is not None else None
    rows = api.validate_measured(args.measured, args.backend)
    if out_dir is not None:
        output_files.write_files(out_dir, api.measured_report(args.measured, rows, (None, *_GROUPS)))
    if args.json:
        print_json([r.to_json() for r in rows])
        return 0
    c = console()
    for by in (None, *_GROUPS):
        t = Table(title=f"{args.measured}: |predicted / measured - 1| by {by or 'all rows'} "
                        "(moeplan on the rows it models; peer = AIConfigurator 0.12 on the rows it estimated)")
        for col in ("group", "rows", "modelled", "coverage", "TTFT median", "MAPE", "p90", "peer TTFT median",
                    "TPOT median", "MAPE ", "p90 ", "peer TPOT median", "peer rows"):
            t.add_column(col, justify="left" if col == "group" else "right")
        for g in api.measured_summary(rows, by):
            t.add_row(str(g["group"]), str(g["rows"]), str(g["modelled"]), _pct(g["coverage"]),
                      _pct(g["moeplan_ttft_median"]), _pct(g["moeplan_ttft_mape"]), _pct(g["moeplan_ttft_p90"]),
                      _pct(g["peer_ttft_median"]), _pct(g["moeplan_tpot_median"]), _pct(g["moeplan_tpot_mape"]),
                      _pct(g["moeplan_tpot_p90"]), _pct(g["peer_tpot_median"]), str(g["peer_modelled"]))
        c.print(t)
    reasons: dict[str, int] = {}
    for r in rows:
        if r.reason:
            reasons[r.reason] = reasons.get(r.reason, 0) + 1
    for reason, count in sorted(reasons.items(), key=lambda kv: -kv[1]):
        c.print(f"not modelled ({count} rows): {reason}")
    if out_dir is not None:
        c.print(f"wrote {out_dir / 'report.html'}, summary.md and rows.csv")
    return 0
