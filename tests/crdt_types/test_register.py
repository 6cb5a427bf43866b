"""LWWRegister: the highest (hlc, replica) wins on every replica, whatever the delivery order."""

from itertools import permutations

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdt_types import HLC, InvalidInput, LWWRegister, MalformedWire, Timestamp, canonical

from .strategies import (
    check_mutated_wire,
    BYTES_IDS,
    DEVICE_KEY,
    ID_POOLS,
    INT_IDS,
    MIXED_IDS,
    OTHER_KEY,
    STR_IDS,
    Net,
    assert_merge_laws,
    delivery_order,
    lww_wire_states,
    merged,
    plain_values,
    programs,
    roundtrip,
)

randoms = st.randoms(use_true_random=False)
stamps = st.builds(Timestamp, st.integers(0, 4), st.integers(0, 2))


@given(ids=st.sampled_from(ID_POOLS), program=programs("lww", 3))
def test_merge_is_commutative_associative_idempotent(ids, program):
    net = Net("lww", ids[:3], causal=False).run(program)
    x, y, z = net.states
    assert_merge_laws(x, y, z)
    assert_merge_laws(x, LWWRegister(), y)
    for d in net.deltas[:6]:
        assert_merge_laws(d.state, x, y)


@given(
    writes=st.lists(st.tuples(stamps, st.sampled_from(MIXED_IDS), plain_values(max_leaves=3)), max_size=8),
    rnd=randoms,
)
def test_ties_on_stamp_and_replica_still_merge_deterministically(writes, rnd):
    # A replica that lost its clock may reuse a stamp: merge must still be a join.
    deltas = [LWWRegister().set(value, hlc, replica) for hlc, replica, value in writes]
    states = []
    for _ in range(3):
        s = LWWRegister()
        for i in delivery_order(len(deltas), rnd, causal=False):
            s.merge(deltas[i])
        states.append(s)
    assert states[0] == states[1] == states[2]
    assert canonical(states[0].value) == canonical(states[1].value)
    if len(deltas) >= 3:
        assert_merge_laws(deltas[0], deltas[1], deltas[2])


@given(ids=st.sampled_from(ID_POOLS), program=programs("lww", 3))
def test_delta_merged_into_the_old_state_is_the_new_state(ids, program):
    net = Net("lww", ids[:3], causal=False, check_deltas=True).run(program)
    assert len(net.deltas) == len(net.log)


@given(program=programs("lww", 3), value=plain_values())
def test_an_older_write_returns_a_delta_but_keeps_the_value(program, value):
    net = Net("lww", MIXED_IDS[:3], causal=False).run(program)
    reg = net.states[0]
    reg.set("newest", Timestamp(10**6), MIXED_IDS[0])
    before = reg.copy()
    delta = reg.set(value, Timestamp(1), MIXED_IDS[0])
    assert reg == before and reg.value == "newest"
    assert canonical(delta.value) == canonical(value)
    assert delta.stamp == (Timestamp(1), MIXED_IDS[0])


@given(ids=st.sampled_from(ID_POOLS), program=programs("lww", 3))
def test_wire_roundtrip_is_lossless(ids, program):
    net = Net("lww", ids[:3], causal=False).run(program)
    for state in net.states + [d.state for d in net.deltas] + [LWWRegister()]:
        back = roundtrip(state)
        assert back == state and back.stamp == state.stamp
        assert canonical(back.value) == canonical(state.value)
        for writer in ids[:3] + (OTHER_KEY,):
            back = roundtrip(state, writer=writer)
            assert back == state and back.stamp == state.stamp


@given(program=programs("lww", 4))
def test_writer_id_is_not_repeated_on_the_wire(program):
    net = Net("lww", MIXED_IDS, causal=False).run(program)
    writer = MIXED_IDS.index(DEVICE_KEY)
    for d in net.deltas:
        if d.writer == writer:
            encoded = cbor2.dumps(d.state.to_wire(writer=DEVICE_KEY))
            assert DEVICE_KEY not in encoded  # (values hold at most 6 random bytes)
            assert LWWRegister.from_wire(cbor2.loads(encoded), writer=DEVICE_KEY) == d.state


def _model_winner(log):
    """Highest (hlc, replica); ids within one pool are of one type, so they compare naturally."""
    return max(log, key=lambda entry: (entry[1], entry[2]))


