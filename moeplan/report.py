"""Reports: report.html (self-contained, interactive plotly), summary.md, plan.json and a CSV per table, as
{file name: text} that moeplan.output_files writes (atomically, never losing a user's file)."""

from __future__ import annotations

import html
import json
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from hwmodels import catalog, units
from hwmodels.attention_kinds import Kind
from moeplan import display, figures, tables
from planner.plan import Plan
from planner.plan_json import plan_to_json


# ------------------------------------------------------------------------------------------- html

def _figure_html(fig: go.Figure, first: bool) -> str:
    # the first chart carries plotly.js inline, so the report opens offline and alone
    return fig.to_html(full_html=False, include_plotlyjs=True if first else False, config={"displaylogo": False})


def _table_html(frame: pd.DataFrame) -> str:
    """A table in words and display units (moeplan.display), numbers right-aligned, in a wrapper that scrolls
    sideways inside itself should it ever be wider than the page."""
    text = display.text_frame(frame)
    numeric = {display.label(c) for c in frame.columns if frame[c].dtype.kind in "iuf"}
    cell = {c: '<td class="num">' if c in numeric else "<td>" for c in text.columns}
    head = "".join(f'<th{" class=num" if c in numeric else ""}>{html.escape(c)}</th>' for c in text.columns)
    rows = "".join("<tr>" + "".join(f"{cell[c]}{html.escape(v)}</td>" for c, v in zip(text.columns, row)) + "</tr>"
                   for row in text.itertuples(index=False))
    return f'<div class="table-wrap"><table class="table"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>'


def html_page(title: str, subtitle: str, sections: list[tuple[str, str, go.Figure | None, pd.DataFrame | None]],
              lead: str = "") -> str:
    """sections: (heading, paragraph, figure or None, table or None), in order, after `lead` (HTML: the summary)."""
    body, first = [lead] if lead else [], True
    for heading, text, fig, frame in sections:
        body.append(f"<section><h2>{html.escape(heading)}</h2>")
        if text:
            body.append(f"<p>{html.escape(text)}</p>")
        if fig is not None:
            body.append(_figure_html(fig, first))
            first = False
        if frame is not None and not frame.empty:
            body.append(_table_html(frame))
        body.append("</section>")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }}
