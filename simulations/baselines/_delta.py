"""Delta-based synchronization of a grow-only set, as in Enes et al. (ICDE 2019).

Two baselines with the engine's surface, so that ``simulations._device.Device`` drives
them exactly as it drives a gossip ``Engine``:

- classic delta-based synchronization (Almeida et al.): every node keeps a delta-buffer;
  every sync interval it sends the join of its buffer to every neighbour and clears it; a
  received delta that inflates the local state is joined into the state *and* added to
  the buffer (so it is forwarded at the next sync); a delta that does not inflate is
  dropped;
- BP+RR (Enes et al.'s two improvements): BP, avoid back-propagation: a buffer entry
  remembers the neighbour it came from and is not sent back to it; RR, remove redundant
  state: only the part of a received delta that is new, Δ(d, x) = d \\ x for a set, goes
  into the buffer.

The lattice is a GSet of elements ``(origin, k)``; a delta is a set of elements. Messages
are real bytes: one CBOR array of elements per sync and neighbour, each element the CBOR
array ``[origin, k]``. *Payload* is the elements' encoded bytes, *metadata* everything else
in the message (here only the array header); each node counts both per neighbour.

Links are assumed reliable (the experiment runs them with loss 0, and the network model
keeps bytes in order within a connection), so there is no acknowledgement and no
retransmission: the buffer is cleared as soon as a sync has sent it. A node syncs only
when every one of its neighbours is connected (before that it keeps its buffer), so
nothing is lost while the connections are being opened; a connection that broke would
lose the deltas sent over it, which is outside what these baselines model.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import Any, Iterable

import cbor2

from gossip import Effects, Now

__all__ = ["DeltaSync", "classic_delta", "bp_rr", "Element", "element_size", "BaselineStatus"]

Element = tuple[int, int]  # (origin node, k-th write of that node)


def _uint_size(value: int) -> int:
    """Bytes of a CBOR unsigned integer (RFC 8949, major type 0)."""
    return 1 if value < 24 else 2 if value < 0x100 else 3 if value < 0x10000 else 5 if value < 0x100000000 else 9


def element_size(element: Element) -> int:
    """Bytes of one element as the baselines put it on the wire: ``cbor2.dumps([origin, k])``
    (a one-byte array header and two unsigned integers; checked against cbor2 in the tests)."""
    return 1 + _uint_size(element[0]) + _uint_size(element[1])


@dataclass(slots=True)
class BaselinePeer:
    """One connection as a baseline sees it (the fields ``Device`` and the experiment read)."""

    handle: Any
    name: str
    state: str = "live"
    bytes_sent: int = 0
    payload_bytes_sent: int = 0
    messages_sent: int = 0
    elements_sent: int = 0

    @property
    def metadata_bytes_sent(self) -> int:
        return self.bytes_sent - self.payload_bytes_sent


@dataclass(frozen=True, slots=True)
class Acks:
    local: int  # own elements written but not yet sent to any neighbour


@dataclass(frozen=True, slots=True)
class BaselineStatus:
    device: int
    is_member: bool
    digest: bytes
    vector: dict[int, int]  # origin -> how many of its elements this node holds
    applied: dict[int, int]  # the same (a GSet applies what it holds)
    acks: Acks
    peers: tuple[BaselinePeer, ...]
    elements: int
    redundant_received: int  # elements received that were already held
    deltas_dropped: int  # received deltas that did not inflate the state


@dataclass(frozen=True, slots=True)
class Written:
    """What ``commit`` returns (the fields a ``Device`` observer may read)."""

    origin: int
    seq: int
    hash: bytes = b""
    keys: tuple = ()


class DeltaSync:
    """A GSet replica synchronized by deltas with its neighbours.

    Args:
        number: this node's id (the ``origin`` of the elements it writes).
        neighbours: the names of the devices it synchronizes with (the topology's edges);
            peers are known by ``handle.peer``, the name the network gives the other end.
        interval_ms: the sync interval.
        phase_ms: the first sync is at ``phase_ms`` (monotonic); then every interval.
        avoid_back_propagation: BP.
        remove_redundant: RR.
    """

    def __init__(self, number: int, neighbours: Iterable[str], *, interval_ms: int, phase_ms: int = 0,
                 avoid_back_propagation: bool = False, remove_redundant: bool = False) -> None:
        self.number = number
        self.neighbours = tuple(sorted(set(neighbours)))
        self.interval_ms = interval_ms
        self.bp, self.rr = avoid_back_propagation, remove_redundant
        self.state: set[Element] = set()
        self.buffer: list[tuple[frozenset[Element], str | None]] = []  # (delta, neighbour it came from)
        self.peers: dict[str, BaselinePeer] = {}  # neighbour name -> its live connection
        self._by_handle: dict[Any, BaselinePeer] = {}
        self._out: dict[Any, bytearray] = {}
        self._next_sync_ms = phase_ms
        self._written = 0
        self._unsent_own = 0
        self._per_origin: dict[int, int] = {}
        self.redundant_received = 0
        self.deltas_dropped = 0
        self.syncs = 0
        self.syncs_skipped = 0

    # -- inputs -------------------------------------------------------------------------------

    def connected(self, peer: Any, initiator: bool, now: Now) -> None:
        info = BaselinePeer(peer, peer.peer)
        self.peers[peer.peer] = info
        self._by_handle[peer] = info

    def disconnected(self, peer: Any, now: Now) -> None:
        info = self._by_handle.pop(peer, None)
        if info is not None:
            info.state = "closed"
            if self.peers.get(info.name) is info:
                del self.peers[info.name]

    def received(self, peer: Any, data: bytes, now: Now) -> None:
        info = self._by_handle.get(peer)
        source = info.name if info is not None else getattr(peer, "peer", None)
        stream = io.BytesIO(data)
        decoder = cbor2.CBORDecoder(stream)
        while stream.tell() < len(data):  # CBOR is self-delimiting: messages may be concatenated
            self._take(frozenset(map(tuple, decoder.decode())), source)

    def _take(self, delta: frozenset[Element], source: str | None) -> None:
        state = self.state
        new = delta - state
        self.redundant_received += len(delta) - len(new)
        if not new:  # d ⊑ x: no inflation, drop it
            self.deltas_dropped += 1
            return
        state |= new
        for origin, _ in new:
            self._per_origin[origin] = self._per_origin.get(origin, 0) + 1
        self.buffer.append((frozenset(new) if self.rr else delta, source))

    def commit(self, ops: Iterable[tuple], now: Now) -> Written:
        """Local writes: ``[("add", element), ...]``; each fresh element is a delta of its own."""
        for op in ops:
            verb, element = op
            if verb != "add":
                raise ValueError(f"a GSet knows only add, not {verb!r}")
            self.write(tuple(element))
        return Written(self.number, self._written)

    def write(self, element: Element) -> None:
        element = tuple(element)
        self._written += 1
        if element in self.state:
            return
        self.state.add(element)
        self._per_origin[element[0]] = self._per_origin.get(element[0], 0) + 1
        self.buffer.append((frozenset((element,)), None))
        if element[0] == self.number:
            self._unsent_own += 1

    def tick(self, now: Now) -> None:
        if now.mono_ms < self._next_sync_ms:
            return
        while self._next_sync_ms <= now.mono_ms:
            self._next_sync_ms += self.interval_ms
        self.sync()

    def flushed(self, now: Now) -> None:
        pass  # nothing is ever flushed: the state is in memory

    # -- the protocol ---------------------------------------------------------------------------

    def sync(self) -> None:
        """Send every neighbour the join of the buffer (less what came from it, with BP)."""
        if not self.buffer:
            return
        if any(name not in self.peers for name in self.neighbours):
            self.syncs_skipped += 1  # wait until every neighbour is there: the buffer is kept
            return
        self.syncs += 1
        if not self.bp:  # the same join for every neighbour: encode it once
            joined = sorted(set().union(*(entry for entry, _ in self.buffer)))
            message = cbor2.dumps(joined)
            payload = sum(map(element_size, joined))
            for name in self.neighbours:
                self._send(self.peers[name], message, payload, len(joined))
        else:
            for name in self.neighbours:
                elements = sorted(set().union(*(entry for entry, source in self.buffer if source != name)))
                if elements:
                    self._send(self.peers[name], cbor2.dumps(elements), sum(map(element_size, elements)),
                               len(elements))
        self.buffer = []
        self._unsent_own = 0

    def _send(self, info: BaselinePeer, message: bytes, payload: int, count: int) -> None:
        """``message`` is ``cbor2.dumps(elements)``: tuples encode as arrays, [[origin, k], ...]."""
        info.bytes_sent += len(message)
        info.payload_bytes_sent += payload
        info.messages_sent += 1
        info.elements_sent += count
        self._out.setdefault(info.handle, bytearray()).extend(message)

    # -- outputs --------------------------------------------------------------------------------

    def poll(self) -> Effects:
        sends = {handle: bytes(data) for handle, data in self._out.items()}
        self._out = {}
        return Effects(sends)

    def next_deadline(self) -> int | None:
        return self._next_sync_ms

    def digest(self) -> bytes:
        return hashlib.blake2b(cbor2.dumps(sorted(self.state)), digest_size=16).digest()

    def status(self) -> BaselineStatus:
        counts = dict(sorted(self._per_origin.items()))
        return BaselineStatus(device=self.number, is_member=True, digest=self.digest(), vector=counts,
                              applied=dict(counts), acks=Acks(self._unsent_own),
                              peers=tuple(self._by_handle.values()), elements=len(self.state),
                              redundant_received=self.redundant_received, deltas_dropped=self.deltas_dropped)


def classic_delta(number: int, neighbours: Iterable[str], *, interval_ms: int, phase_ms: int = 0) -> DeltaSync:
    return DeltaSync(number, neighbours, interval_ms=interval_ms, phase_ms=phase_ms)


def bp_rr(number: int, neighbours: Iterable[str], *, interval_ms: int, phase_ms: int = 0) -> DeltaSync:
    return DeltaSync(number, neighbours, interval_ms=interval_ms, phase_ms=phase_ms,
                     avoid_back_propagation=True, remove_redundant=True)