@given(
    ids=st.sampled_from([INT_IDS, STR_IDS, BYTES_IDS]),
    program=programs("lww", 3),
    receivers=st.integers(2, 4),
    rnd=randoms,
)
def test_any_delivery_order_with_duplicates_converges_to_the_highest_stamp(ids, program, receivers, rnd):
    net = Net("lww", ids[:3], causal=False).run(program)
    copies = []
    for _ in range(receivers):
        c = LWWRegister()
        for i in delivery_order(len(net.deltas), rnd, causal=False):
            c.merge(net.deltas[i].state)
        copies.append(c)
    net.exchange_all(rnd)
    for c in copies + net.states:
        assert c == copies[0]
    if net.log:
        _, hlc, replica, value = _model_winner(net.log)
        assert copies[0].stamp == (hlc, replica)
        assert canonical(copies[0].value) == canonical(value)
    else:
        assert copies[0].value is None and copies[0].stamp is None


@given(ids=st.sampled_from(ID_POOLS), program=programs("lww", 3), rnd=randoms)
def test_mixed_id_types_converge_too(ids, program, rnd):
    net = Net("lww", ids[:3], causal=False).run(program)
    net.exchange_all(rnd)
    assert net.states[0] == net.states[1] == net.states[2]
    if net.log:
        # The winner is one of the writes carrying the highest stamp.
        top = max(entry[1] for entry in net.log)
        assert net.states[0].stamp[0] == top
        assert net.states[0].stamp[1] in {entry[2] for entry in net.log if entry[1] == top}


def test_equal_stamps_are_broken_by_replica_id():
    a = LWWRegister().set(100, Timestamp(5), "till-a")
    b = LWWRegister().set(200, Timestamp(5), "till-b")
    assert merged(a, b).value == merged(b, a).value == 200
    assert merged(b, LWWRegister().set(50, Timestamp(5, 1), "till-a")).value == 50


def test_values_are_copied_in():
    value = {"lines": [1, 2]}
    reg = LWWRegister()
    reg.set(value, Timestamp(1), "a")
    value["lines"].append(3)
    assert reg.value == {"lines": [1, 2]}


@given(value=plain_values().filter(lambda v: isinstance(v, (list, dict))))
def test_mutating_a_value_read_back_does_not_change_the_register(value):
    reg = LWWRegister()
    reg.set(value, Timestamp(1), "a")
    wire_before = cbor2.dumps(reg.to_wire())
    read = reg.value
    if isinstance(read, list):
        read.append("tampered")
    else:
        read["tampered"] = 1
    assert cbor2.dumps(reg.to_wire()) == wire_before
    assert reg == roundtrip(reg)


too_deep = [[[[[[[[[[1]]]]]]]]]]
bad_values = st.one_of(
    st.floats(),
    st.lists(st.floats(), min_size=1, max_size=2),
    st.dictionaries(st.text(max_size=2), st.floats(), min_size=1, max_size=2),
    st.just({1: "non-string key"}),
    st.just({b"k": 1}),
    st.just(too_deep),
    st.just("x" * 4097),
    st.just(b"x" * (16 * 1024 + 1)),
    st.just(["y" * 4000] * 5),  # every string fits, the whole value does not
    st.just({1, 2}),
    st.just(object()),
    st.just(2**63),
    st.just(-(2**63)),
    st.just(1 + 2j),
)


@given(program=programs("lww", 3), value=bad_values)
def test_bad_value_is_refused_and_changes_nothing(program, value):
    net = Net("lww", MIXED_IDS[:3], causal=False).run(program)
    reg = net.states[0]
    before = reg.copy()
    with pytest.raises(InvalidInput):
        reg.set(value, Timestamp(10**9), MIXED_IDS[0])
    assert reg == before


@pytest.mark.parametrize("hlc", [5, 5.0, None, (5, 0), "5"])
def test_stamp_must_be_a_timestamp(hlc):
    reg = LWWRegister()
    with pytest.raises(InvalidInput):
        reg.set(1, hlc, "a")
    assert reg == LWWRegister()


@pytest.mark.parametrize("replica", [1.0, True, None, "", b"", "x" * 65, -1, [1]])
def test_bad_replica_id_is_refused(replica):
    reg = LWWRegister().set(1, Timestamp(1), "a")
    before = reg.copy()
    with pytest.raises(InvalidInput):
        reg.set(2, Timestamp(2), replica)
    assert reg == before


