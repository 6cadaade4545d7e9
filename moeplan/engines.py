"""Where a study's independent tasks run: this machine's processes (`local`, the default) or a Ray cluster.

One seam, `run_tasks(fn, shared, items, engine)`, returns `[fn(shared, item) for item in items]` in item
order, however the work was spread:

1. The items are cut into tasks of contiguous chunks: at least 4 tasks per worker, so a slow chunk does not
   leave the others idle and the progress bar moves, and at most MAX_CHUNK_ITEMS items each, a few seconds
   of planning, so a failure costs little to redo.
2. `fn` and `shared` (the spec, a trace) travel once: to the local workers when they fork, to a Ray
   cluster by `ray.put` into its object store; each task carries only its own items.
3. Results come back in completion order (futures.wait / ray.wait), each finished task advancing
   `progress(items done, items in all)`, and are put back in item order.
4. A task that fails (raises, or its worker dies) is retried by Ray RETRIES times (locally it is not: a
   raise in Python code would raise again); a chunk that still fails is split and each item run alone, so
   only an item that fails on its own is lost, and it comes back as a `Failed` with the error in one line
   while every other result stands.

Ray is an optional extra (`pip install 'moeplan[ray]'`) imported only when `engine="ray"`.
"""

from __future__ import annotations

import importlib
import logging
import math
import multiprocessing
import os
from concurrent import futures
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from hwmodels.errors import InputError

ENGINES = ("local", "ray")
MAX_CHUNK_ITEMS = 32  # about 3 s of planning at ~0.1 s a point: small enough to redo, big enough to amortise a task
TASKS_PER_WORKER = 4
RETRIES = 2  # Ray re-runs a failed task this many times (a dead worker, or a raise: retry_exceptions)
# The packages a Ray worker imports, shipped with the job (runtime_env py_modules: uploaded once, cached per
# node), so a cluster runs this checkout's code and catalogs, the same as the local engine.
_RAY_PACKAGES = ("catalogs", "hwmodels", "planner", "moeplan", "sim")


@dataclass(frozen=True)
class Failed:
    """An item whose task failed on every attempt and again alone: the error, one line."""

    error: str


def run_tasks(fn: Callable[[Any, Any], Any], shared: Any, items: Sequence[Any], engine: str = "local", *,
              address: str | None = None, processes: int | None = None, chunk_items: int | None = None,
              progress: Callable[[int, int], None] | None = None) -> list[Any]:
    """`fn(shared, item)` for every item, in item order; an item that failed is a `Failed`.

    engine: "local" (a process pool on this machine) or "ray".
    address: the Ray cluster to connect to (`ray://host:10001`, `host:6379`, `auto`); without it, and with no
        Ray connection in this process yet, a local Ray instance is started (and left running for the next call).
    processes: local worker processes (default: the CPUs this process may use; 1 runs in this process), or the
        CPUs of a local Ray instance this call starts.
    chunk_items: items per task (default: see the module docstring).
    """
    if engine not in ENGINES:
        raise InputError("engine", f"unknown engine '{engine}'", f"one of {', '.join(ENGINES)}")
    if address is not None and engine != "ray":
        raise InputError("address", "a cluster address needs the ray engine", "add --engine ray (engine='ray')")
    if not items:
        return []
    if engine == "ray":
        return _on_ray(fn, shared, items, address, processes, chunk_items, progress)
    workers = max(1, min(processes or len(os.sched_getaffinity(0)), len(items)))
    return _on_processes(fn, shared, items, workers, chunk_items, progress)


def _chunks(count: int, workers: int, chunk_items: int | None) -> list[tuple[int, ...]]:
    size = chunk_items or max(1, min(MAX_CHUNK_ITEMS, math.ceil(count / (TASKS_PER_WORKER * workers))))
    return [tuple(range(start, min(start + size, count))) for start in range(0, count, size)]


def _run_chunk(fn: Callable[[Any, Any], Any], shared: Any, chunk: Sequence[Any]) -> list[Any]:
    """One task's work, in a worker."""
    return [fn(shared, item) for item in chunk]


@dataclass(frozen=True)
class _Error:
    """A task's outcome when it raised (as opposed to its list of results)."""

    text: str


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def _drive(items: Sequence[Any], tasks: list[tuple[int, ...]], submit: Callable[[list[Any]], Any],
           next_done: Callable[[dict], tuple[Any, list[Any] | _Error]],
           progress: Callable[[int, int], None] | None) -> list[Any]:
    """Submit every task, take outcomes as they complete, split a failed chunk into single items (step 4)."""
    results: list[Any] = [None] * len(items)
    pending = {submit([items[i] for i in task]): task for task in tasks}
    done = 0
    while pending:
        handle, outcome = next_done(pending)
        task = pending.pop(handle)
        if isinstance(outcome, _Error):
            if len(task) > 1:
                pending |= {submit([items[i]]): (i,) for i in task}
                continue
            outcome = [Failed(outcome.text)]
        for i, result in zip(task, outcome):
            results[i] = result
        done += len(task)
        if progress:
            progress(done, len(items))
    return results


