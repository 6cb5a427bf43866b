"""An enrolled device that signs whatever it likes: what the engine must not let it do.

Each test is a repro from a review of the engine, kept so the defence stays in place.
"""

from crdt_types import BoundedCounter, DeltaGroup, LWWRegister, PNCounter, Timestamp
from gossip import (
    Entry,
    MemoryFeedStore,
)
from gossip._feeds import Feeds
from gossip.testing import Loopback
from node.pos import POS_ESCROW, POS_POLICY

from .engine_helpers import T0, HandPeer, Pair, Shop, heal, kinds, store_of

BALANCE = ("member", "alice", "balance")


class Rogue:
    """An enrolled member that writes entries by hand, bypassing every local check."""

    def __init__(self, shop: Shop, name: str) -> None:
        self.shop, self.number, self.name = shop, shop.numbers[name], name
        self.feeds = Feeds(shop.keyring(name), shop.store(name))

    def entry(self, ops) -> bytes:
        group = DeltaGroup(Timestamp(T0), self.number, tuple(ops))
        return self.feeds.append_local(group, random_bytes=self.shop.random_bytes).encode()

    def connect(self, engine) -> HandPeer:
        peer = HandPeer(engine, self.shop.channel(self.name, initiator=True, now_ms=T0), T0, handle=self.name)
        peer.send(["have", {}, True], T0)
        return peer


def bounded(p=(), d=(), t=()) -> BoundedCounter:
    return BoundedCounter.from_wire(["bc", 1, [[list(r) for r in p], [list(r) for r in d], [list(r) for r in t]]])


def test_a_decrement_beyond_the_writers_rights_is_skipped_everywhere():
    shop = Shop()
    a, _, m = shop.enroll("a"), shop.enroll("b"), shop.enroll("m")
    A, B = shop.engine("a"), shop.engine("b")
    A.commit(lambda tx: tx.increment(BALANCE, 100), T0)
    rogue = Rogue(shop, "m")
    # The rogue speaks to a before b is linked: a HandPeer drives a's poll() itself, and
    # would swallow whatever a had for b (Effects are handed out once, for every peer).
    hand = rogue.connect(A)
    hand.send(["entries", [rogue.entry([(BALANCE, bounded(p=[(a, 100)], d=[(m, 500)]))])], False], T0)
    # New behaviour: a spend without rights is skipped by the escrow fold with an "overdraft"
    # alert (it was an "unauthorized ... spends rights it does not hold" alert).
    assert kinds(hand.alerts) == ["overdraft"]
    A.disconnected("m", T0)
    pair = Pair(A, B, T0)
    pair.tick(T0 + 6_000)
    pair.tick(T0 + 12_000)
    assert B.status().vector == A.status().vector  # b holds the rogue's entry too ...
    assert A.value(BALANCE) == B.value(BALANCE) == 100
    assert A.rights(BALANCE, m) == B.rights(BALANCE, m) == 0
    assert kinds(pair.alerts["b"]) == ["overdraft"]  # ... and skipped it the same way
    assert kinds(pair.alerts["a"]) == []


def test_rights_transferred_out_of_nothing_cannot_be_spent():
    shop = Shop()
    a, m = shop.enroll("a"), shop.enroll("m")
    A = shop.engine("a")
    rogue = Rogue(shop, "m")
    hand = rogue.connect(A)
    hand.send(["entries", [rogue.entry([(BALANCE, bounded(t=[(m, a, 1_000)]))])], False], T0)
    # New behaviour: "overdraft" (was "unauthorized"): the transfer spends rights m never had.
    assert "overdraft" in kinds(hand.alerts)
    assert A.rights(BALANCE, a) == 0 and A.value(BALANCE) == 0


