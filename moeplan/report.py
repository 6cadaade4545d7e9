"""Reports on disk: report.html (self-contained, interactive plotly), summary.md, plan.json and a CSV per table.

Writing is the only I/O here and it never loses a user's file:
- Destinations are checked before any work (`output_dir` for a report folder, `output_file` for one new
  file): a folder must be new or empty unless `force`, a file must not exist, a path through a file, a
  symlink to a file and a place nothing can be created in (/proc, a read-only mount) are refused. Missing
  parent folders are created, the same for every command (the check creates and removes a probe where they
  would go, so it leaves nothing behind).
- Nothing is half-written. A new folder is staged whole beside its target (`.NAME.moeplan-PID-XXXXXXXX`) and
  renamed into place; a file is written beside its target and renamed (or linked, for a new file) onto it.
  Into an existing folder (empty, or `force`) the report's set of files is staged whole inside it (the same
  staging name), a commit record is written into the stage, then the files are renamed over their
  namesakes: a kill before the record leaves the old set, after it the stage is complete and the next run
  on that folder finishes the renames (the new set). A manifest (`.moeplan-files.json`) records the set a
  report wrote, so a replacement also removes the last report's files the new set lacks; other files are
  never touched.
- Staging left by a killed run is cleaned up by the next run on the same target: only these staging names,
  only when stale (their process is gone, or nothing in them changed for STALE_AFTER_S), never anything else.
  Stale staging folders of earlier versions (`.NAME.XXXXXXXX` holding only report files) go the same way.
- Every OSError is one InputError line naming the option (`-o`).

Test hook: MOEPLAN_TEST_SLOW_WRITE_S=S (read only here, by the tests) pauses S seconds (at most 30) halfway
through each staged file and before each rename of a commit, so a test can kill a run while it writes.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

import pandas as pd
import plotly.graph_objects as go

from hwmodels import units
from hwmodels.attention_kinds import Kind
from hwmodels.errors import InputError
from moeplan import display, figures, tables
from planner.plan import Plan
from planner.plan_json import plan_to_json

STALE_AFTER_S = 60.0  # staging untouched this long is a killed run's, even if its process id is alive again
_COMMIT = ".commit"  # the record in a complete stage: {"install": [file names], "remove": [file names]}
# in a report folder, the names its last report wrote: --force removes those the new set does not write (a
# simulation.json left from a run with a simulation beside a plan without one would say what no longer holds)
_MANIFEST = ".moeplan-files.json"
_LEGACY_STAGE = re.compile(r"^[a-z0-9_]{8}$")  # the random tail of staging names before they carried "moeplan"
_REPORT_FILE = re.compile(r"^[a-z_]+\.(html|md|json|csv)$")


def _fail(option: str, what: str, error: OSError | ValueError) -> InputError:
    reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    return InputError(option, f"cannot write {what}: {reason}", "give a path in a folder you can write")


def _stage_prefix(name: str) -> str:
    return f".{name}.moeplan-{os.getpid()}-"


def output_dir(path: str | Path, force: bool, option: str = "-o") -> Path:
    """Check a report folder before any work: new, empty, or `force`; never a file or a symlink to one; a
    staging entry can be made where it will be staged (in it, or in its nearest existing ancestor; missing
    parents are created when writing). Cleans the stale staging of this target (module docstring). Returns it,
    resolved."""
    if not str(path):
        raise InputError(option, "is empty", "give a folder for the report")
    out = Path(path)
    try:
        if out.is_symlink() and not out.is_dir():
            raise InputError(option, f"'{out}' is a symlink that does not lead to a folder", "give a new or empty directory")
        if out.exists() and not out.is_dir():
            raise InputError(option, f"'{out}' exists and is not a directory", "give a new or empty directory")
        out = out.resolve()
        _check_creatable(out, option)
        clean_stale(out)
        if out.is_dir() and any(out.iterdir()) and not force:
            raise InputError(option, f"'{out}' is not empty",
                             "give a new or empty directory, or --force to replace the report files there")
    except (OSError, ValueError) as e:
        if isinstance(e, InputError):
            raise
        raise _fail(option, f"'{path}'", e) from None
    return out


def output_file(path: str | Path, option: str = "-o") -> Path:
    """Check a new file's path before any work: nothing there (not even a dangling symlink), its missing
    parents creatable. Cleans this target's stale staging. Returns it, absolute."""
    if not str(path):
        raise InputError(option, "is empty", "give a new file name")
    target = Path(path)
    try:
        if os.path.lexists(target):
            raise InputError(option, f"'{target}' exists", "give a new file name")
        target = target.absolute()
        _check_creatable(target, option)
        clean_stale(target)
    except (OSError, ValueError) as e:
        if isinstance(e, InputError):
            raise
        raise _fail(option, f"'{path}'", e) from None
    return target


