"""What a reader reads: one file or folder, on disk (a path) or in memory (uploaded bytes), with a size limit.

A `Source` is one of:
- a path: a file, or a folder (a ServeGen model folder, a TensorRT-LLM expert-statistic folder);
- the bytes of one file, with the name it goes by (its suffix and name tell formats apart);
- a mapping {file name: bytes}: a folder in memory, e.g. a ServeGen chunk's `chunk-N-trace.csv` and
  `chunk-N-dataset.json`, or a TensorRT-LLM folder's `meta_info.json` and `rank*.safetensors`.
Every public loader of hwmodels.ingest takes `str | Path | bytes | Mapping[str, bytes]` (plus `name=` for
bytes) and goes through `Source.of`, so files and uploads are read by the same code.

Sizes: no file is read past `max_bytes` (MAX_FILE_BYTES unless the caller passes less: the dashboard passes
its upload limit). A larger file is one InputError naming it, its size and the limit, after reading at most
max_bytes + 1 bytes of it.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from hwmodels.errors import InputError
from hwmodels.units import GiB, KiB, MiB

MAX_FILE_BYTES = 2 * GiB  # per file: the largest public traces are a few hundred MB; a typo'd path to a disk image is not
_CHUNK_BYTES = 64 * MiB  # reads of a file whose size the OS does not report
IN_MEMORY_NAME = "in-memory file"  # what bytes passed without a name are called
IN_MEMORY_FOLDER = "in-memory folder"  # likewise for a mapping of file names to bytes

SourceLike = str | os.PathLike | bytes | Mapping[str, bytes]


@dataclass(frozen=True)
class Source:
    """A file or folder to read. Exactly one of `path` (on disk) and `data` (in memory: bytes of one file, or
    {file name: bytes} of a folder) is set. name: what error messages and trace sources call it (str(path) on
    disk). max_bytes: the most bytes read from any one file. parent: the in-memory folder a file came from
    (where its siblings are), None otherwise."""

    name: str
    path: Path | None = None
    data: bytes | Mapping[str, bytes] | None = None
    max_bytes: int = MAX_FILE_BYTES
    parent: "Source | None" = None

    @classmethod
    def of(cls, source: "SourceLike | Source", *, name: str | None = None, max_bytes: int | None = None) -> "Source":
        """A Source from a path (str or Path), bytes or a {file name: bytes} mapping, or a Source (its limit
        lowered to max_bytes where that is given and smaller)."""
        if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1):
            raise InputError("max_bytes", f"is {max_bytes!r}", "a whole number of bytes >= 1, or None for MAX_FILE_BYTES")
        limit = MAX_FILE_BYTES if max_bytes is None else max_bytes
        if isinstance(source, Source):
            return source if max_bytes is None or source.max_bytes <= limit else _with_limit(source, limit)
        if isinstance(source, (bytes, bytearray, memoryview)):
            return cls(name or IN_MEMORY_NAME, data=bytes(source), max_bytes=limit)
        if isinstance(source, Mapping):
            for key, value in source.items():
                if not isinstance(key, str) or not isinstance(value, (bytes, bytearray, memoryview)):
                    raise InputError(name or IN_MEMORY_FOLDER, f"entry {key!r} is not file name: bytes",
                                     "pass {file name: the file's bytes}")
            return cls(name or IN_MEMORY_FOLDER, data={k: bytes(v) for k, v in source.items()}, max_bytes=limit)
        if isinstance(source, (str, os.PathLike)):
            path = Path(source)
            return cls(name or str(path), path=path, max_bytes=limit)
        raise InputError(name or "source", f"is a {type(source).__name__}",
                         "pass a path, the bytes of a file (with name=), or {file name: bytes} for a folder")

    # ------------------------------------------------------------------------------------- what it is

    @property
    def filename(self) -> str:
        """The last part of the name: what suffix and name patterns are read from."""
        return self.path.name if self.path is not None else PurePosixPath(self.name).name

    @property
    def suffix(self) -> str:
        """The file name's suffix, lower case (".jsonl")."""
        return PurePosixPath(self.filename).suffix.lower()

    def is_dir(self) -> bool:
        return self.path.is_dir() if self.path is not None else isinstance(self.data, Mapping)

    def is_file(self) -> bool:
        return self.path.is_file() if self.path is not None else isinstance(self.data, bytes)

    # ------------------------------------------------------------------------------------- reading

    def read_bytes(self, what: str = "file", fix: str | None = None) -> bytes:
        """The whole file, refused over max_bytes. what / fix: the expected content and the fix, for the
        error when the file cannot be read at all ("cannot read {what}: ...")."""
        fix = fix or f"pass a readable {what}"
        if self.path is not None:
            try:
                with self.path.open("rb") as f:
                    data = self._read_file(f)
            except OSError as e:
                raise InputError(self.name, f"cannot read {what}: {e}", fix) from e
            return data
        if isinstance(self.data, Mapping):
            raise InputError(self.name, f"cannot read {what}: is a folder of {len(self.data)} files", fix)
        if self.data is None:
            raise InputError(self.name, f"cannot read {what}: no such file", fix)
        if len(self.data) > self.max_bytes:
            self._too_big(len(self.data))
        return self.data

    def _read_file(self, f) -> bytes:
        """At most max_bytes + 1 bytes of an open file (refused when over max_bytes). One read of the size the OS
        reports, plus one byte to see the end: f.read(n) allocates n bytes first, so asking for max_bytes + 1
        (2 GiB) for every small file would reserve 2 GiB each time. A file that grew, or whose size the OS does
        not know (a pipe), is read on in chunks up to the limit."""
        size = os.fstat(f.fileno()).st_size
        want = min(size, self.max_bytes) + 1
        data = f.read(want)
        if len(data) == want and want <= self.max_bytes:
            parts, total = [data], len(data)
            while total <= self.max_bytes and (chunk := f.read(min(_CHUNK_BYTES, self.max_bytes + 1 - total))):
                parts.append(chunk)
                total += len(chunk)
            data = b"".join(parts)
        if len(data) > self.max_bytes:
            self._too_big(max(size, len(data)))
        return data

    def read_text(self, what: str) -> str:
        """The whole file as UTF-8 text (a leading byte-order mark dropped); `what` names the expected content."""
        data = self.read_bytes(what, f"pass a readable UTF-8 {what} file")
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise InputError(self.name, f"cannot read {what}: {e}", f"pass a readable UTF-8 {what} file") from e

    def _too_big(self, size: int) -> None:
        fix = ("use the moeplan command on the full file (it reads files up to "
               f"{_size(MAX_FILE_BYTES)})" if self.max_bytes < MAX_FILE_BYTES else "split it, or read a smaller file")
        raise InputError(self.name, f"is {size:,} bytes, over the {_size(self.max_bytes)} limit for one file", fix)

    # ------------------------------------------------------------------------------------- folders

    def list(self, pattern: str = "*") -> list[str]:
        """Names of the files in this folder matching a glob pattern, sorted; [] for a file or a missing folder."""
        if self.path is not None:
            names = [p.name for p in self.path.iterdir()] if self.path.is_dir() else []
        else:
            names = list(self.data) if isinstance(self.data, Mapping) else []
        return sorted(n for n in names if fnmatch.fnmatchcase(n, pattern))

    def child(self, name: str) -> "Source":
        """The file `name` inside this folder (it may not exist: reading it says so)."""
        if self.path is not None:
            return Source(str(self.path / name), path=self.path / name, max_bytes=self.max_bytes)
        files = self.data if isinstance(self.data, Mapping) else {}
        return Source(f"{self.name}/{name}", data=files.get(name), max_bytes=self.max_bytes, parent=self)

    def sibling(self, name: str) -> "Source":
        """The file `name` in the same folder (this file itself for its own name). A single in-memory file has
        no folder: its siblings are refused."""
        if name == self.filename:
            return self
        if self.path is not None:
            sibling = self.path.with_name(name)
            return Source(str(sibling), path=sibling, max_bytes=self.max_bytes)
        if self.parent is not None:
            return self.parent.child(name)
        raise InputError(self.name, f"is read without the files beside it, and needs {name}",
                         "pass the folder (in memory: a mapping {file name: bytes} of every file)")


def _with_limit(source: Source, limit: int) -> Source:
    parent = None if source.parent is None else _with_limit(source.parent, limit)
    return Source(source.name, source.path, source.data, limit, parent)


def _size(n_bytes: int) -> str:
    """2 GiB, 50 MiB, 1.5 KiB, 10 bytes."""
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n_bytes >= size:
            return f"{n_bytes / size:.3g} {unit}"
    return f"{n_bytes} bytes"