VALID = ["lww", 1, [Timestamp(5, 1).pack(), "till-a", {"price": 250}]]
MALFORMED = [
    None, [], ["lww", 1], ["lww", 1, None, None], ["pn", 1, None], ["lww", 2, None], ["lww", "1", None],
    ["lww", 1, []], ["lww", 1, [1, "a"]], ["lww", 1, [1, "a", 2, 3]], ["lww", 1, "state"],
    ["lww", 1, [-1, "a", 1]], ["lww", 1, [2**64, "a", 1]], ["lww", 1, [1.0, "a", 1]],
    ["lww", 1, [True, "a", 1]], ["lww", 1, ["1", "a", 1]],
    ["lww", 1, [1, None, 1]], ["lww", 1, [1, 1.5, 1]], ["lww", 1, [1, "", 1]], ["lww", 1, [1, [1], 1]],
    ["lww", 1, [1, "a", 2.5]], ["lww", 1, [1, "a", [1, 2.0]]], ["lww", 1, [1, "a", {"p": 1.0}]],
    ["lww", 1, [1, "a", {1: 1}]], ["lww", 1, [1, "a", "x" * 4097]], ["lww", 1, [1, "a", too_deep]],
    ["lww", 1, [1, "a", 2**63]], ["lww", 1, [1, "a", cbor2.CBORTag(1, 0)]],
]


@pytest.mark.parametrize("obj", MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_wire_is_refused_with_malformed_wire(obj):
    state = LWWRegister.from_wire(VALID)
    before = state.copy()
    with pytest.raises(MalformedWire):
        state.merge(LWWRegister.from_wire(obj))
    assert state == before


def test_implicit_writer_slot_needs_a_writer():
    obj = ["lww", 1, [Timestamp(3).pack(), None, 9]]
    with pytest.raises(MalformedWire):
        LWWRegister.from_wire(obj)
    assert LWWRegister.from_wire(obj, writer=DEVICE_KEY).stamp == (Timestamp(3), DEVICE_KEY)


@given(data=st.data(), program=programs("lww", 3))
def test_mutated_wire_decodes_or_raises_malformed_wire(data, program):
    check_mutated_wire("lww", LWWRegister.from_wire, data, program)


def test_hlc_stamps_from_one_clock_order_writes():
    clock, reg = HLC(), LWWRegister()
    for physical, value in [(10, "a"), (5, "b"), (5, "c")]:
        reg.set(value, clock.now(physical), "till")
    assert reg.value == "c"


# -- merge laws over arbitrary states from the wire ---------------------------------------------
# test_ties_on_stamp_and_replica_still_merge_deterministically checks the laws on states made
# by set(); this adds states decoded from the wire (the empty register included) and checks
# which write the join keeps, not only that every order agrees on one.


def expected_winner(wires):
    """The highest (hlc, replica, canonical value) among the written wire states, or None.
    Ids within one pool are of one type, so they compare naturally."""
    written = [w[2] for w in wires if w[2] is not None]
    if not written:
        return None
    return max(written, key=lambda body: (body[0], body[1], canonical(body[2])))


wire_triples = st.sampled_from([INT_IDS, STR_IDS, BYTES_IDS]).flatmap(
    lambda ids: st.tuples(*[lww_wire_states(ids)] * 3))


@given(wires=wire_triples)
def test_merge_laws_and_result_hold_for_arbitrary_states_from_the_wire(wires):
    states = [LWWRegister.from_wire(w) for w in wires]
    assert_merge_laws(*states)
    for k in (2, 3):
        for order in permutations(range(3), k):
            result = merged(*(states[i] for i in order))
            winner = expected_winner([wires[i] for i in order])
            if winner is None:
                assert result.stamp is None and result.value is None and result == LWWRegister()
            else:
                packed, replica, value = winner
                assert result.stamp == (Timestamp.unpack(packed), replica)
                assert canonical(result.value) == canonical(value)


@given(wires=st.sampled_from(ID_POOLS).flatmap(lambda ids: st.tuples(*[lww_wire_states(ids)] * 3)))
def test_merge_laws_hold_for_arbitrary_states_with_mixed_id_types(wires):
    states = [LWWRegister.from_wire(w) for w in wires]
    assert_merge_laws(*states)
    results = [merged(*(states[i] for i in order)) for order in permutations(range(3))]
    assert all(r == results[0] for r in results)
    stamps = [s.stamp for s in states if s.stamp is not None]
    if stamps:
        # Whatever breaks the tie, the winner carries the highest stamp of all.
        assert results[0].stamp[0] == max(stamp[0] for stamp in stamps)
    else:
        assert results[0].stamp is None
