"""The one error type users see: it names the input field and the fix, and prints as one line."""

from __future__ import annotations

import typing

from pydantic import BaseModel, ValidationError


class InputError(ValueError):
    """Bad user input (spec, catalog name, config.json, size): one line naming `field` and the fix."""

    def __init__(self, field: str, problem: str, fix: str = ""):
        self.field = field
        self.problem = problem
        self.fix = fix
        super().__init__(f"{field}: {problem}" + (f"; fix: {fix}" if fix else ""))


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
    return InputError(f"{where}: {loc}" if loc else where, f"{message} (got {got!r})" if loc else message, "fix the value")


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
