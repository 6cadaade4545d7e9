"""Fuzz of the `moeplan` command line: argument lists for every command with hostile values (huge, negative,
zero, NaN, inf, junk strings, unknown options, paths that are files, folders, missing, unwritable, through a
file, dangling symlinks). Whatever comes, the exit status is 0, 1 or 2, nothing is a traceback, and a
failure is exactly one line on stderr.

Seeded (derandomize) and bounded: moeplan.cli.main runs in this process (capsys), only a few cases run as
subprocesses; arguments that would start long work (a plan search of a valid spec, a study, the dashboard,
a kernel benchmark) are kept invalid, or capped by a later option (argparse keeps the last value).
"""

import itertools
import json
import subprocess
import time

import pytest

import checkout_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fuzzing
from moeplan import example_path
from moeplan.cli import main

FUZZ = settings(derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck))
# a command line's limit: the fuzz keeps long work out (a place run's time limit is at most 1 s), so anything
# near this is a hang
COMMAND_LIMIT_S = 30.0

NUMBERS = ["0", "-1", "-0", "nan", "NaN", "inf", "-inf", "1e309", "1e-320", "1000000000000", "9" * 5000, "1.5",
           "0x10", "", " ", "abc", "1_000", "2", "4097", "65536", "99999", "--json", "3600.0001", "1e6",
           "1", "8", "0.5"]  # and a few valid ones, so some lines get past argparse to the checks behind it
JUNK = st.text(st.characters(blacklist_characters="\x00"), max_size=24)
UNKNOWN = ["--no-such-option", "-Z", "--ep=", "--time-limit=nan", "---", "-", "--", "--jsonx"]
_counter = itertools.count()
# the hostile folder's files, as a user wrote them: no run may change them
USER_FILES = {"file.txt": b"hi\n", "folder/x": b"not empty", "binary.yaml": b"\x00\x01\xff\xfe", "list.yaml": b"- 1\n- 2\n",
              "loads.json": json.dumps({"logical_count": [[5, 1, 1, 1, 2, 3, 1, 9], [1, 1, 1, 5, 0, 0, 2, 2]]}).encode()}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """A folder of hostile paths, keyed by what they are."""
    d = tmp_path_factory.mktemp("hostile")
    (d / "folder").mkdir()
    for name, content in USER_FILES.items():
        (d / name).write_bytes(content)
    (d / "dangling").symlink_to(d / "nowhere")
    (d / "scratch").mkdir()
    paths = {"file": d / "file.txt", "folder": d / "folder", "missing": d / "missing.yaml", "binary": d / "binary.yaml",
             "list": d / "list.yaml", "dangling": d / "dangling", "under_file": d / "file.txt" / "sub" / "x",
             "proc": "/proc/moeplan-fuzz/x", "devnull": "/dev/null", "empty": "", "loads": d / "loads.json"}
    return d, {k: str(v) for k, v in paths.items()}


def user_files(folder) -> dict:
    """What the user's files in the hostile folder hold now (the fuzz's -o targets and inputs include them)."""
    return {name: (folder / name).read_bytes() for name in USER_FILES}


def run_main(args, capsys, suite: str):
    start = time.perf_counter()
    try:
        code = main(list(args))
    except SystemExit as e:  # only --help / -h may leave argparse this way (status 0, help on stdout)
        code = e.code
    fuzzing.record(suite, time.perf_counter() - start, COMMAND_LIMIT_S, sum(len(a) for a in args))
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_contract(args, code, err):
    assert code in (0, 1, 2), (args, code, err)
    assert "Traceback" not in err, (args, err)
    if code != 0:
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].strip(), (args, code, err)


