"""The partition simulator: determinism, the shipped scenarios, planted bugs it must catch,
scenario errors, the CLI, sweeps (local and Dask) and the network and loop models.

Every run here is short (a few minutes of virtual time, a handful of devices); the
shipped scenarios run with overrides that keep at least one of their faults inside the run.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from gossip import MemoryFeedStore
from simulations._loop import Loop
from simulations._network import LinkSpec, Network
from simulations._scenario import ScenarioError, load, loads
from simulations._sim import Simulation
from simulations._sweep import expand, parse_params, parse_seeds, run_sweep
from simulations._trace import Trace

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "simulations" / "scenarios"
PYTHON = sys.executable
WALL_CLOCK = ("wall_s", "speedup", "engine_share")

# A tiny chain with a partition, a crash and some load: about half a second a run.
TINY = """
[run]
name = "tiny"
duration_s = 300
final_heal_s = 120
sample_s = 30

[chain]
branches = ["central"]
tills = 2
anchors = 1

[workload]
sales_per_till_hour = 240

[[partition]]
at_s = 60
for_s = 60
devices = ["central-till1"]

[[crash]]
at_s = 200
device = "central-till2"
down_s = 20
"""


def simulate(scenario, **kwargs):
    sim = Simulation(scenario, measure_engine=False, **kwargs)
    return sim, sim.run()


def comparable(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in WALL_CLOCK}


def subprocess_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    home, mpl = tmp_path / "home", tmp_path / "mpl"
    home.mkdir(exist_ok=True)
    mpl.mkdir(exist_ok=True)
    env = {**os.environ, "HOME": str(home), "MPLCONFIGDIR": str(mpl), "MPLBACKEND": "Agg"}
    env.update(extra)
    return env


# --- 1. determinism ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_runs():
    """Two runs of TINY with seed 1 and one each with seeds 2 and 3."""
    return {tag: simulate(loads(TINY, "tiny.toml").with_seed(seed))[1]
            for tag, seed in (("a", 1), ("b", 1), ("s2", 2), ("s3", 3))}


def test_same_seed_same_trace_and_figures(tiny_runs):
    a, b = tiny_runs["a"].summary, tiny_runs["b"].summary
    assert a["trace_events"] > 500  # a run that did something
    assert a["commits"] > 0 and a["acknowledged"] > 0
    assert a["trace_digest"] == b["trace_digest"]
    assert comparable(a) == comparable(b)
    assert tiny_runs["a"].samples == tiny_runs["b"].samples
    assert tiny_runs["a"].pair_bytes == tiny_runs["b"].pair_bytes


def test_different_seeds_different_traces(tiny_runs):
    digests = {tag: r.summary["trace_digest"] for tag, r in tiny_runs.items()}
    assert len({digests["a"], digests["s2"], digests["s3"]}) == 3
    assert tiny_runs["s2"].summary["seed"] == 2


def test_digest_does_not_depend_on_hash_randomisation(tiny_runs, tmp_path):
    scenario = tmp_path / "tiny.toml"
    scenario.write_text(TINY)
    code = ("import sys; from simulations._scenario import load; from simulations._sim import Simulation; "
            "print(Simulation(load(sys.argv[1]), measure_engine=False).run().summary['trace_digest'])")
    # A hash seed other than this process's (an unset one is random here).
    seed = "4242" if os.environ.get("PYTHONHASHSEED") != "4242" else "77"
    done = subprocess.run([PYTHON, "-c", code, str(scenario)], cwd=ROOT, capture_output=True, text=True,
                          env=subprocess_env(tmp_path, PYTHONHASHSEED=seed), timeout=120)
    assert done.returncode == 0, done.stderr
    # The source differs (a path, not "tiny.toml") but it is not part of the trace.
    assert done.stdout.strip() == tiny_runs["a"].summary["trace_digest"]


# --- 2. the shipped scenarios, short ------------------------------------------------------------

QUIET = ["run.final_heal_s=300"]
# file -> (overrides that keep a fault inside the run, what must have happened)
SHORT = {
    "basement.toml": (["run.duration_s=4200", *QUIET], {"cut": "central-till3"}),
    "anchor_outage.toml": (["run.duration_s=7500", "chain.tills=1", 'chain.branches=["central","north"]',
                            "workload.sales_per_till_hour=10", "sync.have_interval_ms=20000", *QUIET],
                           {"cut": "anchor1"}),
    "churn.toml": (["run.duration_s=6300", "workload.sales_per_till_hour=10", "sync.have_interval_ms=20000", *QUIET],
                   {"crash": "central-till1", "joined": "central-new1", "left": "north-till3",
                    "revoked": "central-till2"}),
    "clock_skew.toml": (["run.duration_s=900", *QUIET], {}),
    "lan_split.toml": (["run.duration_s=2100", 'chain.branches=["central"]', "workload.sales_per_till_hour=20",
                        *QUIET], {"cut": "central-till2"}),
    "chain_50.toml": (["chain.branches=4", "run.start_hour=12", "run.duration_s=600", *QUIET], {}),
}
NOT_HERE = {"enes_icde19.toml"}  # an [experiment]: tests/simulations/test_baselines.py


def test_every_scenario_has_a_short_mode():
    files = {p.name for p in SCENARIOS.glob("*.toml")} - NOT_HERE
    assert files == set(SHORT)


def _first_fault_s(scenario) -> float | None:
    times = [item["at_s"] for table in ("partition", "anchor_outage", "crash", "join", "leave", "revoke")
             for item in scenario.lists[table]]
    return min(times) if times else None


@pytest.mark.parametrize("name", sorted(SHORT))
def test_scenario_short_run_holds_invariants(name):
    overrides, expect = SHORT[name]
    scenario = load(SCENARIOS / name, overrides)
    first = _first_fault_s(scenario)
    if first is not None:
        assert first < scenario.section("run")["duration_s"], "the short mode must keep a fault inside the run"
    sim = Simulation(scenario, measure_engine=False)
    cuts, crashes = [], []
    real_cut = sim.network.cut
    sim.network.cut = lambda a, b: (cuts.append((a, b)), real_cut(a, b))[1]
    for device in sim.devices.values():
        real_crash = device.crash
        device.crash = lambda d=device, f=real_crash: (crashes.append(d.name), f())[1]
    result = sim.run()
    s = result.summary
    assert result.violations == 0, s["invariants"]
    assert s["convergence"], "no convergence measured"
    assert s["convergence"][-1]["heal"] == "final heal"
    assert all(c["converged_after_s"] is not None for c in s["convergence"]), s["convergence"]
    assert s["commits"] > 0 and s["acknowledged"] > 0
    # What was acknowledged is the workload's commits (less any a crash took before they
    # were durable) and the entries engines wrote on their own (rights they granted).
    assert 0 <= s["acknowledged"] - s["engine_writes"] <= s["commits"]
    assert s["members"] == len([d for d in sim.devices.values() if not d.is_anchor])
    if "cut" in expect:
        assert any(expect["cut"] in pair for pair in cuts), cuts
    if "crash" in expect:
        assert expect["crash"] in crashes
    if "joined" in expect:
        assert expect["joined"] in sim.devices
    if "left" in expect:
        assert sim.devices[expect["left"]].left
    if "revoked" in expect:
        assert sim.devices[expect["revoked"]].number in sim.metrics.revoked


def test_clock_skew_scenario_exercises_the_skew_hold():
    """clock_skew.toml says its till runs "90 s fast (beyond the engines' max skew, so its
    entries wait on the others until their clocks catch up)": the other members must then
    report it (one ``clock_skew`` alert per episode)."""
    scenario = load(SCENARIOS / "clock_skew.toml", SHORT["clock_skew.toml"][0])
    result = simulate(scenario)[1]
    assert result.violations == 0
    assert result.summary["incidents"].get("clock_skew", 0) > 0, result.summary["incidents"]


# --- 3. planted bugs ----------------------------------------------------------------------------

CRASHY = """
[run]
name = "crashy"
duration_s = 600
final_heal_s = 300

