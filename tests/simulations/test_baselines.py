"""The delta-based baselines and the protocol experiment (Enes et al., ICDE 2019).

The experiment runs the real scenario file, shortened to ten seconds of writes; the
property runs the baselines alone on small random graphs and write schedules.
"""

from __future__ import annotations

from pathlib import Path

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulations._experiment import PUBLISHED, run_experiment, run_protocol, topology, write_schedule
from simulations._scenario import load
from simulations.baselines import bp_rr, classic_delta, element_size

SCENARIO = Path(__file__).resolve().parents[2] / "simulations" / "scenarios" / "enes_icde19.toml"
SHORT = ["run.duration_s=10"]


def _short():
    return load(SCENARIO, SHORT)


@pytest.fixture(scope="module")
def experiment():
    return run_experiment(_short())


def _row(result, protocol, topology_name):
    (row,) = [r for r in result["rows"] if r["protocol"] == protocol and r["topology"] == topology_name]
    return row


# -- the pieces ----------------------------------------------------------------------------------

@given(st.integers(0, 2**40), st.integers(0, 2**40))
def test_element_size_is_the_cbor_encoding(origin, k):
    assert element_size((origin, k)) == len(cbor2.dumps([origin, k]))


@pytest.mark.parametrize("seed", [1, 2, 7])
def test_topologies_are_connected_with_the_asked_degrees(seed):
    mesh = topology("mesh", 15, 4, seed)
    degrees = [0] * 15
    for a, b in mesh:
        assert a < b
        degrees[a] += 1
        degrees[b] += 1
    assert degrees == [4] * 15
    assert len(set(mesh)) == 30
    tree = topology("tree", 15, 4, seed)
    assert len(tree) == 14 and sorted(b for _, b in tree) == list(range(1, 15))
    assert topology("mesh", 15, 4, seed) == mesh  # the seed fixes the graph


def test_the_scenario_file_is_an_experiment():
    scenario = load(SCENARIO)
    assert scenario.experiment
    spec = scenario.section("experiment")
    assert (spec["nodes"], spec["degree"], spec["sync_interval_ms"]) == (15, 4, 1000)
    assert scenario.section("run")["duration_s"] == 60


# -- the experiment ------------------------------------------------------------------------------

@pytest.mark.parametrize("topology_name", ["tree", "mesh"])
@pytest.mark.parametrize("protocol", ["delta", "bp_rr"])
def test_baselines_converge(experiment, protocol, topology_name):
    row = _row(experiment, protocol, topology_name)
    assert row["converged"]
    assert row["writes"] == 15 * 10


def test_bp_rr_is_optimal_on_the_tree(experiment):
    row = _row(experiment, "bp_rr", "tree")
    assert row["payload_bytes"] == row["optimum_payload_bytes"]
    assert row["elements_sent"] == row["optimum_elements"]
    assert row["payload_vs_optimum"] == 1.0 == PUBLISHED[("bp_rr", "tree")]


def test_on_the_mesh_bp_rr_beats_classic_which_exceeds_the_optimum(experiment):
    classic, improved = _row(experiment, "delta", "mesh"), _row(experiment, "bp_rr", "mesh")
    assert improved["payload_bytes"] < classic["payload_bytes"]
    assert classic["payload_bytes"] > classic["optimum_payload_bytes"]
    assert improved["payload_bytes"] >= improved["optimum_payload_bytes"]


@pytest.mark.parametrize("topology_name", ["tree", "mesh"])
def test_tillmesh_converges_and_reports_its_payload(experiment, topology_name):
    row = _row(experiment, "tillmesh", topology_name)
    assert row["converged"]
    assert row["writes"] == 15 * 10
    assert row["payload_vs_optimum"] >= 1.0  # no protocol beats delivering each entry once
    assert row["metadata_bytes"] == row["total_bytes"] - row["payload_bytes"] > 0