def test_a_rights_request_in_another_devices_name_is_skipped():
    shop = Shop()
    a, m = shop.enroll("a"), shop.enroll("m")
    # New: an engine answers rights requests (and judges whose name they are in) only when it
    # knows where they live (escrow=POS_ESCROW).
    A = shop.engine("a", policy=POS_POLICY, escrow=POS_ESCROW)
    A.commit(lambda tx: tx.increment(BALANCE, 100), T0)
    request = LWWRegister()
    request.set(10**9, Timestamp(T0), m)
    rogue = Rogue(shop, "m")
    hand = rogue.connect(A)
    hand.send(["entries", [rogue.entry([(("rights", "alice", a + 1_000), request)])], False], T0)
    # New behaviour: a request in another device's name is "forged_slots" (was "unauthorized").
    assert "forged_slots" in kinds(hand.alerts)
    # Every right is still a's (the value is the sum of all rights, none below zero): nothing
    # was transferred to the named device or to the rogue.
    assert A.value(BALANCE) == A.rights(BALANCE) == 100
    assert A.rights(BALANCE, a + 1_000) == 0 and A.rights(BALANCE, m) == 0
    A.commit(lambda tx: tx.decrement(BALANCE, 10), T0 + 1)
    assert A.value(BALANCE) == 90


def test_a_huge_rights_request_never_raises_to_the_driver_even_after_a_restart():
    shop = Shop()
    a, m = shop.enroll("a"), shop.enroll("m")
    A = shop.engine("a", escrow=POS_ESCROW)  # it answers requests
    rogue = Rogue(shop, "m")
    big = 2**62
    grant = rogue.entry([(BALANCE, bounded(p=[(m, big)], t=[(m, a, big)]))])
    request = LWWRegister()
    request.set(2**63 - 1, Timestamp(T0), m)
    rogue.connect(A).send(["entries", [grant, rogue.entry([(("rights", "alice", m), request)])], False], T0)
    restarted = shop.engine("a", escrow=POS_ESCROW)
    restarted.tick(T0 + 1_000)
    assert restarted.value(BALANCE) == A.value(BALANCE) >= 0


def test_a_flood_of_requests_in_other_names_is_skipped_without_raising():
    shop = Shop()
    a, m = shop.enroll("a"), shop.enroll("m")
    A = shop.engine("a", escrow=POS_ESCROW)  # it answers requests
    A.commit(lambda tx: tx.increment(BALANCE, 10_000), T0)
    rogue = Rogue(shop, "m")
    ops = []
    for i in range(400):
        request = LWWRegister()
        request.set(1, Timestamp(T0), m)
        ops.append((("rights", "alice", f"d{i}"), request))
    hand = rogue.connect(A)
    hand.send(["entries", [rogue.entry(ops)], False], T0)  # used to raise RecursionError
    assert A.rights(BALANCE, a) == 10_000
    # New behaviour: "forged_slots" (was "unauthorized ... forged slots").
    assert kinds(hand.alerts).count("forged_slots") == 400


def test_a_fork_at_equal_height_is_found_and_every_member_quarantines_the_origin():
    """The origin signs two different seq-1 entries, one to each of two members. Version
    vectors agree, so only the head hashes of periodic full haves can show the fork."""
    shop = Shop()
    for name in ("a", "b", "c", "m"):
        shop.enroll(name)
    net = Loopback()
    engines = {name: net.add(name, shop.engine(name)) for name in ("a", "b", "c")}
    stock = ("stock", "central", "sku1")
    honest = Rogue(shop, "m")
    twin = Rogue(shop, "m")
    twin.feeds = Feeds(shop.keyring("m"), copy_store(shop.store("m")))
    five = PNCounter().add(honest.number, 5)
    seven = PNCounter().add(twin.number, 7)
    hands = [honest.connect(engines["a"]), twin.connect(engines["b"])]
    hands[0].send(["entries", [honest.entry([(stock, five)])], False], T0)
    hands[1].send(["entries", [twin.entry([(stock, seven)])], False], T0)
    engines["a"].disconnected("m", T0)
    engines["b"].disconnected("m", T0)
    now = heal(net, T0)
    for _ in range(20):  # enough anti-entropy rounds for a full have with head hashes
        now += 5_000
        net.tick(now)
    assert all(list(store_of(engine).quarantined()) == [honest.number] for engine in engines.values())
    reported = [a for name in engines for a in net.alerts[name]] + hands[0].alerts + hands[1].alerts
    assert "fork" in kinds(reported)


def copy_store(store: MemoryFeedStore) -> MemoryFeedStore:
    out = MemoryFeedStore()
    for origin in store.heads():
        for seq, data in enumerate(store.read(origin, 1), start=1):
            out.append(origin, seq, Entry.decode(data).hash, data)
    return out
