"""PNCounter: a join-semilattice whose deltas survive loss of order and duplication, whose
wire form is lossless, and whose value after full exchange is the sum of every amount."""

from itertools import permutations

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdt_types import MAX_TOTAL, InvalidInput, MalformedWire, PNCounter, TillmeshError

from .strategies import (
    check_mutated_wire,
    DEVICE_KEY,
    ID_POOLS,
    MIXED_IDS,
    OTHER_KEY,
    Net,
    assert_merge_laws,
    delivery_order,
    merged,
    pn_wire_states,
    programs,
    roundtrip,
)

randoms = st.randoms(use_true_random=False)


@given(ids=st.sampled_from(ID_POOLS), program=programs("pn", 3))
def test_merge_is_commutative_associative_idempotent(ids, program):
    net = Net("pn", ids[:3], causal=False).run(program)
    x, y, z = net.states
    assert_merge_laws(x, y, z)
    for d in net.deltas[:6]:
        assert_merge_laws(d.state, x, y)


@given(ids=st.sampled_from(ID_POOLS), program=programs("pn", 3))
def test_delta_merged_into_the_old_state_is_the_new_state(ids, program):
    net = Net("pn", ids[:3], causal=False, check_deltas=True).run(program)
    assert len(net.deltas) == len(net.log)
    for d in net.deltas:
        # A delta holds only its writer's new totals, never an increment.
        (row,) = d.state.to_wire()[2]
        assert row[0] == ids[d.writer]
        assert row[1] >= 0 and row[2] >= 0 and row[1] + row[2] > 0


@given(ids=st.sampled_from(ID_POOLS), program=programs("pn", 3))
def test_wire_roundtrip_is_lossless(ids, program):
    net = Net("pn", ids[:3], causal=False).run(program)
    for state in net.states + [d.state for d in net.deltas] + [PNCounter()]:
        assert roundtrip(state) == state
        for writer in ids[:3] + (OTHER_KEY,):
            assert roundtrip(state, writer=writer) == state


@given(program=programs("pn", 4))
def test_writer_id_is_not_repeated_on_the_wire(program):
    net = Net("pn", MIXED_IDS, causal=False).run(program)
    writer = MIXED_IDS.index(DEVICE_KEY)
    for d in net.deltas:
        if d.writer == writer:
            encoded = cbor2.dumps(d.state.to_wire(writer=DEVICE_KEY))
            assert DEVICE_KEY not in encoded
            assert PNCounter.from_wire(cbor2.loads(encoded), writer=DEVICE_KEY) == d.state
            # Without the implicit writer the id is spelled out.
            assert DEVICE_KEY in cbor2.dumps(d.state.to_wire())
    # The writer's own full state names every other slot but never the writer.
    assert DEVICE_KEY not in cbor2.dumps(net.states[writer].to_wire(writer=DEVICE_KEY))


@given(
    ids=st.sampled_from(ID_POOLS),
    program=programs("pn", 3),
    receivers=st.integers(2, 4),
    rnd=randoms,
)
def test_any_delivery_order_with_duplicates_converges_to_the_sum(ids, program, receivers, rnd):
    net = Net("pn", ids[:3], causal=False).run(program)
    expected = sum(amount for _, amount in net.log)
    copies = []
    for _ in range(receivers):
        c = PNCounter()
        for i in delivery_order(len(net.deltas), rnd, causal=False):
            c.merge(net.deltas[i].state)
        copies.append(c)
    net.exchange_all(rnd)
    for c in copies + net.states:
        assert c == copies[0]
        assert c.value == expected


def test_an_oversell_is_recorded_not_refused():
    c = PNCounter()
    c.add("till-a", 2)
    c.add("till-b", -5)
    assert c.value == -3


bad_amounts = st.one_of(
    st.floats(allow_nan=True),
    st.booleans(),
    st.just(0),
    st.integers(min_value=MAX_TOTAL + 1),
    st.integers(max_value=-MAX_TOTAL - 1),
    st.text(max_size=3),
    st.none(),
    st.lists(st.integers(), max_size=1),
)
bad_replicas = st.one_of(
    st.floats(),
    st.booleans(),
    st.none(),
    st.integers(max_value=-1),
    st.just(""),
    st.just(b""),
    st.text(min_size=65, max_size=70),
    st.binary(min_size=65, max_size=70),
    st.tuples(st.integers()),
    st.lists(st.integers(), max_size=2),
)


@given(program=programs("pn", 3), amount=bad_amounts)
def test_bad_amount_is_refused_and_changes_nothing(program, amount):
    net = Net("pn", MIXED_IDS[:3], causal=False).run(program)
    state = net.states[0]
    before = state.copy()
    with pytest.raises(InvalidInput):
        state.add(MIXED_IDS[0], amount)
    assert state == before


@given(program=programs("pn", 3), replica=bad_replicas, amount=st.integers(-5, 5).filter(bool))
def test_bad_replica_id_is_refused_and_changes_nothing(program, replica, amount):
    net = Net("pn", MIXED_IDS[:3], causal=False).run(program)
    state = net.states[0]
    before = state.copy()
    with pytest.raises(InvalidInput):
        state.add(replica, amount)
    assert state == before


@pytest.mark.parametrize("first, second", [(MAX_TOTAL, 1), (-MAX_TOTAL, -1), (MAX_TOTAL - 5, 6)])
def test_total_overflow_is_refused_at_the_boundary(first, second):
    c = PNCounter()
    c.add("a", first)
    before = c.copy()
    with pytest.raises(InvalidInput):
        c.add("a", second)
    assert c == before
    # The largest total still fits the wire form.
    assert roundtrip(c) == c