def _check_creatable(target: Path, option: str) -> None:
    """Where target will be staged (in it, an existing folder; else its nearest existing ancestor) must be a
    folder in which an entry can be made: tried by making and removing a staging-named probe there, which no
    permission bit or mount flag can fool."""
    ancestor = target if target.is_dir() else target.parent
    while not os.path.lexists(ancestor) and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(option, f"'{ancestor}' is not a directory", "give a path that does not pass through a file")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=_stage_prefix(target.name), dir=ancestor))
    except OSError as e:
        raise _fail(option, f"in '{ancestor}'", e) from None


# ------------------------------------------------------------------------------------------- staging

def _stage_of(entry: str, name: str) -> tuple[int | None, bool] | None:
    """(writer's pid or None for a legacy name, whether legacy) if `entry` is a staging name of target `name`."""
    prefix = f".{name}."
    if not entry.startswith(prefix):
        return None
    tail = entry[len(prefix):]
    m = re.fullmatch(r"moeplan-(\d{1,10})-[a-z0-9_]{8}", tail)
    if m:
        return int(m[1]), False
    return (None, True) if _LEGACY_STAGE.fullmatch(tail) else None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True
    return True


def _last_change(path: Path) -> float:
    st = path.lstat()
    newest = st.st_mtime
    if path.is_dir() and not path.is_symlink():
        for child in path.iterdir():
            newest = max(newest, child.lstat().st_mtime)
    return newest


def _stale(path: Path, pid: int | None) -> bool:
    old = time.time() - _last_change(path) > STALE_AFTER_S
    return old if pid is None else old or not _alive(pid)


def clean_stale(target: Path) -> list[Path]:
    """Remove (or, for a complete stage, finish) the stale staging of `target`: its staging names beside it and
    inside it (a report folder), and inside it the per-file temporaries of earlier versions. Returns what it
    handled. Anything else, and anything not stale, is left alone."""
    handled = []
    name = target.name
    entries = []
    for folder in (target.parent, target) if target.is_dir() and not target.is_symlink() else (target.parent,):
        try:
            entries += list(os.scandir(folder))
        except OSError:
            continue
    for entry in entries:
        found = _stage_of(entry.name, name)
        if found is None:
            continue
        pid, legacy = found
        path = Path(entry.path)
        try:
            if not _stale(path, pid):
                continue
            if entry.is_dir(follow_symlinks=False):
                if legacy and not all(_REPORT_FILE.match(c.name) and c.is_file(follow_symlinks=False)
                                      for c in os.scandir(path)):
                    continue  # an old-style name holding anything but report files: not provably ours
                if (path / _COMMIT).is_file() and target.is_dir():
                    _install(path, target)
                shutil.rmtree(path)
            elif entry.is_file(follow_symlinks=False) and not legacy:
                path.unlink()
            else:
                continue
            handled.append(path)
        except OSError:
            continue  # someone else's, or gone meanwhile: not ours to insist on
    if target.is_dir() and not target.is_symlink():  # earlier versions' per-file temporaries inside a report folder
        for entry in os.scandir(target):
            m = re.fullmatch(r"\.([a-z_]+\.(?:html|md|json|csv))\.[a-z0-9_]{8}", entry.name)
            path = Path(entry.path)
            try:
                if m and entry.is_file(follow_symlinks=False) and _stale(path, None):
                    path.unlink()
                    handled.append(path)
            except OSError:
                continue
    return handled


def _slow_write_s() -> float:
    try:
        value = float(os.environ.get("MOEPLAN_TEST_SLOW_WRITE_S", "0"))
    except ValueError:
        return 0.0
    return min(30.0, value) if value > 0 else 0.0


