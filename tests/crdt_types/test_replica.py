"""Replica: transactions are all-or-nothing, delta groups apply all-or-nothing, digests are
equal iff states are; and a model-based test of three replicas that deliver each other's
groups in any order, any number of times, optionally through the wire."""

import random
from collections import Counter, defaultdict

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from crdt_types import (
    CRDT_CODES,
    CRDT_TYPES,
    DEFAULT_SCHEMA,
    GROUP_VERSION,
    HLC,
    BoundedCounter,
    DeltaGroup,
    Document,
    InsufficientRights,
    InvalidInput,
    LWWRegister,
    MalformedWire,
    PNCounter,
    Record,
    Replica,
    Timestamp,
    canonical,
)

from .strategies import DEVICE_KEY, decode_or_malformed, mutated

MEMBERS = ("m1", "m2")
BRANCHES = ("b1", "b2")
SKUS = ("tea", "cake")
SALE_IDS = ("S1", "S2", "S3")
IDS = (3, "till-b", DEVICE_KEY)
MAX_CANDIDATES = 16


def balance(member):
    return ("member", member, "balance")


def digests(replicas):
    return [r.digest() for r in replicas]


# --- transactions as data, for the non-stateful tests --------------------------------------

tx_ops = st.one_of(
    st.tuples(st.just("add"), st.sampled_from(BRANCHES), st.sampled_from(SKUS), st.integers(-9, 9).filter(bool)),
    st.tuples(st.just("set"), st.sampled_from(SKUS), st.integers(0, 10**5)),
    st.tuples(st.just("inc"), st.sampled_from(MEMBERS), st.integers(1, 50)),
    st.tuples(st.just("dec"), st.sampled_from(MEMBERS), st.integers(1, 100)),  # capped to the rights
    st.tuples(st.just("sale"), st.sampled_from(SALE_IDS), st.integers(0, 3)),
    st.tuples(st.just("line"), st.sampled_from(["o1", "o2"]), st.integers(1, 4)),
    st.tuples(st.just("field"), st.sampled_from(["o1", "o2"]), st.integers(0, 9)),
)
transactions = st.lists(st.lists(tx_ops, min_size=1, max_size=4), max_size=6)


def run_op(tx, op):
    kind = op[0]
    if kind == "add":
        tx.add(("stock", op[1], op[2]), op[3])
    elif kind == "set":
        tx.set(("price", op[1]), op[2])
    elif kind == "inc":
        tx.increment(balance(op[1]), op[2])
    elif kind == "dec":
        amount = min(op[2], tx.rights(balance(op[1])))
        if amount > 0:
            tx.decrement(balance(op[1]), amount)
    elif kind == "sale":
        tx.record(("sale", op[1]), {"sale": op[1], "total": op[2]})
    elif kind == "line":
        tx.add_line(("order", op[1]), {"qty": op[2]})
    else:
        tx.set_field(("order", op[1]), "table", op[2])


def run_transactions(replica, clock, txs, start=0):
    groups = []
    for i, ops in enumerate(txs):
        with replica.transaction(clock.now(start + i)) as tx:
            for op in ops:
                run_op(tx, op)
        groups.append(tx.delta)
    return groups


def states_equal(a, b):
    """Key by key with each type's own ==; a missing key is the type's empty state."""
    return all(a.state(k) == b.state(k) for k in set(a.keys()) | set(b.keys()))


# --- the model-based stateful test --------------------------------------------------------

