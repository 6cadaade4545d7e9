"""The autotuner: the fastest candidate wins, and a choice is timed once per shape class and machine."""

import json
import time

from kernels_ref import autotune


def test_the_fastest_candidate_is_chosen_once_and_kept(tuning_file):
    calls = {"slow": 0, "fast": 0}

    def slow():
        calls["slow"] += 1
        time.sleep(0.002)

    def fast():
        calls["fast"] += 1

    built = []

    def candidates():
        built.append(1)
        return {"slow": slow, "fast": fast}

    assert autotune.choose("test:class-a", candidates) == "fast"
    assert calls == {"slow": 1 + autotune.ROUNDS, "fast": 1 + autotune.ROUNDS}
    assert autotune.choose("test:class-a", candidates) == "fast" and len(built) == 1  # in memory
    autotune.forget()
    assert autotune.choose("test:class-a", candidates) == "fast" and len(built) == 1  # from the file
    recorded = json.loads(tuning_file.read_text())
    assert recorded["machine"] == autotune.machine()
    assert recorded["choices"]["test:class-a"]["choice"] == "fast"
    assert set(recorded["choices"]["test:class-a"]["seconds"]) == {"slow", "fast"}


def test_a_single_candidate_is_not_timed():
    assert autotune.choose("test:class-b", lambda: {"only": lambda: 1 / 0}) == "only"


def test_the_file_is_per_machine_and_thread_count():
    assert set(autotune.machine()) == {"cpu", "flags", "torch", "kernels", "timing", "isa", "threads"}


def test_a_cold_tuning_evicts_the_caches_before_every_timed_call(monkeypatch):
    evictions = []
    monkeypatch.setattr(autotune, "cache_evictor", lambda: lambda: evictions.append(1))
    assert autotune.choose("test:class-cold", lambda: {"a": lambda: None, "b": lambda: time.sleep(0.002)}, cold=True) == "a"
    assert len(evictions) == 2 * autotune.ROUNDS


def test_the_last_level_cache_size_is_read_or_defaulted():
    assert autotune.last_level_cache_bytes() >= 2**20


def test_a_call_that_times_its_kernel_is_tuned_by_that_time():
    class SelfTimed:  # slower by the wall clock (its "dispatch"), faster inside its kernel
        def __init__(self, kernel_s):
            self.kernel_s = kernel_s

        def __call__(self):
            time.sleep(self.kernel_s + 0.002)

        def kernel_seconds(self):
            return self.kernel_s

    seconds = autotune.time_candidates({"a": SelfTimed(0.001), "b": SelfTimed(0.0)}, rounds=2)
    assert seconds == {"a": 0.001, "b": 0.0}
