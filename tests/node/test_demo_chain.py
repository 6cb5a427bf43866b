"""``tillmesh demo``: the chain in real processes, run once as a user would run it.

The demo runs as its own process in an empty working directory with ``TMPDIR`` pointed at an
empty directory, so the test sees everything it leaves behind: only ``results/`` in the
working directory, nothing in the temp directory, and none of the ``tillmesh`` processes it
recorded in ``results/demo/summary.json`` still alive. ``--in-process`` keeps the
deterministic in-process demo.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEVICES = ("anchor", "till-1", "till-2", "basement", "office", "north-1")


def demo(cwd: Path, *args: str, tmp: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="120")
    if tmp is not None:
        env["TMPDIR"] = str(tmp)
    return subprocess.run([sys.executable, "-m", "node.cli", "demo", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def alive(pid: int) -> bool:
    """Whether ``pid`` is still a tillmesh process (a pid reused by something else is not)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"node.cli" in cmdline or b"tillmesh" in cmdline


def test_the_demo_runs_a_chain_of_processes_converges_and_leaves_nothing_behind(tmp_path):
    work, tmp = tmp_path / "work", tmp_path / "tmp"
    work.mkdir()
    tmp.mkdir()
    result = demo(work, tmp=tmp)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert out.rstrip().endswith("converged: yes"), out
    assert "converged: no" not in out
    # the per-device table, read through each device's API
    assert "Every device's view, read through its own API" in out
    header = out[out.index("Every device's view"):]
    for name in DEVICES:
        assert name in header
    for label in ("sales (whole chain)", "stock central coffee-250g", "alice balance",
                  "acks local/lan/anchor", "bytes sent/received", "incidents", "digest"):
        assert label in out, label
    # one progress line per step, each of the story's steps there
    for step in ("set up with the CLI", "links up", "partition:", "alice pays", "SIGKILL:", "restarted till-2",
                 "heal:", "every member's digest is equal"):
        assert step in out, step

    summary = json.loads((work / "results" / "demo" / "summary.json").read_text())
    assert summary["converged"] is True and summary["failure"] is None
    assert summary["kill"]["acknowledged"] >= 25 and summary["kill"]["lost"] == []
    views = summary["devices"]
    digests = {views[name]["digest"] for name in DEVICES if name != "anchor"}
    assert len(digests) == 1 and None not in digests
    assert len({views[name]["alice_balance"] for name in DEVICES if name != "anchor"}) == 1
    # every process it started (7: six devices and till-2 again after the kill) is gone
    pids = summary["pids"]
    assert len(pids) == len(DEVICES) + 1 and len(summary["pids_by_device"]["till-2"]) == 2
    assert [pid for pid in pids if alive(pid)] == []
    # nothing outside results/, and the temporary directory removed
    assert not Path(summary["tempdir"]).exists()
    assert Path(summary["tempdir"]).parent == tmp
    assert list(tmp.iterdir()) == []
    assert sorted(p.name for p in work.iterdir()) == ["results"]
    assert sorted(p.name for p in (work / "results" / "demo" / "logs").iterdir()) == sorted(f"{n}.log" for n in DEVICES)
    assert summary["seconds"] < 90


def test_the_in_process_demo_is_still_there(tmp_path):
    result = demo(tmp_path, "--in-process", timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "converged: yes" in result.stdout
    assert "A chain of two branches" in result.stdout  # the old demo's story, not the processes'
    assert list(tmp_path.iterdir()) == []