[chain]
branches = ["central"]
tills = 2
anchors = 1

[workload]
sales_per_till_hour = 240

[[crash]]
at_s = 300
device = "central-till1"
down_s = 30
"""


class LosingStore(MemoryFeedStore):
    """Says a flush is durable, then a crash loses the newest flushed entries of its own
    device. The restart copy is the honest crashed copy, cut back through ``truncate``."""

    LOSE = 2

    def __init__(self) -> None:
        super().__init__()
        self.own: int | None = None  # set by the test on the device it plants the bug in
        self.lost: list[int] = []

    def crashed(self) -> MemoryFeedStore:
        copy = super().crashed()
        head = copy.head(self.own) if self.own is not None else None
        if head is not None:
            keep = max(0, head.seq - self.LOSE)
            self.lost = list(range(keep + 1, head.seq + 1))
            copy.truncate(self.own, keep)
            copy.flush()
        return copy


def test_planted_lossy_store_is_caught():
    sim = Simulation(loads(CRASHY, "crashy.toml"), store_factory=LosingStore, measure_engine=False)
    till = sim.devices["central-till1"]
    store = till.store
    store.own = till.number
    result = sim.run()
    # The plant did lose writes the till had acknowledged.
    assert store.lost
    assert all((till.number, seq) in sim.metrics.acked_hashes for seq in store.lost)
    inv = result.summary["invariants"]
    assert inv["lost_acknowledged_writes"] > 0, inv
    assert inv["forks"] > 0, inv  # the till signs new entries at seqs it had already given out
    assert result.violations > 0


def test_control_real_store_loses_nothing_in_a_crash():
    sim, result = simulate(loads(CRASHY, "crashy.toml"))
    till = sim.devices["central-till1"]
    assert sim.metrics.acked.get(till.number, 0) > 0
    assert "restart central-till1" in [c["heal"] for c in result.summary["convergence"]]
    assert result.violations == 0, result.summary["invariants"]
    assert result.summary["incidents"] == {}


TAMPER = """
[run]
name = "tamper"
duration_s = 300
final_heal_s = 300

[chain]
branches = ["central"]
tills = 2
anchors = 1

