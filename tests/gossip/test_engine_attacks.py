"""An enrolled device that signs whatever it likes: what the engine must not let it do.

Each test is a repro from a review of the engine, kept so the defence stays in place.
"""

from crdt_types import BoundedCounter, DeltaGroup, LWWRegister, PNCounter, Timestamp
from gossip import Entry, Feeds, Loopback, MemoryFeedStore
from node._policy import POS_POLICY

from .engine_helpers import T0, HandPeer, Pair, Shop, heal

BALANCE = ("member", "alice", "balance")


class Rogue:
    """An enrolled member that writes entries by hand, bypassing every local check."""

    def __init__(self, shop: Shop, name: str) -> None:
        self.shop, self.number, self.name = shop, shop.numbers[name], name
        self.feeds = Feeds(shop.keyring(name), shop.store(name))

    def entry(self, ops) -> bytes:
        group = DeltaGroup(Timestamp(T0), self.number, tuple(ops))
        return self.feeds.append_local(group, random_bytes=self.shop.random_bytes, now_ms=T0).encode()

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
    pair = Pair(A, B, T0)
    rogue = Rogue(shop, "m")
    rogue.connect(A).send(["entries", [rogue.entry([(BALANCE, bounded(p=[(a, 100)], d=[(m, 500)]))])], False], T0)
    assert [alert.kind for alert in A.alerts()] == ["unauthorized"]
    pair.tick(T0 + 6_000)
    pair.tick(T0 + 12_000)
    assert A.replica.value(BALANCE) == B.replica.value(BALANCE) == 100
    assert A.replica.state(BALANCE).rights(m) == 0


def test_rights_transferred_out_of_nothing_cannot_be_spent():
    shop = Shop()
    a, m = shop.enroll("a"), shop.enroll("m")
    A = shop.engine("a")
    rogue = Rogue(shop, "m")
    rogue.connect(A).send(["entries", [rogue.entry([(BALANCE, bounded(t=[(m, a, 1_000)]))])], False], T0)
    assert "unauthorized" in [alert.kind for alert in A.alerts()]
    assert A.replica.state(BALANCE).rights(a) == 0 and A.replica.value(BALANCE) == 0


def test_a_rights_request_in_another_devices_name_is_skipped():
    shop = Shop()
    a, m = shop.enroll("a"), shop.enroll("m")
    A = shop.engine("a", policy=POS_POLICY)
    A.commit(lambda tx: tx.increment(BALANCE, 100), T0)
    request = LWWRegister()
    request.set(10**9, Timestamp(T0), m)
    rogue = Rogue(shop, "m")
    rogue.connect(A).send(["entries", [rogue.entry([(("rights", "alice", a + 1_000), request)])], False], T0)
    assert "unauthorized" in [alert.kind for alert in A.alerts()]
    assert A.replica.state(BALANCE).holders() == {a: 100}
    A.commit(lambda tx: tx.decrement(BALANCE, 10), T0 + 1)
    assert A.replica.value(BALANCE) == 90


def test_a_huge_rights_request_never_raises_to_the_driver_even_after_a_restart():
    shop = Shop()
    a, m = shop.enroll("a"), shop.enroll("m")
    A = shop.engine("a")
    rogue = Rogue(shop, "m")
    big = 2**62
    grant = rogue.entry([(BALANCE, bounded(p=[(m, big)], t=[(m, a, big)]))])
    request = LWWRegister()
    request.set(2**63 - 1, Timestamp(T0), m)
    rogue.connect(A).send(["entries", [grant, rogue.entry([(("rights", "alice", m), request)])], False], T0)
    restarted = shop.engine("a")
    restarted.tick(T0 + 1_000)
    assert restarted.replica.value(BALANCE) == A.replica.value(BALANCE) >= 0


def test_a_flood_of_requests_in_other_names_is_skipped_without_raising():
    shop = Shop()
    a, m = shop.enroll("a"), shop.enroll("m")
    A = shop.engine("a")
    A.commit(lambda tx: tx.increment(BALANCE, 10_000), T0)
    rogue = Rogue(shop, "m")
    ops = []
    for i in range(400):
        request = LWWRegister()
        request.set(1, Timestamp(T0), m)
        ops.append((("rights", "alice", f"d{i}"), request))
    rogue.connect(A).send(["entries", [rogue.entry(ops)], False], T0)  # used to raise RecursionError
    assert A.replica.state(BALANCE).rights(a) == 10_000
    assert [alert.kind for alert in A.alerts()].count("unauthorized") == 400



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
    honest.connect(engines["a"]).send(["entries", [honest.entry([(stock, five)])], False], T0)
    twin.connect(engines["b"]).send(["entries", [twin.entry([(stock, seven)])], False], T0)
    engines["a"].disconnected("m", T0)
    engines["b"].disconnected("m", T0)
    now = heal(net, T0)
    for _ in range(20):  # enough anti-entropy rounds for a full have with head hashes
        now += 5_000
        net.tick(now)
    assert all(list(engine.store.quarantined()) == [honest.number] for engine in engines.values())
    assert any(alert.kind == "fork" for engine in engines.values() for alert in engine.alerts())


def copy_store(store: MemoryFeedStore) -> MemoryFeedStore:
    out = MemoryFeedStore()
    for origin in store.heads():
        for seq, data in enumerate(store.read(origin, 1), start=1):
            out.append(origin, seq, Entry.decode(data).hash, data)
    return out
