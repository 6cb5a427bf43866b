"""Builders for the engine tests: a shop of enrolled devices, engines over kept stores, a
ConnectionPair that wires two engines directly, and a recorder of the frames a session sends.

Everything is deterministic: every random byte comes from ``seeded(seed)``, every time is a
virtual millisecond passed in by the test. Nothing here sleeps or opens a socket.
"""

from __future__ import annotations

from typing import Any, Callable

from crdt_types import HLC
from gossip import (
    ALLOW_ALL,
    Authority,
    ChannelClosed,
    ChannelEstablished,
    DeviceKey,
    Engine,
    EngineConfig,
    FeedStore,
    FrameReceived,
    Keyring,
    Loopback,
    MemoryFeedStore,
    Policy,
    SecureChannel,
    import_token,
    seeded,
)

T0 = 1_800_000_000_000  # virtual "now" in ms; tests move it explicitly
BRANCH = "central"


class Shop:
    """An authority and its enrolled devices; builds (and rebuilds) an engine per device.

    Every device should be enrolled before the first engine is built: a keyring learns of
    later enrollments only through the authority feed, which nobody pushes in these tests
    unless a device enrolled later joins (its token carries the whole feed so far).
    """

    def __init__(self, seed: int = 1, now_ms: int = T0) -> None:
        self.random_bytes = seeded(seed)
        self.now_ms = now_ms
        self.authority = Authority.create(self.random_bytes, now_ms)
        self.keys: dict[str, DeviceKey] = {}
        self.numbers: dict[str, int] = {}
        self.stores: dict[str, FeedStore] = {}

    def enroll(self, name: str, roles: tuple[str, ...] = ("cashier",), branch: str = BRANCH) -> int:
        key = DeviceKey.generate(self.random_bytes)
        cert = self.authority.enroll(key.public, name=name, branch=branch, roles=tuple(roles), now_ms=self.now_ms)
        self.keys[name] = key
        self.numbers[name] = cert.number
        return cert.number

    def keyring(self, name: str) -> Keyring:
        keyring, cert, _ = import_token(self.authority.token(self.numbers[name]), self.keys[name])
        assert cert.number == self.numbers[name]
        return keyring

    def store(self, name: str) -> FeedStore:
        """The device's store, created on first use and seeded with the authority feed."""
        store = self.stores.get(name)
        if store is None:
            _, _, feed = import_token(self.authority.token(self.numbers[name]), self.keys[name])
            store = self.stores[name] = MemoryFeedStore()
            for entry in feed:
                store.append(entry.origin, entry.seq, entry.hash, entry.encode())
        return store

    def engine(self, name: str, *, policy: Policy = ALLOW_ALL, config: EngineConfig = EngineConfig(),
               now_ms: int | None = None, hlc: HLC | None = None) -> Engine:
        """An engine for ``name`` over its kept store: a restart when one was built before."""
        return Engine(self.keyring(name), self.store(name), random_bytes=self.random_bytes,
                      now_ms=self.now_ms if now_ms is None else now_ms, policy=policy, config=config, hlc=hlc)

    def channel(self, name: str, *, initiator: bool, now_ms: int | None = None) -> SecureChannel:
        """A bare SecureChannel speaking as device ``name``: a hand-driven (misbehaving) peer."""
        return SecureChannel(self.keyring(name), initiator=initiator, random_bytes=self.random_bytes,
                             now_ms=self.now_ms if now_ms is None else now_ms)


class Pair:
    """Two engines wired directly, h11 ``ConnectionPair`` style.

    ``a`` sees its peer under the handle ``"b"`` and ``b`` sees ``"a"``. ``exchange`` moves
    bytes both ways until neither side has anything to send; ``tap(sender, data)`` may alter
    the bytes (it sees every chunk). Bytes delivered per direction are counted in ``moved``.
    """

    def __init__(self, a: Engine, b: Engine, now_ms: int, *, connect: bool = True) -> None:
        self.engines = {"a": a, "b": b}
        self.moved = {"a": 0, "b": 0}  # bytes delivered from that side
        self.closed: set[str] = set()  # sides that asked to close
        self.tap: Callable[[str, bytes], bytes] | None = None
        if connect:
            self.connect(now_ms)

    @property
    def a(self) -> Engine:
        return self.engines["a"]

    @property
    def b(self) -> Engine:
        return self.engines["b"]

    def connect(self, now_ms: int) -> None:
        self.a.connected("b", True, now_ms)
        self.b.connected("a", False, now_ms)
        self.exchange(now_ms)

    def exchange(self, now_ms: int, *, max_rounds: int = 10_000) -> int:
        """Deliver until quiet; returns the number of rounds that moved bytes."""
        for rounds in range(max_rounds):
            quiet = True
            for side, other in (("a", "b"), ("b", "a")):
                engine = self.engines[side]
                if other in engine.peers_to_close():
                    self.closed.add(side)
                data = engine.data_to_send(other)
                if not data:
                    continue
                if self.tap is not None:
                    data = self.tap(side, data)
                quiet = False
                self.moved[side] += len(data)
                self.engines[other].received(side, data, now_ms)
            if quiet:
                return rounds
        raise AssertionError(f"no quiet after {max_rounds} rounds")

    def tick(self, now_ms: int) -> int:
        self.a.tick(now_ms)
        self.b.tick(now_ms)
        return self.exchange(now_ms)


