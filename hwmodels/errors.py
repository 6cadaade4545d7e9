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
# C0 and C1 controls (NEL and CSI included) and the Unicode line and paragraph separators: each would break the line
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
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
    """The first error of validating `root` (a pydantic model) as one InputError naming the field path under `where`,
    with a fix made from the error's kind, the field's bounds and the field's description (its help text)."""
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
    fix = _fix(kind, first.get("ctx") or {}, _field_at(first["loc"], root), missing_fix)
    return InputError(f"{where}: {loc}" if loc else where, f"{message} (got {excerpt(got)})" if loc else message, fix)


_WHOLE_KINDS = {"int_type", "int_parsing", "int_from_float", "int_parsing_size"}
_NUMBER_KINDS = {"float_type", "float_parsing", "finite_number"}
_BOUND_KINDS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}
_SHAPES = {  # pydantic error type -> what to give instead
    "string_type": "give text", "bool_type": "give true or false", "bool_parsing": "give true or false",
    "dict_type": "give a mapping of names to values", "model_type": "give a mapping of its fields",
    "model_attributes_type": "give a mapping of its fields", "list_type": "give a list, e.g. [a, b]",
}


def _fix(kind: str, ctx: dict, field, missing_fix: str) -> str:
    """What to write instead, from the pydantic error `kind`, its `ctx` and the field's FieldInfo (or None)."""
    help_text = f": {field.description}" if field is not None and field.description else ""
    if kind in _WHOLE_KINDS or kind in _NUMBER_KINDS or kind in _BOUND_KINDS:
        whole = kind in _WHOLE_KINDS or (kind not in _NUMBER_KINDS and _is_whole(field))
        bounds = _bounds(field, ctx, whole)
        unquoted = ", unquoted" if kind in ("int_type", "float_type") else ""
        return f"give a {'whole number' if whole else 'finite number'}{bounds}{unquoted}{help_text}"
    if kind == "literal_error":
        return f"use {ctx.get('expected', 'one of the listed values')}{help_text}"
    if kind == "string_too_long":
        return f"shorten it to at most {ctx.get('max_length'):,} characters{help_text}"
    if kind == "too_long":
        return f"give at most {ctx.get('max_length'):,} items{help_text}"
    if kind in _SHAPES:
        return _SHAPES[kind] + help_text
    if help_text:
        return f"give {help_text[2:]}"
    see = re.search(r"\(see ([^)]*)\)", missing_fix)
    return f"see {see.group(1)}" if see else "check it against the field's description"


def _is_whole(field) -> bool:
    annotation = getattr(field, "annotation", None)
    args = {typing.get_args(a)[0] if typing.get_origin(a) is typing.Annotated else a
            for a in typing.get_args(annotation) or (annotation,)}
    return int in args and float not in args


def _bounds(field, ctx: dict, whole: bool) -> str:
    """' from 1 to 100,000', ' > 0 and <= 86,400' or '' (bounds from the error's ctx, else the field's metadata)."""
    limits = dict(ctx)
    for item in getattr(field, "metadata", ()):
        for key in ("gt", "ge", "lt", "le"):
            if getattr(item, key, None) is not None:
                limits.setdefault(key, getattr(item, key))
    def show(v) -> str:
        return f"{int(v):,}" if float(v).is_integer() and abs(v) < 1e15 else f"{v:g}"

    low = limits.get("ge", limits["gt"] + 1 if whole and "gt" in limits else None)
    high = limits.get("le", limits["lt"] - 1 if whole and "lt" in limits else None)
    if whole and low is not None and high is not None:
        return f" from {show(int(low))} to {show(int(high))}"
    parts = []
    if whole and low is not None:
        parts.append(f">= {show(int(low))}")
    elif "gt" in limits or "ge" in limits:
        parts.append(f"> {show(limits['gt'])}" if "gt" in limits else f">= {show(limits['ge'])}")
    if whole and high is not None:
        parts.append(f"<= {show(int(high))}")
    elif "lt" in limits or "le" in limits:
        parts.append(f"< {show(limits['lt'])}" if "lt" in limits else f"<= {show(limits['le'])}")
    return " " + " and ".join(parts) if parts else ""


def _field_at(loc, root: type[BaseModel]):
    """The FieldInfo of the deepest model field along `loc` (a dict key or list index keeps its container's)."""
    model, field = root, None
    for part in loc:
        if model is None or str(part) not in model.model_fields:
            break
        field = model.model_fields[str(part)]
        models = [a for a in typing.get_args(field.annotation) or (field.annotation,)
                  if isinstance(a, type) and issubclass(a, BaseModel)]
        model = models[0] if models else None
    return field


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
