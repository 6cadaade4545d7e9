"""The one error type: one line, bounded length, and value excerpts that cost little whatever the value."""
import time

import pytest

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


def test_no_line_or_paragraph_separator_or_c1_control_survives_in_a_message():
    from hwmodels.errors import InputError
    text = str(InputError("f\x85ield", "a\u2028b\u2029c\x9b31md", "fix\x1b[0m it"))
    assert len(text.splitlines()) == 1 and not any(ch in text for ch in "\x85\u2028\u2029\x9b\x1b")


@pytest.mark.parametrize("read", [
    lambda path: __import__("moeplan").read_trace(path),
    lambda path: __import__("moeplan").read_routing_counts(path),
    lambda path: __import__("moeplan").plan(path),
    lambda path: __import__("moeplan").load_plan(path, __import__("moeplan").example_path()),
])
def test_a_path_with_a_nul_character_is_one_input_error_through_the_api(read):
    from hwmodels.errors import InputError
    with pytest.raises(InputError):
        read("trace\0.jsonl")