class ReplicaNetwork(RuleBasedStateMachine):
    """Three replicas beside a sequential model; groups delivered in any order, any number of times.

    Physical time advances with every transaction (ten ms apart, one residue per replica), so
    stamps are unique and the model of a price is simply the last price written.
    """

    TRANSFERS = False
    CAUSAL_SPENDS = False  # deliver spending groups only after their causal past

    def __init__(self):
        super().__init__()
        self.replicas = [Replica(i) for i in IDS]
        self.clocks = [HLC() for _ in IDS]
        self.tick = 0
        self.groups = []  # (group, deps: groups its writer held when committing, spends rights)
        self.seen = [set() for _ in IDS]
        self.stock = Counter()
        self.prices = {}
        self.balances = Counter()
        self.sales = defaultdict(set)
        self.order_lines = defaultdict(set)
        self.order_status = defaultdict(set)

    # -- helpers --

    def commit(self, r, body, *, spends=False):
        self.tick += 1
        replica = self.replicas[r]
        hlc = self.clocks[r].now(self.tick * 10 + r)
        before = replica.digest()
        tx = None
        try:
            with replica.transaction(hlc) as tx:
                body(tx)
        except InsufficientRights:
            assert tx.delta is None
            assert replica.digest() == before
            return None
        group = tx.delta
        assert group.writer == IDS[r] and group.hlc == hlc
        self.groups.append((group, frozenset(self.seen[r]), spends))
        self.seen[r].add(len(self.groups) - 1)
        return group

    def rights(self, r, member):
        return self.replicas[r].state(balance(member)).rights(IDS[r])

    def deliverable(self, r):
        """Any group, except that spending groups may have to wait for their causal past."""
        return [i for i, (_, deps, spends) in enumerate(self.groups)
                if not (self.CAUSAL_SPENDS and spends) or deps <= self.seen[r]]

    def receive(self, r, i, through_wire):
        group = self.groups[i][0]
        if through_wire:
            data = cbor2.dumps(group.to_wire())
            if isinstance(group.writer, bytes):
                assert group.writer not in data  # the writer is implicit in its own feed
            decoded = DeltaGroup.from_wire(cbor2.loads(data), group.writer)
            assert decoded.hlc == group.hlc and decoded.writer == group.writer
            assert [k for k, _ in decoded.ops] == [k for k, _ in group.ops]
            assert all(a == b for (_, a), (_, b) in zip(decoded.ops, group.ops))
            group = decoded
        result = self.replicas[r].merge(group)
        assert result.keys == tuple(k for k, _ in group.ops)
        self.seen[r].add(i)
        self.check_balances(self.replicas[r])  # after every single merge, not only between rules

    def push(self, source, r, *, backwards=False, through_wire=False):
        missing = sorted(self.seen[source] - self.seen[r], reverse=backwards and not self.CAUSAL_SPENDS)
        for i in missing:  # oldest first keeps every group after its causal past
            self.receive(r, i, through_wire)

    def deliver_everything(self, rnd):
        for r in range(len(IDS)):
            while len(self.seen[r]) < len(self.groups):
                missing = [i for i in self.deliverable(r) if i not in self.seen[r]]
                self.receive(r, rnd.choice(missing), rnd.random() < 0.3)
                if rnd.random() < 0.2:  # and a duplicate now and then
                    self.receive(r, rnd.choice(sorted(self.seen[r])), False)

    def check_model(self):
        assert len(set(digests(self.replicas))) == 1
        for replica in self.replicas:
            for key, total in self.stock.items():
                assert replica.value(key) == total
            for key, price in self.prices.items():
                assert replica.value(key) == price
            for member, value in self.balances.items():
                state = replica.state(balance(member))
                assert state.value == value
                rights = [state.rights(i) for i in IDS]
                assert all(x >= 0 for x in rights) and sum(rights) == value
            for key, encodings in self.sales.items():
                state = replica.state(key)
                assert [canonical(c) for c in state.candidates] == sorted(encodings)[:MAX_CANDIDATES]
                assert state.conflict == (len(encodings) > 1)
                assert canonical(replica.value(key)) == min(encodings)
            for key, lines in self.order_lines.items():
                assert sorted(line["id"] for line in replica.value(key)["lines"]) == sorted(lines)
            for key, statuses in self.order_status.items():
                assert replica.value(key)["fields"]["status"] in statuses

    # -- rules: local transactions --

    @rule(r=st.integers(0, 2), branch=st.sampled_from(BRANCHES), sku=st.sampled_from(SKUS),
          amount=st.integers(-20, 20).filter(bool))
    def add_stock(self, r, branch, sku, amount):
        key = ("stock", branch, sku)
        assert self.commit(r, lambda tx: tx.add(key, amount)) is not None
        self.stock[key] += amount

    @rule(r=st.integers(0, 2), sku=st.sampled_from(SKUS), branch=st.none() | st.sampled_from(BRANCHES),
          price=st.integers(0, 10**6))
    def set_price(self, r, sku, branch, price):
        key = ("price", sku) if branch is None else ("price", branch, sku)
        assert self.commit(r, lambda tx: tx.set(key, price)) is not None
        self.prices[key] = price

    @rule(r=st.integers(0, 2), member=st.sampled_from(MEMBERS), amount=st.integers(1, 50))
    def top_up(self, r, member, amount):
        assert self.commit(r, lambda tx: tx.increment(balance(member), amount)) is not None
        self.balances[member] += amount

    @rule(r=st.integers(0, 2), member=st.sampled_from(MEMBERS), amount=st.integers(1, 60),
          share=st.none() | st.integers(1, 100))
    def charge(self, r, member, amount, share):
        """A fixed amount (often beyond the rights: refused), or a share of the rights held."""
        rights = self.rights(r, member)
        if share is not None:
            amount = max(1, rights * share // 100)
        group = self.commit(r, lambda tx: tx.decrement(balance(member), amount), spends=True)
        assert (group is not None) == (amount <= rights)
        if group is not None:
            self.balances[member] -= amount

    @rule(r=st.integers(0, 2), sale_id=st.sampled_from(SALE_IDS), total=st.integers(0, 3),
          branch=st.sampled_from(BRANCHES), sku=st.sampled_from(SKUS), qty=st.integers(1, 3),
          member=st.none() | st.sampled_from(MEMBERS), pay=st.integers(1, 40))
    def sale(self, r, sale_id, total, branch, sku, qty, member, pay):
        """Record + stock decrement + member charge in one transaction (DESIGN: the POS sale)."""
        record = {"sale": sale_id, "total": total, "sku": sku, "qty": qty}
        allowed = member is None or pay <= self.rights(r, member)

        def body(tx):
            tx.record(("sale", sale_id), record)
            tx.add(("stock", branch, sku), -qty)
            if member is not None:
                tx.decrement(balance(member), pay)

        group = self.commit(r, body, spends=member is not None)
        assert (group is not None) == allowed
        if group is not None:
            self.sales[("sale", sale_id)].add(canonical(record))
            self.stock[("stock", branch, sku)] -= qty
            if member is not None:
                self.balances[member] -= pay

    @rule(r=st.integers(0, 2), order=st.sampled_from(["o1", "o2"]), qty=st.integers(1, 5),
          status=st.none() | st.sampled_from(["open", "paid"]))
    def edit_order(self, r, order, qty, status):
        key, line = ("order", order), {"id": self.tick, "qty": qty}

        def body(tx):
            tx.add_line(key, line)
            if status is not None:
                tx.set_field(key, "status", status)

        assert self.commit(r, body) is not None
        self.order_lines[key].add(line["id"])
        if status is not None:
            self.order_status[key].add(status)

    # -- rules: delivery --

    @precondition(lambda self: self.groups)
    @rule(pick=st.integers(0, 10**6), r=st.integers(0, 2), through_wire=st.booleans(), times=st.integers(1, 2))
    def deliver(self, pick, r, through_wire, times):
        candidates = self.deliverable(r)
        i = candidates[pick % len(candidates)]
        for _ in range(times):
            self.receive(r, i, through_wire)

    @precondition(lambda self: self.groups)
    @rule(source=st.integers(0, 2), r=st.integers(0, 2), backwards=st.booleans(), through_wire=st.booleans())
    def sync(self, source, r, backwards, through_wire):
        """A partial anti-entropy round: ``r`` gets what ``source`` holds, newest first if allowed."""
        self.push(source, r, backwards=backwards, through_wire=through_wire)

    @precondition(lambda self: self.groups)
    @rule(rnd=st.randoms(use_true_random=False))
    def deliver_everything_everywhere(self, rnd):
        self.deliver_everything(rnd)
        self.check_model()

    @precondition(lambda self: self.groups)
    @rule(pick=st.integers(0, 10**6), bad=st.integers(0, 7), position=st.integers(0, 8))
    def deliver_a_group_with_one_invalid_op(self, pick, bad, position):
        group = self.groups[pick % len(self.groups)][0]
        ops = list(group.ops)
        ops.insert(position % (len(ops) + 1), invalid_ops()[bad])
        before = digests(self.replicas)
        for replica in self.replicas:
            with pytest.raises(InvalidInput):
                replica.merge(DeltaGroup(group.hlc, group.writer, tuple(ops)))
        assert digests(self.replicas) == before

    @precondition(lambda self: self.groups)
    @rule(pick=st.integers(0, 10**6), how=st.integers(0, 9))
    def receive_a_malformed_wire_group(self, pick, how):
        group = self.groups[pick % len(self.groups)][0]
        bad = corrupt_wire(group.to_wire(), how)
        before = digests(self.replicas)
        with pytest.raises(MalformedWire):
            DeltaGroup.from_wire(cbor2.loads(cbor2.dumps(bad)), group.writer)
        assert digests(self.replicas) == before

    # -- invariants --

    def check_balances(self, replica):
        for member in MEMBERS:
            state = replica.state(balance(member))
            assert state.value >= 0, (replica, member, state)
            if self.CAUSAL_SPENDS or not self.TRANSFERS:
                # Each replica's own rights too (only rights moved by transfers can be seen
                # spent before they are seen granted, without causal delivery).
                for i in IDS:
                    assert state.rights(i) >= 0, (replica, member, i, state)

    @invariant()
    def keys_are_listed_once_in_canonical_order(self):
        # The order is kept up to date as keys appear, not sorted again for each digest.
        for r, replica in enumerate(self.replicas):
            touched = {key for i in self.seen[r] for key, _ in self.groups[i][0].ops}
            listed = list(replica.keys())
            assert listed == sorted(touched, key=canonical)
            for kind in {key[0] for key in touched}:
                assert list(replica.keys(kind)) == [key for key in listed if key[0] == kind]

    @invariant()
    def no_balance_below_zero(self):
        for replica in self.replicas:
            self.check_balances(replica)

    def teardown(self):
        # Whatever happened, once every group reached every replica all must agree with the model.
        if self.groups:
            self.deliver_everything(random.Random(len(self.groups)))
        self.check_model()


class ReplicaNetworkWithTransfers(ReplicaNetwork):
    """Also moves member-balance rights between replicas. Spending groups then travel in
    causal order, as DESIGN.md has the engine guarantee with ``deps``; everything else in any order."""

    TRANSFERS = True
    CAUSAL_SPENDS = True

    @rule(r=st.integers(0, 2), member=st.sampled_from(MEMBERS), to=st.integers(1, 2), amount=st.integers(1, 40),
          share=st.none() | st.integers(1, 100), push=st.booleans())
    def transfer(self, r, member, to, amount, share, push):
        """Rights move on request: with ``push`` the grantee gets the grant (and its past) at once."""
        rights = self.rights(r, member)
        if share is not None:
            amount = max(1, rights * share // 100)
        dst = (r + to) % 3
        group = self.commit(r, lambda tx: tx.transfer(balance(member), IDS[dst], amount), spends=True)
        assert (group is not None) == (amount <= rights)
        if group is not None and push:
            self.push(r, dst)

    @rule(r=st.integers(0, 2), member=st.sampled_from(MEMBERS), to=st.integers(1, 2), amount=st.integers(1, 50),
          share=st.integers(1, 100), push=st.booleans())
    def top_up_and_hand_over(self, r, member, to, amount, share, push):
        """The back office tops a card up and hands part of the rights to a till."""
        self.top_up(r, member, amount)
        self.transfer(r, member, to, amount, share, push)

    @rule(r=st.integers(0, 2), member=st.sampled_from(MEMBERS), to=st.integers(1, 2), amount=st.integers(1, 50),
          share=st.integers(1, 100), spend=st.integers(1, 100))
    def hand_over_and_spend(self, r, member, to, amount, share, spend):
        """A card is topped up, a till asks for rights, gets them, and spends a share of what it holds."""
        self.top_up_and_hand_over(r, member, to, amount, share, True)
        self.charge((r + to) % 3, member, 1, spend)


class ReplicaNetworkWithTransfersInAnyOrder(ReplicaNetworkWithTransfers):
    """_bounded.py promises more than DESIGN.md asks: balances stay >= 0 in ANY delivery order."""

    CAUSAL_SPENDS = False


stateful = settings(stateful_step_count=30)
TestReplicaNetwork = ReplicaNetwork.TestCase
TestReplicaNetwork.settings = stateful
TestReplicaNetworkWithTransfers = ReplicaNetworkWithTransfers.TestCase
TestReplicaNetworkWithTransfers.settings = stateful
TestReplicaNetworkWithTransfersInAnyOrder = ReplicaNetworkWithTransfersInAnyOrder.TestCase
TestReplicaNetworkWithTransfersInAnyOrder.settings = stateful


def invalid_ops():
    """Ops a hand-built group might carry that no replica may accept."""
    pn = PNCounter().add(3, 1)
    reg = LWWRegister().set(1, Timestamp(1), 3)
    return [
        (("stock", "b1", "tea"), reg),  # the key holds a PNCounter
        (("price", "tea"), pn),  # the key holds a register
        (balance("m1"), reg),  # pinned by its last element to a BoundedCounter
        (("member", "m1", "email"), BoundedCounter().increment(3, 5)),  # a profile field is a register
        (("bogus", "x"), pn),  # unknown kind
        (("stock", "b1"), pn),  # wrong arity
        (["stock", "b1", "tea"], pn),  # not a tuple
        (("sale", "S1"), {"sale": "S1"}),  # not a CRDT at all
    ]


def corrupt_wire(wire, how):
    """The wire form of a group with one defect (format: [version, hlc, [[key, code, payload]]])."""
    version, hlc, ops = wire
    key, code, payload = ops[0]
    unknown_kind = max(r.code for r in DEFAULT_SCHEMA.rules) + 1
    wrong_code = next(c for c in CRDT_CODES if c != code)
    return [
        [version + 1, hlc, ops],
        [version, float(hlc), ops],
        [version, -1, ops],
        [version, hlc, ops + [ops[0]]],  # one key twice
        [version, hlc, [[[unknown_kind, *key[1:]], code, payload]] + ops[1:]],
        [version, hlc, [[key, wrong_code, payload]] + ops[1:]],
        [version, hlc, [[key, 99, payload]] + ops[1:]],
        [version, hlc, [[key, code]] + ops[1:]],
        [version, hlc, [[key[:1], code, payload]] + ops[1:]],
        {"hlc": hlc, "ops": ops},
    ][how]


# --- non-stateful tests ----------------------------------------------------------------------

@settings(max_examples=40)
@given(before=transactions, ops=st.lists(tx_ops, min_size=1, max_size=4),
       failure=st.sampled_from(["raise", "float", "overdraft", "bad key", "wrong type"]))
def test_a_transaction_whose_block_raises_changes_nothing(before, ops, failure):
    replica, clock = Replica(DEVICE_KEY), HLC()
    run_transactions(replica, clock, before)
    digest, keys = replica.digest(), list(replica.keys())
    states = {k: replica.state(k) for k in keys}
    errors = {"raise": RuntimeError, "float": InvalidInput, "overdraft": InsufficientRights,
              "bad key": InvalidInput, "wrong type": InvalidInput}
    with pytest.raises(errors[failure]):
        with replica.transaction(clock.now(10**6)) as tx:
            for op in ops:
                run_op(tx, op)
            if failure == "raise":
                raise RuntimeError("the till lost power")
            if failure == "float":
                tx.add(("stock", "b1", "tea"), 1.5)
            if failure == "overdraft":
                tx.decrement(balance("m1"), tx.rights(balance("m1")) + 1)
            if failure == "bad key":
                tx.add(("stok", "b1", "tea"), 1)
            if failure == "wrong type":
                tx.set(("stock", "b1", "tea"), 5)
    assert tx.delta is None
    assert replica.digest() == digest
    assert list(replica.keys()) == keys
    assert all(replica.state(k) == s for k, s in states.items())


@settings(max_examples=40)
@given(txs=transactions)
def test_merging_a_group_equals_applying_it(txs):
    applied, merged_into = Replica(DEVICE_KEY), Replica(DEVICE_KEY)
    clock = HLC()
    for i, ops in enumerate(txs):
        hlc = clock.now(i)
        with applied.transaction(hlc) as tx:
            for op in ops:
                run_op(tx, op)
        before = merged_into.digest()
        with merged_into.transaction(hlc, apply=False) as dry:
            for op in ops:
                run_op(dry, op)
        assert merged_into.digest() == before  # apply=False left it alone
        merged_into.merge(dry.delta)
        assert merged_into.digest() == applied.digest()
        assert states_equal(merged_into, applied)


@settings(max_examples=40)
@given(txs_a=transactions, txs_b=transactions, deliver=st.lists(st.booleans(), max_size=6))
def test_digests_are_equal_iff_states_are_equal(txs_a, txs_b, deliver):
    a, b = Replica(3), Replica("till-b")
    groups = run_transactions(a, HLC(), txs_a)
    run_transactions(b, HLC(), txs_b, start=100)
    for group, yes in zip(groups, deliver):
        if yes:
            b.merge(group)
    assert (a.digest() == b.digest()) == states_equal(a, b)
    assert (a == b) == states_equal(a, b)
    for group in groups:
        b.merge(group)
    if not txs_b:
        assert a.digest() == b.digest()


def test_different_states_have_different_digests():
    a, b = Replica(1), Replica(2)
    assert a.digest() == b.digest()  # both empty
    with a.transaction(Timestamp(1)) as tx:
        tx.add(("stock", "b1", "tea"), 1)
    with b.transaction(Timestamp(1)) as tx:
        tx.add(("stock", "b1", "tea"), 1)
    assert a.digest() != b.digest()  # same value, different writers: different states
    b.merge(DeltaGroup(Timestamp(1), 1, ((("stock", "b1", "tea"), a.state(("stock", "b1", "tea"))),)))
    a.merge(DeltaGroup(Timestamp(1), 2, ((("stock", "b1", "tea"), b.state(("stock", "b1", "tea"))),)))
    assert a.digest() == b.digest() and a.value(("stock", "b1", "tea")) == 2


@settings(max_examples=40)
@given(txs=transactions, bad=st.integers(0, 7), position=st.integers(0, 8))
def test_a_group_with_one_invalid_op_changes_nothing(txs, bad, position):
    writer, reader = Replica(DEVICE_KEY), Replica(3)
    groups = run_transactions(writer, HLC(), txs)
    for g in groups[: len(groups) // 2]:
        reader.merge(g)
    ops = [op for g in groups for op in g.ops][:5]
    ops.insert(position % (len(ops) + 1), invalid_ops()[bad])
    group = DeltaGroup(Timestamp(10**6), DEVICE_KEY, tuple(ops))
    for replica in (writer, reader):
        before = replica.digest()
        with pytest.raises(InvalidInput):
            replica.merge(group)
        assert replica.digest() == before


@settings(max_examples=40)
@given(txs=transactions.filter(bool), how=st.integers(0, 9))
def test_a_malformed_wire_group_is_refused(txs, how):
    groups = run_transactions(Replica(DEVICE_KEY), HLC(), txs + [[("add", "b1", "tea", 1)]])
    reader = Replica(3)
    before = reader.digest()
    with pytest.raises(MalformedWire):
        reader.merge(DeltaGroup.from_wire(cbor2.loads(cbor2.dumps(corrupt_wire(groups[-1].to_wire(), how))), DEVICE_KEY))
    assert reader.digest() == before


@settings(max_examples=40)
@given(data=st.data(), txs=transactions.filter(bool))
def test_a_mutated_wire_group_decodes_or_raises_malformed_wire(data, txs):
    groups = run_transactions(Replica(DEVICE_KEY), HLC(), txs)
    groups = [g for g in groups if g.ops] or run_transactions(Replica(DEVICE_KEY), HLC(), [[("set", "tea", 1)]])
    wire = cbor2.loads(cbor2.dumps(groups[-1].to_wire()))
    obj = data.draw(mutated(wire))
    reader = Replica(3)
    decoded = decode_or_malformed(lambda o: DeltaGroup.from_wire(o, DEVICE_KEY), obj)
    if decoded is not None:
        reader.merge(decoded)  # a group that decodes is valid and merges
        again = DeltaGroup.from_wire(cbor2.loads(cbor2.dumps(decoded.to_wire())), DEVICE_KEY)
        assert [k for k, _ in again.ops] == [k for k, _ in decoded.ops]


@settings(max_examples=40)
@given(txs=transactions.filter(bool), implicit=st.booleans())
def test_group_wire_roundtrip_is_lossless(txs, implicit):
    groups = run_transactions(Replica(DEVICE_KEY), HLC(), txs)
    direct, through_wire = Replica(3), Replica(3)
    for group in groups:
        data = cbor2.dumps(group.to_wire(implicit_writer=implicit))
        assert (DEVICE_KEY in data) == (not implicit and _names_writer(group))
        decoded = DeltaGroup.from_wire(cbor2.loads(data), DEVICE_KEY)
        assert decoded.hlc == group.hlc and decoded.writer == DEVICE_KEY
        assert [(k, type(op)) for k, op in decoded.ops] == [(k, type(op)) for k, op in group.ops]
        assert all(a == b for (_, a), (_, b) in zip(decoded.ops, group.ops))
        direct.merge(group)
        through_wire.merge(decoded)
    assert direct.digest() == through_wire.digest()


def _names_writer(group):
    """Whether the explicit wire form of ``group`` must spell out its writer's id."""
    return any(isinstance(op, (PNCounter, LWWRegister, BoundedCounter)) for _, op in group.ops)


@settings(max_examples=40)
@given(txs=transactions)
def test_snapshot_roundtrip_is_lossless(txs):
    replica = Replica(DEVICE_KEY)
    run_transactions(replica, HLC(), txs)
    restored = Replica.from_wire(DEVICE_KEY, cbor2.loads(cbor2.dumps(replica.to_wire())))
    assert restored.digest() == replica.digest()
    assert states_equal(restored, replica)


def test_a_sale_id_reused_by_two_tills_is_reported_as_a_conflict():
    a, b = Replica(1), Replica(2)
    with a.transaction(Timestamp(1)) as tx_a:
        tx_a.record(("sale", "S-7"), {"total": 100})
    with b.transaction(Timestamp(1)) as tx_b:
        tx_b.record(("sale", "S-7"), {"total": 250})
    assert a.merge(tx_a.delta).conflicts == ()  # its own retry: no conflict
    assert a.merge(tx_b.delta).conflicts == (("sale", "S-7"),)
    assert b.merge(tx_a.delta).conflicts == (("sale", "S-7"),)
    assert a.value(("sale", "S-7")) == b.value(("sale", "S-7"))
    assert a.digest() == b.digest()


def test_values_of_untouched_keys_are_the_empty_values():
    replica = Replica(1)
    assert replica.value(("stock", "b1", "tea")) == 0
    assert replica.value(("price", "tea")) is None
    assert replica.value(balance("m1")) == 0
    assert replica.value(("sale", "S1")) is None
    assert replica.value(("order", "o1")) == {"fields": {}, "lines": []}


BAD_KEYS = [
    ("stok", "b1", "tea"), ("stock", "b1"), ("stock", "b1", "tea", "x", "y"), ("stock",), "stock",
    ["stock", "b1", "tea"], ("stock", "", "tea"), ("stock", "b" * 129, "tea"), ("stock", -1, "tea"),
    ("stock", 1.0, "tea"), ("stock", True, "tea"), ("stock", None, "tea"), ("stock", b"b1", "tea"),
    ("price", "tea", "b1", "x"), (1, "b1", "tea"),
]


@pytest.mark.parametrize("key", BAD_KEYS, ids=range(len(BAD_KEYS)))
def test_bad_keys_are_refused_and_change_nothing(key):
    replica = Replica(1)
    with replica.transaction(Timestamp(1)) as tx:
        tx.add(("stock", "b1", "tea"), 5)
    before = replica.digest()
    with pytest.raises(InvalidInput):
        with replica.transaction(Timestamp(2)) as tx:
            tx.add(("stock", "b1", "tea"), 1)
            tx.add(key, 1)
    assert tx.delta is None and replica.digest() == before


def test_reading_a_bad_key_is_invalid_input():
    replica = Replica(1)
    untyped = []
    for key in BAD_KEYS:
        for read in (replica.value, replica.state):
            try:
                read(key)
            except InvalidInput:
                continue
            except Exception as exc:  # noqa: BLE001 - the point is which type escapes
                untyped.append((read.__name__, key, type(exc).__name__))
            else:
                untyped.append((read.__name__, key, "no error"))
    assert untyped == []


@pytest.mark.parametrize("call", [
    lambda tx: tx.set(("stock", "b1", "tea"), 1),
    lambda tx: tx.add(("price", "tea"), 1),
    lambda tx: tx.increment(("member", "m1", "email"), 1),
    lambda tx: tx.set(balance("m1"), 1),
    lambda tx: tx.record(("order", "o1"), {"a": 1}),
    lambda tx: tx.add_line(("sale", "S1"), {"a": 1}),
], ids=range(6))
def test_an_op_of_the_wrong_type_for_its_key_is_refused(call):
    replica = Replica(1)
    before = replica.digest()
    with pytest.raises(InvalidInput):
        with replica.transaction(Timestamp(1)) as tx:
            call(tx)
    assert tx.delta is None and replica.digest() == before


@pytest.mark.parametrize("hlc", [5, 5.0, None, (5, 0)])
def test_a_transaction_needs_a_timestamp(hlc):
    replica = Replica(1)
    with pytest.raises(InvalidInput):
        with replica.transaction(hlc) as tx:
            tx.add(("stock", "b1", "tea"), 1)
    assert replica.digest() == Replica(1).digest()


@pytest.mark.parametrize("replica_id", [1.0, True, None, "", b"", "x" * 65, -1, [1]])
def test_bad_replica_ids_are_refused(replica_id):
    with pytest.raises(InvalidInput):
        Replica(replica_id)


@pytest.mark.parametrize("obj", [
    [GROUP_VERSION, 0, [[[1, "b1", "tea"], [1], [1, 0]]]],  # an array where a type code goes
    [GROUP_VERSION, 0, [[[1, "b1", "tea"], {"x": 1}, [1, 0]]]],  # a map where a type code goes
], ids=["list code", "map code"])
def test_an_unhashable_type_code_is_malformed_wire(obj):
    with pytest.raises(MalformedWire):
        DeltaGroup.from_wire(obj, 1)
    with pytest.raises(MalformedWire):
        Replica.from_wire(1, [GROUP_VERSION, [obj[2][0]]])


def test_a_format_version_must_be_an_integer():
    # cbor2 hands back 1.0 for a float and True for a CBOR true; neither is the version 1.
    accepted = []
    for cls in CRDT_TYPES.values():
        wire = cls().to_wire()
        for version in (1.0, True):
            try:
                cls.from_wire([wire[0], version, wire[2]])
            except MalformedWire:
                continue
            accepted.append((cls.TAG, version))
    for version in (1.0, True):
        try:
            DeltaGroup.from_wire([version, 0, []], 1)
        except MalformedWire:
            continue
        accepted.append(("group", version))
    assert accepted == []


SURROGATE = "\ud800"


UNENCODABLE = {
    "register value": lambda: LWWRegister().set(SURROGATE, Timestamp(1), "a"),
    "register writer": lambda: LWWRegister().set(1, Timestamp(1), SURROGATE),
    "counter replica": lambda: PNCounter().add("till" + SURROGATE, 1),
    "bounded replica": lambda: BoundedCounter().increment(SURROGATE, 1),
    "record value": lambda: Record().write({"note": SURROGATE}),
    "record map key": lambda: Record().write({SURROGATE: 1}),
    "document field": lambda: Document().set_field(1, "note", SURROGATE),
    "replica id": lambda: Replica(SURROGATE),
}


def test_strings_that_cannot_be_encoded_are_invalid_input():
    # A lone surrogate is a valid Python str but has no UTF-8 (hence no CBOR) encoding.
    escaped = []
    for name, call in UNENCODABLE.items():
        try:
            call()
        except InvalidInput:
            continue
        except Exception as exc:  # noqa: BLE001 - the point is which type escapes
            escaped.append((name, type(exc).__name__))
        else:
            escaped.append((name, "accepted"))
    assert escaped == []


def test_a_key_that_cannot_be_encoded_is_refused_before_it_poisons_the_replica():
    replica = Replica(1)
    with pytest.raises(InvalidInput):
        with replica.transaction(Timestamp(1)) as tx:
            tx.add(("stock", "b" + SURROGATE, "tea"), 1)
    assert replica.digest() == Replica(2).digest()
    assert replica.to_wire() is not None


# transaction(apply=False) leaves the replica untouched until the caller merges the group. A
# second dry transaction started before that (group commit under load) must not build on the
# same totals and silently overwrite the first: nothing acknowledged may be lost.

def test_a_second_dry_transaction_before_the_first_is_merged_loses_no_stock_movement():
    stock = ("stock", "b1", "tea")
    replica = Replica(1)
    with replica.transaction(Timestamp(1), apply=False) as first:
        first.add(stock, -1)
    try:
        with replica.transaction(Timestamp(2), apply=False) as second:
            second.add(stock, -1)
    except InvalidInput:  # refusing until the first is merged is fine
        replica.merge(first.delta)
        assert replica.value(stock) == -1
        return
    replica.merge(first.delta)
    replica.merge(second.delta)
    assert replica.value(stock) == -2  # two sales acknowledged, two pieces gone


def test_a_second_dry_transaction_cannot_spend_rights_the_first_already_spent():
    money = balance("m1")
    replica = Replica(1)
    with replica.transaction(Timestamp(1)) as tx:
        tx.increment(money, 10)
    with replica.transaction(Timestamp(2), apply=False) as first:
        first.decrement(money, 10)
    with pytest.raises((InvalidInput, InsufficientRights)):
        with replica.transaction(Timestamp(3), apply=False) as second:
            second.decrement(money, 10)  # would be acknowledged, yet merge to one charge
    replica.merge(first.delta)
    assert replica.value(money) == 0


def test_a_prepared_transaction_blocks_others_until_merged_or_discarded():
    stock = ("stock", "b1", "tea")
    replica = Replica(1)
    with replica.transaction(Timestamp(1), apply=False) as first:
        first.add(stock, 5)
    assert replica.value(stock) == 0  # prepared, not applied
    replica.discard(first.delta)
    with replica.transaction(Timestamp(2), apply=False) as second:
        second.add(stock, 3)
    replica.merge(second.delta)
    with replica.transaction(Timestamp(3)) as third:
        third.add(stock, 1)
    assert replica.value(stock) == 4


def test_merging_the_stored_copy_of_a_prepared_group_releases_the_replica():
    # The caller makes the prepared group durable, then merges it: possibly the copy it reads
    # back from storage, an equal group but not the same object.
    stock = ("stock", "b1", "tea")
    replica = Replica(1)
    with replica.transaction(Timestamp(1), apply=False) as first:
        first.add(stock, 1)
    stored = DeltaGroup.from_wire(cbor2.loads(cbor2.dumps(first.delta.to_wire())), 1)
    replica.merge(stored)
    with replica.transaction(Timestamp(2)) as second:
        second.add(stock, 1)
    assert replica.value(stock) == 2


@settings(max_examples=40)
@given(txs=transactions, cut=st.integers(min_value=0, max_value=12))
def test_a_digest_kept_between_changes_equals_one_computed_afresh(txs, cut):
    # The digest keeps each key's encoding until that key changes: asked in the middle of a
    # history (after ``cut`` transactions) and again at its end, it must equal the digest of
    # a replica that computes it once, from nothing, over the same state.
    replica, other = Replica(DEVICE_KEY), Replica(DEVICE_KEY)
    clock = HLC()
    run_transactions(replica, clock, txs[:cut])
    replica.digest()
    groups = run_transactions(replica, clock, txs[cut:], start=cut)
    for group in run_transactions(Replica(DEVICE_KEY), HLC(), txs[:cut]) + groups:
        other.merge(group)
    assert replica.digest() == other.digest()
    fresh = Replica.from_wire(DEVICE_KEY, replica.to_wire())
    assert fresh.digest() == replica.digest()
