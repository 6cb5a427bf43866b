"""Snapshots: a restart loads the replica saved with a flush and replays only what came after,
and ends exactly where a full replay would; a snapshot that does not fit is not used."""

from __future__ import annotations

from gossip import AlertKind, Engine, EngineConfig, Entry, MemoryFeedStore

from .engine_helpers import T0, Shop, store_of

STOCK = ("stock", "central", "tea")
ALICE = ("member", "alice", "balance")
ORDER = ("order", "o1")
CONFIG = EngineConfig(snapshot_every=10)


def busy_shop(seed: int = 50, entries: int = 35):
    shop = Shop(seed, config=CONFIG)
    shop.enroll("a")
    shop.enroll("b")
    net = shop.loopback()
    net.connect("a", "b", T0)
    for i in range(entries):
        who = net.engines["ab"[i % 2]]
        ops = [("add", STOCK, 1 + i % 3), ("record", ("sale", f"s{i}"), {"n": i})]
        if i % 7 == 0:
            ops.append(("increment", ALICE, 10))
        if i % 11 == 0:
            ops.append(("add_line", ORDER, {"sku": f"x{i}", "qty": 1}))
        who.commit(ops, T0 + i)
        net.tick(T0 + i)  # snapshots are taken from tick(), never mid-burst
    return shop, net


def full_replay(shop: Shop, name: str) -> bytes:
    """The digest a restart that ignores any snapshot reaches."""
    copy = MemoryFeedStore()
    source = shop.store(name)
    for origin, head in source.heads().items():
        for seq, data in enumerate(source.read(origin, 1, head.seq), start=1):
            copy.append(origin, seq, Entry.decode(data).hash, data)
    engine = Engine(shop.keyring(name), copy, random_bytes=shop.random_bytes, now=T0 + 1_000)
    return engine.status().digest


def test_a_restart_loads_the_snapshot_and_replays_only_what_came_after():
    shop, net = busy_shop()
    before = net.engines["a"].status()
    assert store_of(net.engines["a"]).load_snapshot() is not None
    restarted = shop.engine("a", now=T0 + 1_000)
    # 35 entries of its own feed and b's, plus the authority's: the last snapshot came no
    # more than half the entries held before the end, so far fewer were replayed than held.
    held = sum(restarted.status().vector.values())
    assert 0 < restarted._applier.passed <= held // 2
    assert restarted.status().digest == before.digest == full_replay(shop, "a")
    assert restarted.status().applied == before.applied
    assert restarted.value(ALICE) == 50 == net.engines["a"].value(ALICE)
    assert restarted.value(ORDER) == net.engines["a"].value(ORDER)


def test_a_restored_node_writes_on_and_folds_balances_as_before():
    shop, net = busy_shop(51)
    restarted = shop.engine("a", now=T0 + 1_000)
    assert restarted.value(ALICE) == net.engines["a"].value(ALICE) == 50
    assert restarted.rights(ALICE) == net.engines["a"].rights(ALICE)
    net.replace("a", restarted, T0 + 1_000)
    net.connect("a", "b", T0 + 1_000)
    restarted.commit([("decrement", ALICE, restarted.rights(ALICE))], T0 + 1_001)
    net.run(T0 + 1_001)
    assert restarted.status().digest == net.engines["b"].status().digest


def test_a_snapshot_that_does_not_fit_the_store_is_not_used():
    shop, net = busy_shop(52)
    store = store_of(net.engines["a"])
    before = net.engines["a"].status().digest
    # A snapshot claiming more than the store holds (one from another store, or from before a
    # cutoff removed entries) is passed over: the restart replays everything.
    foreign_shop, foreign_net = busy_shop(53, entries=60)
    store.save_snapshot(store_of(foreign_net.engines["a"]).load_snapshot())
    store.flush()
    restarted = shop.engine("a", now=T0 + 1_000)
    assert restarted.status().digest == before
    assert restarted._applier.passed == sum(restarted.status().vector.values())


def test_a_damaged_snapshot_is_reported_and_the_feeds_replayed():
    shop, net = busy_shop(54)
    store = store_of(net.engines["a"])
    before = net.engines["a"].status().digest
    store.put_meta("snapshot.0", b"garbage")
    store.flush()
    restarted = shop.engine("a", now=T0 + 1_000)
    assert restarted.status().digest == before
    assert [a.kind for a in restarted.poll().alerts] == [AlertKind.STORAGE_FAILED]


def test_what_a_crash_keeps_of_a_snapshot_matches_the_entries_it_keeps():
    shop, net = busy_shop(55, entries=19)
    a = net.engines["a"]
    for i in range(3):  # crosses a snapshot point without a flush
        a.commit([("add", STOCK, 1)], T0 + 100 + i)
    assert store_of(a).dirty
    shop.crash("a")
    restarted = shop.engine("a", now=T0 + 1_000)
    assert restarted.status().digest == full_replay(shop, "a")
