"""Hostile input at scale, against issue 23's bar.

1. The fuzz suites of tests/ (spec YAML and config.json mutated field by field and as text; every trace and
   routing format mutated byte by byte and re-encoded; command lines of every command with hostile numbers,
   paths and -o targets) run with --scale times the examples CI runs, each input tallied (tests/fuzzing.py).
2. Files just under 10 MB of every kind (traces, routing statistics, a spec, a config.json, a plan.json), valid
   and hostile, each through the command a user would give it in a process of its own, whose peak resident
   memory os.wait4 reports.
3. kill -9 of `moeplan plan -o DIR` at a random moment while it writes its report (MOEPLAN_TEST_SLOW_WRITE_S
   stretches the writing), first into a new folder, then as --force replacements, each followed by a run to
   completion; then the folder must hold one whole report and nothing hidden, and the user's files beside and
   inside it must be as they were.

It reports the inputs run, tracebacks (a fuzz test that failed: any exception other than moeplan's one-line
InputError, a message over one line, an unbounded read; a command that printed a traceback or more than one
line), inputs past their stated time limit, the largest input, peak resident memory (the fuzz process's bounds
every fuzz input's), user files changed and staging leftovers. The bar: at least 10,000 inputs, 0 tracebacks,
0 past their limit, peak memory under 2 GB with every input under 10 MB, 0 user files changed, 0 leftovers.
About 6 minutes on 2 cores at the default scale. Writes benchmarks/results/bench_hostile.json.

Run: python benchmarks/bench_hostile.py [--scale 4] [--kills 6] [--seed 0]
"""

import argparse
import collections
import json
import os
import pickle
import random
import resource
import struct
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np

from moeplan import example_path
from record import run_context, write_results

ROOT = Path(__file__).resolve().parents[1]
FUZZ_SUITES = ["tests/test_spec_fuzz.py", "tests/test_ingest_fuzz.py", "tests/test_cli_fuzz.py"]
MIN_INPUTS = 10_000
MAX_PEAK_BYTES = 2 * 2**30
MAX_INPUT_BYTES = 10 * 2**20
LARGE_LIMIT_S = 120.0  # a near-10 MB file read, refused or replayed (50 requests) by one command
SLOW_WRITE_S = 0.5  # the pause halfway through each report file: a dozen files, about 6 s to kill into
USER_FILES = {"beside.txt": b"a user's notes beside the output folder\n", ".out.notes": b"a look-alike name\n"}


