"""Simulator benchmark: the loop's own cost, the engine's share, and speed at scale.

Prints one JSON object; in the same run:

- ``loop_vs_bare_heapq``: events per second of the simulator's loop and network model
  driving no-op nodes (each sends a small message to each neighbour every 10 ms of virtual
  time; receiving does nothing), against a bare ``heapq`` loop whose handlers only
  reschedule themselves (goal >= 0.25);
- ``engine_share``: the share of wall time spent inside Engine calls on ``basement.toml``
  (goal >= 0.8);
- ``store_day_speedup``: one branch (5 tills, a back office, an anchor) through a trading
  day 08:00-20:00, simulated seconds per wall second (goal >= 1000);
- ``chain_50``: ``chain_50.toml`` (250 members, 2 anchors) through its lunch-peak hour:
  speedup, wall time, peak memory (each large run in a child process of its own, so that
  its peak RSS is its own);
- ``nodes_1000`` (with ``--scale``): 200 branches x 5 devices and 8 anchors for 5 minutes,
  wall time and peak memory, and the set-up time apart (every device verifies the whole
  authority feed of its token, which grows with the chain);
- ``sweep_parallel_speedup``: 8 seeds of a short scenario on 2 worker processes against
  the same 8 seeds run one after another (goal >= 1.6).
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from gossip import Effects  # noqa: E402
from simulations._device import Clock, Device, Observer  # noqa: E402
from simulations._loop import Loop  # noqa: E402
from simulations._network import LinkSpec, Network  # noqa: E402
from simulations._trace import Trace  # noqa: E402

SCENARIOS = ROOT / "simulations" / "scenarios"


class _NullStatus:
    peers = ()


class NoOpEngine:
    """The engine's surface doing nothing but send a 64-byte message to each peer every 10 ms."""

    def __init__(self) -> None:
        self.peers: list = []
        self.next_ms = 10
        self.due = False

    def connected(self, peer, initiator, now): self.peers.append(peer)
    def received(self, peer, data, now): pass
    def disconnected(self, peer, now): self.peers.remove(peer)
    def flushed(self, now): pass
    def status(self): return _NullStatus()

    def tick(self, now):
        if now.mono_ms >= self.next_ms:
            self.due = True
            self.next_ms = now.mono_ms + 10

    def next_deadline(self): return self.next_ms

    def poll(self):
        if not self.due:
            return Effects({})
        self.due = False
        return Effects({peer: b"x" * 64 for peer in self.peers})


def loop_events_per_s(nodes: int = 40, seconds: int = 20) -> float:
    loop = Loop()
    trace = Trace()
    devices: dict[str, Device] = {}
    network = Network(loop, random.Random(1), trace,
                      on_connected=lambda end, i: devices[end.name].on_connected(end, i),
                      on_data=lambda end, data: devices[end.name].on_data(end, data),
                      on_closed=lambda end: devices[end.name].on_closed(end), is_up=lambda n: devices[n].up)
    lan = LinkSpec("lan", 0.5, 0.3, 100_000)
    names = [f"n{i}" for i in range(nodes)]
    for i, name in enumerate(names):
        devices[name] = Device(loop=loop, network=network, observer=Observer(), rng=random.Random(i), name=name,
                               number=i + 1, branch="b", roles=("cashier",), make_engine=lambda s, n: NoOpEngine(),
                               store=None, clock=Clock(0))
    for i, name in enumerate(names):  # a ring with chords: 4 neighbours each
        for k in (1, 2):
            other = names[(i + k) % nodes]
            network.link(name, other, lan)
            devices[name].targets.append(other)
    for device in devices.values():
        device.start()
    loop.run(1_000_000)  # connected
    start_events, start = loop.events, time.perf_counter()
    loop.run(loop.now + seconds * 1_000_000)
    return (loop.events - start_events) / (time.perf_counter() - start)


def bare_heapq_events_per_s(count: int = 400_000) -> float:
    queue: list = []
    seq = 0

    def handler(t: int) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(queue, (t + 1000, seq, handler, (t + 1000,)))

    for i in range(100):
        seq += 1
        heapq.heappush(queue, (i, seq, handler, (i,)))
    start = time.perf_counter()
    for _ in range(count):
        t, _, fn, args = heapq.heappop(queue)
        fn(*args)
    return count / (time.perf_counter() - start)


