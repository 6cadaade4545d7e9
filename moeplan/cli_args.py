"""Argument checking for the `moeplan` command: an argparse parser whose every error is one InputError line
(exit status 2, never a usage block), and the bounded number types of its options.

Every numeric option rejects NaN and infinities and has documented bounds (BOUNDS); a value outside them is
refused before any work starts, naming the option and the fix.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from typing import Callable, Sequence

from hwmodels.errors import InputError, excerpt, nearest_names
from moeplan import api

# option -> (least, most) value; the help text of each option names its bounds
BOUNDS = {
    "--requests": (1, api.MAX_REQUESTS),  # a million requests replay in about a quarter of an hour
    "--replay": (0, api.MAX_REPLAYED_OPTIONS),
    "--context": (1, 100_000_000),  # the longest context any catalog model could claim, with room to spare
    "--port": (1, 65_535),
    "--speedup": api.SPEEDUP_RANGE,
    "--subsample": (0.0, 1.0),  # (0, 1]: a fraction of the requests
    "--rate": api.RATE_RANGE_PER_S,
    "--seed": (0, api.MAX_SEED),
    "--max-batch": (1, 1_000_000),
    "--batch": (1, api.MAX_PINNED_WORK),
    "--prefill-tokens": (1, api.MAX_PINNED_WORK),
    "--shards": (1, api.MAX_SHARDS),
    "--processes": (1, 4096),
    "--ep": (1, 1_000_000),
    "--scaleout-weight": (0.0, 1e6),  # a weight against the mean device's load: past 1e6 balance no longer counts
    "--nodes": (1, 1_000_000),
    "--redundant": (0, 1_000_000),  # and at most the experts' count, checked once the loads are read
    "--time-limit": (0.0, api.MAX_PLACE_TIME_LIMIT_S),  # (0, MAX]: the whole command's budget, in seconds
}


def int_in(option: str) -> Callable[[str], int]:
    """An argparse type: a whole number within BOUNDS[option]."""
    lo, hi = BOUNDS[option]

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:  # also a number of more than 4,300 digits
            raise argparse.ArgumentTypeError(f"must be a whole number from {lo:,} to {hi:,}, got {excerpt(text)}; "
                                             f"fix: give {option} N with {lo:,} <= N <= {hi:,}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be from {lo:,} to {hi:,}, got {excerpt(value)}; "
                                             f"fix: give {option} N with {lo:,} <= N <= {hi:,}")
        return value

    return parse


def float_in(option: str, open_low: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number within BOUNDS[option] (above the least value when `open_low`)."""
    lo, hi = BOUNDS[option]
    interval = f"{'(' if open_low else '['}{lo:g}, {hi:g}]"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and (value > lo if open_low else value >= lo) and value <= hi):
            raise argparse.ArgumentTypeError(f"must be a finite number in {interval}, got {excerpt(text)}; "
                                             f"fix: give {option} X with X in {interval}")
        return value

    return parse


def number(option: str) -> Callable[[str], float]:
    """An argparse type: any number, for an option whose bounds the notebook API checks (and names as its
    argument: `speedup: is 0.0`, before any work), as `moeplan simulate` always has."""
    lo, hi = BOUNDS[option]

    def parse(text: str) -> float:
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {excerpt(text)}; "
                                             f"fix: give {option} X with X finite, {lo:g} to {hi:g}") from None

    return parse


def bounds_help(option: str) -> str:
    lo, hi = BOUNDS[option]
    return f"{lo:,}..{hi:,}" if isinstance(lo, int) else f"{lo:g}..{hi:g}"


def names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


# ------------------------------------------------------------------------------------------- parser

_BREAKS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")  # controls, C1 controls (NEL) and Unicode line breaks


def one_line(error: Exception) -> str:
    """An error's message as one terminal line: what str.splitlines would break on, and C1 controls a terminal
    would act on, become a space (hwmodels.errors.one_line leaves NEL, U+2028 and U+2029)."""
    return _BREAKS.sub(" ", str(error))


_ARGUMENT = re.compile(r"^argument (?P<field>[^:]+): (?P<rest>.*)$", re.S)
_CHOICE = re.compile(r"^invalid choice: (?P<value>.*) \(choose from (?P<choices>.*)\)$", re.S)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: each is raised as an InputError (main prints it and returns 2) instead
    of a usage block and SystemExit. Subparsers are made of this class too (add_subparsers uses the class of
    the parser it is called on)."""

    def error(self, message: str):
        raise usage_error(self.prog, message)


def usage_error(prog: str, message: str) -> InputError:
    """argparse's message (`argument --ep: ...`, `the following arguments are required: ...`,
    `unrecognized arguments: ...`) as an InputError naming the option and a fix."""
    more = f"see {prog} --help"
    m = _ARGUMENT.match(message)
    if m is None:
        if message.startswith("the following arguments are required: "):
            missing = message.split(": ", 1)[1].split(", ")
            also = f" (also missing: {', '.join(missing[1:])})" if len(missing) > 1 else ""
            return InputError(missing[0], f"is required{also}", f"give {missing[0]}; {more}")
        if message.startswith("unrecognized arguments: "):
            return InputError(prog, f"unrecognized arguments: {message.split(': ', 1)[1]}", f"drop them; {more}")
        return InputError(prog, message, more)
    field, rest = m["field"], m["rest"]
    if "; fix: " in rest:  # our types' messages carry their own fix
        problem, fix = rest.split("; fix: ", 1)
        return InputError(field, problem, fix)
    choice = _CHOICE.match(rest)
    if choice is not None:
        choices = [c.strip().strip("'") for c in choice["choices"].split(",")]
        value = choice["value"].strip("'")
        what = "unknown command" if field == "COMMAND" else "invalid choice"
        return InputError(field, f"{what} {excerpt(value)}", nearest_names(value, choices) + f"; {more}")
    if rest.startswith("expected"):
        return InputError(field, f"needs a value ({rest})", f"give {field.split('/')[-1]} VALUE; {more}")
    return InputError(field, rest, more)


def missing_command(parser: argparse.ArgumentParser) -> InputError:
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    return InputError("COMMAND", "missing", f"give one of {', '.join(commands)}; see {parser.prog} --help")


def check_together(args: argparse.Namespace) -> None:
    """Options that mean something only with another (once silently ignored)."""
    # `app --address` binds the dashboard; on compare and sweep --address names a Ray cluster
    if hasattr(args, "engine") and getattr(args, "address", None) is not None and args.engine != "ray":
        raise InputError("--address", "is used only with --engine ray", "add --engine ray, or leave --address out")


def check_argv(argv: Sequence[str] | None) -> list[str]:
    """The arguments, as strings a path can be made of: no NUL, nothing the file system encoding cannot encode
    (no shell can pass either; a caller of main() can, and every path reader would raise on it)."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    for i, a in enumerate(argv):
        try:
            if "\x00" in a:
                raise ValueError("holds a NUL character")
            os.fsencode(a)
        except (ValueError, UnicodeError) as e:
            problem = str(e) if isinstance(e, ValueError) and not isinstance(e, UnicodeError) else "is not encodable text"
            raise InputError(f"argument {i + 1}", f"{excerpt(a)} {problem}", "remove the character") from None
    return argv
