"""The one error type users see: it names the input field and the fix, and prints as one line."""


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