def _value(kind, paths, new_path):
    """A strategy for one option's value."""
    bad_in = st.sampled_from([paths[k] for k in ("file", "folder", "missing", "binary", "list", "dangling", "under_file",
                                                 "proc", "devnull", "empty")])
    bad_out = st.sampled_from([paths[k] for k in ("file", "folder", "dangling", "under_file", "proc", "empty")])
    numbers = st.one_of(st.sampled_from(NUMBERS), st.integers(-10**20, 10**20).map(str),
                        st.floats(allow_nan=True, allow_infinity=True).map(repr))
    return {"number": numbers, "in": st.one_of(bad_in, JUNK), "out_bad": bad_out,
            "out": st.one_of(bad_out, st.just(new_path)), "name": JUNK,
            "names": st.one_of(JUNK, st.sampled_from([",,,", "h200-sxm,nosuch", "kimi-k2," * 50]))}[kind]


# option tables: (option, kind); "flag" takes no value
COMMANDS = {
    "models": [("--json", "flag")],
    "devices": [("--json", "flag")],
    "clusters": [("--json", "flag")],
    "model": [("--context", "number"), ("--precision", "name"), ("--json", "flag")],
    "check": [("--json", "flag"), ("--all", "flag")],
    "estimate": [("--layout", "name"), ("--prefill", "name"), ("--decode", "name"), ("--batch", "number"), ("--mtp", "name"),
                 ("--prefill-tokens", "number"), ("--trace", "in"), ("--json", "flag")],
    "plan": [("-o", "out"), ("--force", "flag"), ("--json", "flag"), ("--no-simulate", "flag"), ("--requests", "number")],
    "compare": [("--devices", "names"), ("--models", "names"), ("-o", "out"), ("--force", "flag"),
                ("--processes", "number"), ("--engine", "name"), ("--address", "name"), ("--json", "flag")],
    "sweep": [("-o", "out"), ("--force", "flag"), ("--processes", "number"), ("--json", "flag")],
    "app": [("--port", "number"), ("--headless", "flag")],
    "place": [("--fit-loads", "in"), ("--ep", "number"), ("--redundant", "number"), ("--nodes", "number"),
              ("--time-limit", "number"), ("-o", "out"), ("--json", "flag")],
    "bench-kernels": [("--device", "name"), ("--model", "name"), ("--quick", "flag"), ("-o", "out_bad")],
    "validate": [("--deployments", "in"), ("--json", "flag"), ("--measured", "in"), ("-o", "out_bad")],
    "simulate": [("--plan", "in"), ("--trace", "in"), ("--routing", "in"), ("--prefill-routing", "in"),
                 ("--requests", "number"), ("--subsample", "number"), ("--speedup", "number"), ("--rate", "number"),
                 ("--seed", "number"), ("--router", "name"), ("--kv-policy", "name"), ("--max-batch", "number"),
                 ("--shards", "number"), ("--shard-by", "name"), ("--engine", "name"), ("--json", "flag")],
}
# commands whose positional argument (when valid) starts long work: it is always a hostile path here
HOSTILE_POSITIONAL = {"model": "in", "check": "in", "plan": "in", "estimate": "in", "compare": "in", "sweep": "in", "simulate": "in"}


@st.composite
def command_lines(draw, paths, scratch, commands=tuple(COMMANDS)):
    command = draw(st.sampled_from(commands))
    args = [command]
    if command in HOSTILE_POSITIONAL:
        args.append(draw(st.one_of(_value("in", paths, ""), st.just("kimi-k2")) if command == "model"
                         else _value("in", paths, "")))
    if command == "place":
        args += ["--loads", draw(st.sampled_from([paths["loads"], paths["file"], paths["folder"], paths["missing"],
                                                  paths["binary"], paths["devnull"]]))]
    options = draw(st.lists(st.sampled_from(COMMANDS[command]), max_size=4))
    for option, kind in options:
        args.append(option)
        if kind != "flag":
            args.append(draw(_value(kind, paths, str(scratch / f"new-{next(_counter)}" / "out.json"))))
    if draw(st.integers(0, 4)) == 0:
        args.insert(draw(st.integers(1, len(args))), draw(st.one_of(st.sampled_from(UNKNOWN), JUNK)))
    if command == "app":  # a valid port would start the dashboard: end on a port it refuses
        args += ["--port", draw(st.sampled_from(["0", "-1", "65536", "99999", "nan", "1e3", ""]))]
    if command == "bench-kernels":  # with no -o it would benchmark into this folder: end on an output it refuses
        args += ["-o", draw(_value("out_bad", paths, ""))]
    if command == "place":  # a valid run stays short
        args += ["--time-limit", "0.5"] if draw(st.booleans()) else []
    return args


