"""Tests for gossip/_engine.py and gossip/_session.py: engines wired directly to each other.

In the manner of h11's ``ConnectionPair``: no sockets, no sleeps, virtual time, exact
assertions. ``Pair`` wires two engines; ``HandPeer`` is a bare SecureChannel driven by the
test, to send frames an honest engine never would; ``Loopback`` wires three or more.
"""

from __future__ import annotations

import pytest

from crdt_types import InsufficientRights, InvalidInput, RemoteProtocolError
from gossip import (
    MAX_FRAME_BYTES,
    MAX_BATCH_BYTES,
    MAX_BATCH_ENTRIES,
    TRANSITIONS,
    WINDOW_BYTES,
    AppliedChange,
    EngineConfig,
    EpochUnavailable,
    Frame,
    Loopback,
    Session,
    SessionProtocolError,
    SessionState,
    Unauthorized,
    parse_frame,
)
from gossip import _engine, _session
from gossip._entry import Entry
from node._policy import POS_POLICY

from .engine_helpers import (
    BRANCH,
    T0,
    HandPeer,
    Pair,
    RecordingChannel,
    Shop,
    digests,
    frames_of,
    local_entries,
    record_frames,
)

STOCK = ("stock", BRANCH, "coffee")
PRICE = ("price", "coffee")
ALICE = ("member", "alice", "balance")
CONFIG = EngineConfig()
STEADY = EngineConfig(have_jitter=False)  # periodic haves exactly every interval


def shop_of(*names: str, roles=("cashier",), seed: int = 1) -> Shop:
    shop = Shop(seed)
    for name in names:
        shop.enroll(name, roles)
    return shop


def pair(seed: int = 1, *, connect: bool = True, **engine_kwargs) -> tuple[Shop, Pair]:
    shop = shop_of("a", "b", seed=seed)
    p = Pair(shop.engine("a", **engine_kwargs), shop.engine("b", **engine_kwargs), T0, connect=connect)
    return shop, p


def kinds(alerts) -> list[str]:
    return [a.kind for a in alerts]


# --- handshake and live sync ------------------------------------------------------------------


def test_handshake_brings_both_sides_live_and_each_opens_with_a_full_have() -> None:
    shop, p = pair(connect=False)
    p.a.connected("b", True, T0)
    p.b.connected("a", False, T0)
    assert p.a.session("b").state is SessionState.HANDSHAKE
    sent = {"a": record_frames(p.a, "b"), "b": record_frames(p.b, "a")}
    p.exchange(T0)
    for side, other in (("a", "b"), ("b", "a")):
        engine = p.engines[side]
        session = engine.session(other)
        assert session.state is SessionState.LIVE
        assert session.number == shop.numbers[other]
        assert engine.live_peers() == {other: shop.numbers[other]}
        assert sent[side][0] == ["have", engine.store.version_vector(), True]
        assert engine.alerts() == []
    assert p.closed == set()


def test_connecting_the_same_handle_twice_is_the_callers_error() -> None:
    _, p = pair()
    with pytest.raises(InvalidInput):
        p.a.connected("b", True, T0)
    assert p.a.session("b").state is SessionState.LIVE


def test_commits_arrive_on_the_other_side_with_exact_values() -> None:
    shop, p = pair()
    a, b = p.a, p.b
    a.commit(lambda tx: (tx.add(STOCK, 40), tx.set(PRICE, 899), tx.increment(ALICE, 2_000),
                         tx.record(("sale", "S-1"), {"till": "a", "total": 899})), T0 + 1)
    b.commit(lambda tx: tx.add(STOCK, -3), T0 + 2)
    p.exchange(T0 + 2)
    for engine in (a, b):
        assert engine.replica.value(STOCK) == 37
        assert engine.replica.value(PRICE) == 899
        assert engine.replica.value(ALICE) == 2_000
        assert engine.replica.value(("sale", "S-1")) == {"till": "a", "total": 899}
    assert a.replica.digest() == b.replica.digest()
    assert a.replica.state(ALICE).rights(shop.numbers["a"]) == 2_000
    assert b.replica.state(ALICE).rights(shop.numbers["b"]) == 0
    changes = {(c.origin, c.seq): set(c.keys) for c in b.applied()}
    assert changes == {(shop.numbers["b"], 1): {STOCK},
                       (shop.numbers["a"], 1): {STOCK, PRICE, ALICE, ("sale", "S-1")}}
    assert a.version_vector() == b.version_vector()
    assert a.applied_vector() == b.applied_vector()


def test_catch_up_on_connect_then_live_push() -> None:
    shop, p = pair(connect=False)
    for i in range(5):
        p.a.commit(lambda tx: tx.add(STOCK, 1), T0 + i)
    p.b.commit(lambda tx: tx.add(STOCK, 10), T0)
    p.connect(T0 + 10)
    assert p.a.replica.value(STOCK) == p.b.replica.value(STOCK) == 15
    p.b.commit(lambda tx: tx.add(STOCK, -1), T0 + 11)
    p.exchange(T0 + 11)
    assert p.a.replica.value(STOCK) == 14
    assert p.a.replica.digest() == p.b.replica.digest()


def test_entries_are_sent_once_and_never_back_to_their_origin() -> None:
    shop, p = pair(connect=False, config=STEADY)
    a, b = p.a, p.b
    for i in range(3):
        a.commit(lambda tx: tx.add(STOCK, 1), T0 + i)
    for i in range(2):
        b.commit(lambda tx: tx.add(STOCK, 10), T0 + i)
    a.connected("b", True, T0 + 5)
    b.connected("a", False, T0 + 5)
    sent = {"a": record_frames(a, "b"), "b": record_frames(b, "a")}
    p.exchange(T0 + 5)
    sa, sb = a.session("b").stats, b.session("a").stats
    assert (sa.entries_sent, sb.entries_sent) == (3, 2)
    assert (sa.entries_received, sb.entries_received) == (2, 3)
    assert sa.redundant_received == sb.redundant_received == 0
    a.commit(lambda tx: tx.add(STOCK, 1), T0 + 6)
    p.exchange(T0 + 6)
    # Anti-entropy over a whole cycle of partial and full haves repeats nothing.
    now = T0 + 6
    for _ in range(CONFIG.full_have_every + 1):
        now += CONFIG.have_interval_ms
        p.tick(now)
    assert (sa.entries_sent, sb.entries_sent) == (4, 2)
    assert sa.redundant_received == sb.redundant_received == 0
    assert any(f[2] is True for f in frames_of(sent["a"], "have")[1:]), "a periodic full have was sent"
    for side, engine in (("a", a), ("b", b)):
        peer_number = shop.numbers["b" if side == "a" else "a"]
        for frame in frames_of(sent[side], "entries"):
            origins = {Entry.decode(data).origin for data in frame[1]}
            assert peer_number not in origins
    assert a.replica.value(STOCK) == b.replica.value(STOCK) == 24