VALID = ["pn", 1, [[3, 5, 1], ["till-b", 0, 2]]]
MALFORMED = [
    None, "pn", b"pn", {"pn": 1}, 7,
    ["pn", 1], ["pn", 1, [], 0],
    ["lww", 1, []], ["PN", 1, []], [1, 1, []], [None, 1, []],
    ["pn", 2, []], ["pn", 0, []], ["pn", "1", []], ["pn", None, []],
    ["pn", 1, None], ["pn", 1, {}], ["pn", 1, "rows"],
    ["pn", 1, [[3, 5]]], ["pn", 1, [[3, 5, 1, 0]]], ["pn", 1, [3]],
    ["pn", 1, [[3, 5.0, 1]]], ["pn", 1, [[3, 5, 1.5]]], ["pn", 1, [[3, -1, 0]]],
    ["pn", 1, [[3, True, 0]]], ["pn", 1, [[3, "5", 0]]], ["pn", 1, [[3, 2**63, 0]]],
    ["pn", 1, [[1.5, 1, 0]]], ["pn", 1, [[True, 1, 0]]], ["pn", 1, [["", 1, 0]]],
    ["pn", 1, [["x" * 65, 1, 0]]], ["pn", 1, [[b"x" * 65, 1, 0]]], ["pn", 1, [[-1, 1, 0]]],
    ["pn", 1, [[[1], 1, 0]]], ["pn", 1, [[{"a": 1}, 1, 0]]],
    ["pn", 1, [[None, 1, 0]]],  # the implicit writer, but no writer given
    ["pn", 1, [5, 1]],  # the compact writer-only form, but no writer given
    ["pn", 1, [[3, 1, 0], [3, 2, 0]]],  # one replica twice
    ["pn", 1, [[3, 0, 0]]],  # a slot no add ever writes
    ["pn", 1, [[i, 1, 0] for i in range(4097)]],  # more slots than any chain has devices
]


def test_errors_share_one_root():
    assert issubclass(MalformedWire, InvalidInput) and issubclass(InvalidInput, TillmeshError)


@pytest.mark.parametrize("obj", MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_wire_is_refused_with_malformed_wire(obj):
    assert PNCounter.from_wire(VALID) is not None
    state = PNCounter.from_wire(VALID)
    before = state.copy()
    with pytest.raises(MalformedWire):
        state.merge(PNCounter.from_wire(obj))
    assert state == before


@pytest.mark.parametrize("obj", [["pn", 1, [[None, 1, 0], [3, 2, 0]]], ["pn", 1, [5, 1]]])
def test_implicit_writer_slot_needs_a_writer(obj):
    with pytest.raises(MalformedWire):
        PNCounter.from_wire(obj)
    decoded = PNCounter.from_wire(obj, writer="till-a")
    assert roundtrip(decoded) == decoded
    assert "till-a" in [row[0] for row in decoded.to_wire()[2]]


@pytest.mark.parametrize("writer", [3, "till-b"])
def test_implicit_writer_cannot_duplicate_an_explicit_slot(writer):
    with pytest.raises(MalformedWire):
        PNCounter.from_wire(["pn", 1, [[None, 1, 0], [writer, 2, 0]]], writer=writer)


@given(data=st.data(), program=programs("pn", 3))
def test_mutated_wire_decodes_or_raises_malformed_wire(data, program):
    check_mutated_wire("pn", PNCounter.from_wire, data, program)


# -- merge laws over arbitrary states from the wire ---------------------------------------------


def pointwise_max(*wires) -> dict:
    """The expected join of pn wire states: per replica, the maximum of p and of n separately."""
    out: dict = {}
    for wire in wires:
        for r, p, n in wire[2]:
            mine = out.get(r, (0, 0))
            out[r] = (max(mine[0], p), max(mine[1], n))
    return out


def pn(rows) -> PNCounter:
    return PNCounter.from_wire(["pn", 1, [[r, p, n] for r, (p, n) in rows.items()]])


wire_triples = st.sampled_from(ID_POOLS).flatmap(lambda ids: st.tuples(*[pn_wire_states(ids)] * 3))


@given(wires=wire_triples)
def test_merge_laws_and_result_hold_for_arbitrary_states_from_the_wire(wires):
    # Honest histories only give states where one replica's (p, n) pairs are ordered in both
    # components; a peer may send any valid pairs, e.g. one larger in p and the other in n.
    # Merge must still be the pointwise maximum of each component, in every order.
    states = [PNCounter.from_wire(w) for w in wires]
    assert_merge_laws(*states)
    for k in (2, 3):
        for order in permutations(range(3), k):
            expected = pointwise_max(*(wires[i] for i in order))
            result = merged(*(states[i] for i in order))
            assert result.rows() == expected
            assert result.value == sum(p - n for p, n in expected.values())


@pytest.mark.parametrize("replica", MIXED_IDS)
def test_crossing_pairs_merge_to_the_pointwise_maximum_both_ways(replica):
    more_p, more_n = pn({replica: (5, 0)}), pn({replica: (0, 5)})
    assert merged(more_p, more_n).rows() == merged(more_n, more_p).rows() == {replica: (5, 5)}
    assert merged(more_p, more_n).value == 0
    # Crossing with both sides non-zero, next to an untouched slot.
    other = OTHER_KEY
    x, y = pn({replica: (7, 2), other: (1, 1)}), pn({replica: (3, 9)})
    assert merged(x, y).rows() == merged(y, x).rows() == {replica: (7, 9), other: (1, 1)}
