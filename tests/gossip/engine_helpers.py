"""Builders for the engine tests, on top of ``gossip.testing``: the shop builder, a
ConnectionPair that wires two engines directly through ``poll()``, a recorder of the frames
a session sends, and a hand-driven peer.

Everything is deterministic: every random byte comes from ``seeded(seed)``, every time is a
virtual millisecond passed in by the test. Nothing here sleeps or opens a socket.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable

from gossip import Engine, FeedStore, Now
from gossip._channel import ChannelClosed, ChannelEstablished, FrameReceived, SecureChannel
from gossip._session import Session
from gossip.testing import T0, Loopback, ShopBuilder

__all__ = [
    "T0", "BRANCH", "Shop", "Pair", "RecordingChannel", "record_frames", "frames_of", "HandPeer",
    "digests", "local_entries", "all_entries", "heal", "session_of", "store_of", "kinds",
    "bare_session", "live_peers", "peer_status", "keyring_of", "ack_holders", "open_requests",
]

BRANCH = "central"


class Shop(ShopBuilder):
    """``gossip.testing.ShopBuilder`` plus a bare channel speaking as one of its devices."""

    def engine(self, name: str, *, now_ms: int | None = None, **kwargs: Any) -> Engine:
        """``ShopBuilder.engine``, with the time named as the older tests name it."""
        if now_ms is not None:
            kwargs["now"] = now_ms
        return super().engine(name, **kwargs)

    def channel(self, name: str, *, initiator: bool, now_ms: int | None = None) -> SecureChannel:
        """A bare SecureChannel speaking as device ``name``: a hand-driven (misbehaving) peer."""
        return SecureChannel(self.keyring(name), initiator=initiator, random_bytes=self.random_bytes,
                             now_ms=self.now_ms if now_ms is None else now_ms)


def session_of(engine: Engine, peer: Any) -> Session | None:
    """The engine's session with ``peer`` (white-box: only tests of the session machine look)."""
    return engine._sessions.get(peer)


def store_of(engine: Engine) -> FeedStore:
    return engine._store


def kinds(alerts) -> list[str]:
    return [a.kind.value for a in alerts]