[workload]
sales_per_till_hour = 240
"""
TAMPERED_PAIR = frozenset(("central-till1", "central-office"))


def test_tampered_byte_is_refused_and_the_session_comes_back():
    sim = Simulation(loads(TAMPER, "tamper.toml"), measure_engine=False)
    delivered: dict[tuple[int, int], int] = {}
    hit = []

    def tap(conn, direction, data):
        key = (conn.id, direction)
        delivered[key] = delivered.get(key, 0) + 1
        handshake_over = delivered[key] > 3 and delivered.get((conn.id, 1 - direction), 0) >= 3
        if (not hit and conn.pair == TAMPERED_PAIR and handshake_over
                and sim.loop.now - conn.opened_us > 30_000_000):
            flipped = bytearray(data)
            flipped[len(flipped) // 2] ^= 0x01
            hit.append((conn, direction))
            return bytes(flipped)
        return data

    sim.network.tap = tap
    result = sim.run()
    assert len(hit) == 1
    conn, direction = hit[0]
    receiver = conn.ends[1 - direction].name
    s = result.summary
    # The receiver's engine refuses the message (it does not decrypt) and says so.
    assert s["incidents"] == {"protocol_error": 1}, s["incidents"]
    (incident,) = [i for i in s["incident_log"] if i["kind"] == "protocol_error"]
    assert incident["device"] == receiver
    assert "DecryptionFailed" in incident["detail"]
    assert conn.state != "open"  # that stream was closed
    # A new session between the same two devices, and every invariant held after the heal.
    peers = {p.handle.peer: p for p in sim.devices[receiver].status().peers if hasattr(p.handle, "conn")}
    other = conn.ends[direction].name
    assert peers[other].state == "live"
    assert peers[other].handle.conn.id != conn.id
    assert result.violations == 0, s["invariants"]


def test_control_untampered_run_reports_no_incident():
    result = simulate(loads(TAMPER, "tamper.toml"))[1]
    assert result.summary["incidents"] == {}
    assert result.violations == 0


def test_no_churn_after_the_run_ends():
    """The final heal runs with "no more load, no more faults": a join or a leave
    scheduled after ``duration_s`` must not happen while the chain settles."""
    text = TAMPER.replace("duration_s = 300", "duration_s = 120") + """
[[leave]]
at_s = 120.5
device = "central-till1"

