"""Sweeps: one scenario over many seeds and parameter values, on a process pool or a Dask
cluster, merged into one CSV and one plot per parameter.

A task is plain data (the scenario's text, its overrides, a seed), so it runs the same in
a local worker process and on a Dask worker on another machine; ``run_task`` returns one
flat row of figures. Rows come back in task order whatever the executor, so a local and a
Dask sweep of the same tasks give the same CSV.
"""

from __future__ import annotations

import itertools
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

from ._scenario import MAX_SEED, SCHEMA, ScenarioError, loads, replay_command_for

__all__ = ["Task", "replay_of", "run_task", "parse_seeds", "parse_params", "expand", "run_sweep", "row_of"]

MAX_TASKS = 100_000


@dataclass(frozen=True)
class Task:
    text: str
    source: str
    overrides: tuple[str, ...]
    seed: int
    params: tuple[tuple[str, Any], ...]  # what this task varies, for the CSV


def parse_seeds(text: str) -> list[int]:
    """``1..100`` (inclusive), ``1,2,7`` or ``5``."""
    wrong = ScenarioError(f"--seeds {text[:40]!r}: expected 1..{MAX_TASKS} seeds from 0 to {MAX_SEED}")
    if len(text) > 1_000_000:
        raise wrong
    try:
        if ".." in text:
            lo, hi = (int(part) for part in text.split("..", 1))
            if lo > hi:
                raise ValueError
            if hi - lo >= MAX_TASKS:  # before the range is made a list: 1..1000000000 is refused, not built
                raise wrong
            seeds = list(range(lo, hi + 1))
        else:
            seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ScenarioError(f"--seeds {text[:40]!r}: expected A..B (A <= B), or a comma-separated list of integers") from None
    if not seeds or len(seeds) > MAX_TASKS or min(seeds) < 0 or max(seeds) > MAX_SEED:
        raise wrong
    return seeds


def _keys_named(name: str) -> list[str]:
    if "." in name:
        return [name]
    return [f"{section}.{key}" for section, keys in SCHEMA.items() for key in keys if key == name]


def parse_params(texts: list[str]) -> list[tuple[str, list[str], list[str]]]:
    """``--param latency_ms=10,50,200`` -> (name, the keys it sets, the values). A bare
    name sets every key of that name (``latency_ms``: the LAN's, the WAN's and an
    experiment's); a dotted one just that key."""
    out = []
    for text in texts:
        name, sep, values = text.partition("=")
        name = name.strip()
        keys = _keys_named(name)
        chosen = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not name or not chosen:
            raise ScenarioError(f"--param {text!r}: expected key=v1,v2,... e.g. network.wan.latency_ms=10,50,200")
        if "run.seed" in keys:
            raise ScenarioError(f"--param {name}: a sweep's seeds are chosen with --seeds (e.g. --seeds 5,6)")
        if not keys:
            raise ScenarioError(f"--param {name}: no scenario key of that name (tillmesh sim keys lists them)")
        out.append((name, keys, chosen))
    return out


def expand(text: str, source: str, overrides: list[str], seeds: list[int],
           params: list[tuple[str, list[str], list[str]]]) -> list[Task]:
    tasks = []
    plain = not loads(text, source, overrides).experiment
    if plain:  # a bare name (latency_ms) must not turn a plain scenario into an experiment
        params = [(name, [k for k in keys if not k.startswith("experiment.")], values)
                  for name, keys, values in params]
        for name, keys, _ in params:
            if not keys:
                raise ScenarioError(f"--param {name}: only an [experiment] scenario has that key")
    grids = [[(name, keys, value) for value in values] for name, keys, values in params]
    for combo in itertools.product(*grids):  # no params: one empty combination
        extra = [f"{key}={value}" for _, keys, value in combo for key in keys]
        chosen = tuple((name, value) for name, _, value in combo)
        loads(text, source, [*overrides, *extra])  # a bad value is refused before anything runs
        for seed in seeds:
            tasks.append(Task(text, source, (*overrides, *extra), seed, chosen))
    if len(tasks) > MAX_TASKS:
        raise ScenarioError(f"the sweep has {len(tasks)} runs; at most {MAX_TASKS}")
    return tasks


