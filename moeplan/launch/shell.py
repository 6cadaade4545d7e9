"""Launch commands as argv lists (what launch.json records and tests parse) and as the shell scripts that run
them: literal words quoted, `${VAR}` words left for the shell to fill in (a node's rank, its instance's head)."""

from __future__ import annotations

import re
import shlex

_VARIABLE = re.compile(r"\$\{[A-Z_][A-Z0-9_]*(?::[-?][^}]*)?\}")


def word(token: str) -> str:
    """One shell word: variables expand inside double quotes, everything else is quoted literally."""
    if _VARIABLE.search(token):
        return '"' + token.replace("\\", "\\\\").replace('"', '\\"').replace("`", "\\`") + '"'
    return shlex.quote(token)


def script(comment: list[str], argv: list[str], defaults: dict[str, str] | None = None) -> str:
    """A bash script that runs `argv`, its `comment` lines first, each of `defaults` settable from the
    environment."""
    lines = ["#!/usr/bin/env bash", *(f"# {c}" for c in comment), "set -euo pipefail"]
    lines += [f': "${{{name}:={value}}}"' for name, value in (defaults or {}).items()]
    lines.append("exec " + " \\\n  ".join(_grouped(argv)))
    return "\n".join(lines) + "\n"


def _grouped(argv: list[str]) -> list[str]:
    """The words, an option and its values on one line."""
    out: list[str] = []
    for token in argv:
        if out and not token.startswith("-") and out[-1].split(" ")[0].startswith("-"):
            out[-1] += " " + word(token)
        else:
            out.append(word(token))
    return out


def argv_of(text: str) -> list[str]:
    """The argv of a script's exec line, variables left as written (for tests and readers)."""
    body = text.split("exec ", 1)[1].replace("\\\n", " ")
    return shlex.split(body)