h1 {{ margin-bottom: 0.2em; }} .sub {{ color: #555; margin-top: 0; }}
section {{ margin: 2em 0; }} .summary {{ background: #f4f8f4; border-left: 4px solid #2e7d32; padding: 0.5em 1.2em; }}
.summary.none {{ background: #fdf3f2; border-left-color: #c62828; }} .summary p {{ margin: 0.5em 0; }}
.table-wrap {{ max-width: 100%; overflow-x: auto; }}
.table {{ border-collapse: collapse; font-size: 0.85em; }}
.table td, .table th {{ padding: 0.25em 0.6em; border-bottom: 1px solid #ddd; text-align: left; vertical-align: top;
  overflow-wrap: break-word; }}
.table .num {{ text-align: right; }} .table td.num {{ white-space: nowrap; }}
</style></head>
<body><h1>{html.escape(title)}</h1><p class="sub">{html.escape(subtitle)}</p>
{''.join(body)}
</body></html>
"""


def markdown_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "(none)\n"
    cells = display.text_frame(frame)
    lines = ["| " + " | ".join(cells.columns) + " |", "|" + "---|" * len(cells.columns)]
    lines += ["| " + " | ".join(v.replace("|", "\\|") for v in row) + " |" for row in cells.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def json_text(doc: Any) -> str:
    return json.dumps(doc, indent=1, default=float)


# ------------------------------------------------------------------------------------------- reports

def plan_report(plan: Plan, simulation=None) -> dict[str, str]:
    """report.html, summary.md, plan.json and one CSV per table of a Plan (and of its simulation, when given:
    anything with `to_frame(name)`, `figure(name)` and `tables`). The report leads with the summary (the
    answer, its cost, its utilisation, what was assumed), then the charts, then the tables of the options."""
    d = plan.deployment
    subtitle = question_text(d)
    frames = {name: tables.TABLES[name](plan) for name in ("recommendation", "replays", "frontier", "breakdown", "memory",
                                                          "placement", "cost")}
    figure = {name: make(plan) for name, make in figures.FIGURES.items()}
    sections = []
    if plan.frontier:
        sections.append(("Pareto frontier", "Decode layouts no other beats on both throughput per device and speed per "
                         "user; the star is the recommendation.", figure["frontier"], frames["frontier"]))
    if plan.recommendation is not None:
        sections += [
            ("Step time by component", "One step of each role, per component, summed over layers, each on its own "
             "scale; two-batch overlap's saving is the negative bar.", figure["breakdown"], None),
            ("Memory per device", "The busiest device of each role.", figure["memory"], frames["memory"]),
            ("Where attention, experts and KV sit", "Device by layer: the attention DP rank each device serves in "
             "the layers its pipeline stage runs; its stage, TP rank, expert load and KV in the hover (plan.json "
             "placement.attention and placement.kv).", figure["device_map"], None),
        ]
    if not frames["placement"].empty:
        sections.append(("Expert placement", "Each device's share of routed tokens per MoE layer over the mean device.",
                         figure["placement"], None))
    if simulation is not None:
        for name in simulation.figures:
            sections.append((simulation.figure_titles[name], "", simulation.figure(name), None))
    if plan.recommendation is not None:
        sections.append(("Options", "The recommendation (rank 0) and the next-cheapest deployments that meet the SLOs.",
                         None, display.options(frames["recommendation"])))
        sections.append(("Cost per million tokens", "", None, display.quantities(frames["cost"])))
    if plan.replays:
        sections.append(("Checked in the simulator", "The cheapest options replayed before one was recommended: planned "
                         "against replayed at the SLO percentile.", None, frames["replays"]))
    files = {"report.html": html_page(d.name, subtitle, sections, lead=_summary_html(plan)),
             "summary.md": _summary_md(d.name, subtitle, plan, frames, simulation),
             "plan.json": json_text(plan_to_json(plan))}
    files |= {f"{name}.csv": frame.to_csv(index=False) for name, frame in frames.items()}
    if simulation is not None:
        files |= {f"simulation_{name}.csv": simulation.to_frame(name).to_csv(index=False) for name in simulation.tables}
        files["simulation.json"] = json_text(simulation.to_json())
    return files


def _replays_sentence(plan: Plan) -> str:
    """Planned against replayed for each option the search replayed, the recommendation's last."""
    p = f"p{plan.deployment.slo.percentile:g}"
    return (f"replayed in the simulator before it was recommended ({plan.replays[0].traffic}), at {p}: "
            + "; ".join(c.describe() for c in plan.replays) + ".")


def summary_points(plan: Plan) -> list[tuple[str, str]]:
    """The report's lead as (topic, sentence): the answer, its cost, its utilisation and what was assumed."""
    r, d = plan.recommendation, plan.deployment
    slo = d.slo
    if r is None:
        checked = [("Checked", _replays_sentence(plan))] if plan.replays else []
        return [("Answer", f"{verdict(plan)}: {plan.infeasible}."), *checked, ("Assumed", "; ".join(plan.assumptions) + ".")]
    pools = "; ".join(f"{p.instances} x {p.role} instance{'s' * (p.instances > 1)} of {p.instance_devices} devices "
                      f"({p.layout.name(d.model.is_moe)}" + (f", batch {p.batch_per_device} per {p.layout.batch_device})" if p.batch_per_device
                                                              else ")") for p in plan.pools)
    points = [("Answer", f"serve {d.model_display_name} {r.mode} on {devices_text(d, r)}: {pools}. "
                         f"It meets the SLOs at p{slo.percentile:g}: TPOT {r.tpot_s * 1e3:.1f} ms (SLO {slo.tpot_s * 1e3:g} ms), "
                         f"TTFT {r.ttft_s:.2f} s (SLO {slo.ttft_s:g} s).")]
    if r.usd_per_million_output is None:
        unpriced = next(c.device.name for c in (d.cluster, d.prefill_cluster) if c and not _priced(d, c))
        points.append(("Cost", f"{catalog.unpriced_text(unpriced)}: set prices.{unpriced} in the spec."))
    else:
        points.append(("Cost", f"${r.usd_per_million_output:,.3f} per million output tokens "
                               f"(${r.usd_per_million_input:,.3f} per million input tokens; ${r.usd_per_hour:,.2f} per hour "
                               f"for {r.devices} devices at " + " and ".join(
                                   f"${d.price_of(role).usd_per_device_hour:,.2f} per {d.cluster_of(role).device.name}-hour"
                                   for role in (["prefill", "decode"] if d.mixed else ["decode"])) + ")."))
    points.append(("Utilisation", _utilisation_sentence(plan)))
    points.append(("Memory per sequence", sequence_memory_text(d.model, r.decode.perf.memory) + "."))
    if plan.replays:
        points.append(("Checked", _replays_sentence(plan)))
    points.append(("Assumed", "; ".join(plan.assumptions) + "."))  # what was asked is the line above the summary
    return points


def sequence_memory_text(arch, mem) -> str:
    """What one decoding sequence keeps on a device: its KV cache at the planned context, by attention kind, and
    the fixed recurrent state of linear-attention layers (hwmodels.memory.DeviceMemory)."""
    kinds = ", ".join(f"{len(arch.layers_of(k))} {k.value}" for k in Kind if arch.layers_of(k))
    text = (f"KV cache {units.format_bytes(mem.kv_bytes_per_sequence)} per sequence per device at {mem.context_tokens:,} "
            f"tokens (attention layers: {kinds})")
    if arch.linear is not None:
        text += (f"; linear-attention state {units.format_bytes(mem.linear_state_bytes_per_sequence)} per sequence per "
                 f"device, fixed whatever the context ({len(arch.layers_of(Kind.LINEAR))} {arch.linear.family} layers, fp32)")
    return text


def _utilisation_sentence(plan: Plan) -> str:
    """How much of the decode capacity the offered traffic uses, and what a full deployment would cost."""
    r = plan.recommendation
    if plan.deployment.workload.requests_per_s is None:
        return (f"no traffic volume given: the plan sizes one deployment, full at {r.capacity_requests_per_s:,.3g} "
                "requests/s.")
    prefill = "" if r.prefill_utilization is None else f" and {r.prefill_utilization:.0%} of the prefill capacity"
    at_capacity = r.usd_per_million_output_at_capacity
    cost = "" if at_capacity is None else f", where a million output tokens would cost ${at_capacity:,.3f}"
    return (f"the offered {r.requests_per_s:,.3g} requests/s use {r.decode_utilization:.0%} of the decode capacity{prefill}; "
            f"the deployment is full at {r.capacity_requests_per_s:,.3g} requests/s{cost}.")


def _summary_html(plan: Plan) -> str:
    kind = "summary" if plan.recommendation is not None else "summary none"
    lines = "".join(f"<p><strong>{html.escape(topic)}</strong>: {html.escape(sentence)}</p>"
                    for topic, sentence in summary_points(plan))
    return f'<section class="{kind}"><h2>Summary</h2>{lines}</section>'


def devices_text(d, r) -> str:
    """'16 x h200-sxm', or each pool's devices where prefill runs on other hardware."""
    if not d.mixed:
        return f"{r.devices} x {d.cluster.device.name}"
    return f"{r.prefill_devices} x {d.prefill_cluster.device.name} (prefill) + {r.decode_devices} x {d.cluster.device.name} (decode)"


def prices_text(d) -> str:
    """Each pool's device and the price it is billed at ('h200-sxm at $2.30/h (...)'; two where prefill has its own)."""
    return "; ".join(f"{d.cluster_of(role).device.name} at {d.price_of(role).describe()}"
                     for role in (("prefill", "decode") if d.mixed else ("decode",)))


def _priced(d, cluster) -> bool:
    return (d.prefill_price if cluster is d.prefill_cluster else d.price) is not None


def question_text(d) -> str:
    """What a Deployment asks: model, hardware, workload and SLOs, in one line."""
    w = d.workload
    rate = f" at {w.requests_per_s:g} requests/s" if w.requests_per_s else ""
    where = d.cluster.describe() + (f" (decode), prefill on up to {d.prefill_cluster.describe()}" if d.mixed else "")
    return (f"{d.model_display_name} ({d.precision.label()}) on up to {where}; {w.input_tokens:,} in + "
            f"{w.output_tokens:,} out tokens{rate}; SLO TTFT {d.slo.ttft_s:g} s, TPOT {d.slo.tpot_s * 1e3:g} ms "
            f"(p{d.slo.percentile:g})")


# what stopped the search, by the spec field its explanation says to change: a model that does not fit the
# memory is not an SLO miss
VERDICTS = {"cluster.devices": "Does not fit", "cluster": "Does not fit", "workload.max_input_tokens": "Does not fit",
            "slo.tpot_s": "No deployment meets the SLOs", "slo.ttft_s": "No deployment meets the SLOs",
            "workload.requests_per_s": "Too few devices for the traffic", "cluster.units": "Too few devices"}


def verdict(plan: Plan) -> str:
    """'Does not fit', 'No deployment meets the SLOs', ...: why nothing was recommended, in a few words."""
    return VERDICTS.get(plan.infeasible_field, "No deployment")


def headline_text(plan: Plan) -> str:
    r, d = plan.recommendation, plan.deployment
    if r is None:
        return f"{verdict(plan)}: {plan.infeasible}"
    cost = "" if r.usd_per_million_output is None else \
        (f"; ${r.usd_per_million_output:,.3f} per million output tokens, ${r.usd_per_million_input:,.3f} per million input "
         f"tokens (${r.usd_per_million_output_at_capacity:,.3f} and ${r.usd_per_million_input_at_capacity:,.3f} at capacity)")
    return (f"{r.mode}, {devices_text(d, r)}: TPOT {r.tpot_s * 1e3:.1f} ms, TTFT {r.ttft_s:.2f} s, "
            f"{r.decode.tokens_per_s_per_device:,.0f} output tokens/s per device; {utilization_text(r)}{cost}")


def utilization_text(r) -> str:
    """Why a cost can look high: how much of the deployment the offered traffic uses."""
    return (f"{r.requests_per_s:,.3g} requests/s use {r.utilization:.0%} of its capacity "
            f"({r.capacity_requests_per_s:,.3g} requests/s)")


def _summary_md(title, subtitle, plan, frames, simulation) -> str:
    parts = [f"# {title}\n\n{subtitle}\n\n" + "".join(f"- **{topic}**: {sentence}\n" for topic, sentence in summary_points(plan))]
    if plan.recommendation is not None:
        parts.append("## Options\n\n" + markdown_table(display.options(frames["recommendation"])))
    if plan.frontier:
        parts.append("## Frontier\n\n" + markdown_table(frames["frontier"]))
    if plan.recommendation is not None:
        parts.append("## Cost\n\n" + markdown_table(display.quantities(frames["cost"])))
    if plan.replays:
        parts.append("## Checked in the simulator\n\n" + markdown_table(frames["replays"]))
    if simulation is not None:
        parts.append("## Simulation\n\n" + markdown_table(simulation.to_frame("summary")))
    return "\n".join(parts)


def sweep_report(sweep, title: str, y: str = "usd_per_million_output_tokens") -> dict[str, str]:
    """report.html, summary.md and points.csv of a moeplan.study.Sweep."""
    frame = sweep.to_frame()
    subtitle = f"{len(frame)} points varying {', '.join(sweep.varied)}"
    warnings = " ".join(f"Warning: {w}." for w in sweep.warnings)
    sections = [(display.label(y), warnings, sweep.figure(y=y), None), ("Points", "", None, frame)]
    return {"report.html": html_page(title, subtitle, sections),
            "summary.md": f"# {title}\n\n{subtitle}\n\n" + "".join(f"> **Warning**: {w}\n\n" for w in sweep.warnings)
                          + markdown_table(frame),
            "points.csv": frame.to_csv(index=False)}