@settings(FUZZ, max_examples=fuzzing.examples(160))
@given(data=st.data())
def test_every_command_answers_hostile_arguments_in_one_line(hostile, capsys, data):
    folder, paths = hostile
    args = data.draw(command_lines(paths, folder / "scratch"))
    code, _, err = run_main(args, capsys, "command line")
    assert_contract(args, code, err)
    assert user_files(folder) == USER_FILES  # a user's file is never touched
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # nor any staging left behind


@settings(FUZZ, max_examples=fuzzing.examples(60))
@given(data=st.data())
def test_placement_numbers_are_refused_or_answered_quickly(hostile, capsys, data):
    """place on a small valid file: every hostile number is refused before work or the run is short."""
    _, paths = hostile
    numbers = _value("number", paths, "")
    ep, redundant, nodes, limit = (data.draw(st.one_of(numbers, st.sampled_from(good))) for good in
                                   (["1", "2", "4", "8", "16"], ["0", "8", "9"], ["1", "2", "3"], ["0.2", "0.5", "1e-9"]))
    args = ["place", "--loads", paths["loads"], "--ep", ep, "--redundant", redundant, "--nodes", nodes, "--time-limit", limit,
            "--json"]
    code, out, err = run_main(args, capsys, "place numbers")
    assert_contract(args, code, err)
    if code == 0:
        assert json.loads(out)["methods"]["ilp"]["step_cost"] <= json.loads(out)["methods"]["eplb"]["step_cost"] + 1e-9


@settings(FUZZ, max_examples=fuzzing.examples(12))
@given(data=st.data())
def test_a_valid_spec_with_hostile_inputs_and_outputs(hostile, capsys, data):
    """The example spec with hostile trace, routing, plan and output paths, the replay capped at 5 requests
    and the report without its simulation."""
    folder, paths = hostile
    spec = str(example_path())
    bad_in = _value("in", paths, "")
    command = data.draw(st.sampled_from(["simulate", "plan", "check"]))
    if command == "simulate":
        option = data.draw(st.sampled_from(["--plan", "--trace", "--routing", "--prefill-routing"]))
        args = ["simulate", spec, option, data.draw(bad_in), "--requests", "5"]
    elif command == "plan":
        args = ["plan", spec, "-o", data.draw(_value("out_bad", paths, "")), "--no-simulate"]
    else:
        args = ["check", spec, *data.draw(st.lists(st.sampled_from(["--json", "--all", "--bogus", "-o"]), max_size=2))]
    code, _, err = run_main(args, capsys, "spec with hostile paths")
    assert_contract(args, code, err)
    assert user_files(folder) == USER_FILES
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_a_few_hostile_lines_as_real_processes(hostile, tmp_path):
    """The same contract through the interpreter's own exit (no in-process shortcut), run side by side."""
    _, paths = hostile
    cases = [["place", "--loads", paths["loads"], "--ep", "3", "--time-limit", "inf"],
             ["plan", "-o", paths["proc"]], ["simulate", "--speedup", "nan", "--subsample", "2"],
             ["model", "kimi-k2", "--context", "1" + "0" * 12], ["place", "--loads", paths["folder"], "--ep", "2"]]
    runs = [subprocess.Popen([*checkout_cli.COMMAND, *args], cwd=tmp_path, env=checkout_cli.env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for args in cases]
    for args, run in zip(cases, runs):
        _, err = run.communicate(timeout=120)
        assert run.returncode == 2, (args, err)
        assert_contract(args, run.returncode, err)
