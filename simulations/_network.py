"""The network model: links with latency, bandwidth and loss; connections that behave as TCP.

A *link* is a pair of devices that may connect (a LAN inside a branch, a WAN path to an
anchor) with its ``LinkSpec``. A *connection* is one TCP stream over a link, opened by a
dialer; each side is an ``End``, the peer handle its engine sees.

- Within a connection bytes arrive in order (FIFO per direction) after the sender's link
  has had time to put them on the wire (bandwidth) and a sampled latency; across
  connections they reorder freely.
- A lost message breaks its connection, as TCP would give up: both ends see it end.
- A partition (``cut``) holds what is sent across it, as TCP retransmits: if the link heals
  before an engine gives up on the session (its ping timeout), the held bytes arrive in
  order; dialling across a cut fails after the connect timeout.
- A device that crashes takes its connections down; its peers see them end (the kernel's
  reset) one latency later.
"""

from __future__ import annotations

import random
from heapq import heappush
from dataclasses import dataclass
from math import log
from typing import Callable, Mapping, Protocol

from ._loop import US_PER_MS, Loop
from ._trace import DELIVER, SEND, Trace

__all__ = ["LinkSpec", "End", "Connection", "Network", "Node"]

BATCH = Trace.BATCH


class Node(Protocol):
    """What the network needs of a device: whether it is up, and where its streams report."""

    up: bool

    def on_connected(self, end: "End", initiator: bool) -> None: ...
    def on_data(self, end: "End", data: bytes) -> None: ...
    def on_closed(self, end: "End") -> None: ...


@dataclass(frozen=True, slots=True)
class LinkSpec:
    """What one kind of link is like.

    ``latency_ms`` is the one-way base latency, ``jitter_ms`` the mean of an exponential
    tail added to it per message (0: none), ``bandwidth_kbps`` kilobits per second per
    direction (0: unlimited), ``loss`` the chance that a message is lost (and its
    connection broken).
    """

    kind: str  # "lan" or "wan"
    latency_ms: float
    jitter_ms: float = 0.0
    bandwidth_kbps: int = 0
    loss: float = 0.0
    connect_timeout_ms: int = 3_000


class End:
    """One side of a connection: the peer handle an engine is given."""

    # The sending state of this side's direction lives here, not in per-direction lists on
    # the connection: ``send`` reaches it with one attribute load instead of two and an index.
    __slots__ = ("conn", "name", "peer", "side", "node", "_hash", "next_free", "last_arrival", "bytes_sent")

    def __init__(self, conn: "Connection", name: str, peer: str, side: int, node: Node) -> None:
        self.conn, self.name, self.peer, self.side = conn, name, peer, side
        self.node = node  # the device on this side, which hears what arrives here
        self._hash = conn.id * 2 + side  # not id(): dict and set order must not depend on memory
        self.next_free = 0  # when this side's link is free again (µs)
        self.last_arrival = 0  # the latest arrival scheduled from this side: FIFO
        self.bytes_sent = 0

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return self is other

    def __repr__(self) -> str:
        return f"{self.name}->{self.peer}#{self.conn.id}"


class Connection:
    """One TCP stream between two devices."""

    __slots__ = ("id", "pair", "spec", "ends", "state", "held", "opened_us", "ended")

    def __init__(self, conn_id: int, a: str, b: str, spec: LinkSpec, now_us: int, nodes: Mapping[str, Node]) -> None:
        self.id, self.pair, self.spec = conn_id, frozenset((a, b)), spec
        self.ends = (End(self, a, b, 0, nodes[a]), End(self, b, a, 1, nodes[b]))
        self.state = "open"  # open, closed (one side closed it), broken
        self.held: list[list] = [[], []]  # per direction: bytes waiting behind a cut (None: the FIN)
        self.opened_us = now_us
        self.ended = [False, False]  # per side: its owner has heard the stream end

    @property
    def bytes(self) -> int:
        """Bytes sent on this stream, both directions."""
        return self.ends[0].bytes_sent + self.ends[1].bytes_sent


