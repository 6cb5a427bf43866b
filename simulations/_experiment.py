"""Protocol comparisons: tillmesh's gossip beside delta-based CRDT synchronization.

An ``[experiment]`` scenario (``kind = "protocols"``) reproduces the setup of Enes et al.,
"Efficient Synchronization of State-based CRDTs" (ICDE 2019): ``nodes`` nodes on each of
``topologies`` (``tree``: a balanced binary tree; ``mesh``: a connected ``degree``-regular
graph drawn from the seed), every node adding ``writes_per_node_s`` fresh elements a
second to a grow-only set and synchronizing with its neighbours every
``sync_interval_ms``, over links of ``latency_ms`` one way (no jitter, no loss, no
bandwidth limit). For every topology and protocol, ``run_experiment`` runs
``run.duration_s`` of virtual time, stops the writes, lets synchronization settle until
every node holds every element (bounded), and reports the payload sent against the
optimum (every element delivered exactly once to every other node) and the metadata.

Protocols:

- ``delta``: classic delta-based synchronization (``simulations.baselines.classic_delta``);
- ``bp_rr``: the same with BP and RR (``simulations.baselines.bp_rr``);
- ``tillmesh``: the real gossip ``Engine`` with the POS schema, policy and escrow keys,
  each device enrolled from its token, driven by ``Device`` over the same ``Network``. One
  write is one transaction with one op, ``("record", ("sale", id), 1)``: a sale record
  under a fresh id is written once and never changes, which is a GSet add of a fresh
  element; an ``add`` on a counter would instead be a GCounter increment, a different
  lattice (its deltas from one writer collapse into one), so it would not compare with a
  GSet. The engine's ``have_interval_ms`` is the sync interval; its other timers are the
  defaults.

Every protocol counts its own payload (the elements, or the encoded feed entries, it put
in its messages) and the optimum is in that protocol's own encoding: the sum, over the
elements written, of the element's encoded size times ``nodes - 1``. The total is what
the network carried; metadata is the total less the payload.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from typing import Any, Callable

from gossip import Authority, DeviceKey, Engine, EngineConfig, MemoryFeedStore, import_tokens
from gossip.testing import T0, seeded

from node.pos import POS_ESCROW, POS_POLICY, POS_SCHEMA

from ._device import Clock, Device, Observer
from ._loop import US_PER_S, Loop
from ._network import End, LinkSpec, Network
from ._scenario import Scenario, ScenarioError
from ._sim import derive_seed, replay_command
from ._trace import Trace
from .baselines import bp_rr, classic_delta, element_size

__all__ = ["run_experiment", "run_protocol", "topology", "write_schedule", "PUBLISHED", "PROTOCOLS", "format_table"]

# The figures we were given for Enes et al. (ICDE 2019), GSet with BP+RR: transmission
# (payload) against the optimum, on the tree and on the partial mesh. Only these two are
# published here; the other rows have nothing to compare with.
PUBLISHED: dict[tuple[str, str], float] = {("bp_rr", "tree"): 1.00, ("bp_rr", "mesh"): 3.28}

PROTOCOLS = ("delta", "bp_rr", "tillmesh")
SETTLE_MIN_S = 30  # settling after the writes stop: at least this long (virtual) ...
CHECK_US = US_PER_S  # ... checking convergence this often


# --- topologies --------------------------------------------------------------------------------

def topology(kind: str, nodes: int, degree: int, seed: int, *, mesh: str = "random") -> list[tuple[int, int]]:
    """The edges ``(a, b)``, ``a < b``, sorted, of a connected graph over ``range(nodes)``.

    ``tree``: a balanced binary tree (node i's parent is (i - 1) // 2). ``mesh``: every
    node has ``degree`` neighbours; ``mesh="ring"`` is the circulant graph (offsets ±1 ..
    ±degree/2, and n/2 for an odd degree), ``mesh="random"`` that graph randomised by
    seeded double-edge swaps that keep every degree and the graph connected.
    """
    if kind == "tree":
        return [((i - 1) // 2, i) for i in range(1, nodes)]
    if kind != "mesh":
        raise ValueError(f"unknown topology {kind!r}")
    if degree >= nodes or (degree * nodes) % 2:
        raise ValueError(f"no {degree}-regular graph on {nodes} nodes")
    offsets = list(range(1, degree // 2 + 1)) + ([nodes // 2] if degree % 2 else [])
    edges = {tuple(sorted((i, (i + o) % nodes))) for i in range(nodes) for o in offsets}
    if mesh == "ring" or degree <= 1:
        return sorted(edges)
    rng = random.Random(derive_seed(seed, f"mesh {nodes} {degree}"))
    ordered = sorted(edges)
    for _ in range(10 * len(ordered)):
        i, j = rng.randrange(len(ordered)), rng.randrange(len(ordered))
        (a, b), (c, d) = ordered[i], ordered[j]
        if rng.random() < 0.5:
            c, d = d, c
        new1, new2 = tuple(sorted((a, d))), tuple(sorted((c, b)))
        if len({a, b, c, d}) < 4 or new1 in edges or new2 in edges:
            continue
        trial = (edges - {ordered[i], ordered[j]}) | {new1, new2}
        if not _connected(nodes, trial):
            continue
        edges = trial
        ordered[i], ordered[j] = new1, new2
    return sorted(edges)


def _connected(nodes: int, edges) -> bool:
    adjacent: dict[int, list[int]] = {i: [] for i in range(nodes)}
    for a, b in edges:
        adjacent[a].append(b)
        adjacent[b].append(a)
    seen, stack = {0}, [0]
    while stack:
        for other in adjacent[stack.pop()]:
            if other not in seen:
                seen.add(other)
                stack.append(other)
    return len(seen) == nodes


def write_schedule(nodes: int, per_node_s: float, duration_s: float, seed: int) -> list[tuple[int, int]]:
    """``(time_us, node)`` of every write, sorted: each node writes every ``1/per_node_s``
    seconds from a phase drawn from the seed, until ``duration_s``."""
    if per_node_s <= 0:
        return []
    rng = random.Random(derive_seed(seed, "writes"))
    period_us = int(US_PER_S / per_node_s)
    until_us = int(duration_s * US_PER_S)
    writes = []
    for node in range(nodes):
        t = rng.randrange(period_us)
        while t < until_us:
            writes.append((t, node))
            t += period_us
    return sorted(writes)


# --- one run -----------------------------------------------------------------------------------

class _Bytes(Observer):
    """Counts the bytes of the sessions that closed (the open ones are read at the end)."""

    def __init__(self) -> None:
        self.sent = self.payload = 0

    def link_closed(self, device: Device, end: End, sent: int, payload: int) -> None:
        self.sent += sent
        self.payload += payload


def _name(i: int) -> str:
    return f"n{i:02d}"


def run_protocol(protocol: str, nodes: int, edges: list[tuple[int, int]], writes: list[tuple[int, int]], *,
                 sync_interval_ms: int = 1000, latency_ms: float = 10.0, seed: int = 1,
                 duration_s: float = 0, settle_s: float | None = None) -> dict[str, Any]:
    """Run one protocol on one graph with one write schedule; returns the row of figures.

    ``writes`` are ``(time_us, node)``. The run goes to ``duration_s`` (or the last write,
    if later), then on until every node holds every element and all agree (checked every
    second of virtual time), for at most ``settle_s`` (default: the larger of 30 s and
    2 * nodes sync intervals). Bytes are counted until then.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    started = time.perf_counter()
    loop, trace, observer = Loop(), Trace(), _Bytes()
    devices: dict[str, Device] = {}
    network = Network(loop, random.Random(derive_seed(seed, "network")), trace, devices)
    spec = LinkSpec("wan", latency_ms=latency_ms)
    neighbours: dict[int, list[str]] = {i: [] for i in range(nodes)}
    for a, b in edges:
        neighbours[a].append(_name(b))
        neighbours[b].append(_name(a))
    dial_rng = random.Random(derive_seed(seed, "dial"))
    phase_rng = random.Random(derive_seed(seed, "sync phases"))
    if protocol == "tillmesh":
        makers = _tillmesh_makers(nodes, sync_interval_ms, seed)
    else:
        build = classic_delta if protocol == "delta" else bp_rr
        makers = []
        for i in range(nodes):
            phase = phase_rng.randrange(sync_interval_ms)

            def make(store: Any, now: Any, i=i, phase=phase) -> Any:
                return build(i, neighbours[i], interval_ms=sync_interval_ms, phase_ms=phase)

            makers.append((i, make, None))
    for i, (number, make, store) in enumerate(makers):
        name = _name(i)
        devices[name] = Device(loop=loop, network=network, observer=observer, rng=dial_rng, name=name, number=number,
                               branch="central", roles=("cashier",), make_engine=make, store=store, clock=Clock(T0))
    for a, b in edges:
        network.link(_name(a), _name(b), spec)
        devices[_name(a)].targets.append(_name(b))

    written: list[tuple[int, Any]] = []  # (node, what its commit returned)
    counters = [0] * nodes

    def write(node: int) -> None:
        counters[node] += 1
        device = devices[_name(node)]
        if protocol == "tillmesh":
            ops = [("record", ("sale", f"{device.name}-{counters[node]:06d}"), 1)]
        else:
            ops = [("add", (node, counters[node]))]
        written.append((node, device.commit(ops)))

    for device in devices.values():
        device.start()
    for at_us, node in writes:
        loop.at(at_us, write, node)
    end_us = max(int(duration_s * US_PER_S), (writes[-1][0] + 1) if writes else 0)
    loop.run(end_us)
    if settle_s is None:
        settle_s = max(SETTLE_MIN_S, 2 * nodes * sync_interval_ms / 1000)
    settle_until = loop.now + int(settle_s * US_PER_S)
    converged = _converged(protocol, devices, counters)
    while not converged and loop.now < settle_until:
        loop.run(min(settle_until, loop.now + CHECK_US))
        converged = _converged(protocol, devices, counters)
    settled_s = (loop.now - end_us) / US_PER_S

    sent, payload = observer.sent, observer.payload
    entries_sent = redundant = 0
    for device in devices.values():
        status = device.status()
        for peer in status.peers:
            sent += peer.bytes_sent
            payload += peer.payload_bytes_sent
            entries_sent += getattr(peer, "entries_sent", getattr(peer, "elements_sent", 0))
        redundant += status.redundant_received if protocol != "tillmesh" else sum(
            p.redundant_received for p in status.peers)
    if protocol == "tillmesh":
        stores = {d.number: d.store for d in devices.values()}  # nothing crashes: the engines' stores
        sizes = [len(stores[c.origin].get(c.origin, c.seq)) for _, c in written]
    else:
        sizes = [element_size((node, c.seq)) for node, c in written]
    optimum = sum(sizes) * (nodes - 1)
    total = sum(network.kind_bytes.values())
    metadata = total - payload
    return {
        "protocol": protocol, "nodes": nodes, "edges": len(edges), "writes": len(written),
        "element_bytes_mean": round(sum(sizes) / len(sizes), 2) if sizes else None,
        "payload_bytes": payload, "optimum_payload_bytes": optimum,
        "payload_vs_optimum": round(payload / optimum, 4) if optimum else None,
        "elements_sent": entries_sent, "optimum_elements": len(written) * (nodes - 1),
        "redundant_received": redundant,
        "total_bytes": total, "engine_bytes": sent, "metadata_bytes": metadata,
        "metadata_share": round(metadata / total, 4) if total else None,
        "messages": network.sent_messages, "converged": converged, "settled_after_s": round(settled_s, 3),
        "virtual_s": round(loop.now / US_PER_S, 3), "events": loop.events,
        "wall_s": round(time.perf_counter() - started, 3),
    }


def _tillmesh_makers(nodes: int, sync_interval_ms: int, seed: int) -> list[tuple[int, Callable, Any]]:
    """Enrol ``nodes`` cashiers of one branch, as ``Simulation`` does: an authority, a key and
    a token per device, a store holding the token's feed; an engine per boot."""
    authority = Authority.create(seeded(derive_seed(seed, "authority")), T0)
    key_random = seeded(derive_seed(seed, "device keys"))
    keys, numbers = [], []
    for i in range(nodes):
        key = DeviceKey.generate(key_random)
        keys.append(key)
        numbers.append(authority.enroll(key.public, name=_name(i), branch="central", roles=("cashier",),
                                        now_ms=T0).number)
    config = EngineConfig(have_interval_ms=sync_interval_ms)
    makers = []
    imported = import_tokens((authority.token(numbers[i]), keys[i]) for i in range(nodes))
    for i, (keyring, cert, feed) in enumerate(imported):
        store = MemoryFeedStore()
        for entry in feed:
            store.append(entry.origin, entry.seq, entry.hash, entry.encode())
        store.flush()
        random_bytes = seeded(derive_seed(seed, f"engine {_name(i)}"))

        def make(store: Any, now: Any, keyring=keyring, random_bytes=random_bytes) -> Engine:
            return Engine(keyring.copy(), store, random_bytes=random_bytes, now=now, policy=POS_POLICY,
                          schema=POS_SCHEMA, escrow=POS_ESCROW, config=config)

        makers.append((cert.number, make, store))
    return makers


def _converged(protocol: str, devices: dict[str, Device], counters: list[int]) -> bool:
    """Every node holds every element written, and all hold the same state."""
    statuses = [d.status() for d in devices.values()]
    if len({s.digest for s in statuses}) != 1:
        return False
    if protocol == "tillmesh":
        by_node = {d.number: counters[i] for i, d in enumerate(devices.values())}
        return all(s.applied.get(origin, 0) >= count for s in statuses for origin, count in by_node.items()
                   if count and origin != s.device)
    return all(s.elements == sum(counters) for s in statuses)


# --- the experiment ------------------------------------------------------------------------------

def run_experiment(scenario: Scenario, *, mesh: str = "random") -> dict[str, Any]:
    """Every topology × protocol of an ``[experiment]`` scenario; a JSON-able dict."""
    if not scenario.experiment:
        raise ScenarioError(f"{scenario.source}: not an experiment; it has no [experiment] section")
    spec, run = scenario.section("experiment"), scenario.section("run")
    seed, nodes = scenario.seed, spec["nodes"]
    writes = write_schedule(nodes, spec["writes_per_node_s"], run["duration_s"], seed)
    rows = []
    graphs = {}
    for kind in spec["topologies"]:
        try:
            edges = topology(kind, nodes, spec["degree"], seed, mesh=mesh)
        except ValueError as exc:
            raise ScenarioError(f"{scenario.source}: experiment.topologies: {exc}") from None
        graphs[kind] = edges
        for protocol in spec["protocols"]:
            row = run_protocol(protocol, nodes, edges, writes, sync_interval_ms=spec["sync_interval_ms"],
                               latency_ms=spec["latency_ms"], seed=seed, duration_s=run["duration_s"])
            row["topology"] = kind
            row["published_vs_optimum"] = PUBLISHED.get((protocol, kind))
            rows.append(row)
    result = {
        "scenario": scenario.name, "source": scenario.source, "seed": seed, "duration_s": run["duration_s"],
        "experiment": dict(spec), "mesh": mesh,
        "graphs": {kind: [list(e) for e in edges] for kind, edges in graphs.items()},
        "rows": rows,
        "published": {f"{p}/{t}": v for (p, t), v in PUBLISHED.items()},
        "published_source": "Enes et al., Efficient Synchronization of State-based CRDTs, ICDE 2019 "
                            "(GSet, 15 nodes; the figures as given to us)",
    }
    result["table"] = format_table(rows)
    result["result_digest"] = result_digest(rows)
    result["replay"] = replay_command(scenario)
    return result


def result_digest(rows: list[dict[str, Any]]) -> str:
    """BLAKE2b over every figure of every row but the wall-clock ones: what the same seed
    must give again (an experiment's runs have no shared event trace to hash)."""
    figures = [{k: v for k, v in row.items() if k != "wall_s"} for row in rows]
    return hashlib.blake2b(json.dumps(figures, sort_keys=True).encode(), digest_size=32).hexdigest()


def format_table(rows: list[dict[str, Any]]) -> str:
    """An aligned text table: our payload against the optimum beside the published figure."""
    head = ("topology", "protocol", "writes", "payload", "optimum", "x optimum", "published", "total",
            "metadata", "meta share", "converged", "wall s")
    lines = [head]
    for r in rows:
        published = r.get("published_vs_optimum")
        lines.append((r["topology"], r["protocol"], str(r["writes"]), str(r["payload_bytes"]),
                      str(r["optimum_payload_bytes"]),
                      "-" if r["payload_vs_optimum"] is None else f"{r['payload_vs_optimum']:.2f}",
                      "-" if published is None else f"{published:.2f}", str(r["total_bytes"]),
                      str(r["metadata_bytes"]),
                      "-" if r["metadata_share"] is None else f"{r['metadata_share']:.1%}",
                      "yes" if r["converged"] else "NO", f"{r['wall_s']:.2f}"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = []
    for n, line in enumerate(lines):
        out.append("  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths))))
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)
