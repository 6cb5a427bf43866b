"""A run's outputs: ``metrics.csv`` (samples over time), ``summary.json`` and PNG plots.

Plots use matplotlib's Agg backend (no screen); matplotlib is imported here only, so a
run without plots never loads it.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["write_run", "results_dir", "plot_sweep"]

TOP_LINKS = 15  # links shown in the bytes-per-link plot


def results_dir(root: str | Path, name: str, seed: int) -> Path:
    return Path(root) / f"{name}-{seed}"


def _pyplot():
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})


def write_run(result: Any, out: Path, *, plots: bool = True) -> list[Path]:
    """Write a ``Result`` under ``out``; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "metrics.csv", out / "summary.json"]
    write_csv(written[0], result.samples)
    written[1].write_text(json.dumps(result.summary, indent=2, sort_keys=False) + "\n")
    if plots:
        written += _plots(result, out)
    return written


def write_experiment(result: dict[str, Any], out: Path, *, plots: bool = True) -> list[Path]:
    """Write an [experiment] run under ``out``: a row per topology and protocol in
    metrics.csv, the whole result in summary.json, the table, and a plot of the payload
    against the optimum; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "metrics.csv", out / "summary.json", out / "table.txt"]
    write_csv(written[0], result["rows"])
    written[1].write_text(json.dumps(result, indent=2) + "\n")
    written[2].write_text(result["table"] + "\n")
    if plots:
        written.append(_plot_experiment(result, out / "experiment.png"))
    return written


def _plot_experiment(result: dict[str, Any], path: Path) -> Path:
    plt = _pyplot()
    rows = result["rows"]
    topologies = list(dict.fromkeys(r["topology"] for r in rows))
    protocols = list(dict.fromkeys(r["protocol"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    width = 0.8 / len(protocols)
    for i, protocol in enumerate(protocols):
        xs = [t + i * width for t in range(len(topologies))]
        mine = {r["topology"]: r for r in rows if r["protocol"] == protocol}
        axes[0].bar(xs, [mine[t]["payload_vs_optimum"] or 0 for t in topologies], width, label=protocol)
        axes[1].bar(xs, [mine[t]["metadata_share"] or 0 for t in topologies], width, label=protocol)
    for ax, title in zip(axes, ("payload / optimum", "metadata share of bytes")):
        ax.set_xticks([t + 0.4 - width / 2 for t in range(len(topologies))], topologies)
        ax.set_title(title, fontsize=9)
    axes[0].axhline(1.0, color="grey", linewidth=0.5, linestyle=":")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{result['scenario']} (seed {result['seed']}): {result['experiment']['nodes']} nodes", fontsize=10)
    return _save(fig, path, plt)


def _plots(result: Any, out: Path) -> list[Path]:
    plt = _pyplot()
    samples = result.samples
    hours = [s["t_s"] / 3600 for s in samples]
    name = result.summary["scenario"]
    files = []

    fig, ax = plt.subplots(figsize=(8, 4))
    for kind, style in (("lan", "-"), ("wan", "--")):
        for q in ("p50", "p90"):
            ys = [s.get(f"staleness_{kind}_{q}_ms") for s in samples]
            points = [(h, y) for h, y in zip(hours, ys) if y is not None]
            if points:
                # a marker at each sample: a sample with no neighbour (gaps between applies) still shows
                ax.plot(*zip(*points), style, label=f"{kind} {q}", linewidth=1.2 if q == "p50" else 0.8,
                        marker=".", markersize=3)
    ax.set_yscale("log")
    ax.set_xlabel("hours")
    ax.set_ylabel("write to visible (ms)")
    ax.set_title(f"{name}: staleness over time")
    ax.legend(loc="upper right", fontsize=8)
    _partitions(ax, result)
    files.append(_save(fig, out / "staleness.png", plt))

    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(hours, [s["unsynced_entries"] for s in samples], color="tab:red")
    ax.set_xlabel("hours")
    ax.set_ylabel("entries held only on their device")
    ax.set_title(f"{name}: entries not yet held by any other device")
    _partitions(ax, result)
    files.append(_save(fig, out / "unsynced.png", plt))

    pairs = sorted(result.pair_bytes.items(), key=lambda kv: -kv[1][0])[:TOP_LINKS]
    fig, ax = plt.subplots(figsize=(8, max(3, 0.3 * len(pairs) + 1)))
    labels = [f"{a} - {b}" for (a, b), _ in pairs]
    payload = [v[1] / 1024 for _, v in pairs]
    metadata = [(v[0] - v[1]) / 1024 for _, v in pairs]
    ax.barh(labels, payload, label="entry payload")
    ax.barh(labels, metadata, left=payload, label="protocol metadata")
    ax.invert_yaxis()
    ax.set_xlabel("KiB sent (both directions)")
    ax.set_title(f"{name}: bytes per link")
    ax.tick_params(axis="y", labelsize=7)
    ax.legend(fontsize=8)
    files.append(_save(fig, out / "bytes_per_link.png", plt))
    return files


def _partitions(ax: Any, result: Any) -> None:
    for heal in result.summary["convergence"]:
        ax.axvline(heal["at_s"] / 3600, color="grey", linewidth=0.5, linestyle=":")


def _save(fig: Any, path: Path, plt: Any) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_sweep(rows: list[dict[str, Any]], param: str, metrics: list[str], path: Path, title: str) -> Path:
    """One plot per parameter: each metric's mean (and min..max over seeds) per value."""
    plt = _pyplot()
    values = sorted({r[param] for r in rows}, key=lambda v: (isinstance(v, str), v))
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.5), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        means, lows, highs = [], [], []
        for value in values:
            ys = [r[metric] for r in rows if r[param] == value and r.get(metric) is not None]
            means.append(sum(ys) / len(ys) if ys else float("nan"))
            lows.append(min(ys) if ys else float("nan"))
            highs.append(max(ys) if ys else float("nan"))
        xs = list(range(len(values)))
        ax.plot(xs, means, marker="o")
        ax.fill_between(xs, lows, highs, alpha=0.2)
        ax.set_xticks(xs, [str(v) for v in values])
        ax.set_xlabel(param)
        ax.set_title(metric, fontsize=9)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path, plt)
