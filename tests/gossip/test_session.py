"""The session frame parser and transition table, at their limits."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gossip import (
    MAX_ENTRY_BYTES,
    Authority,
    CloseReason,
    DeviceKey,
    Engine,
    MemoryFeedStore,
    SessionProtocolError,
    SessionState,
    import_token,
)
from gossip._frames import (
    MAX_BATCH_ENTRIES,
    MAX_HAVE_ORIGINS,
    MAX_REASON_CHARS,
    Bye,
    Entries,
    FrameKind,
    Have,
    Ping,
    Pong,
    parse_frame,
)
from gossip._engine import MAX_PENDING_HANDSHAKES
from gossip._session import TRANSITIONS
from gossip.testing import seeded

from .engine_helpers import bare_session, kinds


def test_a_batch_of_exactly_the_limit_parses_and_one_more_is_refused():
    assert parse_frame(["entries", [b"x"] * MAX_BATCH_ENTRIES, False]) == Entries((b"x",) * MAX_BATCH_ENTRIES, False)
    with pytest.raises(SessionProtocolError):
        parse_frame(["entries", [b"x"] * (MAX_BATCH_ENTRIES + 1), False])


def test_an_empty_batch_is_refused():
    with pytest.raises(SessionProtocolError):
        parse_frame(["entries", [], False])


def test_an_entry_of_exactly_the_limit_parses_and_one_byte_more_is_refused():
    frame = parse_frame(["entries", [bytes(MAX_ENTRY_BYTES)], True])
    assert isinstance(frame, Entries) and frame.kind is FrameKind.ENTRIES
    assert len(frame.batch[0]) == MAX_ENTRY_BYTES and frame.ack is True
    with pytest.raises(SessionProtocolError):
        parse_frame(["entries", [bytes(MAX_ENTRY_BYTES + 1)], True])


def test_a_have_of_exactly_the_origin_limit_parses_and_one_more_is_refused():
    vector = {origin: 1 for origin in range(MAX_HAVE_ORIGINS)}
    assert parse_frame(["have", vector, True]).vector == vector
    vector[MAX_HAVE_ORIGINS] = 1
    with pytest.raises(SessionProtocolError):
        parse_frame(["have", vector, True])


@pytest.mark.parametrize("vector", [{-1: 1}, {1: -1}, {True: 1}, {1: 1.0}, {"1": 1}, {2**20 + 1: 1}])
def test_a_have_with_a_bad_pair_is_refused(vector):
    with pytest.raises(SessionProtocolError):
        parse_frame(["have", vector, False])


def test_a_bye_reason_at_the_limit_parses_and_longer_is_refused():
    # A reason that names no CloseReason (free text, or a newer version's) is kept whole as
    # the detail of a plain BYE.
    assert parse_frame(["bye", "x" * MAX_REASON_CHARS]) == Bye(CloseReason.BYE, "x" * MAX_REASON_CHARS)
    with pytest.raises(SessionProtocolError):
        parse_frame(["bye", "x" * (MAX_REASON_CHARS + 1)])


@pytest.mark.parametrize("frame", [None, [], "have", [1], ["hello"], ["ping"], ["ping", -1], ["pong", 2**32 + 1],
                                   ["have", {}, 1], ["entries", [b"x"]], ["entries", [1], False], ["bye", 3]])
def test_malformed_frames_are_refused(frame):
    with pytest.raises(SessionProtocolError):
        parse_frame(frame)


@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8) | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.integers() | st.text(max_size=4), inner, max_size=4),
    max_leaves=12,
))
def test_any_object_parses_or_is_a_session_protocol_error(obj):
    try:
        frame = parse_frame(obj)
    except SessionProtocolError:
        return
    assert isinstance(frame, (Have, Entries, Ping, Pong, Bye))
    assert isinstance(frame.kind, FrameKind)


@pytest.mark.parametrize("state", list(SessionState))
@pytest.mark.parametrize("kind", list(FrameKind))
def test_the_transition_table_is_the_only_way_between_states(state, kind):
    session = bare_session(state)
    expected = TRANSITIONS[state].get(kind)
    if expected is None:
        with pytest.raises(SessionProtocolError):
            session._fire(kind)
        assert session.state is state
    else:
        session._fire(kind)
        assert session.state is expected


def test_entries_before_the_peers_have_are_not_in_the_table():
    assert FrameKind.ENTRIES not in TRANSITIONS[SessionState.GREETING]
    assert TRANSITIONS[SessionState.CLOSED] == {}


def test_beyond_the_pending_handshake_limit_the_oldest_handshake_gives_way(engine_pair_factory):
    # Unauthenticated connections are bounded apart from MAX_PEERS, and a flood of them
    # cannot keep a newcomer (a till) out: the oldest pending handshake is dropped instead.
    engine = engine_pair_factory()
    for peer in range(MAX_PENDING_HANDSHAKES):
        engine.connected(peer, True, peer)
    assert engine.poll().closes == ()
    engine.connected("newcomer", True, MAX_PENDING_HANDSHAKES)
    effects = engine.poll()
    assert [c.peer for c in effects.closes] == [0]
    assert effects.closes[0].reason is CloseReason.TOO_MANY_PEERS
    assert 0 not in effects.sends
    handles = {p.handle for p in engine.status().peers}
    assert len(handles) == MAX_PENDING_HANDSHAKES and "newcomer" in handles and 0 not in handles
    assert kinds(effects.alerts) == ["too_many_peers"]


def test_authenticated_peers_beyond_the_limit_are_closed(monkeypatch):
    from gossip import _engine

    from .engine_helpers import Shop

    monkeypatch.setattr(_engine, "MAX_PEERS", 1)
    shop = Shop(9)
    for name in ("a", "b", "c"):
        shop.enroll(name)
    net = shop.loopback()
    net.connect("b", "a", 0)
    net.connect("c", "a", 0)
    assert {p.device for p in net.engines["a"].status().peers} == {shop.numbers["b"]}
    assert [c.reason for c in net.closes["a"]] == [CloseReason.TOO_MANY_PEERS]
    assert kinds(net.alerts["a"]) == ["too_many_peers"]


@pytest.fixture
def engine_pair_factory():
    def make():
        random_bytes = seeded(7)
        authority = Authority.create(random_bytes, 0)
        key = DeviceKey.generate(random_bytes)
        cert = authority.enroll(key.public, name="till", branch="b", roles=["cashier"], now_ms=0)
        keyring, _, _ = import_token(authority.token(cert.number), key)
        return Engine(keyring, MemoryFeedStore(), random_bytes=random_bytes, now=0)

    return make
