"""The one error type users see: it names the input field and the fix, and prints as one line.

A hostile value must not make the message itself expensive or long: `excerpt` shows any value as a short,
single-line repr in bounded work (an alias-bombed list, a 5,000-digit integer, a 20,000-character name), and
InputError folds every part onto one line and caps its length.
"""

from __future__ import annotations

import math
import re
import reprlib
import typing

from pydantic import BaseModel, ValidationError

_PART_CHARS = {"field": 160, "problem": 400, "fix": 300}  # longer parts are cut: a message is read, not parsed
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxtuple, _REPR.maxlist, _REPR.maxarray, _REPR.maxdict, _REPR.maxset = 2, 4, 4, 4, 4, 4
_REPR.maxfrozenset, _REPR.maxdeque, _REPR.maxstring, _REPR.maxlong, _REPR.maxother = 4, 4, 48, 24, 48


def one_line(text: str, limit: int) -> str:
    """`text` on one line (control characters become a space), at most `limit` characters."""
    text = _CONTROL.sub(" ", str(text))
    return text if len(text) <= limit else text[:limit - 1] + "…"


def excerpt(value: object) -> str:
    """A short, single-line repr of any value, computed in bounded work: containers show their first few items,
    strings their first characters, and an integer too long to print shows its size."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits"
    try:
        text = _REPR.repr(value)
    except (ValueError, RecursionError, MemoryError):  # a huge integer inside a container, or deep nesting
        text = f"a {type(value).__name__}"
    return one_line(text, 80)


class InputError(ValueError):
    """Bad user input (spec, catalog name, config.json, size): one line naming `field` and the fix."""

    def __init__(self, field: str, problem: str, fix: str = ""):
        self.field = one_line(field, _PART_CHARS["field"])
        self.problem = one_line(problem, _PART_CHARS["problem"])
        self.fix = one_line(fix, _PART_CHARS["fix"])
        super().__init__(f"{self.field}: {self.problem}" + (f"; fix: {self.fix}" if self.fix else ""))


def nearest_names(name: str, choices, n: int = 3) -> str:
    """'did you mean a, b?' text for an unknown catalog name (empty when nothing is close)."""
    import difflib

    close = difflib.get_close_matches(name, list(choices), n=n, cutoff=0.4)
    return f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(sorted(choices))}"


def validation_error(error: ValidationError, where: str, root: type[BaseModel], missing_fix: str = "add it") -> InputError:
    """The first error of validating `root` (a pydantic model) as one InputError naming the field path under `where`."""
    first = error.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    kind = first["type"]
    if kind == "missing":
        return InputError(f"{where}: {loc}", "missing", missing_fix)
    if kind == "extra_forbidden":
        parent = _model_at(first["loc"][:-1], root)
        known = parent.model_fields if parent else {}
        return InputError(f"{where}: {loc}", "unknown field", nearest_names(str(first["loc"][-1]), known))
    got = first.get("input")
    message = first["msg"].removeprefix("Value error, ")
    return InputError(f"{where}: {loc}" if loc else where, f"{message} (got {excerpt(got)})" if loc else message,
                      "fix the value")


def _model_at(loc, root: type[BaseModel]) -> type[BaseModel] | None:
    model = root
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        models = [a for a in typing.get_args(annotation) or (annotation,) if isinstance(a, type) and issubclass(a, BaseModel)]
        if not models:
            return None
        model = models[0]
    return model
