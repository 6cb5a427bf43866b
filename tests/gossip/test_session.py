"""The session frame parser and transition table, at their limits."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gossip import (
    MAX_BATCH_ENTRIES,
    MAX_ENTRY_BYTES,
    MAX_HAVE_ORIGINS,
    MAX_PEERS,
    TRANSITIONS,
    Frame,
    SessionProtocolError,
    SessionState,
    parse_frame,
)
from gossip._session import MAX_REASON_CHARS, Session


def test_a_batch_of_exactly_the_limit_parses_and_one_more_is_refused():
    assert parse_frame(["entries", [b"x"] * MAX_BATCH_ENTRIES, False]) == (Frame.ENTRIES, ([b"x"] * MAX_BATCH_ENTRIES, False))
    with pytest.raises(SessionProtocolError):
        parse_frame(["entries", [b"x"] * (MAX_BATCH_ENTRIES + 1), False])


def test_an_empty_batch_is_refused():
    with pytest.raises(SessionProtocolError):
        parse_frame(["entries", [], False])


def test_an_entry_of_exactly_the_limit_parses_and_one_byte_more_is_refused():
    kind, (batch, ack) = parse_frame(["entries", [bytes(MAX_ENTRY_BYTES)], True])
    assert kind is Frame.ENTRIES and len(batch[0]) == MAX_ENTRY_BYTES and ack is True
    with pytest.raises(SessionProtocolError):
        parse_frame(["entries", [bytes(MAX_ENTRY_BYTES + 1)], True])


def test_a_have_of_exactly_the_origin_limit_parses_and_one_more_is_refused():
    vector = {origin: 1 for origin in range(MAX_HAVE_ORIGINS)}
    assert parse_frame(["have", vector, True])[1][0] == vector
    vector[MAX_HAVE_ORIGINS] = 1
    with pytest.raises(SessionProtocolError):
        parse_frame(["have", vector, True])


@pytest.mark.parametrize("vector", [{-1: 1}, {1: -1}, {True: 1}, {1: 1.0}, {"1": 1}, {2**20 + 1: 1}])
def test_a_have_with_a_bad_pair_is_refused(vector):
    with pytest.raises(SessionProtocolError):
        parse_frame(["have", vector, False])


def test_a_bye_reason_at_the_limit_parses_and_longer_is_refused():
    assert parse_frame(["bye", "x" * MAX_REASON_CHARS]) == (Frame.BYE, "x" * MAX_REASON_CHARS)
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
        kind, _ = parse_frame(obj)
    except SessionProtocolError:
        return
    assert isinstance(kind, Frame)


@pytest.mark.parametrize("state", list(SessionState))
@pytest.mark.parametrize("frame", list(Frame))
def test_the_transition_table_is_the_only_way_between_states(state, frame):
    session = Session(peer="p", channel=None, state=state)
    expected = TRANSITIONS[state].get(frame)
    if expected is None:
        with pytest.raises(SessionProtocolError):
            session.fire(frame)
        assert session.state is state
    else:
        session.fire(frame)
        assert session.state is expected


def test_entries_before_the_peers_have_are_not_in_the_table():
    assert Frame.ENTRIES not in TRANSITIONS[SessionState.GREETING]
    assert TRANSITIONS[SessionState.CLOSED] == {}


def test_peers_beyond_the_limit_are_refused(engine_pair_factory):
    engine = engine_pair_factory()
    for peer in range(MAX_PEERS):
        engine.connected(peer, True, 0)
    assert engine.peers_to_close() == []
    engine.connected("one too many", True, 0)
    assert engine.peers_to_close() == ["one too many"]
    assert len(engine.peers()) == MAX_PEERS
    assert [a.kind for a in engine.alerts()] == ["too_many_peers"]


@pytest.fixture
def engine_pair_factory():
    from gossip import Authority, DeviceKey, Engine, MemoryFeedStore, import_token, seeded

    def make():
        random_bytes = seeded(7)
        authority = Authority.create(random_bytes, 0)
        key = DeviceKey.generate(random_bytes)
        cert = authority.enroll(key.public, name="till", branch="b", roles=["cashier"], now_ms=0)
        keyring, _, _ = import_token(authority.token(cert.number), key)
        return Engine(keyring, MemoryFeedStore(), random_bytes=random_bytes, now_ms=0)

    return make

