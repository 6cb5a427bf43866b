"""BoundedCounter (escrow): spending stays within rights, no replica ever sees a value below
zero, and after full exchange every replica holds the model's value, split into rights that
sum to it."""

import cbor2
import pytest
from itertools import permutations

from hypothesis import given, settings
from hypothesis import strategies as st

from crdt_types import (
    MAX_AMOUNT,
    MAX_TOTAL,
    BoundedCounter,
    InsufficientRights,
    InvalidInput,
    MalformedWire,
)

from .strategies import (
    check_mutated_wire,
    DEVICE_KEY,
    ID_POOLS,
    MIXED_IDS,
    OTHER_KEY,
    Net,
    assert_merge_laws,
    bc_wire_states,
    delivery_order,
    merged,
    programs,
    roundtrip,
)

randoms = st.randoms(use_true_random=False)
replica_counts = st.integers(3, 4)


def model_value(log) -> int:
    return sum(e[2] for e in log if e[1] == "inc") - sum(e[2] for e in log if e[1] == "dec")


def assert_never_negative(ids, *, rights: bool = True):
    def check(state):
        assert state.value >= 0, f"value {state.value} below zero: {state!r}"
        if rights:
            for r in ids:
                assert state.rights(r) >= 0, f"rights of {r!r} below zero: {state!r}"
    return check


def assert_converged(net, expected):
    for state in net.states:
        assert state == net.states[0]
        assert state.value == expected
        rights = [state.rights(r) for r in net.ids]
        assert all(x >= 0 for x in rights)
        assert sum(rights) == state.value
        assert sum(state.holders().values()) == state.value


@given(ids=st.sampled_from(ID_POOLS), n=replica_counts, program=programs("bc", 4, max_steps=30))
def test_merge_is_commutative_associative_idempotent(ids, n, program):
    net = Net("bc", ids[:n], causal=False).run(program)
    x, y, z = net.states[:3]
    assert_merge_laws(x, y, z)
    for d in net.deltas[:6]:
        assert_merge_laws(d.state, x, y)


@given(ids=st.sampled_from(ID_POOLS), n=replica_counts, program=programs("bc", 4, max_steps=30))
def test_delta_merged_into_the_old_state_is_the_new_state(ids, n, program):
    # Refused decrements and transfers are checked inside Net.op: InsufficientRights exactly
    # when the amount exceeds the spender's rights, and the state equal to a copy from before.
    net = Net("bc", ids[:n], causal=False, check_deltas=True).run(program)
    assert len(net.deltas) == len(net.log)


@given(ids=st.sampled_from(ID_POOLS), n=replica_counts, program=programs("bc", 4, max_steps=30))
def test_wire_roundtrip_is_lossless(ids, n, program):
    net = Net("bc", ids[:n], causal=False).run(program)
    for state in net.states + [d.state for d in net.deltas] + [BoundedCounter()]:
        assert roundtrip(state) == state
        for writer in ids[:n] + (OTHER_KEY,):
            assert roundtrip(state, writer=writer) == state


@given(program=programs("bc", 4, max_steps=30))
def test_writer_id_is_not_repeated_on_the_wire(program):
    net = Net("bc", MIXED_IDS, causal=False).run(program)
    writer = MIXED_IDS.index(DEVICE_KEY)
    for d in net.deltas:
        if d.writer == writer:
            encoded = cbor2.dumps(d.state.to_wire(writer=DEVICE_KEY))
            assert DEVICE_KEY not in encoded
            assert BoundedCounter.from_wire(cbor2.loads(encoded), writer=DEVICE_KEY) == d.state


@given(
    ids=st.sampled_from(ID_POOLS),
    n=replica_counts,
    program=programs("bc", 4, max_steps=40),
    rnd=randoms,
)
def test_causal_partial_merges_never_show_a_value_below_zero(ids, n, program, rnd):
    # DESIGN.md: the engine delivers spending deltas in causal order (deps); then no
    # replica may ever hold a negative value or negative rights, checked after every merge.
    check = assert_never_negative(ids[:n])
    net = Net("bc", ids[:n], causal=True, after_merge=check).run(program)
    for state in net.states:
        check(state)
    net.exchange_all(rnd)
    assert_converged(net, model_value(net.log))


