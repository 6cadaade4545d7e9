"""The one error type: one line, bounded length, and value excerpts that cost little whatever the value."""

import time

from hwmodels.errors import InputError, excerpt


def test_an_error_is_one_bounded_line():
    e = InputError("name\nwith a newline", "bad " * 1000, "fix\tit")
    text = str(e)
    assert "\n" not in text and "\t" not in text and len(text) < 1000
    assert e.field == "name with a newline" and e.problem.endswith("…") and e.fix == "fix it"


def test_excerpts_are_short_and_cheap_for_hostile_values():
    bomb = [["x" * 50] * 1000] * 1_000_000  # what a YAML alias bomb builds: a billion strings by reference
    start = time.perf_counter()
    text = excerpt(bomb)
    assert time.perf_counter() - start < 0.1 and len(text) <= 80 and "\n" not in text
    assert excerpt(10 ** 5000) == "an integer of about 5001 digits"
    assert excerpt([10 ** 5000]) == "a list"  # too long to print inside a container: named by its type
    assert excerpt("a\nb") == "'a\\nb'" and len(excerpt("y" * 20_000)) <= 80
    assert excerpt(3.5) == "3.5" and excerpt(None) == "None"
