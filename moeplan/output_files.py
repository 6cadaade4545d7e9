"""Writing a report's files (moeplan.report makes them) and other outputs, never losing a user's file:
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

import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Mapping

from hwmodels.errors import InputError

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