@given(
    ids=st.sampled_from(ID_POOLS),
    n=replica_counts,
    program=programs("bc", 4, max_steps=40),
    rnd=randoms,
)
def test_any_order_partial_merges_never_show_a_value_below_zero(ids, n, program, rnd):
    # _bounded.py promises more than DESIGN.md: spending deltas carry the increments that back
    # them, so the value stays >= 0 under ANY delivery order (the rights of a single replica
    # may dip only without causal delivery). Check after every single merge.
    check = assert_never_negative(ids[:n], rights=False)
    net = Net("bc", ids[:n], causal=False, after_merge=check).run(program)
    # Bystanders that hear of the history newest first, and in a random order.
    for order in (range(len(net.deltas) - 1, -1, -1), delivery_order(len(net.deltas), rnd, causal=False)):
        bystander = BoundedCounter()
        for i in order:
            bystander.merge(net.deltas[i].state)
            check(bystander)
    net.exchange_all(rnd)
    assert_converged(net, model_value(net.log))


@given(
    ids=st.sampled_from(ID_POOLS),
    n=replica_counts,
    program=programs("bc", 4, max_steps=40),
    receivers=st.integers(2, 4),
    rnd=randoms,
)
def test_full_exchange_in_any_order_converges_to_the_model(ids, n, program, receivers, rnd):
    net = Net("bc", ids[:n], causal=False).run(program)
    copies = []
    for _ in range(receivers):
        c = BoundedCounter()
        for i in delivery_order(len(net.deltas), rnd, causal=False):
            c.merge(net.deltas[i].state)
        copies.append(c)
    net.exchange_all(rnd)
    expected = model_value(net.log)
    assert expected >= 0
    assert_converged(net, expected)
    for c in copies:
        assert c == net.states[0]


def test_spending_rights_received_by_transfer_is_safe_in_any_order():
    # The smallest case of the property above, written out.
    a, b = BoundedCounter(), BoundedCounter()
    a.increment("a", 5)
    grant = a.transfer("a", "b", 5)
    b.merge(grant)
    spend = b.decrement("b", 5)
    bystander = BoundedCounter()
    bystander.merge(spend)  # the spend arrives before the grant it relies on
    assert bystander.value >= 0
    bystander.merge(grant)
    assert bystander.value == 0 and bystander.rights("a") == bystander.rights("b") == 0


@given(program=programs("bc", 3, max_steps=30), extra=st.integers(1, 50), transfer=st.booleans())
def test_spending_beyond_rights_raises_and_changes_nothing(program, extra, transfer):
    net = Net("bc", MIXED_IDS[:3], causal=False).run(program)
    state, me = net.states[0], MIXED_IDS[0]
    before = state.copy()
    amount = max(state.rights(me), 0) + extra
    with pytest.raises(InsufficientRights) as info:
        if transfer:
            state.transfer(me, MIXED_IDS[1], amount)
        else:
            state.decrement(me, amount)
    assert info.value.needed == amount and info.value.available == state.rights(me)
    assert state == before


@given(program=programs("bc", 3, max_steps=30))
def test_spending_exactly_the_rights_is_allowed(program):
    net = Net("bc", MIXED_IDS[:3], causal=False).run(program)
    state, me = net.states[0], MIXED_IDS[0]
    rights = state.rights(me)
    if rights > 0:
        value = state.value
        state.decrement(me, rights)
        assert state.rights(me) == 0 and state.value == value - rights


bad_amounts = st.one_of(
    st.floats(), st.booleans(), st.integers(max_value=0), st.integers(min_value=MAX_AMOUNT + 1),
    st.text(max_size=2), st.none(),
)


@given(program=programs("bc", 3, max_steps=30), amount=bad_amounts,
       verb=st.sampled_from(["increment", "decrement", "transfer"]))
def test_bad_amount_is_refused_and_changes_nothing(program, amount, verb):
    net = Net("bc", MIXED_IDS[:3], causal=False).run(program)
    state, me = net.states[0], MIXED_IDS[0]
    state.increment(me, 100)
    before = state.copy()
    with pytest.raises(InvalidInput):
        if verb == "transfer":
            state.transfer(me, MIXED_IDS[1], amount)
        else:
            getattr(state, verb)(me, amount)
    assert state == before