[[join]]
at_s = 120.5
branch = "central"
"""
    sim, result = simulate(loads(text, "late.toml"))
    assert not sim.devices["central-till1"].left
    assert "central-new1" not in sim.devices
    assert result.summary["devices"] == 4


# --- 4. scenario errors and the CLI -------------------------------------------------------------

BASE = '[run]\nname = "e"\n[chain]\nbranches = ["central"]\ntills = 2\n'


@pytest.mark.parametrize("text, overrides, names", [
    (BASE + "[workload]\nsales_per_till_hr = 5\n", [], ["workload.sales_per_till_hr", "unknown key", "sales_per_till_hour"]),
    (BASE + '[workload]\nsales_per_till_hour = "lots"\n', [], ["workload.sales_per_till_hour", "a finite number >= 0", "'lots'"]),
    (BASE + "[workload]\nsales_per_till_hour = true\n", [], ["workload.sales_per_till_hour", "a finite number"]),
    (BASE + '[[crash]]\ndevice = "central-till1"\n', [], ["crash[0].at_s", "missing", "a finite number >= 0"]),
    (BASE + "[[crash]]\nat_s = 5\n", [], ["crash[0].device", "missing", "a non-empty string"]),
    (BASE + "[wrkload]\nskus = 5\n", [], ["[wrkload]", "unknown section", "workload"]),
    ("crash = 5\n" + BASE, [], ["[[crash]]", "array of tables"]),
    (BASE + '[[partition]]\nat_s = 1\nfor_s = 1\ndevices = ["a"]\ngroups = [["a"], ["b"]]\n', [],
     ["partition[0]", "exactly one of devices or groups"]),
    (BASE, ["run.duration_s"], ["--set", "run.duration_s", "key=value"]),
    (BASE, ["duration_s=5"], ["--set duration_s", "section.key"]),
    (BASE, ["run.duration_s=0"], ["run.duration_s", "an integer >= 1", "0"]),
    (BASE, ["run.name.x=1"], ["--set run.name.x", "name is not a table"]),
    (BASE, ["nosuch.key=1"], ["[nosuch]", "unknown section"]),
    (BASE, ["chain.tills=101"], ["chain.tills", "<= 100", "101"]),
    ("[run\n", [], ["not valid TOML"]),
    # values a check must stop before they reach the loop (each was a traceback or a hang)
    (BASE, ["network.wan.latency_ms=inf"], ["network.wan.latency_ms", "a finite number", "inf"]),
    (BASE, ["network.wan.jitter_ms=nan"], ["network.wan.jitter_ms", "a finite number"]),
    (BASE, ["network.lan.latency_ms=1e308"], ["network.lan.latency_ms", "<= 3600000"]),
    (BASE, ["workload.sales_per_till_hour=inf"], ["workload.sales_per_till_hour", "a finite number"]),
    (BASE, ["random_faults.crashes_hour=1e300"], ["random_faults.crashes_hour", "<="]),
    (BASE, ["random_faults.partition_mean_s=inf"], ["random_faults.partition_mean_s", "a finite number"]),
    (BASE, ["experiment.writes_per_node_s=5000"], ["experiment.writes_per_node_s", "<= 1000"]),
    (BASE, ["run.flush_ms=inf"], ["run.flush_ms", "a finite number"]),
    (BASE, ["run.duration_s=100000000000"], ["run.duration_s", "<="]),
    (BASE + '[[partition]]\nat_s = 1\nfor_s = inf\ndevices = ["central-till1"]\n', [],
     ["partition[0].for_s", "a finite number"]),
    (BASE + '[[skew]]\ndevice = "central-till1"\nskew_ms = 100000000000000000\n', [], ["skew[0].skew_ms", "<="]),
    (BASE + '[[skew]]\ndevice = "central-till1"\nskew_ms = -100000000000000000\n', [], ["skew[0].skew_ms", ">="]),
    (BASE, ["run.name=../../escape"], ["run.name", "letters, digits"]),
    (BASE, ["run.name=/tmp/x"], ["run.name", "letters, digits"]),
    (BASE, ["experiment.topologies=[]"], ["experiment.topologies", "a non-empty list of distinct"]),
    (BASE, ['experiment.protocols=["delta", "delta"]'], ["experiment.protocols", "distinct"]),
    (BASE, ["dial.base_ms=5000", "dial.cap_ms=100"], ["dial.cap_ms", "at least dial.base_ms (5000)", "100"]),
    (BASE, ["chain.branch_lan=false", "chain.anchors=0"], ["chain.anchors", "no link"]),
])
def test_scenario_errors_name_the_key(text, overrides, names):
    with pytest.raises(ScenarioError) as caught:
        loads(text, "bad.toml", overrides)
    message = str(caught.value)
    assert message.startswith("bad.toml: ") or message.startswith("--set ")
    for name in names:
        assert name in message, message


def test_unknown_device_in_a_partition_names_it():
    text = BASE + '[[partition]]\nat_s = 1\nfor_s = 1\ndevices = ["central-till9"]\n'
    scenario = loads(text, "bad.toml")  # the names are known only once the chain is built
    with pytest.raises(ScenarioError) as caught:
        Simulation(scenario, measure_engine=False)
    message = str(caught.value)
    assert "partition[0].devices" in message and "'central-till9'" in message
    assert "central-till1" in message  # what the devices are


def test_unknown_anchor_and_branch_name_them():
    for extra, where in (('[[anchor_outage]]\nat_s = 1\nfor_s = 1\nanchors = ["central-till1"]\n', "anchor_outage[0].anchors"),
                         ('[[join]]\nat_s = 1\nbranch = "west"\n', "join[0].branch")):
        with pytest.raises(ScenarioError, match=re.escape(where) + ": unknown"):
            Simulation(loads(BASE + extra, "bad.toml"), measure_engine=False)


@given(st.integers(-10**6, 10**6))
def test_override_of_an_int_key_is_checked(value):
    if value >= 1:
        assert loads(BASE, "s", [f"run.duration_s={value}"]).section("run")["duration_s"] == value
    else:
        with pytest.raises(ScenarioError, match=r"run\.duration_s: expected an integer >= 1"):
            loads(BASE, "s", [f"run.duration_s={value}"])


def test_missing_file_and_experiment_refused(tmp_path):
    with pytest.raises(ScenarioError, match="cannot read the scenario"):
        load(tmp_path / "absent.toml")
    with pytest.raises(ScenarioError, match=r"\[experiment\]"):
        Simulation(load(SCENARIOS / "enes_icde19.toml"), measure_engine=False)


def _cli(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "node.cli", "sim", *args], cwd=ROOT, capture_output=True, text=True,
                          env=subprocess_env(tmp_path), timeout=300)


@pytest.mark.parametrize("content, key", [
    ('[workload]\nsales_per_till_hour = "lots"\n', "workload.sales_per_till_hour"),
    ('[chain]\ntills = 2\n[[partition]]\nat_s = 1\nfor_s = 1\ndevices = ["ghost"]\n', "partition[0].devices"),
])
def test_cli_bad_scenario_exits_2_with_one_line(tmp_path, content, key):
    bad = tmp_path / "bad.toml"
    bad.write_text(content)
    done = _cli(["run", str(bad), "--out", str(tmp_path / "out")], tmp_path)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("tillmesh sim: error: ") and key in lines[0]
    assert not (tmp_path / "out").exists()  # nothing was run


def test_cli_out_that_is_a_file_is_refused_before_the_run(tmp_path):
    scenario = tmp_path / "tiny.toml"
    scenario.write_text(TINY)
    (tmp_path / "afile").write_text("x")
    for command in (["run", str(scenario)], ["sweep", str(scenario), "--seeds", "1..2"]):
        done = _cli([*command, "--out", str(tmp_path / "afile")], tmp_path)
        assert done.returncode == 2
        assert done.stderr.strip() == f"tillmesh sim: error: --out {tmp_path / 'afile'}: {tmp_path / 'afile'} is not a directory"


def test_cli_good_run_writes_results(tmp_path, tiny_runs):
    scenario = tmp_path / "tiny.toml"
    scenario.write_text(TINY)
    out = tmp_path / "out"
    done = _cli(["run", str(scenario), "--out", str(out)], tmp_path)
    assert done.returncode == 0, done.stderr
    run_dir = out / "tiny-1"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["trace_digest"] == tiny_runs["a"].summary["trace_digest"]
    assert sum(summary["invariants"].values()) == 0
    # printed whole even when stdout is a pipe (a table would cut it to the width)
    assert f"trace digest: {summary['trace_digest']}" in done.stdout.splitlines()
    assert f"replay: {summary['replay']}" in done.stdout.splitlines()
    with (run_dir / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 300 // 30 + 1
    assert [float(r["t_s"]) for r in rows] == [30.0 * i for i in range(len(rows))]
    for png in ("staleness.png", "unsynced.png", "bytes_per_link.png"):
        data = (run_dir / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000, png



SHORT_EXPERIMENT = ["--set", "run.duration_s=4", "--set", "experiment.nodes=5", "--set", "experiment.degree=2"]


def test_cli_experiment_run_keeps_the_run_contract(tmp_path):
    """An [experiment] run writes metrics.csv, summary.json and a plot, prints a digest of its
    figures and its replay command, and --json prints the summary; the same seed gives the
    same digest."""
    out = tmp_path / "out"
    scenario = str(SCENARIOS / "enes_icde19.toml")
    done = _cli(["run", scenario, *SHORT_EXPERIMENT, "--out", str(out), "--json"], tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    run_dir = out / "enes_icde19-1"
    assert json.loads((run_dir / "summary.json").read_text())["result_digest"] == summary["result_digest"]
    with (run_dir / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["topology"], r["protocol"]) for r in rows] == [
        (t, p) for t in ("tree", "mesh") for p in ("delta", "bp_rr", "tillmesh")]
    assert (run_dir / "experiment.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = _cli(["run", scenario, *SHORT_EXPERIMENT, "--out", str(tmp_path / "again")], tmp_path)
    assert again.returncode == 0, again.stderr
    lines = again.stdout.splitlines()
    assert f"result digest: {summary['result_digest']}" in lines
    assert f"replay: {summary['replay']}" in lines


def test_cli_experiment_that_does_not_converge_names_seed_and_replay(tmp_path):
    scenario = str(SCENARIOS / "enes_icde19.toml")
    slow = [*SHORT_EXPERIMENT, "--set", "experiment.latency_ms=100000", "--set", "experiment.protocols=[\"delta\"]",
            "--set", "experiment.topologies=[\"tree\"]"]
    done = _cli(["run", scenario, *slow, "--seed", "3", "--out", str(tmp_path / "out")], tmp_path)
    assert done.returncode == 1
    assert "did not converge" in done.stderr and "seed 3" in done.stderr
    replay = done.stderr.split("replay: ", 1)[1].strip()
    assert replay.startswith("tillmesh sim run ") and "--seed 3" in replay and "experiment.latency_ms=100000" in replay

# --- 5. sweeps ----------------------------------------------------------------------------------

SWEEP_PARAM = "network.wan.latency_ms=10,80"


@pytest.fixture(scope="module")
def sweep_tasks():
    return expand(TINY, "tiny.toml", ["run.duration_s=120"], parse_seeds("1..3"), parse_params([SWEEP_PARAM]))


@pytest.fixture(scope="module")
def serial_rows(sweep_tasks):
    return run_sweep(sweep_tasks, workers=1)


def test_sweep_tasks_and_serial_rows(sweep_tasks, serial_rows):
    assert [(t.seed, t.params) for t in sweep_tasks] == [
        (seed, (("network.wan.latency_ms", value),)) for value in ("10", "80") for seed in (1, 2, 3)]
    assert [(r["seed"], r["network.wan.latency_ms"]) for r in serial_rows] == [
        (seed, value) for value in ("10", "80") for seed in (1, 2, 3)]
    assert len({r["trace_digest"] for r in serial_rows}) == 6
    assert all(r["violations"] == 0 for r in serial_rows)


def test_sweep_two_local_workers_match_one(sweep_tasks, serial_rows):
    assert run_sweep(sweep_tasks, workers=2) == serial_rows


@pytest.fixture
def dask_cluster(tmp_path, monkeypatch):
    import dask
    from distributed import LocalCluster

    for var in ("HOME", "TMPDIR"):
        (tmp_path / var).mkdir()
        monkeypatch.setenv(var, str(tmp_path / var))
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "HOME"))
    with dask.config.set({"temporary-directory": str(tmp_path / "TMPDIR")}):
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
        try:
            yield cluster
        finally:
            cluster.close()


def test_dask_sweep_matches_local(dask_cluster, sweep_tasks, serial_rows):
    rows = run_sweep(sweep_tasks, executor="dask", scheduler=dask_cluster.scheduler_address)
    assert rows == serial_rows


def test_sweep_bare_param_name_on_a_plain_scenario():
    """``--param latency_ms=...`` is documented to set "the LAN's, the WAN's and an
    experiment's": on a scenario without [experiment] it must still run as a simulation."""
    params = parse_params(["latency_ms=10,80"])
    tasks = expand(TINY, "tiny.toml", ["run.duration_s=60"], [1], params)
    rows = run_sweep(tasks, workers=1)
    assert [r["latency_ms"] for r in rows] == ["10", "80"]
    assert rows[0]["trace_digest"] != rows[1]["trace_digest"]


