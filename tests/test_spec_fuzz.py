"""Fuzzing the spec and config.json readers: every example spec and catalog config.json, mutated field by field
(huge, negative, zero, NaN/inf, wrong types, strings, deep nesting, aliases, duplicate keys, long strings,
newlines), either checks or raises one InputError line with a fix: never another exception, never unbounded time
or memory. Seeded (derandomize) and bounded (max_examples, deadline), so the file runs the same in CI every time.
"""

import json
import re
import tempfile
import time
import tracemalloc
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import fuzzing
from catalogs import CATALOG_DIR
from hwmodels.errors import InputError
from moeplan import api

EXAMPLES = sorted((CATALOG_DIR / "examples").glob("*.yaml"))
CONFIGS = sorted((CATALOG_DIR / "models").glob("*.json"))
FUZZ = settings(max_examples=fuzzing.examples(300), derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# Per example, measured under tracemalloc (which slows a call several times): a hang detector, not a benchmark. A
# config.json that fits nowhere makes hwmodels.fit search 512 cluster sizes, about a second untraced.
SECONDS, PEAK_BYTES = 10.0, 100e6

# ------------------------------------------------------------------------------------------- values

scalars = st.one_of(
    st.integers(-3, 3),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from([10**12, 10**100, 10**400, -(10**400), 2**63, 2**64 + 1, 100_001, 10**8 + 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1e308, 5e-324]),
    st.booleans(),
    st.none(),
    st.text(max_size=20),
    st.sampled_from(["1_000", "0x10", "1e3", " 12 ", "true", "fp8", "\n", "a\nb: c", "x" * 20_000, "../../etc/passwd",
                     "\x00", "~nobody/config.json", "m" * 5_000 + ".json"]),
)


def nested(depth: int, leaf=1):
    value = leaf
    for i in range(depth):
        value = [value] if i % 2 else {"a": value}
    return value


values = st.one_of(
    scalars,
    st.lists(scalars, max_size=5),
    st.dictionaries(st.text(max_size=8), scalars, max_size=4),
    st.integers(1, 200).map(nested),
)


def leaf_paths(value, prefix=()):
    """Every path to a value inside `value` (mappings and lists), the containers included."""
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from leaf_paths(child, prefix + (key,))
    elif isinstance(value, list):
        for i, child in enumerate(value[:8]):
            yield from leaf_paths(child, prefix + (i,))


def set_at(doc, path, value):
    if not path:
        return value
    node = doc
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return doc


@st.composite
def mutated(draw, doc):
    """`doc` with one field (or a new key beside it) replaced by a hostile value."""
    paths = list(leaf_paths(doc))
    path = draw(st.sampled_from(paths))
    if draw(st.booleans()) and path:  # a new key beside an existing one (a typo, or an unknown field)
        parent = path[:-1]
        node = doc
        for part in parent:
            node = node[part]
        if isinstance(node, dict):
            path = parent + (draw(st.sampled_from([str(path[-1]) + "x", "extra", "", "1", "a\nb"])),)
    return set_at(doc, path, draw(values))


# -------------------------------------------------------------------------------------- YAML text

def alias_bomb(levels: int, width: int) -> str:
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    lines += [f"l{k}: &l{k} [{', '.join([f'*l{k - 1}'] * width)}]" for k in range(1, levels)]
    return "\n".join(lines) + f"\nname: *l{levels - 1}\n"


@st.composite
def spec_texts(draw):
    """The YAML of an example spec, mutated as a document or as text."""
    text = draw(st.sampled_from(EXAMPLES)).read_text()
    doc = yaml.safe_load(text)
    kind = draw(st.sampled_from(["field", "field", "field", "duplicate", "bomb", "deep", "line", "aliases"]))
    if kind == "field":
        return yaml.safe_dump(draw(mutated(doc)), allow_unicode=True, width=10**9)
    if kind == "duplicate":
        key = draw(st.sampled_from(list(doc)))
        return text + f"\n{key}: {json.dumps(doc[key])}\n"
    if kind == "bomb":
        return text + alias_bomb(draw(st.integers(2, 9)), draw(st.integers(2, 12)))
    if kind == "deep":
        depth = draw(st.integers(10, 5_000))
        return text + "deep: " + "[" * depth + "]" * depth + "\n"
    if kind == "aliases":
        uses = draw(st.integers(1, 300))
        return "anchor: &a 1\n" + text + "uses: [" + ", ".join(["*a"] * uses) + "]\n"
    lines = text.splitlines()
    at = draw(st.integers(0, len(lines)))
    junk = draw(st.sampled_from(["  - x", "{", "]", ": :", "\t", "key: [1, 2", "!!python/object:os.system x",
                                 "a: !!binary 'not base64'", "b: 2001-13-45", "c: &x", "d: *nowhere", "%YAML 9.9", "---"]))
    return "\n".join(lines[:at] + [junk] + lines[at:]) + "\n"


@st.composite
def config_texts(draw):
    """A catalog config.json, mutated field by field (inside text_config and quantization_config too), or as text."""
    config = json.loads(draw(st.sampled_from(CONFIGS)).read_text())
    kind = draw(st.sampled_from(["field", "field", "field", "field", "deep", "text"]))
    if kind == "field":
        return json.dumps(draw(mutated(config)))
    if kind == "deep":
        depth = draw(st.sampled_from([33, 500, 2_000, 100_000]))
        return "[" * depth + "]" * depth
    text = json.dumps(config, indent=1)
    cut = draw(st.integers(0, len(text)))
    return text[:cut] + draw(st.sampled_from(["", "}", "NaN", "Infinity", "9" * 5_000, "\x00", "\"\\ud800\""])) + text[cut:]


# ------------------------------------------------------------------------------------------ checks

def assert_bounded_outcome(call, suite: str, input_bytes: int, record=event):
    """call() returns, or raises one InputError line with a fix; in bounded time and memory (traced). `record`: where
    the outcome is counted (hypothesis.event: `pytest --hypothesis-show-statistics` lists them); `suite` and
    `input_bytes`: the tally of benchmarks/bench_hostile.py."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        call()
        record("planned")
    except InputError as e:
        record(f"refused: {re.sub(r'^.*(spec[.]yaml|config[.]json)(: | line [0-9]+)?', '', e.field)[:40] or 'the file'}")
        text = str(e)
        assert "\n" not in text and "\r" not in text and len(text) < 1000, text
        assert e.fix.strip() and e.fix != "fix the value", text
    finally:
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        fuzzing.record(suite, seconds, SECONDS, input_bytes, peak)
    assert seconds < SECONDS and peak < PEAK_BYTES, (seconds, peak)


@pytest.fixture(scope="module")
def folder():
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


@FUZZ
@given(text=spec_texts())
def test_mutated_specs_check_or_fail_with_one_line(folder, text):
    path = folder / "spec.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    assert_bounded_outcome(lambda: api.check(path), "spec YAML", path.stat().st_size)


@FUZZ
@given(config=config_texts(), example=st.sampled_from(EXAMPLES))
def test_mutated_configs_check_or_fail_with_one_line(folder, config, example):
    (folder / "config.json").write_text(config, encoding="utf-8", errors="surrogatepass")
    spec = yaml.safe_load(example.read_text())
    spec["model"] = "./config.json"
    spec.pop("routing", None)
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert_bounded_outcome(lambda: api.check(path), "config.json", (folder / "config.json").stat().st_size)


@pytest.mark.parametrize("text", [  # the largest of what the fuzz draws, every time
    EXAMPLES[0].read_text() + alias_bomb(9, 10),
    EXAMPLES[0].read_text() + "deep: " + "[" * 100_000 + "]" * 100_000 + "\n",
    EXAMPLES[0].read_text() + "name: " + "x" * 900_000 + "\n",
], ids=["bomb", "deep", "long name"])
def test_the_worst_specs_stay_within_time_and_memory(folder, text):
    path = folder / "worst.yaml"
    path.write_text(text)
    assert_bounded_outcome(lambda: api.check(path), "spec YAML", path.stat().st_size, record=lambda outcome: None)
