"""Round-robin timing: rounds, interleaving and the minimum span, on a fake clock (no real timing)."""

import itertools
import platform

import pytest

from kernels_ref import timing


def test_rounds_continue_until_they_span_min_seconds(monkeypatch):
    clock = itertools.count(0.0, 0.1)  # every reading of the clock advances it by 0.1 s
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(clock))
    calls = []
    fns = [lambda: calls.append("probe"), lambda: calls.append("kernel")]
    seconds = timing.interleaved_median_seconds(fns, "cpu", warmup=1, repeats=3, min_seconds=2.0)
    assert calls[:4] == ["probe", "kernel", "probe", "kernel"]  # interleaved, warm-up included
    rounds = len(calls) // 2 - 1
    assert 3 < rounds < 25 and seconds == pytest.approx([0.1, 0.1])  # each call reads the clock twice


def test_max_repeats_bounds_the_rounds(monkeypatch):
    clock = itertools.count(0.0, 1e-9)
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(clock))
    calls = []
    timing.interleaved_median_seconds([lambda: calls.append(1)], "cpu", warmup=0, repeats=2, min_seconds=10.0, max_repeats=7)
    assert len(calls) == 7


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_keep_freed_memory_takes_on_glibc():
    assert timing.keep_freed_memory() is True


def test_a_call_that_times_its_kernel_is_timed_by_it(monkeypatch):
    clock = itertools.count(0.0, 0.1)
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(clock))

    class SelfTimed:
        def __call__(self):
            return None

        def kernel_seconds(self):
            return 0.003

    seconds = timing.interleaved_median_seconds([SelfTimed(), lambda: None], "cpu", warmup=0, repeats=3)
    assert seconds == pytest.approx([0.003, 0.1])  # the kernel's own time; the plain call's wall time