def fuzz(scale: float, work: Path) -> dict:
    """The fuzz suites at `scale`: their tally, failures and the peak resident memory of the process."""
    tally, junit = work / "tally.json", work / "junit.xml"
    env = {**os.environ, "MOEPLAN_FUZZ_SCALE": str(scale), "MOEPLAN_FUZZ_TALLY": str(tally)}
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}",
                          *FUZZ_SUITES], cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    suite = ElementTree.parse(junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    failures = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
    if failures:
        print(run.stdout[-4000:])
    per_suite = json.loads(tally.read_text())
    return {"seconds": seconds, "tests": int(suite.get("tests", 0)), "failed_tests": failures, "per_suite": per_suite,
            # the largest resident set of any child this process waited for: pytest and what it ran
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024}


def _plan(out: Path, force: bool, slow: bool) -> subprocess.Popen:
    env = {**os.environ, **({"MOEPLAN_TEST_SLOW_WRITE_S": str(SLOW_WRITE_S)} if slow else {})}
    return subprocess.Popen([sys.executable, "-m", "moeplan.cli", "plan", "-o", str(out), "--requests", "20",
                             *(["--force"] if force else [])], cwd=out.parent, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _staging(folder: Path) -> list[Path]:
    return [p for p in (*folder.glob(".out.moeplan-*"), *folder.glob("out/.out.moeplan-*")) if p.is_dir()]


def _whole_report(out: Path) -> bool:
    try:
        json.loads((out / "plan.json").read_text())
        return (out / "report.html").read_text().rstrip().endswith("</html>")
    except (OSError, ValueError):
        return False


def kills(count: int, rng: random.Random, work: Path) -> dict:
    """`count` kill -9s at random moments of writing a report, each followed by a run to completion."""
    folder = work / "kills"
    folder.mkdir()
    user_files = dict(USER_FILES)  # and the one put inside the output folder once it exists
    for name, content in user_files.items():
        (folder / name).write_bytes(content)
    out, moments, while_writing, leftovers, broken, failed_runs = folder / "out", [], 0, 0, 0, 0
    for i in range(count):
        force = out.exists()  # the first into a new folder, then replacements of the last whole report
        run = _plan(out, force, slow=True)
        deadline = time.monotonic() + 300
        while not _staging(folder) and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        moment = rng.uniform(0, 12 * SLOW_WRITE_S)
        time.sleep(moment)
        while_writing += run.poll() is None and bool(_staging(folder))
        run.kill()
        run.communicate()
        moments.append(round(moment, 2))
        again = _plan(out, out.exists(), slow=False)
        _, err = again.communicate(timeout=600)
        failed_runs += again.returncode != 0
        if again.returncode:
            print(f"the run after kill {i + 1} failed: {err.strip()}")
        leftovers += len(_staging(folder))
        broken += not _whole_report(out)
        if i == 0 and out.exists():
            (out / "mine.txt").write_bytes(b"the user's file inside the output folder\n")
            user_files["out/mine.txt"] = (out / "mine.txt").read_bytes()
    changed = sum((folder / name).read_bytes() != content for name, content in user_files.items())
    return {"kills": count, "kill_after_s": moments, "killed_while_writing": while_writing, "staging_leftovers": leftovers, "incomplete_reports": broken,
            "failed_next_runs": failed_runs, "user_files": len(user_files), "user_files_changed": changed}


# --- files near 10 MB, each through the command a user would give it, in a process of its own -----------------

TARGET_BYTES = int(9.5 * 2**20)


def _lines(make, header: bytes = b"") -> bytes:
    """A file of `make(i)` lines up to TARGET_BYTES."""
    parts, size, i = [header], len(header), 0
    while size < TARGET_BYTES:
        line = make(i)
        parts.append(line)
        size, i = size + len(line), i + 1
    return b"".join(parts)


def _safetensors(values: np.ndarray, key: str = "100_1") -> bytes:
    header = json.dumps({key: {"dtype": "I64", "shape": [len(values)], "data_offsets": [0, 8 * len(values)]}}).encode()
    return struct.pack("<Q", len(header)) + header + values.astype("<i8").tobytes()


def _counters(rng, layers: int) -> bytes:
    """An OLMoE-style pickle: a Counter of 64 experts' counts per layer."""
    return pickle.dumps([collections.Counter({e: int(c) for e, c in enumerate(rng.integers(1, 10**6, 64))})
                         for _ in range(layers)], protocol=4)


def large_files() -> dict:
    """name: (file name or {file name: bytes} for a folder, its bytes, the command line with {} for its path)."""
    rng = np.random.default_rng(0)
    place = ["place", "--loads", "{}", "--ep", "8", "--time-limit", "2"]
    replay = ["simulate", "--trace", "{}", "--requests", "50"]
    mooncake = _lines(lambda i: json.dumps({"timestamp": 20 * i, "input_length": 500 + i % 9000, "output_length": 200,
                                            "hash_ids": list(range(i % 40))}).encode() + b"\n")
    spec = Path(example_path()).read_bytes()
    return {
        "Mooncake JSONL, valid": ("trace.jsonl", mooncake, replay),
        "Mooncake JSONL, a 400-digit length": ("trace.jsonl", mooncake.replace(b'"input_length": 5', b'"input_length": ' +
                                                                                b"9" * 400, 1), replay),
        "Azure CSV, valid": ("conv.csv", _lines(lambda i: f"2023-11-16 18:{i // 6000 % 60:02d}:{i // 100 % 60:02d}.{i % 100:02d},"
                                                           f"{300 + i % 4000},{20 + i % 500}\n".encode(),
                                                  b"TIMESTAMP,ContextTokens,GeneratedTokens\n"), replay),
        "JSON nested 9.5 million deep": ("trace.jsonl", b"[" * TARGET_BYTES, replay),
        "SGLang CSV, valid (61 x 256)": ("expert_distribution_rank0_timestamp1.csv",
                                         _lines(lambda i: f"{i // 256 % 61},{i % 256},{i % 97}\n".encode(),
                                                b"layer_id,expert_id,count\n"), place),
        "SGLang CSV, expert id 10^12": ("expert_distribution_rank0_timestamp1.csv",
                                        _lines(lambda i: f"{i % 61},{10**12 + i},5\n".encode(), b"layer_id,expert_id,count\n"),
                                        place),
        "logical_count JSON, 61 x 20,000": ("stats.json", json.dumps({"logical_count": rng.integers(0, 10**6, (61, 20_000))
                                                                                       .tolist()}).encode(), place),
        "per-token JSONL, valid": ("gsm8k_2_routing.jsonl", _lines(lambda i: json.dumps({
            "dataset": "gsm8k", "problem_id": i // 640, "layer": i % 32, "experts": [i % 8, (i + 3) % 8],
            "token_idx": i // 32 % 20, "gating_probs": [0.6, 0.4]}).encode() + b"\n"), place),
        "per-token JSONL, layer 10^12": ("gsm8k_2_routing.jsonl", _lines(lambda i: json.dumps({
            "dataset": "gsm8k", "problem_id": 0, "layer": 10**12 + i, "experts": [0, 1], "token_idx": i,
            "gating_probs": [0.6, 0.4]}).encode() + b"\n"), place),
        "Counter pickle, just under its 4 MiB cap": ("expert_counts.pkl", _counters(rng, 8_500), place),
        "Counter pickle, over its 4 MiB cap": ("expert_counts.pkl", _counters(rng, 12_000), place),
        "TensorRT-LLM rank file, one tensor of 1.2 million counts": ({"meta_info.json": b'{"num_experts": 8, "num_experts_per_token": 2}',
                                                       "rank0.safetensors": _safetensors(rng.integers(0, 100, 1_245_184))},
                                                      None, place),
        "spec YAML, 9.5 MB of comments": ("spec.yaml", spec + _lines(lambda i: b"# " + b"x" * 78 + b"\n"), ["check", "{}"]),
        "config.json, 9.5 MB": ("config.json", json.dumps({"model_type": "mixtral", "padding": "x" * TARGET_BYTES}).encode(),
                                ["model", "{}"]),
        "plan.json, 9.5 MB of garbage": ("plan.json", bytes(rng.integers(0, 256, TARGET_BYTES, dtype=np.uint8)),
                                         ["simulate", "--plan", "{}", "--requests", "20"]),
    }


def _peak_run(command: list[str], cwd: Path, timeout_s: float) -> tuple[int, str, float, int]:
    """Run a command; its exit status, stderr, seconds and peak resident bytes (os.wait4's, this child's own)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        child = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + timeout_s
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                child.kill()
                pid, status, usage = os.wait4(child.pid, 0)
                break
            time.sleep(0.02)
        child.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read().decode(errors="replace")
    return child.returncode, text, time.perf_counter() - start, usage.ru_maxrss * 1024


def large(work: Path) -> dict:
    """Each near-10 MB file through its command: exit status, one line, seconds, peak memory."""
    folder = work / "large"
    folder.mkdir()
    rows = {}
    for label, (name, data, command) in large_files().items():
        if isinstance(name, dict):  # a folder
            path = folder / f"folder{len(rows)}"
            path.mkdir()
            for file_name, content in name.items():
                (path / file_name).write_bytes(content)
            size = sum(len(c) for c in name.values())
        else:
            path = folder / f"{len(rows)}-{name}"
            path.write_bytes(data)
            size = len(data)
        argv = [sys.executable, "-m", "moeplan.cli", *[str(path) if a == "{}" else a for a in command]]
        code, err, seconds, peak = _peak_run(argv, folder, LARGE_LIMIT_S)
        lines = err.strip().splitlines()
        rows[label] = {"bytes": size, "exit": code, "seconds": round(seconds, 2), "peak_rss_bytes": peak,
                       "traceback": "Traceback" in err or code not in (0, 1, 2) or (code != 0 and len(lines) != 1),
                       "said": lines[-1][:160] if lines else ""}
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=4.0, help="times the CI examples of each fuzz suite (4: ~11,000)")
    parser.add_argument("--kills", type=int, default=6, help="kill -9 runs (default 6)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the kill moments (the fuzz is seeded by hypothesis)")
    args = parser.parse_args()
    started = run_context()
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        f = fuzz(args.scale, work)
        big = large(work)
        k = kills(args.kills, random.Random(args.seed), work)
    per_suite = f["per_suite"]
    inputs = sum(s["inputs"] for s in per_suite.values())
    over = sum(s["over_limit"] for s in per_suite.values())
    largest = max(s["max_input_bytes"] for s in per_suite.values())
    print(f"{'suite':<52} {'inputs':>7} {'limit s':>8} {'max s':>7} {'over':>5} {'max input':>10} {'traced peak':>12}")
    for name, s in per_suite.items():
        print(f"{name:<52} {s['inputs']:7,} {s['limit_s']:8g} {s['max_seconds']:7.2f} {s['over_limit']:5} "
              f"{s['max_input_bytes'] / 2**10:8.0f} K {s['max_traced_peak_bytes'] / 2**20:9.1f} MiB")
    print(f"{inputs:,} hostile inputs in {f['seconds']:.0f} s ({f['tests']} fuzz tests, {f['failed_tests']} failed: "
          f"tracebacks); {over} past their limit; largest input {largest / 2**20:.2f} MiB; "
          f"peak resident memory {f['peak_rss_bytes'] / 2**30:.2f} GiB")
    print(f"\n{'file just under 10 MiB, through its command':<56} {'MiB':>5} {'exit':>4} {'s':>6} {'peak GiB':>8}  said")
    for name, r in big.items():
        print(f"{name:<56} {r['bytes'] / 2**20:5.2f} {r['exit']:4} {r['seconds']:6.1f} {r['peak_rss_bytes'] / 2**30:8.2f}  "
              f"{'TRACEBACK ' if r['traceback'] else ''}{r['said'][:90]}")
    big_peak = max(r["peak_rss_bytes"] for r in big.values())
    big_tracebacks = sum(r["traceback"] for r in big.values())
    big_over = sum(r["seconds"] > LARGE_LIMIT_S for r in big.values())
    print(f"{len(big)} files just under 10 MiB: {big_tracebacks} tracebacks, {big_over} past {LARGE_LIMIT_S:g} s, "
          f"peak resident memory {big_peak / 2**30:.2f} GiB\n")
    print(f"{k['kills']} kill -9 {k['kill_after_s']} s after the report's staging appeared ({k['killed_while_writing']} "
          f"of them while it was being written): {k['staging_leftovers']} staging "
          f"leftovers, {k['incomplete_reports']} incomplete reports, {k['failed_next_runs']} failed next runs, "
          f"{k['user_files_changed']} of {k['user_files']} user files changed")
    figures = {"scale": args.scale, "inputs": inputs, "fuzz_tests": f["tests"], "tracebacks": f["failed_tests"],
               "over_limit": over, "largest_input_bytes": largest, "peak_rss_bytes": f["peak_rss_bytes"],
               "fuzz_s": f["seconds"], "per_suite": per_suite, "large_files": big, "large_files_peak_rss_bytes": big_peak,
               "large_files_tracebacks": big_tracebacks, "large_files_over_limit": big_over, **k}
    met = (inputs >= MIN_INPUTS and f["failed_tests"] == 0 and over == 0 and largest < MAX_INPUT_BYTES
           and f["peak_rss_bytes"] < MAX_PEAK_BYTES and big_tracebacks == 0 and big_over == 0
           and big_peak < MAX_PEAK_BYTES and all(r["bytes"] < MAX_INPUT_BYTES for r in big.values()) and k["user_files_changed"] == 0 and k["staging_leftovers"] == 0
           and k["incomplete_reports"] == 0 and k["failed_next_runs"] == 0)
    figures["bar_met"] = met
    print(f"issue 23's bar: {'met' if met else 'NOT met'}")
    write_results("bench_hostile", figures, started)
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