def _write_file(path: Path, text: str, mode: str = "x") -> None:
    """Write and flush to disk (halfway pause under the test hook)."""
    data = text.encode("utf-8")
    with open(path, mode + "b") as f:
        pause = _slow_write_s()
        if pause:
            f.write(data[:len(data) // 2])
            f.flush()
            time.sleep(pause)
            f.write(data[len(data) // 2:])
        else:
            f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(path, 0o644)  # not the staging's private mode


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: str | Path, text: str, new: bool = False, option: str = "-o") -> Path:
    """Write beside the target and rename over it (`new`: link it there, which fails rather than replace a
    file that appeared meanwhile): a crash never leaves a half-written file. Missing parents are created.
    Any OSError is an InputError naming `option`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=_stage_prefix(path.name), dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        try:
            _write_file(tmp, text, "w")
            if new:
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    raise InputError(option, f"'{path}' appeared while this ran", "give a new file name") from None
                except OSError:  # a file system without hard links
                    if os.path.lexists(path):
                        raise InputError(option, f"'{path}' appeared while this ran", "give a new file name") from None
                    os.replace(tmp, path)
            else:
                os.replace(tmp, path)
        finally:
            if os.path.lexists(tmp):
                tmp.unlink()
    except OSError as e:
        raise _fail(option, f"'{path}'", e) from None
    return path


def write_files(out: str | Path, files: Mapping[str, str], option: str = "-o") -> list[Path]:
    """Write `files` (name -> text) into folder `out` as one set. A folder that does not exist yet is staged
    whole beside it and renamed into place; an existing one (empty, or --force) gets the set staged whole in
    it, a commit record, then each file renamed over its namesake (module docstring: a kill leaves the old
    set, or a complete stage the next run installs). Other files in `out` are never touched."""
    out = Path(out).resolve()
    names = list(files)
    if any("/" in n or n.startswith(".") or not n for n in names):
        raise ValueError(f"report file names must be plain: {names}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fresh = not out.exists()
        if not fresh:
            clash = [n for n in names if (out / n).is_dir() and not (out / n).is_symlink()]
            if clash:
                raise InputError(option, f"'{out / clash[0]}' is a directory, where the report writes a file",
                                 "move it, or give another output directory")
        stage = Path(tempfile.mkdtemp(prefix=_stage_prefix(out.name), dir=out.parent if fresh else out))
        committed = False
        try:
            for name, text in files.items():
                _write_file(stage / name, text)
            if fresh:
                _write_file(stage / _MANIFEST, json.dumps({"files": names}))
                stage.chmod(0o755)
                os.replace(stage, out)
            else:
                remove = [n for n in _last_set(out) if n not in files]
                _write_file(stage / (_COMMIT + ".tmp"), json.dumps({"install": names, "remove": remove}))
                os.replace(stage / (_COMMIT + ".tmp"), stage / _COMMIT)
                _fsync_dir(stage)
                committed = True  # from here on the new set is the outcome, now or on the next run
                _install(stage, out)
        finally:
            if not committed or not (stage / _COMMIT).exists():  # else the next run on `out` finishes it
                shutil.rmtree(stage, ignore_errors=True)
    except OSError as e:
        raise _fail(option, f"the report into '{out}'", e) from None
    return [out / name for name in names]


def _last_set(out: Path) -> list[str]:
    """The report files the folder's last report wrote, by its manifest ([] without a readable one)."""
    try:
        with open(out / _MANIFEST, "rb") as f:
            names = json.loads(f.read(2**20))["files"]
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return []
    return [n for n in names if isinstance(n, str) and _REPORT_FILE.match(n)] if isinstance(names, list) else []


def _install(stage: Path, out: Path) -> None:
    """Rename the files a complete stage's commit record lists into `out` (those still in the stage: a run
    cut short may have moved some), remove the last report's files the new set lacks, record the new set in
    the manifest, then forget the record. Every step can be done again, so a kill anywhere leaves it to the
    next run."""
    record = json.loads((stage / _COMMIT).read_text(encoding="utf-8"))
    names = record["install"]
    for name in names:
        if not isinstance(name, str) or "/" in name or name.startswith(".") or not (stage / name).is_file():
            continue
        pause = _slow_write_s()
        if pause:
            time.sleep(pause)
        os.replace(stage / name, out / name)
    for name in record.get("remove", []):
        if isinstance(name, str) and _REPORT_FILE.match(name) and name not in names and (out / name).is_file():
            (out / name).unlink()
    manifest = stage / (_MANIFEST + ".tmp")
    manifest.unlink(missing_ok=True)
    _write_file(manifest, json.dumps({"files": [n for n in names if isinstance(n, str)]}))
    os.replace(manifest, out / _MANIFEST)
    _fsync_dir(out)
    (stage / _COMMIT).unlink()


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
                      f"({p.layout.name(d.model.is_moe)}" + (f", batch {p.batch_per_device} per device)" if p.batch_per_device
                                                              else ")") for p in plan.pools)
    points = [("Answer", f"serve {d.model_display_name} {r.mode} on {r.devices} x {d.cluster.device.name}: {pools}. "
                         f"It meets the SLOs at p{slo.percentile:g}: TPOT {r.tpot_s * 1e3:.1f} ms (SLO {slo.tpot_s * 1e3:g} ms), "
                         f"TTFT {r.ttft_s:.2f} s (SLO {slo.ttft_s:g} s).")]
    if r.usd_per_million_output is None:
        points.append(("Cost", f"no price for {d.cluster.device.name}: set prices.{d.cluster.device.name} in the spec."))
    else:
        points.append(("Cost", f"${r.usd_per_million_output:,.3f} per million output tokens "
                               f"(${r.usd_per_million_input:,.3f} per million input tokens; ${r.usd_per_hour:,.2f} per hour "
                               f"for {r.devices} devices at ${d.price.usd_per_device_hour:,.2f} per device-hour)."))
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
        (f"; ${r.usd_per_million_output:,.3f} per million output tokens, ${r.usd_per_million_input:,.3f} per million input "
         f"tokens (${r.usd_per_million_output_at_capacity:,.3f} and ${r.usd_per_million_input_at_capacity:,.3f} at capacity)")
    return (f"{r.mode}, {r.devices} x {d.cluster.device.name}: TPOT {r.tpot_s * 1e3:.1f} ms, TTFT {r.ttft_s:.2f} s, "
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
