"""Durability: nothing leaves a device before its flush, a failed flush loses only what it
held, and where a device's entries are held survives a restart.

The driver here is written out by hand (no Loopback), so that every step between a commit
and its flush can be seen.
"""

from __future__ import annotations

from gossip import AckChange, AckLevel, AlertKind, CloseReason

from .engine_helpers import T0, Pair, Shop, store_of

STOCK = ("stock", "central", "coffee")


def two(seed: int = 40):
    shop = Shop(seed)
    shop.enroll("a")
    shop.enroll("b")
    return shop, Pair(shop.engine("a"), shop.engine("b"), T0)


def test_a_commit_is_sent_and_reported_only_after_the_driver_flushed():
    shop, pair = two()
    a = pair.a
    committed = a.commit([("add", STOCK, 2)], T0)
    effects = a.poll()
    assert effects.flush and effects.committed == ()
    assert effects.sends == {}  # the entry waits for its flush
    assert pair.b.value(STOCK) == 0
    store_of(a).flush()
    a.flushed(T0)
    after = a.poll()
    assert after.committed == (committed,)
    assert after.sends["b"]  # now the entry goes out
    pair.b.received("a", after.sends["b"], T0)
    assert pair.b.value(STOCK) == 2


def test_many_commits_share_one_flush():
    shop, pair = two(41)
    a = pair.a
    commits = [a.commit([("add", STOCK, 1)], T0 + i) for i in range(10)]
    effects = a.poll()
    assert effects.flush and [c.seq for c in commits] == list(range(1, 11))
    store_of(a).flush()
    a.flushed(T0 + 10)
    assert a.poll().committed == tuple(commits)
    assert not store_of(a).dirty


def test_a_failed_flush_drops_its_commits_rebuilds_and_restarts_sessions():
    shop, pair = two(42)
    a = pair.a
    a.commit([("add", STOCK, 5)], T0)
    pair.exchange(T0)
    assert pair.b.value(STOCK) == 5
    lost = a.commit([("add", STOCK, 7)], T0 + 1)
    assert a.value(STOCK) == 12 and a.poll().flush
    # The disk refused the flush: the driver says so.
    assert a.flush_failed(T0 + 1) == (lost,)
    assert a.value(STOCK) == 5 and a.status().vector[a.number] == 1
    effects = a.poll()
    assert [c.reason for c in effects.closes] == [CloseReason.STORAGE]
    assert [x.kind for x in effects.alerts] == [AlertKind.STORAGE_FAILED]
    assert effects.committed == ()
    # The next commit takes the lost seq with other content; the peer never saw the lost
    # one, so this is no fork.
    again = a.commit([("add", STOCK, 1)], T0 + 2)
    assert again.seq == lost.seq and again.hash != lost.hash
    fresh = Pair(a, pair.b, T0 + 3, connect=False)
    pair.b.disconnected("a", T0 + 3)
    fresh.connect(T0 + 3)
    assert pair.b.value(STOCK) == 6 == a.value(STOCK)
    assert not [x for x in fresh.alerts["b"] if x.kind in (AlertKind.FORK, AlertKind.FORK_SUSPECTED)]


def test_where_entries_are_held_is_reported_as_effects_and_survives_a_restart():
    shop = Shop(43)
    shop.enroll("a")
    shop.enroll("b")
    shop.enroll("anchor", ("relay",))
    net = shop.loopback()
    net.connect("a", "b", T0)
    net.engines["a"].commit([("add", STOCK, 1)], T0)
    net.engines["a"].commit([("add", STOCK, 1)], T0)
    net.run(T0)
    assert net.engines["a"].status().acks.as_dict() == {"local": 0, "lan": 2, "anchor": 0}
    assert net.acks["a"] == [AckChange(1, 2, AckLevel.LAN)]  # both commits went out in one flush
    assert net.engines["a"].ack_level(2) is AckLevel.LAN
    net.connect("a", "anchor", T0 + 1)
    assert net.engines["a"].status().acks.as_dict() == {"local": 0, "lan": 0, "anchor": 2}
    assert net.acks["a"][-1] == AckChange(1, 2, AckLevel.ANCHOR)
    restarted = shop.engine("a")  # memory gone, the store kept
    assert restarted.status().acks.as_dict() == {"local": 0, "lan": 0, "anchor": 2}
    assert restarted.ack_level(1) is AckLevel.ANCHOR
    restarted.commit([("add", STOCK, 1)], T0 + 2)
    store_of(restarted).flush()
    restarted.flushed(T0 + 2)
    assert restarted.status().acks.as_dict() == {"local": 1, "lan": 0, "anchor": 2}