@given(st.integers(0, 500), st.integers(0, 50))
def test_parse_seeds_range(lo, width):
    assert parse_seeds(f"{lo}..{lo + width}") == list(range(lo, lo + width + 1))


def test_parse_seeds_and_params():
    assert parse_seeds("1,2,7") == [1, 2, 7]
    assert parse_seeds("5") == [5]
    for bad in ("5..1", "x", "", "-1", "1..", "1..x", "0..100000", "1..1000000000", "1..10000000000000000000",
                "10000000000000000000"):
        with pytest.raises(ScenarioError, match="--seeds"):
            parse_seeds(bad)
    assert parse_params(["skus=1,2"]) == [("skus", ["workload.skus"], ["1", "2"])]
    assert parse_params(["network.lan.loss=0, 0.1"]) == [("network.lan.loss", ["network.lan.loss"], ["0", "0.1"])]
    for bad, what in ((["nosuchkey=1,2"], "no scenario key"), (["run.duration_s"], "expected key=v1"),
                      (["run.duration_s="], "expected key=v1"), (["=1"], "expected key=v1"),
                      (["latency_ms=,,"], "expected key=v1"), (["run.seed=5,6"], "--seeds"),
                      (["seed=5,6"], "--seeds")):
        with pytest.raises(ScenarioError, match=what):
            parse_params(bad)


