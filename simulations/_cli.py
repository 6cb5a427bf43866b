"""``tillmesh sim``: run a scenario, sweep one, or list the scenario keys.

    tillmesh sim run SCENARIO [--seed N] [--set key=value ...] [--out DIR] [--no-plots]
    tillmesh sim sweep SCENARIO --seeds 1..100 [--param key=v1,v2 ...] [--workers N]
                       [--executor local|dask --scheduler ADDRESS] [--out DIR]
    tillmesh sim keys

Exit status: 0 when every invariant held, 1 when one did not (the seed and the command that
replays the run are printed), 2 for a bad scenario or argument (one line, nothing run).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ._scenario import LISTS, MAX_SEED, SCHEMA, ScenarioError, load

__all__ = ["add_commands", "run_command"]

EXIT_OK, EXIT_VIOLATION, EXIT_ERROR = 0, 1, 2


def add_commands(commands: Any, parser_class: Any) -> None:
    sim = commands.add_parser("sim", help="run the partition simulator (research)",
                              description="Deterministic simulations of a chain on the real protocol code.")
    sub = sim.add_subparsers(dest="sim_command", required=True, metavar="SUBCOMMAND", parser_class=parser_class)
    run = sub.add_parser("run", help="run one scenario with one seed")
    run.add_argument("scenario", type=Path, metavar="SCENARIO", help="a scenario TOML file")
    run.add_argument("--seed", type=int, help="the seed (default: the scenario's run.seed)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                     help="override a scenario key, e.g. --set workload.sales_per_till_hour=60")
    run.add_argument("--out", type=Path, default=Path("results"), help="where results/<scenario>-<seed>/ go")
    run.add_argument("--no-plots", action="store_true", help="write the CSV and JSON only")
    run.add_argument("--json", action="store_true", help="print the summary as JSON")
    sweep = sub.add_parser("sweep", help="run a scenario over seeds and parameter values")
    sweep.add_argument("scenario", type=Path, metavar="SCENARIO")
    sweep.add_argument("--seeds", default="1..8", help="A..B or a list (default 1..8)")
    sweep.add_argument("--param", action="append", default=[], metavar="KEY=V1,V2",
                       help="vary a key over values, e.g. --param network.wan.latency_ms=10,50,200")
    sweep.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides")
    sweep.add_argument("--workers", type=int, help="local worker processes (default: one per core)")
    sweep.add_argument("--executor", choices=("local", "dask"), default="local")
    sweep.add_argument("--scheduler", help="the Dask scheduler's address, with --executor dask")
    sweep.add_argument("--out", type=Path, default=Path("results"))
    sub.add_parser("keys", help="list every scenario key, its default and what it must be")


def _progress_bar(label: str):
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn(label), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                        TimeElapsedColumn(), transient=True, disable=not sys.stderr.isatty(),
                        console=_console(stderr=True))
    return progress


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def _check_out(out: Path) -> None:
    """Refused before a run, not after it: results go into ``out``, which must be a directory."""
    for parent in (out, *out.parents):
        if parent.exists():
            if not parent.is_dir():
                raise ScenarioError(f"--out {out}: {parent} is not a directory")
            return


def _run(args: argparse.Namespace) -> int:
    scenario = load(args.scenario, args.overrides)
    _check_out(args.out)
    if args.seed is not None:
        if not 0 <= args.seed <= MAX_SEED:
            raise ScenarioError(f"--seed {args.seed}: expected an integer from 0 to {MAX_SEED}")
        scenario = scenario.with_seed(args.seed)
    out = args.out / f"{scenario.name}-{scenario.seed}"
    if scenario.experiment:
        return _run_experiment(scenario, out, args)
    from ._report import write_run
    from ._sim import Simulation

    with _progress_bar(f"{scenario.name} seed {scenario.seed}") as progress:
        task = progress.add_task("run", total=scenario.section("run")["duration_s"])
        result = Simulation(scenario, progress=lambda now, total: progress.update(task, completed=now / 1e6)).run()
    files = write_run(result, out, plots=not args.no_plots)
    if args.json:
        print(json.dumps(result.summary, indent=2))
    else:
        _print_summary(result.summary, files)
    if result.violations:
        print(f"invariant violated: {result.summary['invariants']}; seed {scenario.seed}; "
              f"replay: {result.summary['replay']}", file=sys.stderr)
        return EXIT_VIOLATION
    return EXIT_OK


def _run_experiment(scenario: Any, out: Path, args: argparse.Namespace) -> int:
    from ._experiment import run_experiment
    from ._report import write_experiment

    result = run_experiment(scenario)
    files = write_experiment(result, out, plots=not args.no_plots)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(result["table"])
        print(f"result digest: {result['result_digest']}")
        print(f"replay: {result['replay']}")
        print(f"written: {', '.join(map(str, files))}")
    stuck = [f"{r['protocol']} on the {r['topology']}" for r in result["rows"] if not r["converged"]]
    if stuck:
        print(f"did not converge: {', '.join(stuck)}; seed {scenario.seed}; replay: {result['replay']}",
              file=sys.stderr)
        return EXIT_VIOLATION
    return EXIT_OK


def _print_summary(s: dict[str, Any], files: list[Path]) -> None:
    from rich.table import Table

    console = _console()
    table = Table(title=f"{s['scenario']} (seed {s['seed']}): {s['members']} members, {s['anchors']} anchors, "
                        f"{s['duration_s']} s simulated", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("figure")
    table.add_row("wall time", f"{s['wall_s']} s  ({s['speedup']}x real time, {s['events']} events, "
                               f"engine share {s['engine_share']})")
    w = s["workload"]
    table.add_row("workload", f"{w['sales']} sales, {w['member_charges']} member charges "
                              f"({w['charges_refused']} sent for rights), {w['topups']} top-ups, "
                              f"{w['price_changes']} price changes, {w['order_edits']} order edits")
    for kind, st in s["staleness"].items():
        table.add_row(f"staleness {kind}", f"p50 {st['p50_ms']} ms, p90 {st['p90_ms']} ms, p99 {st['p99_ms']} ms "
                                           f"({st['count']} applies)")
    conv = [c for c in s["convergence"]]
    shown = "; ".join(f"{c['heal']}: {c['converged_after_s']} s" for c in conv[:6])
    table.add_row("converged after heal", shown + (f" (+{len(conv) - 6} more)" if len(conv) > 6 else ""))
    for kind, b in s["bytes"].items():
        table.add_row(f"bytes {kind}", f"{b['sent']:,} ({b['payload']:,} payload, metadata share "
                                       f"{b['metadata_share']})")
    table.add_row("entries held only locally", f"at most {s['unsynced_entries_max']}")
    table.add_row("incidents", ", ".join(f"{k} {v}" for k, v in s["incidents"].items()) or "none")
    bad = {k: v for k, v in s["invariants"].items() if v}
    table.add_row("invariants", "[green]all held[/green]" if not bad else f"[red]violated: {bad}[/red]")
    table.add_row("written", ", ".join(str(f) for f in files))
    console.print(table)
    # Outside the table, whole: a table cuts long cells to the terminal's (or a pipe's) width.
    print(f"trace digest: {s['trace_digest']}")
    print(f"replay: {s['replay']}")


def _sweep(args: argparse.Namespace) -> int:
    from ._report import plot_sweep, write_csv
    from ._sweep import expand, parse_params, parse_seeds, replay_of, run_sweep

    scenario = load(args.scenario, args.overrides)  # refused here if it is bad
    _check_out(args.out)
    if scenario.experiment:
        raise ScenarioError(f"{args.scenario}: an [experiment] scenario is run with `tillmesh sim run`")
    seeds = parse_seeds(args.seeds)
    params = parse_params(args.param)
    text = args.scenario.read_text()
    tasks = expand(text, str(args.scenario), args.overrides, seeds, params)
    with _progress_bar(f"sweep {scenario.name}: {len(tasks)} runs") as progress:
        bar = progress.add_task("sweep", total=len(tasks))
        rows = run_sweep(tasks, executor=args.executor, workers=args.workers, scheduler=args.scheduler,
                         progress=lambda done, total: progress.update(bar, completed=done))
    out = args.out / f"{scenario.name}-sweep"
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "sweep.csv", rows)
    written = [out / "sweep.csv"]
    metrics = [m for m in ("converge_max_s", "staleness_wan_p90_ms", "bytes_wan", "violations")
               if any(r.get(m) is not None for r in rows)]
    for name, _, _ in params:
        written.append(plot_sweep(rows, name, metrics, out / f"sweep_{name.replace('.', '_')}.png",
                                  f"{scenario.name}: {len(seeds)} seeds per value"))
    violations = sum(r["violations"] for r in rows)
    print(f"{len(rows)} runs; invariant violations: {violations}; written: {', '.join(map(str, written))}")
    if violations:
        for task, row in zip(tasks, rows):
            if row["violations"]:
                print(f"  seed {row['seed']} violated an invariant; replay: {replay_of(task)}", file=sys.stderr)
        return EXIT_VIOLATION
    return EXIT_OK


def _keys() -> int:
    for section, keys in [*SCHEMA.items(), *((f"[{name}]", keys) for name, keys in LISTS.items())]:
        print(f"[{section}]")
        for key, ((_, expected), default) in keys.items():
            print(f"  {key:<22} {expected}; default {default!r}" if default is not None
                  else f"  {key:<22} {expected}; required")
    return EXIT_OK


def run_command(args: argparse.Namespace) -> int:
    try:
        if args.sim_command == "run":
            return _run(args)
        if args.sim_command == "sweep":
            return _sweep(args)
        return _keys()
    except ScenarioError as exc:
        print(f"tillmesh sim: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