def test_in_a_triangle_nobody_sends_an_entry_back_to_its_origin() -> None:
    shop = shop_of("a", "b", "c")
    net = Loopback()
    for name in "abc":
        net.add(name, shop.engine(name))
    for x, y in (("a", "b"), ("b", "c"), ("a", "c")):
        net.connect(x, y, T0)
    for i in range(4):
        net.engines["a"].commit(lambda tx: tx.add(STOCK, 1), T0 + i)
        net.run(T0 + i)
    now = T0 + 10
    for _ in range(3):
        now += CONFIG.have_interval_ms
        net.tick(now)
    assert net.engines["b"].session("a").stats.entries_sent == 0
    assert net.engines["c"].session("a").stats.entries_sent == 0
    assert net.engines["a"].session("b").stats.entries_sent == 4
    assert len(digests(list(net.engines.values()))) == 1


def test_a_peer_that_showed_it_holds_entries_is_not_sent_them() -> None:
    shop = shop_of("a", "b", "c")
    net = Loopback()
    for name in "abc":
        net.add(name, shop.engine(name))
    for i in range(3):
        net.engines["c"].commit(lambda tx: tx.add(STOCK, 1), T0 + i)
    net.connect("c", "a", T0 + 5)
    net.disconnect("c", "a", T0 + 5)
    net.connect("c", "b", T0 + 6)
    net.disconnect("c", "b", T0 + 6)
    net.connect("a", "b", T0 + 7)
    a, b = net.engines["a"], net.engines["b"]
    assert a.session("b").stats.entries_sent == b.session("a").stats.entries_sent == 0
    assert a.replica.value(STOCK) == b.replica.value(STOCK) == 3


def test_entries_travel_through_a_relay_that_cannot_read_them() -> None:
    shop = shop_of("a", "b")
    shop.enroll("r", ("relay",), branch="cloud")
    net = Loopback()
    for name in "abr":
        net.add(name, shop.engine(name))
    net.connect("a", "r", T0)
    net.connect("r", "b", T0)
    a, b, r = (net.engines[n] for n in "abr")
    a.commit(lambda tx: tx.set(PRICE, 450), T0 + 1)
    net.run(T0 + 1)
    assert b.replica.value(PRICE) == 450
    assert r.replica is None and not r.is_member
    assert r.version_vector() == a.version_vector() == b.version_vector()
    data = r.store.get(shop.numbers["a"], 1)
    with pytest.raises(EpochUnavailable):
        r.feeds.open(Entry.decode(data))
    with pytest.raises(InvalidInput):
        r.commit(lambda tx: tx.add(STOCK, 1), T0 + 2)
    assert r.version_vector() == a.version_vector()


def test_a_device_enrolled_later_brings_the_authority_feed_with_it() -> None:
    shop = shop_of("a")
    a = shop.engine("a")
    shop.enroll("late")
    late = shop.engine("late")  # its token carries the authority feed with its own certificate
    late.commit(lambda tx: tx.add(STOCK, 7), T0 + 1)
    p = Pair(a, late, T0 + 2)
    assert p.a.replica.value(STOCK) == 7
    assert shop.numbers["late"] in a.keyring.certificates
    assert a.version_vector() == late.version_vector()
    assert "entry_deferred" not in kinds(a.alerts())


# --- the session table and malformed frames -----------------------------------------------------

# Written out independently of TRANSITIONS: which frame each state accepts.
ALLOWED = {
    SessionState.HANDSHAKE: {Frame.ESTABLISHED, Frame.CLOSED},
    SessionState.GREETING: {Frame.HAVE, Frame.PING, Frame.PONG, Frame.BYE, Frame.CLOSED},
    SessionState.LIVE: {Frame.HAVE, Frame.ENTRIES, Frame.PING, Frame.PONG, Frame.BYE, Frame.CLOSED},
    SessionState.CLOSED: set(),
}


@pytest.mark.parametrize("state", list(SessionState))
@pytest.mark.parametrize("frame", list(Frame))
def test_session_table(state: SessionState, frame: Frame) -> None:
    session = Session("peer", channel=None, state=state)  # type: ignore[arg-type]
    if frame in ALLOWED[state]:
        session.fire(frame)
        assert session.state is TRANSITIONS[state][frame]
        closing = frame in (Frame.BYE, Frame.CLOSED)
        expected = {Frame.ESTABLISHED: SessionState.GREETING, Frame.HAVE: SessionState.LIVE}.get(frame, state)
        assert session.state is (SessionState.CLOSED if closing else expected)
    else:
        with pytest.raises(SessionProtocolError, match=f"{frame.value} is not allowed while {state.value}"):
            session.fire(frame)
        assert session.state is state


def test_session_protocol_error_blames_the_peer() -> None:
    assert issubclass(SessionProtocolError, RemoteProtocolError)


GOOD_FRAMES = [
    (["have", {}, True], Frame.HAVE, ({}, True)),
    (["have", {0: 3, 5: 0}, False], Frame.HAVE, ({0: 3, 5: 0}, False)),
    (["have", {2**20: 2**53}, True], Frame.HAVE, ({2**20: 2**53}, True)),
    (["entries", [b"x"], False], Frame.ENTRIES, ([b"x"], False)),
    (["entries", [b"e"] * MAX_BATCH_ENTRIES, True], Frame.ENTRIES, ([b"e"] * MAX_BATCH_ENTRIES, True)),
    (["ping", 0], Frame.PING, 0),
    (["pong", 2**32], Frame.PONG, 2**32),
    (["bye", ""], Frame.BYE, ""),
    (["bye", "r" * 200], Frame.BYE, "r" * 200),
]


@pytest.mark.parametrize("obj,kind,arg", GOOD_FRAMES)
def test_parse_frame_accepts_well_formed_frames(obj, kind, arg) -> None:
    assert parse_frame(obj) == (kind, arg)