# -------------------------------------------------------------------------------------------- local

# What a forked worker runs, set before the fork by the pool's initializer: with the fork start method the
# initializer's arguments are inherited, not pickled, so fn may be any callable and shared is never copied.
_WORKER_JOB: tuple[Callable[[Any, Any], Any], Any] | None = None


def _install(job: tuple[Callable[[Any, Any], Any], Any]) -> None:
    global _WORKER_JOB
    _WORKER_JOB = job


def _run_installed(chunk: list[Any]) -> list[Any]:
    fn, shared = _WORKER_JOB
    return _run_chunk(fn, shared, chunk)


def _on_processes(fn, shared, items, workers, chunk_items, progress) -> list[Any]:
    tasks = _chunks(len(items), workers, chunk_items)
    if workers == 1:
        # In this process, in order: a handle is the chunk itself, run when it is taken.
        def run_first(pending: dict) -> tuple[Any, list[Any] | _Error]:
            handle = next(iter(pending))
            try:
                return handle, _run_chunk(fn, shared, handle.items)
            except Exception as e:  # whatever a task raises is its outcome, as in a worker process
                return handle, _Error(_one_line(e))

        return _drive(items, tasks, _InlineTask, run_first, progress)

    with futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                     initializer=_install, initargs=((fn, shared),)) as pool:
        def submit(chunk: list[Any]) -> futures.Future:
            try:
                return pool.submit(_run_installed, chunk)
            except BrokenProcessPool as e:  # a worker died: the pool takes no more work
                failed: futures.Future = futures.Future()
                failed.set_exception(e)
                return failed

        def first_done(pending: dict) -> tuple[futures.Future, list[Any] | _Error]:
            done, _ = futures.wait(pending, return_when=futures.FIRST_COMPLETED)
            future = next(iter(done))
            error = future.exception()
            return future, _Error(_one_line(error)) if error else future.result()

        return _drive(items, tasks, submit, first_done, progress)


class _InlineTask:
    """A chunk waiting to run in this process (a distinct, hashable handle even when chunks are equal)."""

    def __init__(self, items: list[Any]):
        self.items = items


# ---------------------------------------------------------------------------------------------- ray

def connect_ray(address: str | None = None, processes: int | None = None):
    """The `ray` module, connected: to `address`, or to a local instance started here (with `processes` CPUs,
    default all); a connection this process already has is used as it is. The workers import this checkout's
    packages (shipped with the job), so a cluster computes what the local engine would."""
    try:
        import ray
    except ImportError:
        raise InputError("engine", "ray is not installed", "pip install 'moeplan[ray]'") from None
    if ray.is_initialized():
        return ray
    # Folders, not module objects: a ray:// client pickles the runtime_env to send it to the cluster.
    folders = [str(Path(importlib.import_module(p).__file__).parent) for p in _RAY_PACKAGES]
    options: dict[str, Any] = {"runtime_env": {"py_modules": folders}, "logging_level": logging.WARNING}
    if address is None and "RAY_ADDRESS" not in os.environ:  # starting an instance here: size it, no dashboard
        options |= {"num_cpus": processes, "include_dashboard": False}
    try:
        ray.init(address=address, **options)
    except ConnectionError as e:
        raise InputError("address", f"cannot connect to a Ray cluster at {address}: {_one_line(e)}",
                         "start one with `ray start --head`, give its address (ray://HEAD:10001 or HEAD:6379), and "
                         "where it uses token authentication set RAY_AUTH_MODE=token here") from None
    return ray


def _on_ray(fn, shared, items, address, processes, chunk_items, progress) -> list[Any]:
    ray = connect_ray(address, processes)
    workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
    job = ray.put((fn, shared))  # step 2: once into the object store; each task reads it from there
    remote = ray.remote(_run_job).options(max_retries=RETRIES, retry_exceptions=True)

    def first_done(pending: dict) -> tuple[Any, list[Any] | _Error]:
        [ref], _ = ray.wait(list(pending), num_returns=1)
        try:
            return ref, ray.get(ref)
        except ray.exceptions.RayTaskError as e:  # it raised on every attempt: name the worker's own error
            return ref, _Error(f"{_one_line(e.cause or e)} (after {RETRIES + 1} attempts)")
        except ray.exceptions.RayError as e:  # its worker or its result was lost on every attempt
            return ref, _Error(_one_line(e))

    return _drive(items, _chunks(len(items), workers, chunk_items), lambda chunk: remote.remote(job, chunk),
                  first_done, progress)


def _run_job(job: tuple[Callable[[Any, Any], Any], Any], chunk: list[Any]) -> list[Any]:
    """A Ray task: Ray hands `job` over from the object store (a top-level ObjectRef argument is resolved)."""
    fn, shared = job
    return _run_chunk(fn, shared, chunk)