class Pair:
    """Two engines wired directly, h11 ``ConnectionPair`` style, driven through ``poll()``.

    ``a`` sees its peer under the handle ``"b"`` and ``b`` sees ``"a"``. ``exchange`` moves
    bytes both ways until neither side has anything to do, flushing a side's store when it
    asks (and telling it); ``tap(sender, data)`` may alter the bytes. Bytes delivered per
    direction are counted in ``moved``; what each side reported is kept in ``alerts``,
    ``applied``, ``committed``, ``closes`` and ``acks``.
    """

    def __init__(self, a: Engine, b: Engine, now_ms: int, *, connect: bool = True) -> None:
        self.engines = {"a": a, "b": b}
        self.moved = {"a": 0, "b": 0}  # bytes delivered from that side
        self.closed: set[str] = set()  # sides that asked to close
        self.tap: Callable[[str, bytes], bytes] | None = None
        self.alerts: dict[str, list] = defaultdict(list)
        self.applied: dict[str, list] = defaultdict(list)
        self.committed: dict[str, list] = defaultdict(list)
        self.closes: dict[str, list] = defaultdict(list)
        self.acks: dict[str, list] = defaultdict(list)
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

    def poll(self, side: str, now_ms: Now | int) -> tuple[bytes, bool]:
        engine = self.engines[side]
        effects = engine.poll()
        self.alerts[side] += effects.alerts
        self.applied[side] += effects.applied
        self.committed[side] += effects.committed
        self.acks[side] += effects.acks
        self.closes[side] += effects.closes
        if effects.closes:
            self.closed.add(side)
        if effects.flush:
            store_of(engine).flush()
            engine.flushed(now_ms)
        other = "b" if side == "a" else "a"
        return effects.sends.get(other, b""), effects.flush

    def exchange(self, now_ms: Now | int, *, max_rounds: int = 10_000) -> int:
        """Deliver until quiet; returns the number of rounds that moved bytes."""
        for rounds in range(max_rounds):
            quiet = True
            for side, other in (("a", "b"), ("b", "a")):
                data, flushed = self.poll(side, now_ms)
                quiet = quiet and not flushed
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

    def tick(self, now_ms: Now | int) -> int:
        self.a.tick(now_ms)
        self.b.tick(now_ms)
        return self.exchange(now_ms)

    def take_alerts(self, side: str) -> list:
        out, self.alerts[side] = self.alerts[side], []
        return out


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
    session = session_of(engine, peer)
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
    What the engine handed out for this peer besides bytes is kept in ``effects``.
    """

    def __init__(self, engine: Engine, channel: SecureChannel, now_ms: int, handle: str = "hand") -> None:
        self.engine = engine
        self.channel = channel
        self.handle = handle
        self.received: list[Any] = []  # frames from the engine
        self.events: list[Any] = []
        self.effects: list[Any] = []
        engine.connected(handle, not channel.initiator, now_ms)
        # The engine's session with this peer, kept even after the engine closes and drops it.
        self.session: Session | None = session_of(engine, handle)
        self.pump(now_ms)

    def pump(self, now_ms: int) -> None:
        for _ in range(100):
            moved = False
            out = self.channel.data_to_send()
            if out:
                self.engine.received(self.handle, out, now_ms)
                moved = True
            effects = self.engine.poll()
            self.effects.append(effects)
            if effects.flush:
                store_of(self.engine).flush()
                self.engine.flushed(now_ms)
                moved = True
            back = effects.sends.get(self.handle, b"")
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

    @property
    def alerts(self) -> list:
        return [a for effects in self.effects for a in effects.alerts]

    @property
    def closes(self) -> list:
        return [c for effects in self.effects for c in effects.closes if c.peer == self.handle]

    def send(self, frame: Any, now_ms: int) -> None:
        self.channel.send_frame(frame)
        self.pump(now_ms)

    def take_alerts(self) -> list:
        """The alerts handed out since the last ``take_alerts`` (or since the start)."""
        alerts = self.alerts
        taken = getattr(self, "_alerts_taken", 0)
        self._alerts_taken = len(alerts)
        return alerts[taken:]

    def sends_to(self, peer: Any) -> bytes:
        """What the engine handed out for another peer while this one pumped it (``pump``
        polls the engine and keeps only this peer's bytes)."""
        return b"".join(effects.sends.get(peer, b"") for effects in self.effects)

    def closes_of(self, peer: Any) -> list:
        """Closes the engine handed out for another peer while this one pumped it."""
        return [c for effects in self.effects for c in effects.closes if c.peer == peer]


def digests(engines: list[Engine]) -> set[bytes]:
    return {e.status().digest for e in engines}


def local_entries(engine: Engine) -> list[bytes]:
    """Every entry of the engine's own feed, encoded."""
    store = store_of(engine)
    head = store.head(engine.number)
    return store.read(engine.number, 1, head.seq) if head else []


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
    vectors: list = []
    for _ in range(max_steps):
        now_ms += step_ms
        net.tick(now_ms)
        vectors = [e.status().vector for e in net.engines.values()]
        quiet = quiet + 1 if all(v == vectors[0] for v in vectors) else 0
        if quiet >= rounds:
            return now_ms
    raise AssertionError(f"no agreement after {max_steps} ticks: {vectors}")


# --- added for the ported engine and session tests ---------------------------------------------


def bare_session(state: Any) -> Session:
    """A Session in ``state`` with no channel under it: for probing the transition table."""
    from gossip._session import SessionConfig
    from gossip import MemoryFeedStore

    session = Session("peer", None, config=SessionConfig(), store=MemoryFeedStore(),  # type: ignore[arg-type]
                      sendable=dict, draw=lambda n: 0, now_ms=0)
    session.state = state
    return session


def live_peers(engine: Engine) -> dict[Any, int | None]:
    """peer handle -> device number of every live session (the old ``Engine.live_peers``)."""
    return {p.handle: p.device for p in engine.status().peers if p.state == "live"}


def peer_status(engine: Engine, handle: Any):
    """The engine's PeerStatus for ``handle`` (None when it has no session with it)."""
    return next((p for p in engine.status().peers if p.handle == handle), None)


def keyring_of(engine: Engine):
    """The keyring an engine runs with (white-box: what it learnt from the authority feed)."""
    return engine._keyring


def ack_holders(engine: Engine, seq: int) -> set[int]:
    """The devices the engine's ack table says hold its own entry ``seq`` (the table is kept
    in the store's meta area)."""
    import cbor2

    data = store_of(engine).get_meta("acks")
    table = cbor2.loads(data) if data is not None else {}
    return {device for device, held in table.items() if held >= seq}


def open_requests(engine: Engine, devices, member: str = "alice") -> list[tuple[tuple, int]]:
    """Open rights requests on ``member``'s balance, read from the request registers of
    ``devices``: (request key, amount) for each register holding a positive amount."""
    out = []
    for device in devices:
        key = ("rights", member, device)
        amount = engine.value(key)
        if isinstance(amount, int) and not isinstance(amount, bool) and amount > 0:
            out.append((key, amount))
    return out