BAD_FRAMES = [
    None, "have", [], [1], {"have": 1}, ["hello"], ["HAVE", {}, True],
    ["have", {}], ["have", {}, 1], ["have", [], True], ["have", {}, True, 1],
    ["have", {-1: 1}, True], ["have", {2**20 + 1: 1}, True], ["have", {1: -1}, True],
    ["have", {1: 2**53 + 1}, True], ["have", {True: 1}, True], ["have", {1: True}, True], ["have", {"1": 1}, True],
    ["entries", [], False], ["entries", [b"e"] * (MAX_BATCH_ENTRIES + 1), False], ["entries", ["text"], False],
    ["entries", [b"x"], 0], ["entries", b"x", False], ["entries", [b"x" * (60 * 1024 + 1)], False],
    ["ping"], ["ping", -1], ["ping", 2**32 + 1], ["ping", True], ["pong", "1"], ["ping", 1, 2],
    ["bye"], ["bye", 3], ["bye", "r" * 201],
]


@pytest.mark.parametrize("obj", BAD_FRAMES, ids=repr)
def test_parse_frame_refuses_malformed_frames(obj) -> None:
    with pytest.raises(SessionProtocolError):
        parse_frame(obj)


def hand_peer(shop: Shop, engine_name: str = "a", peer_name: str = "b", handle: str = "hand") -> tuple:
    engine = shop.engine(engine_name)
    hand = HandPeer(engine, shop.channel(peer_name, initiator=True), T0, handle)
    return engine, hand


def b_entry(shop: Shop) -> bytes:
    """A valid entry of device b's feed (b's own engine writes it, then it is taken away)."""
    b = shop.engine("b")
    b.commit(lambda tx: tx.add(STOCK, 5), T0)
    return local_entries(b)[0]


def assert_closed_for(engine, handle: str, hand: HandPeer, reason: str) -> None:
    session = engine.session(handle)
    assert session.state is SessionState.CLOSED
    assert reason in session.close_reason
    assert handle in engine.peers_to_close()
    alerts = engine.alerts()
    assert [a.kind for a in alerts] == ["protocol_error"]
    assert reason in alerts[0].detail
    assert hand.received[-1][0] == "bye" and reason in hand.received[-1][1]


def test_entries_before_have_closes_the_session_with_a_typed_reason() -> None:
    shop = shop_of("a", "b")
    entry = b_entry(shop)
    a, hand = hand_peer(shop)
    assert hand.established
    assert a.session("hand").state is SessionState.GREETING
    assert hand.received == [["have", a.store.version_vector(), True]]
    before = a.store.version_vector()
    hand.send(["entries", [entry], False], T0 + 1)
    assert_closed_for(a, "hand", hand, "entries is not allowed while greeting")
    assert a.store.version_vector() == before
    assert a.replica.value(STOCK) == 0
    # A closed session ignores whatever else comes.
    hand.send(["have", {}, True], T0 + 2)
    assert a.session("hand").state is SessionState.CLOSED
    assert a.alerts() == []


def test_the_same_entries_after_have_are_taken_in() -> None:
    shop = shop_of("a", "b")
    entry = b_entry(shop)
    a, hand = hand_peer(shop)
    hand.send(["ping", 7], T0 + 1)
    assert hand.received[-1] == ["pong", 7]  # liveness is answered while greeting
    hand.send(["have", {}, True], T0 + 1)
    assert a.session("hand").state is SessionState.LIVE
    hand.send(["entries", [entry], False], T0 + 2)
    assert a.replica.value(STOCK) == 5
    assert a.session("hand").state is SessionState.LIVE
    assert a.alerts() == []
    # Its own entry came back as a prompt acknowledgement, not as a re-send.
    assert hand.received[-1][0] == "have" and hand.received[-1][1].get(shop.numbers["b"]) == 1


@pytest.mark.parametrize("frame,reason", [
    (["entries", [], False], "entries: 1..256"),
    (["hello", 1], "unknown or malformed frame 'hello'"),
    ("have", "a frame is an array"),
    (["have", {"x": 1}, True], "have: expected"),
    (["ping", -5], "unknown or malformed frame 'ping'"),
])
def test_malformed_frame_in_a_live_session_closes_it(frame, reason: str) -> None:
    shop = shop_of("a", "b")
    a, hand = hand_peer(shop)
    hand.send(["have", {}, True], T0)
    hand.send(frame, T0 + 1)
    assert_closed_for(a, "hand", hand, reason)


def test_an_entry_with_a_bad_signature_closes_the_session() -> None:
    shop = shop_of("a", "b")
    entry = bytearray(b_entry(shop))
    entry[-1] ^= 0x01  # inside the signature
    a, hand = hand_peer(shop)
    hand.send(["have", {}, True], T0)
    hand.send(["entries", [bytes(entry)], False], T0 + 1)
    assert_closed_for(a, "hand", hand, "entry refused")
    assert a.store.head(shop.numbers["b"]) is None


def test_a_second_session_from_the_same_device_is_refused() -> None:
    shop, p = pair()
    hand = HandPeer(p.a, shop.channel("b", initiator=True), T0, "b-again")
    assert_closed_for(p.a, "b-again", hand, f"device {shop.numbers['b']} is already connected")
    assert p.a.session("b").state is SessionState.LIVE


def test_connecting_to_itself_is_refused() -> None:
    shop = shop_of("a", "b")
    a = shop.engine("a")
    hand = HandPeer(a, shop.channel("a", initiator=True), T0, "mirror")
    assert_closed_for(a, "mirror", hand, "connected to itself")


def test_a_bye_ends_the_session() -> None:
    shop = shop_of("a", "b")
    a, hand = hand_peer(shop)
    hand.send(["have", {}, True], T0)
    hand.send(["bye", "shutting down"], T0 + 1)
    session = a.session("hand")
    assert session.state is SessionState.CLOSED
    assert session.close_reason == "shutting down"
    assert a.peers_to_close() == ["hand"]
    assert a.alerts() == []


def test_transport_loss_is_an_input_not_an_exception() -> None:
    _, p = pair()
    p.a.received("b", None, T0 + 1)
    assert p.a.session("b").state is SessionState.CLOSED
    assert p.a.peers_to_close() == ["b"]
    assert p.a.alerts() == []  # a clean end at a frame boundary
    p.a.disconnected("b", T0 + 1)
    assert p.a.peers() == []


