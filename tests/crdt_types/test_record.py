"""Record: one immutable record per id. Retries are no-ops; different records under one id are
all kept, flagged as a conflict, and resolved to the same winner on every replica."""

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdt_types import InvalidInput, MalformedWire, Record, canonical

from .strategies import (
    check_mutated_wire,
    MIXED_IDS,
    OTHER_KEY,
    Net,
    assert_merge_laws,
    delivery_order,
    merged,
    plain_values,
    programs,
    records,
    roundtrip,
)

randoms = st.randoms(use_true_random=False)
MAX_CANDIDATES = 16  # documented in _record.py: only the smallest encodings are kept


def model(log):
    """The capped candidate set: the distinct encodings written, smallest first."""
    return sorted({canonical(record) for _, record in log})[:MAX_CANDIDATES]


def encodings(state):
    return [canonical(c) for c in state.candidates]


@given(program=programs("rec", 3))
def test_merge_is_commutative_associative_idempotent(program):
    net = Net("rec", MIXED_IDS[:3], causal=False).run(program)
    x, y, z = net.states
    assert_merge_laws(x, y, z)
    assert_merge_laws(x, Record(), y)
    for d in net.deltas[:6]:
        assert_merge_laws(d.state, x, y)


@given(program=programs("rec", 3))
def test_delta_merged_into_the_old_state_is_the_new_state(program):
    net = Net("rec", MIXED_IDS[:3], causal=False, check_deltas=True).run(program)
    assert len(net.deltas) == len(net.log)


@given(program=programs("rec", 3))
def test_wire_roundtrip_is_lossless(program):
    net = Net("rec", MIXED_IDS[:3], causal=False).run(program)
    for state in net.states + [d.state for d in net.deltas] + [Record()]:
        for writer in (None,) + MIXED_IDS[:3] + (OTHER_KEY,):
            back = roundtrip(state, writer=writer)
            assert back == state
            assert encodings(back) == encodings(state)


@given(program=programs("rec", 3), receivers=st.integers(2, 4), rnd=randoms)
def test_any_delivery_order_with_duplicates_converges_to_the_model(program, receivers, rnd):
    net = Net("rec", MIXED_IDS[:3], causal=False).run(program)
    copies = []
    for _ in range(receivers):
        c = Record()
        for i in delivery_order(len(net.deltas), rnd, causal=False):
            c.merge(net.deltas[i].state)
        copies.append(c)
    net.exchange_all(rnd)
    expected = model(net.log)
    for c in copies + net.states:
        assert c == copies[0]
        assert encodings(c) == expected
        assert c.conflict == (len(expected) > 1)
        if expected:
            assert canonical(c.value) == expected[0]
        else:
            assert c.value is None


@given(program=programs("rec", 3), record=records)
def test_writing_the_same_record_twice_is_a_no_op(program, record):
    net = Net("rec", MIXED_IDS[:3], causal=False).run(program)
    state = net.states[0]
    first = state.write(record)
    after_first = state.copy()
    second = state.write(dict(record))  # an equal record, not the same object
    assert state == after_first
    assert first == second
    again = after_first.copy()
    again.merge(second)
    assert again == after_first


def test_retried_sale_is_not_a_conflict():
    till, back_office = Record(), Record()
    sale = {"sale": "S-1", "total": 1250, "lines": [{"sku": "tea", "qty": 2}]}
    d1 = till.write(sale)
    d2 = till.write({"lines": [{"qty": 2, "sku": "tea"}], "total": 1250, "sale": "S-1"})  # key order differs
    for d in (d1, d2, d1):
        back_office.merge(d)
    assert not back_office.conflict and back_office.value == sale
    assert back_office.candidates == [sale]


