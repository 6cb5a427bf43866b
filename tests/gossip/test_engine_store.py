"""A scripted shop day on real engines: a LAN of three tills, a second branch, a blind relay.

One till drops off the LAN (a basement) while everyone keeps selling: stock moves, sales are
recorded, members top up and pay within their escrow rights, rights are requested and move
between branches through the relay. Then the network heals, and everything must agree: the
same state on every member, every committed entry on every node (the relay included), the
arithmetic of a sequential model, and not a byte of plaintext on the relay.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable

import pytest

from crdt_types import InsufficientRights, InvalidInput
from gossip import Alert, Engine, EpochUnavailable, Loopback, SessionState
from gossip._entry import Entry
from node._policy import POS_POLICY

from .engine_helpers import T0, Shop, all_entries, digests, heal

CENTRAL, NORTH = "central", "north"
ALICE = ("member", "alice", "balance")
BOB = ("member", "bob", "balance")
TILLS = ("t1", "t2", "t3")  # central LAN; t3 is in the basement
NORTH_TILLS = ("n1", "n2")
MEMBERS = TILLS + NORTH_TILLS
BAD_ALERTS = {"protocol_error", "unauthorized", "fork", "entry_refused", "rights_refused", "clock_skew",
              "record_conflict"}


class Day:
    """The shop, its network and a sequential model of what should come out of it."""

    def __init__(self, seed: int) -> None:
        self.shop = Shop(seed)
        for name in TILLS:
            self.shop.enroll(name, ("cashier",), CENTRAL)
        self.shop.enroll("n1", ("cashier",), NORTH)
        self.shop.enroll("n2", ("manager",), NORTH)
        self.shop.enroll("r", ("relay",), "cloud")
        self.net = Loopback()
        for name in (*MEMBERS, "r"):
            self.net.add(name, self.shop.engine(name, policy=POS_POLICY))
        self.now = T0
        self.committed: dict[tuple[int, int], bytes] = {}  # every entry some engine wrote
        self.alerts: list[tuple[str, Alert]] = []
        self.stock: Counter = Counter()
        self.balance: Counter = Counter()
        self.sales: dict[str, dict] = {}

    def e(self, name: str) -> Engine:
        return self.net.engines[name]

    def link(self, a: str, b: str) -> None:
        self.net.connect(a, b, self.now)

    def unlink(self, a: str, b: str) -> None:
        self.net.disconnect(a, b, self.now)

    def advance(self, ms: int = 1_000) -> None:
        self.now += ms
        self.net.tick(self.now)
        self.collect()

    def settle(self, rounds: int = 4) -> None:
        for _ in range(rounds):
            self.advance(5_000)

    def collect(self) -> None:
        for name, engine in self.net.engines.items():
            self.alerts += [(name, a) for a in engine.alerts()]
            head = engine.store.head(engine.number)
            for seq in range(1, (head.seq if head else 0) + 1):
                self.committed.setdefault((engine.number, seq), engine.store.get(engine.number, seq))

    def commit(self, name: str, build: Callable) -> None:
        self.now += 1
        self.e(name).commit(build, self.now)
        self.net.run(self.now)
        self.collect()

    # -- the POS operations, each mirrored in the model ------------------------------------

    def receive(self, name: str, branch: str, sku: str, qty: int) -> None:
        self.commit(name, lambda tx: tx.add(("stock", branch, sku), qty))
        self.stock[(branch, sku)] += qty

    def top_up(self, name: str, member: tuple, amount: int) -> None:
        self.commit(name, lambda tx: tx.increment(member, amount))
        self.balance[member] += amount

    def sell(self, name: str, branch: str, sale_id: str, lines: list[tuple[str, int]],
             member: tuple | None = None, charge: int = 0) -> None:
        record = {"till": name, "lines": [list(line) for line in lines], "charge": charge}

        def build(tx) -> None:
            tx.record(("sale", sale_id), record)
            for sku, qty in lines:
                tx.add(("stock", branch, sku), -qty)
            if charge:
                tx.decrement(member, charge)

        self.commit(name, build)
        for sku, qty in lines:
            self.stock[(branch, sku)] -= qty
        if charge:
            self.balance[member] -= charge
        self.sales[sale_id] = record

    def refused_charge(self, name: str, member: tuple, amount: int) -> None:
        """A charge beyond local rights: refused offline, nothing changes anywhere."""
        engine = self.e(name)
        before = (engine.replica.digest(), engine.version_vector())
        with pytest.raises(InsufficientRights):
            engine.commit(lambda tx: tx.decrement(member, amount), self.now)
        assert (engine.replica.digest(), engine.version_vector()) == before

    def rights(self, name: str, member: tuple) -> int:
        engine = self.e(name)
        return engine.replica.state(member).rights(engine.number)

    # -- the checks --------------------------------------------------------------------------

    def check_invariants(self) -> None:
        """What must hold at every moment, healed or not."""
        numbers = [self.shop.numbers[n] for n in MEMBERS]
        for name in MEMBERS:
            replica = self.e(name).replica
            for member in (ALICE, BOB):
                state = replica.state(member)
                assert state.value >= 0, (name, member)
                assert all(state.rights(n) >= 0 for n in numbers), (name, member, state)
        assert self.e("r").replica is None

    def check_converged(self) -> None:
        members = [self.e(n) for n in MEMBERS]
        everyone = [*members, self.e("r")]
        assert len(digests(members)) == 1
        vectors = [e.version_vector() for e in everyone]
        assert all(v == vectors[0] for v in vectors), vectors
        for engine in everyone:
            held = all_entries(engine.store)
            for key, data in self.committed.items():
                assert held.get(key) == data, (engine, key)
        for engine in members:
            assert engine.applied_vector() == {o: s for o, s in engine.version_vector().items()}
        replica = members[0].replica
        for (branch, sku), qty in self.stock.items():
            assert replica.value(("stock", branch, sku)) == qty, (branch, sku)
        for member, amount in self.balance.items():
            state = replica.state(member)
            assert state.value == amount, member
            assert sum(state.rights(self.shop.numbers[n]) for n in MEMBERS) == amount  # moved, never made
        for sale_id, record in self.sales.items():
            assert replica.value(("sale", sale_id)) == record
        assert sorted(k[1] for k in replica.keys() if k[0] == "sale") == sorted(self.sales)
        bad = [(name, a) for name, a in self.alerts if a.kind in BAD_ALERTS]
        assert bad == []

    def check_relay_is_blind(self) -> None:
        relay = self.e("r")
        assert relay.replica is None and not relay.is_member
        sealed = [data for (origin, _), data in all_entries(relay.store).items() if origin != 0]
        assert len(sealed) == len(self.committed)
        for data in sealed:
            with pytest.raises(EpochUnavailable):
                relay.feeds.open(Entry.decode(data))
        with pytest.raises(InvalidInput):
            relay.commit(lambda tx: tx.add(("stock", CENTRAL, "coffee"), 1), self.now)


def morning(day: Day) -> None:
    for a, b in (("t1", "t2"), ("t2", "t3"), ("t1", "t3"), ("n1", "n2"), ("r", "t1"), ("r", "n1")):
        day.link(a, b)
    day.receive("t1", CENTRAL, "coffee", 100)
    day.receive("t2", CENTRAL, "croissant", 60)
    day.receive("n1", NORTH, "coffee", 50)
    day.top_up("t1", ALICE, 5_000)
    day.top_up("n2", BOB, 3_000)
    day.settle()
    day.check_invariants()
    assert {day.e(n).replica.value(ALICE) for n in MEMBERS} == {5_000}


def basement_drops_off(day: Day) -> None:
    day.unlink("t3", "t1")
    day.unlink("t3", "t2")
    day.sell("t1", CENTRAL, "S-t1-1", [("coffee", 2), ("croissant", 1)], ALICE, 500)
    day.sell("t3", CENTRAL, "S-t3-1", [("coffee", 3)])
    day.refused_charge("t3", ALICE, 100)  # t3 holds no rights and cannot ask anyone now
    day.e("t3").request_rights("alice", 100, day.now)
    day.collect()
    day.sell("t2", CENTRAL, "S-t2-1", [("croissant", 4)])
    day.refused_charge("t2", ALICE, 300)
    day.e("t2").request_rights("alice", 300, day.now)  # t1, on the LAN, answers at once
    day.net.run(day.now)
    day.collect()
    assert day.rights("t2", ALICE) >= 300
    day.sell("t2", CENTRAL, "S-t2-2", [("coffee", 1)], ALICE, 300)
    day.sell("n1", NORTH, "S-n1-1", [("coffee", 5)])
    day.sell("n2", NORTH, "S-n2-1", [("coffee", 1)], BOB, 1_000)
    # Alice shops in the north: the rights come from the centre, through the relay.
    day.refused_charge("n1", ALICE, 700)
    day.e("n1").request_rights("alice", 700, day.now)
    day.collect()
    day.settle()
    assert day.rights("n1", ALICE) >= 700
    day.sell("n1", NORTH, "S-n1-2", [("coffee", 1)], ALICE, 700)
    day.settle()
    day.check_invariants()
    # The basement saw none of it, and the others none of the basement.
    assert day.e("t3").replica.value(("sale", "S-t1-1")) is None
    assert day.e("t1").replica.value(("sale", "S-t3-1")) is None
    t3 = day.e("t3")
    assert t3.ack_summary()["local"] == t3.store.head(t3.number).seq
    assert t3.open_requests() != []


def heal_and_check(day: Day) -> None:
    day.link("t3", "t1")
    day.link("t3", "t2")
    day.settle()
    day.check_invariants()
    assert day.rights("t3", ALICE) >= 100  # its request was answered once it came back
    day.sell("t3", CENTRAL, "S-t3-2", [("croissant", 2)], ALICE, 100)
    day.now = heal(day.net, day.now + 1)
    day.collect()
    day.check_invariants()
    day.check_converged()
    day.check_relay_is_blind()
    t1, t3 = day.e("t1"), day.e("t3")
    assert t1.ack_summary() == {"local": 0, "lan": 0, "anchor": t1.store.head(t1.number).seq}
    assert t3.ack_summary()["local"] == 0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_shop_day_with_a_partitioned_till_converges(seed: int) -> None:
    day = Day(seed)
    morning(day)
    basement_drops_off(day)
    heal_and_check(day)
    # The model, spelled out once: what the shop should see at the end of the day.
    replica = day.e("n2").replica
    assert replica.value(("stock", CENTRAL, "coffee")) == 100 - 2 - 3 - 1
    assert replica.value(("stock", CENTRAL, "croissant")) == 60 - 1 - 4 - 2
    assert replica.value(("stock", NORTH, "coffee")) == 50 - 5 - 1 - 1
    assert replica.value(ALICE) == 5_000 - 500 - 300 - 700 - 100
    assert replica.value(BOB) == 3_000 - 1_000


def test_the_basement_till_restarts_while_cut_off_and_loses_nothing() -> None:
    day = Day(4)
    morning(day)
    day.unlink("t3", "t1")
    day.unlink("t3", "t2")
    day.sell("t3", CENTRAL, "S-t3-1", [("coffee", 1)])
    day.sell("t3", CENTRAL, "S-t3-2", [("croissant", 1)])
    digest = day.e("t3").replica.digest()
    day.net.replace("t3", day.shop.engine("t3", policy=POS_POLICY, now_ms=day.now), day.now)
    assert day.e("t3").replica.digest() == digest
    day.sell("t3", CENTRAL, "S-t3-3", [("coffee", 1)])
    day.sell("t1", CENTRAL, "S-t1-1", [("coffee", 1)], ALICE, 50)
    day.check_invariants()
    day.now = heal(day.net, day.now + 1)
    day.collect()
    day.check_converged()
    day.check_relay_is_blind()
    assert [e.seq for e in map(Entry.decode, day.e("t3").store.read(day.shop.numbers["t3"], 1))] == [1, 2, 3]


def test_the_relay_restarts_and_the_branches_still_meet() -> None:
    day = Day(5)
    morning(day)
    day.unlink("r", "n1")
    day.sell("t1", CENTRAL, "S-t1-1", [("coffee", 1)], ALICE, 25)
    day.sell("n1", NORTH, "S-n1-1", [("coffee", 2)])
    day.net.replace("r", day.shop.engine("r", now_ms=day.now), day.now)
    assert day.e("r").replica is None
    day.link("r", "t1")
    day.link("r", "n1")
    day.settle()
    assert day.e("n2").replica.value(("sale", "S-t1-1")) is not None
    assert day.e("t2").replica.value(("sale", "S-n1-1")) is not None
    day.now = heal(day.net, day.now + 1)
    day.collect()
    day.check_converged()
    day.check_relay_is_blind()
    assert all(s.state is SessionState.LIVE for e in day.net.engines.values()
               for s in (e.session(p) for p in e.peers()))