CHILD = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
t0 = time.perf_counter()
from simulations._scenario import load
from simulations._sim import Simulation
scenario = load({path!r}, {overrides!r})
sim = Simulation(scenario, measure_engine={measure!r})
setup = time.perf_counter() - t0
summary = sim.run().summary
summary["setup_s"] = round(setup, 3)
summary["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
print(json.dumps(summary))
"""


def run_child(path: Path, overrides: list[str], measure: bool = False, timeout: int = 7200) -> dict:
    code = CHILD.format(root=str(ROOT), path=str(path), overrides=overrides, measure=measure)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                         stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        raise RuntimeError(f"{path.name} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def brief(s: dict) -> dict:
    keep = ("devices", "duration_s", "wall_s", "setup_s", "speedup", "engine_share", "events", "commits",
            "peak_rss_mib", "invariants", "trace_digest")
    return {k: s[k] for k in keep if k in s}


def sweep_speedup(duration_s: int) -> dict:
    from simulations._sweep import expand, run_sweep

    path = SCENARIOS / "basement.toml"
    tasks = expand(path.read_text(), str(path), [f"run.duration_s={duration_s}"], list(range(1, 9)), [])
    start = time.perf_counter()
    serial = run_sweep(tasks, workers=1)
    serial_s = time.perf_counter() - start
    start = time.perf_counter()
    parallel = run_sweep(tasks, workers=2)
    parallel_s = time.perf_counter() - start
    same = [r["trace_digest"] for r in serial] == [r["trace_digest"] for r in parallel]
    return {"runs": len(tasks), "serial_s": round(serial_s, 3), "two_workers_s": round(parallel_s, 3),
            "same_results": same, "speedup": round(serial_s / parallel_s, 3)}


def _progress(name: str, figures: dict) -> None:
    """Each part's figures on stderr as soon as it is done: a long run (the full chain_50
    hour takes tens of minutes here) leaves what it measured even if it is stopped."""
    print(json.dumps({name: figures}), file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--scale", action="store_true", help="also the 1,000-node scenario (tens of minutes)")
    args = parser.parse_args()
    out: dict = {"benchmark": "sim", "cores": os.cpu_count()}
    loop_rate = loop_events_per_s(seconds=5 if args.quick else 20)
    bare_rate = bare_heapq_events_per_s()
    out["loop"] = {"sim_events_per_s": round(loop_rate), "bare_heapq_events_per_s": round(bare_rate)}
    _progress("loop", out["loop"])
    basement = run_child(SCENARIOS / "basement.toml", ["run.duration_s=3600"] if args.quick else [], measure=True)
    out["basement"] = brief(basement)
    _progress("basement", out["basement"])
    day = ["chain.tills=5", "run.start_hour=8", "run.duration_s=" + ("7200" if args.quick else "43200"),
           "workload.sales_per_till_hour=30"]
    store_day = run_child(SCENARIOS / "basement.toml", day)
    out["store_day"] = brief(store_day)
    _progress("store_day", out["store_day"])
    chain = run_child(SCENARIOS / "chain_50.toml", ["run.duration_s=600", "chain.branches=10"] if args.quick else [])
    out["chain_50"] = brief(chain)
    _progress("chain_50", out["chain_50"])
    if args.scale:
        big = run_child(SCENARIOS / "chain_50.toml", ["chain.branches=200", "chain.anchors=8", "run.duration_s=300",
                                                      "workload.sales_per_till_hour=2", "workload.members=100",
                                                      "run.sample_s=60", "run.final_heal_s=600"])
        out["nodes_1000"] = brief(big)
    # Runs of a few seconds each, so that starting the worker processes (spawn) is not the
    # figure: a lab's sweep runs minutes per seed.
    out["sweep"] = sweep_speedup(1200 if args.quick else 3600)
    out["ratios"] = {
        "loop_vs_bare_heapq": round(loop_rate / bare_rate, 3),
        "engine_share": basement["engine_share"],
        "store_day_speedup": store_day["speedup"],
        "chain_50_speedup": chain["speedup"],
        "sweep_parallel_speedup": out["sweep"]["speedup"],
    }
    out["goals"] = {"loop_vs_bare_heapq": ">= 0.25", "engine_share": ">= 0.8", "store_day_speedup": ">= 1000",
                    "sweep_parallel_speedup": ">= 1.6", "chain_50": "reported", "nodes_1000": "reported (--scale)"}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