@given(a=records, b=records, rnd=randoms)
def test_two_different_records_under_one_id_are_kept_and_resolved_alike(a, b, rnd):
    if canonical(a) == canonical(b):
        b = dict(b, total=b["total"] + 10)
    till_a, till_b = Record(), Record()
    deltas = [till_a.write(a), till_b.write(b)]
    replicas = []
    for _ in range(3):
        r = Record()
        order = deltas[:]
        rnd.shuffle(order)
        for d in order:
            r.merge(d)
        replicas.append(r)
    till_a.merge(deltas[1])
    till_b.merge(deltas[0])
    replicas += [till_a, till_b]
    winner = min([a, b], key=canonical)
    for r in replicas:
        assert r.conflict
        assert r == replicas[0]
        assert r.value == winner
        assert sorted(map(canonical, r.candidates)) == sorted([canonical(a), canonical(b)])


@given(
    many=st.lists(st.integers(0, 10**6), min_size=MAX_CANDIDATES + 1, max_size=40, unique=True),
    rnd=randoms,
)
def test_conflicts_beyond_the_cap_keep_the_same_smallest_set_everywhere(many, rnd):
    deltas = [Record().write({"sale": "S-9", "total": total}) for total in many]
    expected = sorted(canonical({"sale": "S-9", "total": t}) for t in many)[:MAX_CANDIDATES]
    states = []
    for _ in range(3):
        # Merge in random groupings: partial states first, then joined in a random order.
        order = delivery_order(len(deltas), rnd, causal=False)
        cut = rnd.randint(0, len(order))
        left, right = Record(), Record()
        for i in order[:cut]:
            left.merge(deltas[i])
        for i in order[cut:]:
            right.merge(deltas[i])
        states.append(merged(left, right) if rnd.random() < 0.5 else merged(right, left))
    for s in states:
        assert s == states[0]
        assert encodings(s) == expected
        assert canonical(s.value) == expected[0]
    assert_merge_laws(states[0], deltas[0], deltas[-1])


@given(record=plain_values())
def test_record_reads_back_as_written(record):
    state = Record()
    state.write(record)
    assert canonical(state.value) == canonical(record)
    assert canonical(roundtrip(state).value) == canonical(record)


too_deep = [[[[[[[[[[1]]]]]]]]]]
bad_records = st.one_of(
    st.floats(),
    st.fixed_dictionaries({"total": st.floats()}),
    st.lists(st.floats(), min_size=1, max_size=2),
    st.just({1: "x"}),
    st.just(too_deep),
    st.just("x" * 4097),
    st.just({"note": "y" * 4000, "more": ["y" * 4000] * 4}),  # too large as a whole
    st.just({"when": object()}),
    st.just({"qty": 2**63}),
)


@given(program=programs("rec", 3), record=bad_records)
def test_bad_record_is_refused_and_changes_nothing(program, record):
    net = Net("rec", MIXED_IDS[:3], causal=False).run(program)
    state = net.states[0]
    before = state.copy()
    with pytest.raises(InvalidInput):
        state.write(record)
    assert state == before and encodings(state) == encodings(before)


VALID = ["rec", 1, [{"sale": "S-1", "total": 5}]]
MALFORMED = [
    None, ["rec", 1], ["lww", 1, []], ["rec", 2, []], ["rec", 1, None], ["rec", 1, {"a": 1}],
    ["rec", 1, [1.5]], ["rec", 1, [{"total": 1.5}]], ["rec", 1, [{1: 1}]], ["rec", 1, [too_deep]],
    ["rec", 1, ["x" * 4097]], ["rec", 1, [{"qty": 2**63}]], ["rec", 1, [cbor2.CBORTag(1, 5)]],
    ["rec", 1, [{"n": i} for i in range(MAX_CANDIDATES + 1)]],
]


@pytest.mark.parametrize("obj", MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_wire_is_refused_with_malformed_wire(obj):
    state = Record.from_wire(VALID)
    before = state.copy()
    with pytest.raises(MalformedWire):
        state.merge(Record.from_wire(obj))
    assert state == before


@given(data=st.data(), program=programs("rec", 3))
def test_mutated_wire_decodes_or_raises_malformed_wire(data, program):
    check_mutated_wire("rec", Record.from_wire, data, program)