def row_of(summary: dict[str, Any]) -> dict[str, Any]:
    """The figures of one run that a sweep compares (wall-clock figures left out: they are
    not a result of the scenario)."""
    row: dict[str, Any] = {"seed": summary["seed"], "commits": summary["commits"],
                           "acknowledged": summary["acknowledged"]}
    for kind, s in summary["staleness"].items():
        for q in ("p50_ms", "p90_ms", "p99_ms"):
            row[f"staleness_{kind}_{q}"] = s[q]
    times = [c["converged_after_s"] for c in summary["convergence"]]
    done = [t for t in times if t is not None]
    row["heals"] = len(times)
    row["converge_max_s"] = max(done) if done else None
    row["unconverged_heals"] = len(times) - len(done)
    for kind, b in summary["bytes"].items():
        row[f"bytes_{kind}"] = b["sent"]
        row[f"payload_{kind}"] = b["payload"]
        row[f"metadata_share_{kind}"] = b["metadata_share"]
    row["unsynced_entries_max"] = summary["unsynced_entries_max"]
    row["incidents"] = sum(summary["incidents"].values())
    row["violations"] = sum(summary["invariants"].values())
    row["trace_digest"] = summary["trace_digest"]
    return row


def replay_of(task: Task) -> str:
    """The ``tillmesh sim run`` command that replays one run of a sweep."""
    return replay_command_for(task.source, task.seed, task.overrides)


def run_task(task: Task) -> dict[str, Any]:
    """Run one task (in whatever process it lands in); returns its CSV row."""
    from ._sim import Simulation

    scenario = loads(task.text, task.source, list(task.overrides)).with_seed(task.seed)
    summary = Simulation(scenario, measure_engine=False).run().summary
    return {**dict(task.params), **row_of(summary)}


def run_sweep(tasks: list[Task], *, executor: str = "local", workers: int | None = None,
              scheduler: str | None = None, progress: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:
    """Every task's row, in task order."""
    rows: list[dict[str, Any] | None] = [None] * len(tasks)
    done = 0
    if executor == "dask":
        from distributed import Client, as_completed

        if not scheduler:
            raise ScenarioError("--executor dask needs --scheduler ADDRESS (e.g. tcp://127.0.0.1:8786)")
        try:
            client = Client(scheduler, timeout="30s")
        except (ValueError, TypeError) as exc:  # not an address distributed can parse
            raise ScenarioError(f"--scheduler {scheduler!r}: not a scheduler address "
                                f"(expected e.g. tcp://127.0.0.1:8786): {exc}") from None
        with client:
            futures = client.map(run_task, tasks, pure=False)
            index = {f.key: i for i, f in enumerate(futures)}
            for future in as_completed(futures):
                rows[index[future.key]] = future.result()
                done += 1
                if progress:
                    progress(done, len(tasks))
    elif executor == "local":
        if scheduler:
            raise ScenarioError("--scheduler is for --executor dask; a local sweep runs on this machine")
        if workers is not None and workers < 1:
            raise ScenarioError(f"--workers {workers}: expected at least 1")
        if workers == 1:
            for i, task in enumerate(tasks):
                rows[i] = run_task(task)
                if progress:
                    progress(i + 1, len(tasks))
        else:
            context = multiprocessing.get_context("spawn")  # no fork of a process with threads
            with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
                futures = {pool.submit(run_task, task): i for i, task in enumerate(tasks)}
                from concurrent.futures import as_completed as completed

                for future in completed(futures):
                    rows[futures[future]] = future.result()
                    done += 1
                    if progress:
                        progress(done, len(tasks))
    else:
        raise ScenarioError(f"--executor {executor!r}: expected local or dask")
    return [row for row in rows if row is not None]