def test_corrupted_bytes_close_the_session_and_a_new_one_resyncs() -> None:
    shop = shop_of("a", "b")
    net = Loopback()
    a, b = net.add("a", shop.engine("a")), net.add("b", shop.engine("b"))
    net.connect("a", "b", T0)

    def flip(sender: str, receiver: str, data: bytes) -> bytes:
        return data[:-1] + bytes([data[-1] ^ 0x80])

    net.tap = flip
    a.commit(lambda tx: tx.add(STOCK, 3), T0 + 1)
    net.run(T0 + 1)
    assert not net.connected("a", "b")
    assert "protocol_error" in kinds(b.alerts())
    assert b.replica.value(STOCK) == 0
    net.tap = None
    net.connect("a", "b", T0 + 2)
    assert b.replica.value(STOCK) == 3
    assert a.replica.digest() == b.replica.digest()


# --- batching and back-pressure -----------------------------------------------------------------


def entry_batches(frames) -> list[list[bytes]]:
    return [f[1] for f in frames_of(frames, "entries")]


def catch_up(count: int, *, seed: int = 1) -> tuple[Shop, Pair, list]:
    """a writes ``count`` entries alone, then b connects; returns a's recorded frames."""
    shop, p = pair(seed, connect=False)
    for i in range(count):
        p.a.commit(lambda tx: tx.add(STOCK, 1), T0 + i)
    p.a.connected("b", True, T0 + count)
    p.b.connected("a", False, T0 + count)
    sent = record_frames(p.a, "b")
    p.exchange(T0 + count)
    return shop, p, sent


def test_more_than_a_batch_of_entries_goes_in_several_batches(monkeypatch) -> None:
    monkeypatch.setattr(_engine, "MAX_BATCH_ENTRIES", 3)
    monkeypatch.setattr(_session, "MAX_BATCH_ENTRIES", 3)
    shop, p, sent = catch_up(10)
    batches = entry_batches(sent)
    assert [len(b) for b in batches] == [3, 3, 3, 1]
    seqs = [Entry.decode(d).seq for b in batches for d in b]
    assert seqs == list(range(1, 11))  # oldest first, each once
    stats = p.a.session("b").stats
    assert stats.entries_sent == 10
    assert stats.frames_sent == len(sent)
    assert p.b.replica.value(STOCK) == 10
    assert p.b.version_vector() == p.a.version_vector()


def test_batches_at_the_real_entry_limit() -> None:
    _, p, sent = catch_up(MAX_BATCH_ENTRIES + 1)
    assert [len(b) for b in entry_batches(sent)] == [MAX_BATCH_ENTRIES, 1]
    assert p.b.replica.value(STOCK) == MAX_BATCH_ENTRIES + 1


def test_batches_respect_the_byte_limit(monkeypatch) -> None:
    shop, p, _ = catch_up(1)
    size = len(local_entries(p.a)[0])
    limit = 2 * size + size // 2  # two entries fit, three do not
    monkeypatch.setattr(_engine, "MAX_BATCH_BYTES", limit)
    shop, p, sent = catch_up(7, seed=2)
    batches = entry_batches(sent)
    assert all(sum(map(len, b)) <= limit for b in batches)
    assert [len(b) for b in batches] == [2, 2, 2, 1]
    assert p.b.replica.value(STOCK) == 7


class WindowWatch(RecordingChannel):
    """Records, with every frame sent, the session's unconfirmed bytes at that moment."""

    def __init__(self, session) -> None:
        super().__init__(session.channel)
        self.session = session
        self.in_flight: list[int] = []

    def send_frame(self, obj) -> None:
        super().send_frame(obj)
        self.in_flight.append(self.session.unconfirmed_bytes)


def test_back_pressure_bounds_unconfirmed_bytes_and_everything_arrives(monkeypatch) -> None:
    shop, p, _ = catch_up(1)
    size = len(local_entries(p.a)[0])
    window = 5 * size
    monkeypatch.setattr(_engine, "WINDOW_BYTES", window)
    monkeypatch.setattr(_engine, "MAX_BATCH_ENTRIES", 2)
    monkeypatch.setattr(_session, "MAX_BATCH_ENTRIES", 2)
    shop, p = pair(3, connect=False)
    for i in range(40):
        p.a.commit(lambda tx: tx.add(STOCK, 1), T0 + i)
    p.a.connected("b", True, T0 + 50)
    p.b.connected("a", False, T0 + 50)
    session = p.a.session("b")
    watch = WindowWatch(session)
    session.channel = watch
    rounds = p.exchange(T0 + 50)
    batch_bytes = 2 * max(len(d) for d in local_entries(p.a))
    assert max(watch.in_flight) <= window + batch_bytes
    assert max(watch.in_flight) >= window // 2, "the window was actually reached"
    assert any(f[2] for f in frames_of(watch.sent, "entries")), "an ack was asked for"
    assert rounds > 4, "the stream waited for acknowledgements"
    assert p.b.replica.value(STOCK) == 40
    assert p.b.version_vector() == p.a.version_vector()
    assert session.unconfirmed_bytes == 0
    assert session.stats.entries_sent == 40


def test_large_entries_are_cut_into_batches_at_the_real_byte_limit() -> None:
    shop, p = pair(connect=False)

    def big_sale(i: int):
        def build(tx) -> None:
            for part in range(3):  # three records of ~12 KB: an entry of ~37 KB
                tx.record(("sale", f"S-{i}-{part}"), {"lines": ["x" * 4_000] * 3})
        return build

    for i in range(16):
        p.a.commit(big_sale(i), T0 + i)
    sizes = [len(d) for d in local_entries(p.a)]
    assert 30_000 < min(sizes) and max(sizes) < 60 * 1024
    p.a.connected("b", True, T0 + 20)
    p.b.connected("a", False, T0 + 20)
    sent = record_frames(p.a, "b")
    p.exchange(T0 + 20)
    batches = entry_batches(sent)
    assert len(batches) > 2
    assert all(sum(map(len, b)) <= MAX_BATCH_BYTES for b in batches)
    assert sum(map(len, batches)) == 16
    assert p.b.version_vector() == p.a.version_vector()
    assert p.b.replica.digest() == p.a.replica.digest()


def test_limits_fit_together() -> None:
    # A full batch, with CBOR's few bytes of framing per entry, fits one channel frame;
    # the window holds at least one full batch, so a stream can always make progress.
    assert MAX_BATCH_BYTES + 9 * MAX_BATCH_ENTRIES + 16 <= MAX_FRAME_BYTES
    assert WINDOW_BYTES >= 2 * MAX_BATCH_BYTES


# --- time: pings, timeouts, periodic haves ----------------------------------------------------