def test_the_result_is_json_with_a_table(experiment):
    import json

    json.dumps(experiment)
    lines = experiment["table"].splitlines()
    assert len(lines) == 2 + 6
    assert "published" in lines[0]
    assert experiment["published"] == {"bp_rr/tree": 1.0, "bp_rr/mesh": 3.28}


def test_the_same_seed_gives_the_same_numbers(experiment):
    again = run_experiment(_short())

    def figures(result):
        return [{k: v for k, v in row.items() if k != "wall_s"} for row in result["rows"]]

    assert figures(again) == figures(experiment)
    assert again["graphs"] == experiment["graphs"]


# -- the property --------------------------------------------------------------------------------

@st.composite
def graphs(draw):
    """A connected graph on 2..7 nodes: a random spanning tree plus random extra edges."""
    n = draw(st.integers(2, 7))
    edges = {(draw(st.integers(0, i - 1)), i) for i in range(1, n)}
    pairs = [(a, b) for a in range(n) for b in range(a + 1, n)]
    edges |= set(draw(st.lists(st.sampled_from(pairs), max_size=len(pairs))))
    return n, sorted(edges)


@st.composite
def cases(draw):
    n, edges = draw(graphs())
    writes = draw(st.lists(st.tuples(st.integers(0, 5_000_000), st.integers(0, n - 1)), max_size=25))
    return n, edges, sorted(writes), draw(st.sampled_from([100, 250, 1000])), draw(st.sampled_from([0.0, 1.0, 30.0]))


@settings(max_examples=40)
@given(cases(), st.integers(0, 2**32))
def test_baselines_converge_and_bp_rr_never_sends_more_than_classic(case, seed):
    n, edges, writes, interval, latency = case
    rows = {p: run_protocol(p, n, edges, writes, sync_interval_ms=interval, latency_ms=latency, seed=seed)
            for p in ("delta", "bp_rr")}
    for row in rows.values():
        assert row["converged"]
        assert row["writes"] == len(writes)
        assert row["payload_bytes"] >= row["optimum_payload_bytes"]
    assert rows["bp_rr"]["payload_bytes"] <= rows["delta"]["payload_bytes"]
    if len(edges) == n - 1:  # connected with n - 1 edges: a tree
        assert rows["bp_rr"]["payload_bytes"] == rows["bp_rr"]["optimum_payload_bytes"]


# -- the baselines by hand ------------------------------------------------------------------------

class _Peer:
    def __init__(self, name):
        self.peer = name


def test_bp_does_not_send_back_and_rr_forwards_only_the_new_part():
    from gossip import Now

    now = Now(0, 0)
    for make, back, forwarded in ((classic_delta, True, {(1, 1), (0, 1)}), (bp_rr, False, {(1, 1)})):
        node = make(0, ["a", "b"], interval_ms=1000)
        a, b = _Peer("a"), _Peer("b")
        node.connected(a, True, now)
        node.connected(b, True, now)
        node.write((0, 1))
        node.tick(Now(0, 0))
        node.poll()  # (0, 1) went to both
        node.received(a, cbor2.dumps([[0, 1], [1, 1]]), now)  # half of it is new
        node.tick(Now(1000, 1000))
        sends = node.poll().sends
        assert (a in sends) is back
        assert {tuple(e) for e in cbor2.loads(sends[b])} == forwarded
        node.received(b, cbor2.dumps([[1, 1]]), now)  # nothing new: dropped
        assert node.buffer == [] and node.status().deltas_dropped == 1


def test_the_write_schedule_is_one_write_per_node_per_period():
    writes = write_schedule(15, 1.0, 10, 3)
    assert len(writes) == 150 and writes == sorted(writes)
    assert all(sum(1 for _, node in writes if node == i) == 10 for i in range(15))
    assert writes == write_schedule(15, 1.0, 10, 3) != write_schedule(15, 1.0, 10, 4)
    assert write_schedule(15, 0.0, 10, 3) == []