class RecordingChannel:
    """Wraps a session's SecureChannel and keeps every frame the engine sent through it."""

    def __init__(self, channel: SecureChannel) -> None:
        self._channel = channel
        self.sent: list[Any] = []

    def send_frame(self, obj: Any) -> None:
        self._channel.send_frame(obj)
        self.sent.append(obj)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._channel, name)


def record_frames(engine: Engine, peer: Any) -> list[Any]:
    """Start recording the frames ``engine`` sends to ``peer``; returns the (live) list."""
    session = engine.session(peer)
    assert session is not None, f"no session with {peer!r}"
    recorder = RecordingChannel(session.channel)
    session.channel = recorder  # type: ignore[assignment]
    return recorder.sent


def frames_of(frames: list[Any], name: str) -> list[Any]:
    return [f for f in frames if f[0] == name]


class HandPeer:
    """A peer driven by hand: a bare SecureChannel connected to one engine.

    It completes the handshake honestly (it is an enrolled device) and then sends whatever
    frames the test wants, in whatever order, so the engine's session table can be probed.
    """

    def __init__(self, engine: Engine, channel: SecureChannel, now_ms: int, handle: str = "hand") -> None:
        self.engine = engine
        self.channel = channel
        self.handle = handle
        self.received: list[Any] = []  # frames from the engine
        self.events: list[Any] = []
        engine.connected(handle, not channel.initiator, now_ms)
        self.pump(now_ms)

    def pump(self, now_ms: int) -> None:
        for _ in range(100):
            moved = False
            out = self.channel.data_to_send()
            if out:
                self.engine.received(self.handle, out, now_ms)
                moved = True
            back = self.engine.data_to_send(self.handle)
            if back:
                self.channel.receive_data(back, now_ms)
                moved = True
            while (event := self.channel.next_event()) is not None:
                self.events.append(event)
                if isinstance(event, FrameReceived):
                    self.received.append(event.obj)
            if not moved:
                return
        raise AssertionError("hand peer did not go quiet")

    @property
    def established(self) -> bool:
        return any(isinstance(e, ChannelEstablished) for e in self.events)

    @property
    def closed(self) -> bool:
        return any(isinstance(e, ChannelClosed) for e in self.events)

    def send(self, frame: Any, now_ms: int) -> None:
        self.channel.send_frame(frame)
        self.pump(now_ms)


def digests(engines: list[Engine]) -> set[bytes]:
    return {e.replica.digest() for e in engines}


def local_entries(engine: Engine) -> list[bytes]:
    """Every entry of the engine's own feed, encoded."""
    head = engine.store.head(engine.number)
    return engine.store.read(engine.number, 1, head.seq) if head else []


def all_entries(store: FeedStore) -> dict[tuple[int, int], bytes]:
    """(origin, seq) -> encoded entry, for every entry in the store."""
    out = {}
    for origin, head in store.heads().items():
        for seq, data in enumerate(store.read(origin, 1, head.seq), start=1):
            out[(origin, seq)] = data
    return out


def heal(net: Loopback, now_ms: int, *, rounds: int = 4, step_ms: int = 5_000, max_steps: int = 50) -> int:
    """Link everyone to everyone, then tick (virtual time, ``step_ms`` apart) until every
    store has held the same version vector for ``rounds`` ticks in a row; returns the time.

    Raises:
        AssertionError: the stores did not agree within ``max_steps`` ticks.
    """
    names = sorted(net.engines)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if not net.connected(a, b):
                net.connect(a, b, now_ms)
    net.run(now_ms)
    quiet = 0
    for _ in range(max_steps):
        now_ms += step_ms
        net.tick(now_ms)
        vectors = [e.version_vector() for e in net.engines.values()]
        quiet = quiet + 1 if all(v == vectors[0] for v in vectors) else 0
        if quiet >= rounds:
            return now_ms
    raise AssertionError(f"no agreement after {max_steps} ticks: {vectors}")