@pytest.mark.parametrize("replica", [1.0, True, None, "", b"", "x" * 65, -1, [1], (1,)])
@pytest.mark.parametrize("verb", ["increment", "decrement", "transfer_from", "transfer_to"])
def test_bad_replica_id_is_refused_and_changes_nothing(replica, verb):
    state = BoundedCounter()
    state.increment("a", 10)
    before = state.copy()
    with pytest.raises(InvalidInput):
        if verb == "transfer_from":
            state.transfer(replica, "a", 1)
        elif verb == "transfer_to":
            state.transfer("a", replica, 1)
        else:
            getattr(state, verb)(replica, 1)
    assert state == before


def test_transfer_to_oneself_is_refused():
    state = BoundedCounter()
    state.increment("a", 10)
    before = state.copy()
    with pytest.raises(InvalidInput):
        state.transfer("a", "a", 1)
    assert state == before


def test_totals_past_63_bits_are_refused_not_stored():
    # MAX_TOTAL exists because totals go to SQLite INTEGER and CBOR; legitimate operations
    # (two replicas at the increment limit, one granting all its rights to the other) must not
    # produce a D or T total beyond it: refuse the operation, like increment does.
    state = BoundedCounter()
    steps = MAX_TOTAL // MAX_AMOUNT
    for replica in ("a", "b"):
        for _ in range(steps):
            state.increment(replica, MAX_AMOUNT)
    with pytest.raises(InvalidInput):
        state.increment("a", MAX_AMOUNT)
    for _ in range(steps):
        state.transfer("b", "a", MAX_AMOUNT)
    for _ in range(2 * steps):
        before = state.copy()
        try:
            state.decrement("a", MAX_AMOUNT)
        except InvalidInput:
            assert state == before
            break
    assert roundtrip(state) == state


@pytest.mark.parametrize("payload", [
    [[["a", 0]], [], []],
    [[], [["a", 0]], []],
    [[], [], [["a", "b", 0]]],
])
def test_a_zero_total_from_the_wire_is_malformed(payload):
    # A zero slot is never written; accepting one broke commutativity (a merge skips 0 > 0,
    # but Replica.merge copies a delta for a new key, so digests diverged for good).
    with pytest.raises(MalformedWire):
        BoundedCounter.from_wire(["bc", 1, payload])


VALID = ["bc", 1, [[["a", 10], [3, 4]], [["a", 2]], [["a", 3, 5]]]]
MALFORMED = [
    None, ["bc", 1], ["pn", 1, [[], [], []]], ["bc", 2, [[], [], []]],
    ["bc", 1, None], ["bc", 1, [[], []]], ["bc", 1, [[], [], [], []]], ["bc", 1, {}],
    ["bc", 1, [None, [], []]], ["bc", 1, [[["a"]], [], []]], ["bc", 1, [[["a", 1, 2]], [], []]],
    ["bc", 1, [[["a", 1.0]], [], []]], ["bc", 1, [[["a", -1]], [], []]], ["bc", 1, [[["a", True]], [], []]],
    ["bc", 1, [[["a", 2**63]], [], []]], ["bc", 1, [[], [["a", "2"]], []]],
    ["bc", 1, [[["a", 1], ["a", 2]], [], []]], ["bc", 1, [[], [["a", 1], ["a", 2]], []]],
    ["bc", 1, [[[1.5, 1]], [], []]], ["bc", 1, [[[None, 1]], [], []]], ["bc", 1, [[["", 1]], [], []]],
    ["bc", 1, [[], [], [["a", "a", 1]]]], ["bc", 1, [[], [], [["a", "b", 1], ["a", "b", 2]]]],
    ["bc", 1, [[], [], [["a", "b"]]]], ["bc", 1, [[], [], [["a", "b", -3]]]],
    ["bc", 1, [[], [], [["a", None, 3]]]], ["bc", 1, [[], [], [[[1], "b", 3]]]],
    ["bc", 1, [[[i, 1] for i in range(4097)], [], []]],
]