def test_next_deadline_is_the_first_periodic_have() -> None:
    _, p = pair(config=STEADY)
    assert p.a.next_deadline() == T0 + STEADY.have_interval_ms
    p.a.tick(T0 + STEADY.have_interval_ms)
    assert p.a.next_deadline() == T0 + 2 * STEADY.have_interval_ms


def test_periodic_haves_are_jittered_within_half_an_interval() -> None:
    shop = shop_of(*"abcdefgh")
    net = Loopback()
    for name in "abcdefgh":
        net.add(name, shop.engine(name))
    for name in "bcdefgh":
        net.connect("a", name, T0)
    a = net.engines["a"]
    due = [a.session(name).next_have_ms - T0 for name in "bcdefgh"]
    interval = CONFIG.have_interval_ms
    assert all(interval // 2 <= d < interval // 2 + interval for d in due)
    assert len(set(due)) > 1, "peers that connected together are not all due at once"
    assert a.next_deadline() == T0 + min(due)


def test_a_quiet_peer_is_pinged_and_its_pong_clears_the_ping() -> None:
    _, p = pair(config=STEADY)
    sent_a, sent_b = record_frames(p.a, "b"), record_frames(p.b, "a")
    now = T0 + STEADY.ping_interval_ms
    p.a.tick(now)
    assert ["ping", 1] in sent_a
    assert p.a.session("b").ping_sent_ms == now
    p.exchange(now)
    assert ["pong", 1] in sent_b
    assert p.a.session("b").ping_sent_ms is None
    assert p.a.session("b").state is p.b.session("a").state is SessionState.LIVE


def test_a_silent_peer_times_out() -> None:
    _, p = pair(config=STEADY)
    # Nothing is delivered from here on: b has gone silent.
    p.a.tick(T0 + STEADY.ping_interval_ms)
    assert p.a.next_deadline() <= T0 + STEADY.ping_timeout_ms
    p.a.tick(T0 + STEADY.ping_timeout_ms - 1)
    assert p.a.session("b").state is SessionState.LIVE
    p.a.tick(T0 + STEADY.ping_timeout_ms)
    session = p.a.session("b")
    assert session.state is SessionState.CLOSED
    assert session.close_reason == "ping timeout"
    assert p.a.peers_to_close() == ["b"]
    assert "protocol_error" not in kinds(p.a.alerts())
    assert p.a.next_deadline() is None


def test_a_peer_that_keeps_answering_does_not_time_out() -> None:
    _, p = pair()
    now = T0
    for _ in range(20):
        now += CONFIG.have_interval_ms
        p.tick(now)
    assert now - T0 > 2 * CONFIG.ping_timeout_ms
    assert p.a.session("b").state is p.b.session("a").state is SessionState.LIVE
    assert p.a.alerts() == p.b.alerts() == []


def test_periodic_haves_say_only_what_is_new_with_a_full_one_every_nth() -> None:
    shop = shop_of("a", "b", "c")
    net = Loopback()
    for name in "abc":
        net.add(name, shop.engine(name, config=STEADY))
    net.connect("a", "b", T0)
    net.connect("a", "c", T0)
    a = net.engines["a"]
    sent = record_frames(a, "b")
    now = T0
    for _ in range(STEADY.full_have_every - 1):
        now += STEADY.have_interval_ms
        net.tick(now)
    assert frames_of(sent, "have") == []  # nothing new to say: no frame at all
    net.engines["c"].commit(lambda tx: tx.add(STOCK, 1), now)
    net.run(now)
    assert net.engines["b"].replica.value(STOCK) == 0  # a member does not forward on arrival
    now += STEADY.have_interval_ms
    net.tick(now)  # the 6th periodic have: full, and it names what a got from c
    haves = frames_of(sent, "have")
    # A periodic full have also carries every head's hash, so that a fork hidden behind
    # equal seqs shows (see _compare_heads).
    heads = {origin: head.hash for origin, head in a.store.heads().items()}
    assert haves == [["have", a.store.version_vector(), True, heads]]
    assert haves[0][1][shop.numbers["c"]] == 1
    assert net.engines["b"].replica.value(STOCK) == 1  # and the stream that follows it repairs b
    assert len(digests(list(net.engines.values()))) == 1


def test_a_partial_have_names_entries_learnt_from_a_third_device() -> None:
    shop = shop_of("a", "b", "c")
    net = Loopback()
    for name in "abc":
        net.add(name, shop.engine(name, config=STEADY))
    net.connect("a", "b", T0)
    net.connect("a", "c", T0)
    a = net.engines["a"]
    sent = record_frames(a, "b")
    net.engines["c"].commit(lambda tx: tx.add(STOCK, 1), T0 + 1)
    net.run(T0 + 1)
    net.tick(T0 + STEADY.have_interval_ms)
    assert frames_of(sent, "have")[0] == ["have", {shop.numbers["c"]: 1}, False]
    assert net.engines["b"].replica.value(STOCK) == 1


def test_a_relay_forwards_on_arrival_and_a_member_waits_for_anti_entropy() -> None:
    shop = shop_of("a", "b", "c")
    shop.enroll("r", ("relay",), branch="cloud")
    net = Loopback()
    for name in "abcr":
        net.add(name, shop.engine(name, config=STEADY))
    net.connect("a", "r", T0)
    net.connect("r", "b", T0)
    net.connect("b", "c", T0)
    net.engines["a"].commit(lambda tx: tx.add(STOCK, 2), T0 + 1)
    net.run(T0 + 1)
    assert net.engines["b"].replica.value(STOCK) == 2  # r pushed at once
    assert net.engines["c"].replica.value(STOCK) == 0  # b, a member, did not
    net.tick(T0 + STEADY.have_interval_ms)
    assert net.engines["c"].replica.value(STOCK) == 2
    assert len(digests([net.engines[n] for n in "abc"])) == 1
    assert net.engines["r"].session("a").stats.entries_sent == 0  # never back to the origin


def test_eager_forwarding_can_be_forced_on_a_member() -> None:
    shop = shop_of("a", "b", "c")
    net = Loopback()
    net.add("a", shop.engine("a"))
    net.add("b", shop.engine("b", config=EngineConfig(forward_eagerly=True)))
    net.add("c", shop.engine("c"))
    net.connect("a", "b", T0)
    net.connect("b", "c", T0)
    net.engines["a"].commit(lambda tx: tx.add(STOCK, 2), T0 + 1)
    net.run(T0 + 1)
    assert net.engines["c"].replica.value(STOCK) == 2


def test_delayed_pushes_are_coalesced_until_due() -> None:
    shop = shop_of("a", "b")
    delayed = EngineConfig(push_delay_ms=200, have_jitter=False)
    p = Pair(shop.engine("a", config=delayed), shop.engine("b", config=delayed), T0)
    sent = record_frames(p.a, "b")
    for i in range(3):
        p.a.commit(lambda tx: tx.add(STOCK, 1), T0 + 10 + i)
    p.exchange(T0 + 12)
    assert p.b.replica.value(STOCK) == 0
    assert p.a.next_deadline() == T0 + 210
    p.tick(T0 + 209)
    assert p.b.replica.value(STOCK) == 0
    p.tick(T0 + 210)
    assert p.b.replica.value(STOCK) == 3
    assert [len(b) for b in entry_batches(sent)] == [3]


# --- restart ------------------------------------------------------------------------------------


def test_restart_rebuilds_the_replica_from_the_store_and_resyncs() -> None:
    shop, p = pair()
    a, b = p.a, p.b
    a.commit(lambda tx: (tx.add(STOCK, 9), tx.increment(ALICE, 500)), T0 + 1)
    b.commit(lambda tx: tx.set(PRICE, 120), T0 + 2)
    p.exchange(T0 + 2)
    a.commit(lambda tx: tx.decrement(ALICE, 100), T0 + 3)
    a.commit(lambda tx: tx.set(PRICE, 130), T0 + 4)
    p.exchange(T0 + 4)
    a.disconnected("b", T0 + 5)
    b.disconnected("a", T0 + 5)
    digest, applied = a.replica.digest(), a.applied_vector()
    b.commit(lambda tx: tx.add(STOCK, -1), T0 + 6)  # while a is down
    a2 = shop.engine("a", now_ms=T0 + 7)
    assert a2.replica.digest() == digest
    assert a2.applied_vector() == applied
    assert a2.replica.value(ALICE) == 400
    # Its clock was restored by replay: a write in the same millisecond still wins.
    a2.commit(lambda tx: tx.set(PRICE, 140), T0 + 4)
    assert a2.replica.value(PRICE) == 140
    p2 = Pair(a2, b, T0 + 8)
    assert a2.replica.value(STOCK) == b.replica.value(STOCK) == 8
    assert b.replica.value(PRICE) == 140
    assert a2.replica.digest() == b.replica.digest()
    assert a2.version_vector() == b.version_vector()
    assert a2.store.head(shop.numbers["a"]).seq == 4
    assert p2.a.session("b").stats.redundant_received == 0


def test_restart_through_loopback_replace() -> None:
    shop = shop_of("a", "b")
    net = Loopback()
    net.add("a", shop.engine("a"))
    net.add("b", shop.engine("b"))
    net.connect("a", "b", T0)
    net.engines["a"].commit(lambda tx: tx.add(STOCK, 4), T0 + 1)
    net.run(T0 + 1)
    net.replace("a", shop.engine("a", now_ms=T0 + 2), T0 + 2)
    assert not net.connected("a", "b")
    net.engines["b"].commit(lambda tx: tx.add(STOCK, 1), T0 + 3)
    net.connect("b", "a", T0 + 4)
    assert net.engines["a"].replica.value(STOCK) == 5
    assert len(digests(list(net.engines.values()))) == 1


# --- acknowledgement state --------------------------------------------------------------------


def test_acknowledgement_state_local_lan_anchor() -> None:
    shop = shop_of("a", "b")
    shop.enroll("r", ("relay",), branch="cloud")
    net = Loopback()
    for name in "abr":
        net.add(name, shop.engine(name))
    a = net.engines["a"]
    a.commit(lambda tx: tx.add(STOCK, 1), T0)
    a.commit(lambda tx: tx.add(STOCK, 1), T0 + 1)
    assert a.ack(1).level == "local" and a.ack(1).lan == frozenset()
    assert a.ack_summary() == {"local": 2, "lan": 0, "anchor": 0}
    net.connect("a", "b", T0 + 2)
    net.tick(T0 + 2)
    assert a.ack(2).level == "lan"
    assert a.ack(2).lan == {shop.numbers["b"]} and a.ack(2).anchors == frozenset()
    assert a.ack_summary() == {"local": 0, "lan": 2, "anchor": 0}
    net.connect("a", "r", T0 + 3)
    net.tick(T0 + 3)
    assert a.ack(1).level == a.ack(2).level == "anchor"
    assert a.ack(2).anchors == {shop.numbers["r"]}
    assert a.ack_summary() == {"local": 0, "lan": 0, "anchor": 2}
    net.disconnect("a", "r", T0 + 4)
    a.commit(lambda tx: tx.add(STOCK, 1), T0 + 4)
    net.run(T0 + 4)  # b acknowledges a's own new entry at once
    assert a.ack(3).level == "lan" and a.ack(2).level == "anchor"
    assert a.ack_summary() == {"local": 0, "lan": 1, "anchor": 2}
    net.disconnect("a", "b", T0 + 5)
    a.commit(lambda tx: tx.add(STOCK, 1), T0 + 5)
    assert a.ack(4).level == "local"
    assert a.ack_summary() == {"local": 1, "lan": 1, "anchor": 2}


def test_acknowledgement_through_a_relay_counts_as_anchor() -> None:
    shop = shop_of("a", "b")
    shop.enroll("r", ("relay",), branch="cloud")
    net = Loopback()
    for name in "abr":
        net.add(name, shop.engine(name))
    net.connect("a", "r", T0)
    net.connect("r", "b", T0)
    a = net.engines["a"]
    a.commit(lambda tx: tx.add(STOCK, 1), T0 + 1)
    net.run(T0 + 1)
    net.tick(T0 + CONFIG.have_interval_ms)
    assert a.ack(1).level == "anchor"
    assert a.ack(1).lan == frozenset()  # b is not a peer of a: a cannot know
    assert net.engines["b"].replica.value(STOCK) == 1


# --- counters -------------------------------------------------------------------------------------


def test_byte_counters_split_payload_and_metadata() -> None:
    _, p = pair()
    for i in range(3):
        p.a.commit(lambda tx: tx.add(STOCK, 1), T0 + i)
    p.exchange(T0 + 3)
    p.tick(T0 + CONFIG.have_interval_ms)
    sa, sb = p.a.session("b").stats, p.b.session("a").stats
    assert sa.payload_bytes_sent == sum(len(d) for d in local_entries(p.a))
    assert sa.payload_bytes_sent > 0 and sa.metadata_bytes_sent > 0
    assert sa.payload_bytes_sent + sa.metadata_bytes_sent == sa.bytes_sent
    assert sa.bytes_sent == p.moved["a"]
    assert sb.payload_bytes_sent == 0
    assert sb.bytes_sent == sb.metadata_bytes_sent == p.moved["b"] > 0


# --- authorization --------------------------------------------------------------------------------


def pos_shop() -> tuple[Shop, Loopback]:
    shop = Shop(5)
    shop.enroll("till", ("cashier",))
    shop.enroll("office", ("manager",))
    shop.enroll("till2", ("cashier",))
    net = Loopback()
    for name in ("till", "office", "till2"):
        net.add(name, shop.engine(name, policy=POS_POLICY))
    net.connect("till", "office", T0)
    net.connect("office", "till2", T0)
    return shop, net


def test_a_cashiers_price_change_is_skipped_identically_everywhere() -> None:
    shop, net = pos_shop()
    till = net.engines["till"]
    till.commit(lambda tx: tx.add(STOCK, 1), T0 + 1)
    net.run(T0 + 1)
    # A till that bypasses its own engine's check (a buggy or hostile build) writes a group
    # mixing an allowed op with a forbidden one, straight into its feed.
    with till.replica.transaction(till.clock.now(T0 + 2), apply=False) as tx:
        tx.add(STOCK, 6)
        tx.set(PRICE, 1)
    till.feeds.append_local(tx.delta, random_bytes=shop.random_bytes, now_ms=T0 + 2)
    # The till restarts: its replay applies the entry under the same policy as everyone.
    net.replace("till", shop.engine("till", policy=POS_POLICY, now_ms=T0 + 3), T0 + 3)
    net.connect("till", "office", T0 + 3)
    net.tick(T0 + 3 + CONFIG.have_interval_ms * 2)
    engines = list(net.engines.values())
    for engine in engines:
        assert engine.replica.value(PRICE) is None
        assert engine.replica.value(STOCK) == 7  # the allowed op of the same group applied
        alerts = [a for a in engine.alerts() if a.kind == "unauthorized"]
        assert len(alerts) == 1, engine
        assert alerts[0].origin == shop.numbers["till"]
        assert f"{shop.numbers['till']}/2" in alerts[0].detail and repr(PRICE) in alerts[0].detail
    assert len(digests(engines)) == 1
    assert all(e.version_vector() == engines[0].version_vector() for e in engines)


def test_a_till_with_a_lax_policy_is_overruled_by_everyone_else() -> None:
    shop = Shop(6)
    shop.enroll("till", ("cashier",))
    shop.enroll("office", ("manager",))
    shop.enroll("till2", ("cashier",))
    net = Loopback()
    net.add("till", shop.engine("till"))  # ALLOW_ALL: its own check lets the price through
    net.add("office", shop.engine("office", policy=POS_POLICY))
    net.add("till2", shop.engine("till2", policy=POS_POLICY))
    for x, y in (("till", "office"), ("till", "till2"), ("office", "till2")):
        net.connect(x, y, T0)
    net.engines["till"].commit(lambda tx: (tx.set(PRICE, 1), tx.add(STOCK, 2)), T0 + 1)
    net.run(T0 + 1)
    members = [net.engines["office"], net.engines["till2"]]
    for engine in members:
        assert engine.replica.value(PRICE) is None
        assert engine.replica.value(STOCK) == 2
        assert [a.kind for a in engine.alerts()] == ["unauthorized"]
    assert len(digests(members)) == 1
    assert net.engines["till"].replica.value(PRICE) == 1  # only where the policy was lax


def test_a_managers_price_change_applies_everywhere() -> None:
    shop, net = pos_shop()
    net.engines["office"].commit(lambda tx: tx.set(PRICE, 999), T0 + 1)
    net.run(T0 + 1)
    for engine in net.engines.values():
        assert engine.replica.value(PRICE) == 999
        assert engine.alerts() == []


@pytest.mark.parametrize("build", [
    lambda tx: tx.set(PRICE, 1),
    lambda tx: tx.add(("stock", "north", "coffee"), 1),  # another branch's stock
    lambda tx: (tx.add(STOCK, 1), tx.set(("setting", "tax"), 20)),  # one bad op spoils the group
])
def test_an_unauthorized_local_commit_raises_and_changes_nothing(build) -> None:
    shop, net = pos_shop()
    till = net.engines["till"]
    till.commit(lambda tx: tx.add(STOCK, 2), T0 + 1)
    net.run(T0 + 1)
    digest, vector = till.replica.digest(), till.version_vector()
    with pytest.raises(Unauthorized):
        till.commit(build, T0 + 2)
    assert till.replica.digest() == digest
    assert till.version_vector() == vector
    assert till.data_to_send("office") == b""
    assert till.applied() == [AppliedChange(till.number, 1, (STOCK,))]
    assert net.run(T0 + 2) == 0


# --- escrow -------------------------------------------------------------------------------------


def test_rights_move_on_request_and_the_charge_then_succeeds() -> None:
    shop = shop_of("a", "b", "c")
    net = Loopback()
    for name in "abc":
        net.add(name, shop.engine(name))
    net.connect("a", "b", T0)
    net.connect("b", "c", T0)
    a, b, c = (net.engines[n] for n in "abc")
    a.commit(lambda tx: tx.increment(ALICE, 1_000), T0 + 1)
    net.run(T0 + 1)
    assert b.replica.value(ALICE) == 1_000
    vector, digest = b.version_vector(), b.replica.digest()
    with pytest.raises(InsufficientRights):
        b.commit(lambda tx: tx.decrement(ALICE, 300), T0 + 2)
    assert (b.version_vector(), b.replica.digest()) == (vector, digest)
    b.request_rights("alice", 300, T0 + 3)
    net.run(T0 + 3)
    state = b.replica.state(ALICE)
    assert state.rights(b.number) == 300
    assert state.rights(a.number) == 700
    assert b.open_requests() == []  # b cleared its request once it held enough
    b.commit(lambda tx: tx.decrement(ALICE, 300), T0 + 4)
    net.run(T0 + 4)
    for engine in (a, b, c):
        state = engine.replica.state(ALICE)
        assert engine.replica.value(ALICE) == 700
        rights = {n: state.rights(n) for n in (a.number, b.number, c.number)}
        assert rights == {a.number: 700, b.number: 0, c.number: 0}
        assert sum(rights.values()) == state.value  # moved, never created
        assert engine.open_requests() == []
    assert len(digests([a, b, c])) == 1
    # c, which held nothing, did not answer; only a transferred, once.
    a_feed = [Entry.decode(d).seq for d in local_entries(a)]
    assert a_feed == [1, 2]
    assert local_entries(c) == []


def test_a_request_nobody_can_answer_stays_open() -> None:
    _, p = pair()
    p.a.commit(lambda tx: tx.increment(ALICE, 100), T0)
    p.b.request_rights("alice", 500, T0 + 1)
    p.exchange(T0 + 1)
    state = p.b.replica.state(ALICE)
    assert state.rights(p.b.number) == 100  # a gave what it could spare
    assert state.rights(p.a.number) == 0
    assert [amount for _, amount in p.b.open_requests()] == [500]
    with pytest.raises(InsufficientRights):
        p.b.commit(lambda tx: tx.decrement(ALICE, 101), T0 + 2)
    p.b.commit(lambda tx: tx.decrement(ALICE, 100), T0 + 3)
    p.exchange(T0 + 3)
    assert p.a.replica.value(ALICE) == p.b.replica.value(ALICE) == 0


# --- found by the model-based test (tests/gossip/test_engine_stateful.py) ------------------------


def test_garbage_behind_good_frames_closes_the_session_instead_of_raising() -> None:
    """A duplicated transport message: the first copy holds a valid entries frame, the second
    fails to decrypt. The channel queues the frame, then closes; the engine must take the
    frame and the close as inputs, and never raise to the driver (STYLE 1: transport loss
    is an input)."""
    _, p = pair()
    p.a.commit(lambda tx: tx.add(STOCK, 1), T0 + 1)
    data = p.a.data_to_send("b")
    p.b.received("a", data + data, T0 + 1)  # the prompt ack must not go into the closed channel
    session = p.b.session("a")
    assert session.state is SessionState.CLOSED
    assert p.b.peers_to_close() == ["a"]
    assert "protocol_error" in kinds(p.b.alerts())
    assert p.b.applied_vector() == p.b.version_vector()
    # A commit right after must not fail either (it used to push into the dead channel).
    p.b.commit(lambda tx: tx.add(STOCK, 1), T0 + 2)


def test_garbage_behind_the_last_handshake_message_closes_instead_of_raising() -> None:
    _, p = pair(connect=False)
    p.a.connected("b", True, T0)
    p.b.connected("a", False, T0)
    p.b.received("a", p.a.data_to_send("b"), T0)
    p.a.received("b", p.b.data_to_send("a"), T0)
    last = p.a.data_to_send("b")  # Noise message 3 and a's certificate frame
    p.b.received("a", last + last, T0)  # nor b's opening have
    assert p.b.session("a").state is SessionState.CLOSED
    assert p.b.peers_to_close() == ["a"]
    assert "protocol_error" in kinds(p.b.alerts())


def partly_answered_request() -> tuple[Shop, Pair]:
    """b asked for 50 rights on alice; a had 10 and gave them; then a was topped up by 100."""
    shop, p = pair()
    p.a.commit(lambda tx: tx.increment(ALICE, 10), T0 + 1)
    p.exchange(T0 + 1)
    p.b.request_rights("alice", 50, T0 + 2)
    p.exchange(T0 + 2)
    assert p.b.replica.state(ALICE).rights(p.b.number) == 10
    p.a.commit(lambda tx: tx.increment(ALICE, 100), T0 + 3)
    p.exchange(T0 + 3)
    return shop, p


def test_restart_rebuilds_identically_and_writes_nothing() -> None:
    """Constructing an Engine over an existing store is a replay: it must not append
    entries (an in-memory memo of answered requests once made a restarted engine answer
    b's request again, from its constructor)."""
    shop, p = partly_answered_request()
    p.a.disconnected("b", T0 + 4)
    vector, digest = p.a.version_vector(), p.a.replica.digest()
    restarted = shop.engine("a", now_ms=T0 + 4)
    assert restarted.version_vector() == vector  # got a new own entry: a transfer of 40 to b
    assert restarted.replica.digest() == digest


def test_an_open_request_is_answered_when_rights_arrive_later() -> None:
    """"Any member that sees an open request and holds rights on that balance answers with
    a transfer of what it can spare" (_engine.py): a, topped up after its first answer,
    gives b the 40 it still lacks."""
    shop, p = partly_answered_request()
    now = T0 + 3
    for _ in range(3):
        now += CONFIG.have_interval_ms
        p.tick(now)
    assert p.b.replica.state(ALICE).rights(p.b.number) == 50


def test_restarted_engine_answers_requests_seen_at_replay_on_its_first_tick() -> None:
    shop, p = pair()
    p.a.commit(lambda tx: tx.increment(ALICE, 100), T0 + 1)
    p.exchange(T0 + 1)
    p.a.disconnected("b", T0 + 2)
    p.b.disconnected("a", T0 + 2)
    p.b.request_rights("alice", 30, T0 + 2)
    # a learns of the request only through its store (as a restart after a crash would).
    p.a.store.append(p.b.number, 1, p.b.store.head(p.b.number).hash, p.b.store.get(p.b.number, 1))
    restarted = shop.engine("a", now_ms=T0 + 3)
    assert restarted.version_vector() == p.a.store.version_vector()  # nothing written yet
    restarted.tick(T0 + 4)
    assert restarted.replica.state(ALICE).rights(p.b.number) == 30
    p2 = Pair(restarted, p.b, T0 + 5)
    assert p2.b.replica.state(ALICE).rights(p2.b.number) == 30
    assert p2.b.open_requests() == []


def test_members_short_on_the_same_balance_do_not_pass_rights_back_and_forth() -> None:
    """a holds 1 and wants 2, b holds 0 and wants 1: neither may pay the other with rights
    it is itself short of, or the two answer each other forever (the model-based test
    found that livelock: Loopback never went quiet)."""
    _, p = pair(connect=False)
    p.a.commit(lambda tx: tx.increment(ALICE, 1), T0)
    p.a.request_rights("alice", 2, T0 + 1)
    p.b.request_rights("alice", 1, T0 + 1)
    p.connect(T0 + 2)
    p.tick(T0 + CONFIG.have_interval_ms * 2)
    for engine in (p.a, p.b):
        state = engine.replica.state(ALICE)
        assert (state.rights(p.a.number), state.rights(p.b.number)) == (1, 0)
        assert len(engine.open_requests()) == 2
    assert p.a.store.head(p.a.number).seq == 2 and p.b.store.head(p.b.number).seq == 1
