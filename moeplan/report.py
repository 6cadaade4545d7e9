"""Reports on disk: report.html (self-contained, interactive plotly), summary.md, plan.json and a CSV per table.

Writing is the only I/O here and it never loses a user's file: the output directory must be new or
empty unless `force`, every file is written beside its target and renamed over it (a crash leaves
either the old file or the new one, never half of one), and a new directory is staged whole and
renamed into place.
"""

from __future__ import annotations

import html
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

import pandas as pd
import plotly.graph_objects as go

from hwmodels.errors import InputError
from moeplan import figures, tables
from planner.plan import Plan
from planner.plan_json import plan_to_json

def output_dir(path: str | Path, force: bool) -> Path:
    """Check an output directory: new, empty, or `force`; never a file."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise InputError("-o", f"'{out}' exists and is not a directory", "give a new or empty directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise InputError("-o", f"'{out}' is not empty", "give a new or empty directory, or --force to replace the report files there")
    return out


def write_atomic(path: Path, text: str) -> None:
    """Write beside the target and rename over it: a crash never leaves a half-written file."""
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.", delete=False) as f:
        f.write(text)
        tmp = Path(f.name)
    tmp.chmod(0o644)  # the temporary file's private mode is not what a report should carry
    os.replace(tmp, path)


def write_files(out: Path, files: Mapping[str, str]) -> list[Path]:
    """Write `files` (name -> text) into `out`. A directory that does not exist yet (or is empty) is staged
    whole beside it and renamed into place; an existing one (--force) gets each file replaced atomically."""
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    if not out.exists() or not any(out.iterdir()):
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            for name, text in files.items():
                (stage / name).write_text(text, encoding="utf-8")
            stage.chmod(0o755)
            if out.exists():
                out.rmdir()
            os.replace(stage, out)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    else:
        for name, text in files.items():
            write_atomic(out / name, text)
    return [out / name for name in files]


# ------------------------------------------------------------------------------------------- html

def _figure_html(fig: go.Figure, first: bool) -> str:
    # the first chart carries plotly.js inline, so the report opens offline and alone
    return fig.to_html(full_html=False, include_plotlyjs=True if first else False, config={"displaylogo": False})


def _table_html(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, border=0, classes="table", float_format=lambda v: f"{v:,.4g}", na_rep="")


def html_page(title: str, subtitle: str, sections: list[tuple[str, str, go.Figure | None, pd.DataFrame | None]]) -> str:
    """sections: (heading, paragraph, figure or None, table or None), in order."""
    body, first = [], True
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
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; color: #222; }}
h1 {{ margin-bottom: 0.2em; }} .sub {{ color: #555; margin-top: 0; }}
section {{ margin: 2em 0; }} .table {{ border-collapse: collapse; font-size: 0.85em; }}
.table td, .table th {{ padding: 0.25em 0.6em; border-bottom: 1px solid #ddd; text-align: right; }}
</style></head>
<body><h1>{html.escape(title)}</h1><p class="sub">{html.escape(subtitle)}</p>
{''.join(body)}
</body></html>
"""


def markdown_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "(none)\n"
    cells = frame.map(lambda v: f"{v:,.4g}" if isinstance(v, float) else ("" if v is None else str(v)))
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(row) + " |" for row in cells.astype(str).values.tolist()]
    return "\n".join(lines) + "\n"


def json_text(doc: Any) -> str:
    return json.dumps(doc, indent=1, default=float)


# ------------------------------------------------------------------------------------------- reports

def plan_report(plan: Plan, simulation=None) -> dict[str, str]:
    """report.html, summary.md, plan.json and one CSV per table of a Plan (and of its simulation, when given:
    anything with `to_frame(name)`, `figure(name)` and `tables`)."""
    d = plan.deployment
    subtitle = question_text(d)
    frames = {name: tables.TABLES[name](plan) for name in ("recommendation", "frontier", "breakdown", "memory", "placement", "cost")}
    headline = headline_text(plan)
    figure = {name: make(plan) for name, make in figures.FIGURES.items()}
    sections = [
        ("Recommendation", headline, None, frames["recommendation"]),
        ("Pareto frontier", "Decode layouts no other beats on both throughput per device and speed per user; "
         "the star is the recommendation.", figure["frontier"], frames["frontier"]),
        ("Step time by component", "One step of each role, per component, summed over layers; two-batch overlap's "
         "saving is the negative bar.", figure["breakdown"], None),
        ("Memory per device", "The busiest device of each role.", figure["memory"], frames["memory"]),
    ]
    if not frames["placement"].empty:
        sections.append(("Expert placement", "Each device's share of routed tokens per MoE layer over the mean device.",
                         figure["placement"], None))
    if simulation is not None:
        for name in simulation.figures:
            sections.append((simulation.figure_titles[name], "", simulation.figure(name), None))
    sections.append(("Cost per million tokens", "", None, frames["cost"]))
    sections.append(("Assumptions", "; ".join(plan.assumptions), None, None))
    files = {"report.html": html_page(d.name, subtitle, sections),
             "summary.md": _summary_md(d.name, subtitle, headline, frames, plan.assumptions, simulation),
             "plan.json": json_text(plan_to_json(plan))}
    files |= {f"{name}.csv": frame.to_csv(index=False) for name, frame in frames.items()}
    if simulation is not None:
        files |= {f"simulation_{name}.csv": simulation.to_frame(name).to_csv(index=False) for name in simulation.tables}
        files["simulation.json"] = json_text(simulation.to_json())
    return files


def question_text(d) -> str:
    """What a Deployment asks: model, hardware, workload and SLOs, in one line."""
    w = d.workload
    rate = f" at {w.requests_per_s:g} requests/s" if w.requests_per_s else ""
    return (f"{d.model_display_name} ({d.precision.label()}) on up to {d.cluster.describe()}; {w.input_tokens:,} in + "
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
        f"; ${r.usd_per_million_output:,.3f} per million output tokens, ${r.usd_per_million_input:,.3f} per million input tokens"
    return (f"{r.mode}, {r.devices} x {d.cluster.device.name}: TPOT {r.tpot_s * 1e3:.1f} ms, TTFT {r.ttft_s:.2f} s, "
            f"{r.decode.tokens_per_s_per_device:,.0f} output tokens/s per device{cost}")


def _summary_md(title, subtitle, headline, frames, assumptions, simulation) -> str:
    parts = [f"# {title}\n\n{subtitle}\n\n**{headline}**\n"]
    for name in ("recommendation", "frontier", "cost"):
        parts.append(f"## {name.capitalize()}\n\n" + markdown_table(frames[name]))
    if simulation is not None:
        parts.append("## Simulation\n\n" + markdown_table(simulation.to_frame("summary")))
    parts.append("## Assumptions\n\n" + "".join(f"- {a}\n" for a in assumptions))
    return "\n".join(parts)


def sweep_report(sweep, title: str, y: str = "usd_per_million_output_tokens") -> dict[str, str]:
    """report.html, summary.md and points.csv of a moeplan.study.Sweep."""
    frame = sweep.to_frame()
    subtitle = f"{len(frame)} points varying {', '.join(sweep.varied)}"
    sections = [(y.replace("_", " "), "", sweep.figure(y=y), None), ("Points", "", None, frame)]
    return {"report.html": html_page(title, subtitle, sections),
            "summary.md": f"# {title}\n\n{subtitle}\n\n" + markdown_table(frame),
            "points.csv": frame.to_csv(index=False)}