@pytest.mark.parametrize("obj", MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_wire_is_refused_with_malformed_wire(obj):
    state = BoundedCounter.from_wire(VALID)
    before = state.copy()
    with pytest.raises(MalformedWire):
        state.merge(BoundedCounter.from_wire(obj))
    assert state == before


def test_implicit_writer_cannot_transfer_to_itself():
    with pytest.raises(MalformedWire):
        BoundedCounter.from_wire(["bc", 1, [[], [], [[None, "w", 3]]]], writer="w")


@settings(max_examples=40)
@given(data=st.data(), program=programs("bc", 3, max_steps=20))
def test_mutated_wire_decodes_or_raises_malformed_wire(data, program):
    check_mutated_wire("bc", BoundedCounter.from_wire, data, program, commutes=False)


# -- a spending delta carries its own backing ---------------------------------------------------


class SpendWatch(Net):
    """A Net that, right after every accepted decrement or transfer, hands the delta ALONE to a
    fresh copy: it must show the writer's rights and the value at least as high as the writer
    saw them after spending (so never below zero), because the delta carries every P[*] and
    every T[*, writer] the writer knew. A delta carrying what the writer GAVE instead of what
    it RECEIVED shows negative rights as soon as the writer spends rights granted to it."""

    spends_checked = 0

    def op(self, r, op):
        d = super().op(r, op)
        if d is not None and self.log[-1][1] in ("dec", "xfer"):
            assert self.log[-1][0] == d.writer == r
            writer, me = self.states[r], self.ids[r]
            alone = BoundedCounter()
            alone.merge(d.state)
            assert alone.rights(me) >= 0, f"{self.log[-1]}: delta alone gives {me!r} {alone.rights(me)} rights: {d.state.rows()}"
            assert alone.value >= 0, f"{self.log[-1]}: delta alone has value {alone.value}: {d.state.rows()}"
            assert alone.rights(me) >= writer.rights(me) >= 0
            assert alone.value >= writer.value
            self.spends_checked += 1
        return d


@given(
    ids=st.sampled_from(ID_POOLS),
    n=replica_counts,
    program=programs("bc", 4, max_steps=40),
    causal=st.booleans(),
)
def test_a_spending_delta_alone_never_shows_negative_rights_or_value(ids, n, program, causal):
    net = SpendWatch("bc", ids[:n], causal=causal).run(program)
    spends = [e for e in net.log if e[1] in ("dec", "xfer")]
    assert net.spends_checked == len(spends)
    # The same check once more on the kept deltas, after the whole history ran (nothing that
    # happened later may have changed a delta already handed out).
    for d, entry in zip(net.deltas, net.log):
        if entry[1] in ("dec", "xfer"):
            alone = merged(BoundedCounter(), d.state)
            assert alone.rights(ids[d.writer]) >= 0 and alone.value >= 0


@pytest.mark.parametrize("spend", ["decrement", "transfer"])
def test_spending_received_rights_delta_alone_keeps_the_spender_at_zero(spend):
    # The smallest case of the property above, written out: b holds only rights a gave it.
    a, b = BoundedCounter(), BoundedCounter()
    a.increment("a", 5)
    b.merge(a.transfer("a", "b", 5))
    delta = b.decrement("b", 5) if spend == "decrement" else b.transfer("b", "c", 5)
    alone = merged(BoundedCounter(), delta)
    assert alone.rights("b") == 0
    assert alone.value == (0 if spend == "decrement" else 5)
    p, _, t = delta.rows()
    assert p == {"a": 5} and t.get(("a", "b")) == 5  # the grant b spends travels with the spend


# -- merge laws over arbitrary states from the wire ---------------------------------------------


def pointwise_max(*wires) -> tuple[dict, dict, dict]:
    """The expected join of bc wire states: the maximum of every P, D and T slot."""
    out: tuple[dict, dict, dict] = ({}, {}, {})
    for wire in wires:
        p_rows, d_rows, t_rows = wire[2]
        for slots, rows in ((out[0], p_rows), (out[1], d_rows)):
            for r, v in rows:
                slots[r] = max(slots.get(r, 0), v)
        for src, dst, v in t_rows:
            out[2][(src, dst)] = max(out[2].get((src, dst), 0), v)
    return out


wire_triples = st.sampled_from(ID_POOLS).flatmap(lambda ids: st.tuples(*[bc_wire_states(ids)] * 3))


@given(wires=wire_triples)
def test_merge_laws_and_result_hold_for_arbitrary_states_from_the_wire(wires):
    # Honest histories never give two states with crossing slots; a peer's state may be any
    # valid wire form, and merge must still be the pointwise maximum of every row.
    states = [BoundedCounter.from_wire(w) for w in wires]
    assert_merge_laws(*states)
    for k in (2, 3):
        for order in permutations(range(3), k):
            expected = pointwise_max(*(wires[i] for i in order))
            result = merged(*(states[i] for i in order))
            assert result.rows() == expected
            p, d, _ = expected
            assert result.value == sum(p.values()) - sum(d.values())