def test_sweep_refuses_bad_values_and_executors():
    with pytest.raises(ScenarioError, match=r"run\.duration_s: expected an integer >= 1 and <= 10000000, got 0"):
        expand(TINY, "tiny.toml", [], [1], parse_params(["run.duration_s=10,0"]))
    tasks = expand(TINY, "tiny.toml", ["run.duration_s=10"], [1], [])
    with pytest.raises(ScenarioError, match="local or dask"):
        run_sweep(tasks, executor="threads")
    with pytest.raises(ScenarioError, match="--scheduler"):
        run_sweep(tasks, executor="dask")
    with pytest.raises(ScenarioError, match="--workers 0"):
        run_sweep(tasks, workers=0)
    with pytest.raises(ScenarioError, match="--scheduler 'garbage'"):
        run_sweep(tasks, executor="dask", scheduler="garbage")
    with pytest.raises(ScenarioError, match="--scheduler is for --executor dask"):
        run_sweep(tasks, scheduler="tcp://127.0.0.1:8786")


def test_a_sweep_run_replays_from_its_command():
    """The command a sweep prints for a run replays exactly that run: its seed, the sweep's
    own --set overrides and the parameter values (as the keys they set), shell-quoted."""
    import shlex

    from node.cli import _parser
    from simulations._sweep import replay_of

    overrides = ["run.duration_s=60", "run.description=a b"]
    tasks = expand(TINY, "tiny.toml", overrides, [4], parse_params(["latency_ms=10,20"]))
    for task in tasks:
        argv = shlex.split(replay_of(task))
        assert argv[:4] == ["tillmesh", "sim", "run", "tiny.toml"]
        args = _parser().parse_args(argv[1:])
        assert args.seed == 4
        replayed = loads(TINY, "tiny.toml", args.overrides).with_seed(args.seed)
        swept = loads(task.text, task.source, list(task.overrides)).with_seed(task.seed)
        assert replayed.values == swept.values and replayed.lists == swept.lists
        assert replayed.section("run")["description"] == "a b"


# --- 6. the network and the loop ----------------------------------------------------------------

class _Listener:
    """One device on a Wire: it records what it hears there."""

    def __init__(self, wire: "Wire", name: str) -> None:
        self.wire, self.name = wire, name

    @property
    def up(self) -> bool:
        return self.name not in self.wire.down

    def on_connected(self, end, initiator: bool) -> None:
        self.wire.connected.append((end, initiator))

    def on_data(self, end, data: bytes) -> None:
        self.wire.received.setdefault(hash(end), []).append((self.wire.loop.now, data))

    def on_closed(self, end) -> None:
        self.wire.closed.append(end)


class _Listeners(dict):
    """A listener for every name asked for."""

    def __init__(self, wire: "Wire") -> None:
        super().__init__()
        self.wire = wire

    def __missing__(self, name: str) -> _Listener:
        listener = self[name] = _Listener(self.wire, name)
        return listener


class Wire:
    """A network of named devices for the model tests, recording what each end hears."""

    def __init__(self, seed: int = 0) -> None:
        self.loop = Loop()
        self.trace = Trace()
        self.received: dict[int, list] = {}  # (conn id * 2 + receiving side) -> [(t, data)]
        self.closed: list = []
        self.connected: list = []
        self.down: set[str] = set()
        self.net = Network(self.loop, random.Random(seed), self.trace, _Listeners(self))

    def connect(self, a: str, b: str, spec: LinkSpec):
        self.net.link(a, b, spec)
        failed = []
        self.net.dial(a, b, lambda: failed.append(True))
        self.loop.run(self.loop.now + 10_000_000)
        assert not failed
        return self.connected[-2][0].conn

    def heard(self, end) -> list[bytes]:
        return [data for _, data in self.received.get(hash(end), [])]