class Network:
    """Links, the connections over them, and the partitions in force.

    ``nodes`` maps each device's name to its ``Node`` (the owner may fill it in later, but
    before the first dial): each end of a connection keeps its node, so that delivering a
    message is one call, with no lookup by name.
    """

    def __init__(self, loop: Loop, rng: random.Random, trace: Trace, nodes: Mapping[str, Node]) -> None:
        self.loop, self.rng, self.trace, self.nodes = loop, rng, trace, nodes
        self._random = rng.random  # the hot path draws with one call, not an attribute chain
        self._pending = trace.pending  # message events go straight in here (``Trace.pending``)
        self.links: dict[frozenset, LinkSpec] = {}
        self.cuts: set[frozenset] = set()
        self.conns: dict[int, Connection] = {}
        self._next_id = 0
        # A test may alter bytes in flight: tap(connection, direction, data) -> data.
        self.tap: Callable[[Connection, int, bytes], bytes] | None = None
        self.sent_messages = 0
        self._ended_bytes: dict[str, int] = {}  # link kind -> bytes of connections gone
        self._arrive_handler = self._arrive  # one bound method, not one per message

    @property
    def kind_bytes(self) -> dict[str, int]:
        """Bytes put on the wire so far, per link kind (``lan``, ``wan``)."""
        totals = dict(self._ended_bytes)
        for conn in self.conns.values():
            totals[conn.spec.kind] = totals.get(conn.spec.kind, 0) + conn.bytes
        return totals

    # -- topology -----------------------------------------------------------------------------

    def link(self, a: str, b: str, spec: LinkSpec) -> None:
        self.links[frozenset((a, b))] = spec

    def spec(self, a: str, b: str) -> LinkSpec | None:
        return self.links.get(frozenset((a, b)))

    def cut(self, a: str, b: str) -> None:
        """Partition the link: what is sent is held, new connections fail."""
        pair = frozenset((a, b))
        if pair in self.links and pair not in self.cuts:
            self.cuts.add(pair)
            self.trace.event(self.loop.now, "cut", tuple(sorted(pair)))

    def heal(self, a: str, b: str) -> None:
        """End the partition: held bytes go on, in order."""
        pair = frozenset((a, b))
        if pair not in self.cuts:
            return
        self.cuts.discard(pair)
        self.trace.event(self.loop.now, "heal", tuple(sorted(pair)))
        for conn in list(self.conns.values()):
            if conn.pair == pair and conn.state != "broken":
                for direction in (0, 1):
                    if conn.held[direction]:
                        self.loop.after(self.latency_us(conn.spec), self._drain, conn, direction)

    def is_cut(self, a: str, b: str) -> bool:
        return frozenset((a, b)) in self.cuts

    # -- connections --------------------------------------------------------------------------

    def latency_us(self, spec: LinkSpec) -> int:
        latency = spec.latency_ms
        if spec.jitter_ms > 0:
            latency += self.rng.expovariate(1.0 / spec.jitter_ms)
        return int(latency * US_PER_MS)

    def dial(self, a: str, b: str, on_fail: Callable[[], None]) -> None:
        """``a`` opens a connection to ``b``: both hear ``on_connected`` one round trip
        later, or ``on_fail`` runs (a cut: after the connect timeout; ``b`` down: a reset)."""
        spec = self.links.get(frozenset((a, b)))
        if spec is None:
            raise ValueError(f"no link between {a} and {b}")
        rtt = self.latency_us(spec) + self.latency_us(spec)
        if frozenset((a, b)) in self.cuts:
            self.loop.after(spec.connect_timeout_ms * US_PER_MS, on_fail)
        elif not self.nodes[b].up:
            self.loop.after(rtt, on_fail)
        else:
            self.loop.after(rtt, self._open, a, b, spec, on_fail)

    def _open(self, a: str, b: str, spec: LinkSpec, on_fail: Callable[[], None]) -> None:
        nodes = self.nodes
        if not (nodes[a].up and nodes[b].up) or frozenset((a, b)) in self.cuts:
            on_fail()
            return
        self._next_id += 1
        conn = Connection(self._next_id, a, b, spec, self.loop.now, nodes)
        self.conns[conn.id] = conn
        self.trace.event(self.loop.now, "open", conn.id, a, b)
        first, second = conn.ends
        first.node.on_connected(first, True)
        if conn.state == "open":
            second.node.on_connected(second, False)

    def send(self, end: End, data: bytes) -> None:
        # The hot path of every run, with ``_arrive``: written out flat (no helpers).
        conn = end.conn
        if conn.state != "open":
            return  # the stream is gone; its end is reported to both sides
        direction = end.side
        size = len(data)
        spec = conn.spec
        loop = self.loop
        now = loop.now
        end.bytes_sent += size
        self.sent_messages += 1
        pending = self._pending
        pending.append((now, SEND, conn.id, direction, size))
        if len(pending) >= BATCH:
            self.trace.drain()
        if spec.loss > 0 and self._random() < spec.loss:
            self.trace.event(now, "lost", conn.id, direction)
            self.abort(conn)
            return
        free = end.next_free
        if free < now:
            free = now
        if spec.bandwidth_kbps:
            free += size * 8_000 // spec.bandwidth_kbps
        end.next_free = free
        latency = spec.latency_ms
        if spec.jitter_ms > 0:  # an exponential tail of mean jitter_ms (expovariate, written out)
            latency -= log(1.0 - self._random()) * spec.jitter_ms
        arrival = free + int(latency * US_PER_MS)
        if arrival < end.last_arrival:
            arrival = end.last_arrival
        end.last_arrival = arrival
        # loop.at(arrival, ...) without the call: arrival >= now
        heappush(loop.queue, (arrival, loop.next_seq(), self._arrive_handler, (conn, direction, data)))

    def _schedule(self, conn: Connection, direction: int, data: bytes | None, wire_us: int) -> None:
        sender = conn.ends[direction]
        arrival = max(self.loop.now + wire_us + self.latency_us(conn.spec), sender.last_arrival)
        sender.last_arrival = arrival
        self.loop.at(arrival, self._arrive_handler, conn, direction, data)

    def _arrive(self, conn: Connection, direction: int, data: bytes | None) -> None:
        # The other half of the hot path: delivery (``_deliver``) written out for data.
        if conn.state == "broken":
            return
        held = conn.held[direction]
        if held or (self.cuts and conn.pair in self.cuts):
            held.append(data)  # behind a cut, or behind bytes held by one: in order
            return
        if data is None or self.tap is not None:
            self._deliver(conn, direction, data)
            return
        pending = self._pending
        pending.append((self.loop.now, DELIVER, conn.id, direction, 0))
        if len(pending) >= BATCH:
            self.trace.drain()
        receiver = conn.ends[1 - direction]
        receiver.node.on_data(receiver, data)

    def _drain(self, conn: Connection, direction: int) -> None:
        """After a heal: deliver what was held, in order (and what queued behind it)."""
        held = conn.held[direction]
        while held and conn.state != "broken" and conn.pair not in self.cuts:
            self._deliver(conn, direction, held.pop(0))

    def _deliver(self, conn: Connection, direction: int, data: bytes | None) -> None:
        receiver = conn.ends[1 - direction]
        if data is None:  # the FIN: the other side closed
            self._end(receiver)
            return
        if self.tap is not None:
            data = self.tap(conn, direction, data)
        pending = self._pending
        pending.append((self.loop.now, DELIVER, conn.id, direction, 0))  # as ``_arrive`` records it
        if len(pending) >= BATCH:
            self.trace.drain()
        receiver.node.on_data(receiver, data)

    def close(self, end: End) -> None:
        """``end``'s owner closes the stream: it ends here now, and on the other side once
        the bytes already sent (and the FIN) have arrived."""
        conn = end.conn
        if conn.state == "open":
            conn.state = "closed"
            self.trace.event(self.loop.now, "close", conn.id, end.side)
            self._schedule(conn, end.side, None, 0)
        # The closer hears its own end from the loop, not from inside its own poll.
        self.loop.after(0, self._end, end)

    def abort(self, conn: Connection, *, silent: str | None = None) -> None:
        """Break a connection at once: each side hears it end one latency later (the
        reset), except ``silent``, a device that went down with it."""
        if conn.state == "broken":
            return
        conn.state = "broken"
        conn.held = [[], []]
        self.trace.event(self.loop.now, "break", conn.id)
        for end in conn.ends:
            if end.name == silent:
                conn.ended[end.side] = True  # its owner went down with it
            else:
                self.loop.after(self.latency_us(conn.spec), self._end, end)

    def drop_device(self, name: str) -> None:
        """``name`` went down: every connection of it breaks."""
        for conn in list(self.conns.values()):
            if name in conn.pair and conn.state != "broken":
                self.abort(conn, silent=name)

    def _end(self, end: End) -> None:
        conn = end.conn
        ended = conn.ended
        if ended[end.side]:
            return
        ended[end.side] = True
        if all(ended) and self.conns.pop(conn.id, None) is not None:
            self._ended_bytes[conn.spec.kind] = self._ended_bytes.get(conn.spec.kind, 0) + conn.bytes
        end.node.on_closed(end)
