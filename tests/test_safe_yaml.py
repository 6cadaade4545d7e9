"""Every YAML a user gives (spec, sweep file, deployments file, dashboard upload) is read in bounded work: an alias
bomb, a duplicate key or deep nesting is one InputError naming the file and line, within a second and a few MB."""

import time
import tracemalloc

import pytest
import yaml

from catalogs import CATALOG_DIR
from hwmodels import safe_yaml
from hwmodels.calibrate.deployments import load_entries
from hwmodels.errors import InputError
from moeplan.spec import example_path, load_spec
from moeplan.sweep_file import load_sweep

SPEC = example_path("deepseek-v3-gb200-nvl72.yaml").read_text()


def bomb(levels: int = 9, width: int = 10) -> str:
    """ "Billion laughs": level k is `width` aliases of level k-1, so the last stands for width**levels strings."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    lines += [f"l{k}: &l{k} [{', '.join([f'*l{k - 1}'] * width)}]" for k in range(1, levels)]
    return "\n".join(lines) + "\n"


HOSTILE = {  # name: (YAML appended to a valid file's own keys, the refusal expected)
    "bomb": (bomb(), r"line \d+: stands for more than 20,000 values"),
    "aliases": ("a: &a x\nb: [" + ", ".join(["*a"] * 101) + "]\n", r"line \d+: more than 100 YAML aliases"),
    "deep flow": ("deep: " + "[" * 1000 + "]" * 1000 + "\n", r"line \d+: nested deeper than 32 levels"),
    "deep block": ("".join(" " * i + "k:\n" for i in range(1000)) + " " * 1000 + "x\n", r"nested deeper than 32 levels"),
    "self alias": ("a: &a [1, *a]\n", r"alias \*a is used inside its own anchor"),
    "huge integer": ("n: " + "9" * 5000 + "\n", r"line \d+: value .* cannot be read"),
    "python tag": ("a: !!python/object/apply:os.system [ls]\n", r"could not determine a constructor"),
}


def bounded(call):
    """What call() raised, asserting it took under 2 s, then (run again under tracemalloc, which slows it several
    times) that it allocated under 100 MB at its peak."""
    def run():
        try:
            call()
        except Exception as e:  # noqa: BLE001 - the caller checks the type
            return e
        return None

    start = time.perf_counter()
    raised = run()
    seconds = time.perf_counter() - start
    tracemalloc.start()
    try:
        run()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seconds < 2 and peak < 100e6, (seconds, peak)
    return raised


def check_refusal(error, name: str, match: str):
    assert isinstance(error, InputError), repr(error)
    text = str(error)
    assert "\n" not in text and name in error.field
    assert error.fix and error.fix != "fix the value"
    assert __import__("re").search(match, text), text


@pytest.mark.parametrize("case", HOSTILE)
def test_a_hostile_spec_is_one_error(tmp_path, case):
    extra, match = HOSTILE[case]
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC + extra)
    check_refusal(bounded(lambda: load_spec(path)), str(path), match)


@pytest.mark.parametrize("case", HOSTILE)
def test_a_hostile_sweep_file_is_one_error(tmp_path, case):
    extra, match = HOSTILE[case]
    path = tmp_path / "sweep.yaml"
    path.write_text(f"spec: {example_path()}\nvary: {{slo.tpot_s: [0.05, 0.1]}}\n" + extra)
    check_refusal(bounded(lambda: load_sweep(path)), str(path), match)


@pytest.mark.parametrize("case", HOSTILE)
def test_a_hostile_deployments_file_is_one_error(tmp_path, case):
    extra, match = HOSTILE[case]
    path = tmp_path / "deployments.yaml"
    path.write_text((CATALOG_DIR / "published" / "deployments.yaml").read_text() + extra)
    check_refusal(bounded(lambda: load_entries(path)), str(path), match)


@pytest.mark.parametrize("case", HOSTILE)
def test_a_hostile_upload_is_one_error(case):
    from app.common import spec_from_upload

    extra, match = HOSTILE[case]
    check_refusal(bounded(lambda: spec_from_upload((SPEC + extra).encode(), "up.yaml")), "up.yaml", match)


def test_the_bomb_inside_a_field_is_refused_before_validation(tmp_path):
    """The expansion pydantic would walk (a list of 10^9 strings as `vary` values) is never built."""
    path = tmp_path / "sweep.yaml"
    path.write_text(bomb() + f"spec: {example_path()}\nvary: {{slo.tpot_s: *l8}}\n")
    check_refusal(bounded(lambda: load_sweep(path)), str(path), "stands for more than")


def test_a_duplicate_key_is_refused_with_both_lines(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC + "model: kimi-k2\n")  # today the last would win, silently planning another model
    error = bounded(lambda: load_spec(path))
    check_refusal(error, f"{path} line {SPEC.count(chr(10)) + 1}", r"key 'model' appears twice in one mapping \(first at line 3\)")
    flow = tmp_path / "flow.yaml"
    flow.write_text(SPEC.replace("{input_tokens: 2000,", "{input_tokens: 2000, input_tokens: 3000,"))
    check_refusal(bounded(lambda: load_spec(flow)), str(flow), "key 'input_tokens' appears twice")


def test_merge_keys_and_a_few_aliases_still_load():
    text = "base: &b {x: 1, y: 2}\nc:\n  <<: *b\n  x: 3\nd: [*b, *b]\n"
    assert safe_yaml.load(text, "t") == yaml.safe_load(text)
    assert safe_yaml.load(text, "t", loader_class=safe_yaml.PyLoader) == yaml.safe_load(text)


def test_every_catalog_loads_as_plain_yaml_does():
    for path in sorted(CATALOG_DIR.rglob("*.yaml")):
        text = path.read_text()
        assert safe_yaml.load(text, str(path)) == yaml.safe_load(text), path
        assert safe_yaml.load(text, str(path), loader_class=safe_yaml.PyLoader) == yaml.safe_load(text), path


@pytest.mark.parametrize("loader", [safe_yaml.Loader, safe_yaml.PyLoader])
def test_both_parsers_bound_the_work(loader):
    for extra, match in HOSTILE.values():
        check_refusal(bounded(lambda: safe_yaml.load(SPEC + extra, "f.yaml", loader_class=loader)), "f.yaml", match)
    # no alias, just too many values: refused at the 20,001st (the pure-Python parser, ten times slower, at 2,001)
    limits = safe_yaml.USER if loader is safe_yaml.Loader else safe_yaml.Limits(nodes=2_000)
    many = "a: [" + "x, " * 30_000 + "]\n"
    check_refusal(bounded(lambda: safe_yaml.load(many, "f.yaml", limits, loader)), "f.yaml line 1",
                  f"more than {limits.nodes:,} values")


def test_the_parsers_own_depth_refusal_reads_as_the_composers(monkeypatch):
    """The libyaml of PyYAML 6.0.4's wheels refuses the 1,000th open bracket while it scans ahead, before the composer
    counts the 33rd level: whichever refuses, the user reads the same line (raised here as that libyaml raises it, so
    the check holds under every PyYAML)."""
    mark = yaml.Mark("f.yaml", 0, 6, 1005, None, None)

    def refuse(self):
        raise yaml.scanner.ScannerError("while increasing flow level", mark, "exceeded maximum nesting depth", mark)

    monkeypatch.setattr(safe_yaml.Loader, "get_single_data", refuse)
    try:
        safe_yaml.load("deep: [[]]\n", "f.yaml")
    except InputError as error:
        check_refusal(error, "f.yaml line 7", r"line 7: nested deeper than 32 levels")
    else:
        pytest.fail("the parser's refusal was not raised")


def test_file_errors_name_the_file(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("a: " + "x" * (2**20))
    check_refusal(bounded(lambda: load_spec(big)), "SPEC", "larger than 1,048,576 bytes")
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"a: \xff\xfe")
    check_refusal(load_spec_error(binary), "SPEC", "not UTF-8")
    check_refusal(load_spec_error(tmp_path), "SPEC", "cannot read")
    check_refusal(load_spec_error(tmp_path / "none.yaml"), "SPEC", "no file")
    two = tmp_path / "two.yaml"
    two.write_text("a: 1\n---\nb: 2\n")
    check_refusal(load_spec_error(two), str(two), "malformed YAML at line 2, column 1")


def load_spec_error(path):
    with pytest.raises(InputError) as e:
        load_spec(path)
    return e.value