links = st.builds(lambda lat, jit, bw: LinkSpec("wan", latency_ms=lat, jitter_ms=jit, bandwidth_kbps=bw),
                  st.floats(0, 80), st.sampled_from([0.0, 0.5, 5.0, 40.0]), st.sampled_from([0, 8, 100, 10_000]))
sends = st.lists(st.tuples(st.integers(0, 1), st.integers(0, 200_000), st.integers(1, 3000)), min_size=1, max_size=40)


@given(links, links, sends, st.integers(0, 2**32))
def test_fifo_per_connection(spec_ab, spec_ac, schedule, seed):
    w = Wire(seed)
    ab, ac = w.connect("a", "b", spec_ab), w.connect("a", "c", spec_ac)
    sent: dict = {}
    earliest: dict[bytes, int] = {}  # data -> sent at + its time on the wire + the base latency
    t = w.loop.now
    for i, (which, gap_us, size) in enumerate(schedule):
        t += gap_us
        conn = (ab, ac)[which]
        side = i % 2
        data = i.to_bytes(4, "big") * (size // 4 + 1)
        w.loop.at(t, w.net.send, conn.ends[side], data)
        sent.setdefault(hash(conn.ends[1 - side]), []).append(data)
        spec = conn.spec
        wire = len(data) * 8_000 // spec.bandwidth_kbps if spec.bandwidth_kbps else 0
        earliest[data] = t + wire + int(spec.latency_ms * 1000)
    w.loop.run(t + 600_000_000)
    for conn in (ab, ac):
        for end in conn.ends:
            assert w.heard(end) == sent.get(hash(end), [])
    assert not w.closed
    assert all(at >= earliest[data] for got in w.received.values() for at, data in got)


@given(links, st.lists(st.integers(0, 5_000_000), min_size=1, max_size=20), st.integers(0, 2**32))
def test_cut_holds_and_heal_delivers_in_order(spec, gaps, seed):
    w = Wire(seed)
    conn = w.connect("a", "b", spec)
    w.net.cut("a", "b")
    assert w.net.is_cut("a", "b")
    t, sent = w.loop.now, []
    for i, gap in enumerate(gaps):
        t += gap
        sent.append(i.to_bytes(2, "big") * 8)
        w.loop.at(t, w.net.send, conn.ends[0], sent[-1])
    w.loop.run(t + 120_000_000)  # long after everything would have arrived
    assert w.heard(conn.ends[1]) == []
    assert len(conn.held[0]) == len(sent)
    healed_at = w.loop.now
    w.net.heal("a", "b")
    w.loop.run(healed_at + 120_000_000)
    assert w.heard(conn.ends[1]) == sent
    assert all(at >= healed_at + int(spec.latency_ms * 1000) for at, _ in w.received[hash(conn.ends[1])])
    # Dialling across a cut fails after the connect timeout.
    w.net.cut("a", "b")
    failed = []
    w.net.dial("a", "b", lambda: failed.append(w.loop.now))
    start = w.loop.now
    w.loop.run(start + 60_000_000)
    assert failed == [start + spec.connect_timeout_ms * 1000]


@given(st.lists(st.tuples(st.sampled_from(["before", "during", "after"]), st.integers(0, 40_000)),
                min_size=2, max_size=20),
       st.integers(0, 2**32))
@example([("during", 0), ("before", 0)], 0)  # one held at the heal, one in flight across it
def test_heal_keeps_fifo_with_bytes_in_flight(schedule, seed):
    """TCP delivers a stream in order, whatever the partition did: bytes held behind a cut
    must still arrive before bytes sent later that were in flight when the link healed."""
    w = Wire(seed)
    conn = w.connect("a", "b", LinkSpec("lan", latency_ms=5.0))
    cut_at = w.loop.now + 50_000
    heal_at = cut_at + 50_000
    w.loop.at(cut_at, w.net.cut, "a", "b")
    w.loop.at(heal_at, w.net.heal, "a", "b")
    offsets = {"during": cut_at, "before": heal_at - 4_000, "after": heal_at}
    events = sorted((offsets[when] + (gap if when != "before" else -gap % 4_000), i)
                    for i, (when, gap) in enumerate(schedule))
    sent = []
    for at, i in events:
        sent.append(i.to_bytes(2, "big"))
        w.loop.at(at, w.net.send, conn.ends[0], sent[-1])
    w.loop.run(heal_at + 10_000_000)
    assert w.heard(conn.ends[1]) == sent


@given(st.floats(0.05, 0.95), st.integers(1, 60), st.integers(0, 2**32))
def test_loss_breaks_the_connection_and_both_ends_hear_it(loss, count, seed):
    w = Wire(seed)
    conn = w.connect("a", "b", LinkSpec("wan", latency_ms=10.0, jitter_ms=2.0, loss=loss))
    sent = [i.to_bytes(2, "big") for i in range(count)]
    for i, data in enumerate(sent):
        w.loop.at(w.loop.now + i * 1_000, w.net.send, conn.ends[0], data)
    w.loop.run(w.loop.now + 60_000_000)
    got = w.heard(conn.ends[1])
    assert got == sent[:len(got)]  # a prefix: nothing after the loss
    if conn.state == "broken":
        assert len(got) < count
        assert sorted(e.side for e in w.closed) == [0, 1]  # each end, once
        assert conn.id not in w.net.conns
    else:
        assert got == sent and not w.closed


def test_certain_loss_and_crash():
    w = Wire()
    conn = w.connect("a", "b", LinkSpec("wan", latency_ms=10.0, loss=1.0))
    w.net.send(conn.ends[1], b"gone")
    w.net.send(conn.ends[1], b"never sent")  # the stream is gone
    w.loop.run(w.loop.now + 1_000_000)
    assert w.heard(conn.ends[0]) == [] and conn.state == "broken"
    assert sorted(e.side for e in w.closed) == [0, 1]
    assert w.net.sent_messages == 1
    # A device that goes down: its peer hears the reset one latency later; it does not.
    w.closed.clear()
    conn2 = w.connect("a", "c", LinkSpec("lan", latency_ms=2.0))
    w.down.add("c")
    w.net.drop_device("c")
    start = w.loop.now
    w.loop.run(start + 1_000_000)
    assert [e.name for e in w.closed] == ["a"] and conn2.state == "broken"
    # Dialling a device that is down fails after a round trip.
    failed = []
    w.net.dial("a", "c", lambda: failed.append(w.loop.now))
    w.loop.run(w.loop.now + 1_000_000)
    assert failed == [start + 1_000_000 + 4_000]


def test_close_delivers_what_was_sent_then_ends_both():
    w = Wire()
    conn = w.connect("a", "b", LinkSpec("lan", latency_ms=3.0, bandwidth_kbps=8))
    w.net.send(conn.ends[0], b"x" * 100)  # 100 ms on the wire
    w.net.close(conn.ends[0])
    w.net.send(conn.ends[0], b"late")  # after the close: dropped
    w.loop.run(w.loop.now + 1_000_000)
    assert w.heard(conn.ends[1]) == [b"x" * 100]
    assert [e.side for e in w.closed] == [0, 1]
    assert conn.id not in w.net.conns


@given(st.lists(st.integers(0, 50), min_size=1, max_size=60))
def test_loop_runs_in_time_order_ties_in_scheduling_order(times):
    loop, ran = Loop(), []
    for i, t in enumerate(times):
        loop.at(t, ran.append, (t, i))
    loop.run(max(times))
    assert ran == sorted(ran)  # by time, then by the order they were scheduled
    assert loop.events == len(times) and loop.now == max(times) and loop.pending == 0


@given(st.lists(st.tuples(st.integers(0, 30), st.integers(-10, 10)), min_size=1, max_size=40), st.integers(0, 40))
def test_loop_events_scheduled_while_running(plan, until):
    loop, ran = Loop(), []

    def handler(i, delay):
        ran.append((loop.now, i))
        if delay is not None:
            loop.at(loop.now + delay, handler, f"{i}+", None)  # a delay < 0 means now

    for i, (t, delay) in enumerate(plan):
        loop.at(t, handler, i, delay)
    loop.run(until)
    assert [t for t, _ in ran] == sorted(t for t, _ in ran)
    assert all(t <= until for t, _ in ran)
    assert loop.now == until
    # Each child runs after its parent, never before the time it was scheduled for.
    order = [i for _, i in ran]
    for i, (t, delay) in enumerate(plan):
        if f"{i}+" in order:
            assert order.index(f"{i}+") > order.index(i)
    expected_children = sum(1 for t, d in plan if t <= until and t + max(d, 0) <= until)
    assert len(ran) == sum(1 for t, _ in plan if t <= until) + expected_children
    assert loop.pending == len(plan) * 2 - len(ran) - sum(1 for t, _ in plan if t > until)


def test_loop_stop_and_past_times():
    loop, ran = Loop(), []
    loop.at(10, lambda: (ran.append("a"), loop.stop()))
    loop.at(10, ran.append, "b")
    loop.run(100)
    assert ran == ["a"] and loop.now == 10 and loop.pending == 1
    loop.at(3, ran.append, "past")  # not before now
    loop.run(100)
    assert ran == ["a", "b", "past"] and loop.now == 100


def test_trace_digest_hashes_sizes_not_bytes():
    def digest(payload: bytes) -> str:
        t = Trace()
        t.event(1, "send", 1, 0, data=payload)
        return t.hexdigest()

    assert digest(b"ab") == digest(b"ba")
    assert digest(b"ab") != digest(b"abc")
    t1, t2 = Trace(), Trace()
    t1.event(1, "open", 1, "a", "b")
    t2.event(2, "open", 1, "a", "b")
    assert t1.hexdigest() != t2.hexdigest()


def test_a_scenario_that_sets_only_the_ping_timeout_gets_an_interval_below_it():
    assert loads("[sync]\nping_timeout_ms = 30000\n").section("sync")["ping_interval_ms"] == 20_000
    with pytest.raises(ScenarioError, match="sync.ping_timeout_ms"):
        loads("[sync]\nping_timeout_ms = 30000\nping_interval_ms = 30000\n")
