"""Findings of an adversarial review of the core, written from its public surface alone.

Every test asserts the correct behaviour; each failed when it was written. Helpers:
``review_net.Net`` (a driver over the public Engine surface with per-device clocks) and
``review_raw.Raw`` (links with explicit handles), both using only the driver surface
(connected / received / disconnected / tick / commit / poll / flushed) and FeedStore.flush.
"""

from __future__ import annotations

import pytest

from crdt_types import InvalidInput, TillmeshError
from gossip import Engine, Unauthorized
from gossip.testing import T0, ShopBuilder, seeded
from node.pos import POS_ESCROW

from .review_net import Net
from .review_raw import Raw

BAL = ("member", "m", "balance")


def shop(names, **kw) -> ShopBuilder:
    s = ShopBuilder(escrow=POS_ESCROW, **kw)
    for n in names:
        s.enroll(n)
    return s


def kinds(alerts):
    return [a.kind.value for a in alerts]


# ---------------------------------------------------------------------------------------
# Escrow / rights requests
# ---------------------------------------------------------------------------------------

def test_request_rights_on_reserve_key_moves_rights_of_that_key_only():
    """request_rights accepts every bounded key, but the escrow table maps only member
    balances: a request for ``("reserve", branch, sku)`` is written to
    ``("rights", branch, dev)``, which every grantor reads as a request for the *member*
    ``branch``'s balance. The reserve request is never served, and the wrong key's rights move."""
    s = shop("abc")
    net = Net(s, "abc")
    E = net.engines
    net.connect("a", "b"); net.connect("b", "c"); net.connect("a", "c")
    reserve = ("reserve", "m", "sku")  # a branch named like a member id
    E["a"].commit([("increment", BAL, 70), ("increment", reserve, 70)], T0 + 100)
    net.run(T0 + 100)
    try:
        E["b"].request_rights(reserve, 30, T0 + 200)
    except InvalidInput:
        return  # refusing keys the escrow table cannot name is correct too
    net.run(T0 + 200)
    net.advance(T0 + 60_000)
    assert E["b"].rights(BAL) == 0, "member-balance rights moved for a reserve-stock request"
    assert E["b"].rights(reserve) == 30, "the reserve request was never served"


def test_rights_are_not_granted_to_a_revoked_device():
    """A request written before the cutoff is still a valid entry; a grantor that already
    knows the requester is revoked transfers rights to it anyway. Those rights are stranded
    for good (no valid entry of the revoked device can ever spend or return them): the
    member can no longer spend that part of their balance anywhere."""
    s = shop("abc")
    net = Net(s, "abc")
    E = net.engines
    t = T0 + 10
    E["b"].commit([("increment", BAL, 100)], t)
    net.run(t)
    net.connect("a", "c")
    E["c"].request_rights(BAL, 40, t)  # c's seq 1, reaches a only
    net.run(t)
    net.disconnect("a", "c")
    s.authority.revoke(3, 1, t)  # c revoked after its request
    s.publish(net, "a", t)
    net.connect("a", "b", t + 1)
    net.advance(t + 60_000)
    assert E["b"].status().revoked == {3: 1}
    assert E["b"].rights(BAL, 3) == 0, "rights were granted to a revoked device"
    assert E["b"].rights(BAL) == 100


def test_one_rights_request_is_not_granted_by_every_holder():
    """b asks for 30; a and c both hold 70 and each grants the full 30 (asking for 100 moves
    all 140). The requester ends up with twice what it asked for and the other tills are
    drained, so they in turn must request back: rights ping around instead of settling."""
    s = shop("abc")
    net = Net(s, "abc")
    E = net.engines
    net.connect("a", "b"); net.connect("b", "c"); net.connect("a", "c")
    t = T0 + 100
    E["a"].commit([("increment", BAL, 70)], t)
    E["c"].commit([("increment", BAL, 70)], t)
    net.run(t)
    E["b"].request_rights(BAL, 30, t)
    net.run(t)
    net.advance(t + 30_000)
    assert E["b"].rights(BAL) == 30, [(n, E[n].rights(BAL)) for n in "abc"]


@pytest.mark.parametrize("amount", ["x", -5, True])
def test_request_rights_validates_the_amount(amount):
    """request_rights writes any amount into the replicated request register: a string,
    a negative number, a bool. Garbage reaches every replica's escrow code."""
    s = shop("ab")
    net = Net(s, "ab")
    with pytest.raises(InvalidInput):
        net.engines["b"].request_rights(BAL, amount, T0 + 1)


def test_rights_on_a_register_key_raises_a_tillmesh_error():
    """Engine.rights on a key that is not a bounded counter raises AttributeError
    ('LWWRegister' object has no attribute 'rights'), not InvalidInput."""
    s = shop("a")
    e = s.engine("a", now=T0)
    with pytest.raises(TillmeshError):
        e.rights(("setting", "x"))


# ---------------------------------------------------------------------------------------
# commit() contract
# ---------------------------------------------------------------------------------------

def test_commit_refuses_a_write_to_another_devices_request_register():
    """commit accepts ("set", ("rights", m, other_device), n) and returns Committed; then every
    replica (the writer included) skips it as forged_slots. The caller was told the write
    succeeded and a dead entry was appended to the feed. The docstring promises
    Unauthorized / InvalidInput with nothing changed."""
    s = shop("ab")
    net = Net(s, "ab")
    net.connect("a", "b")
    ea = net.engines["a"]
    before = ea.status().vector
    with pytest.raises((Unauthorized, InvalidInput)):
        ea.commit([("set", ("rights", "m", 2), 50)], T0 + 1)
    assert ea.status().vector == before


def test_commit_callable_cannot_smuggle_foreign_slots():
    """The callable form of commit hands out the live deltas: mutating the PNCounter that
    tx.add returned (a public method, .add(other_replica, n)) puts another device's slot into
    the entry. commit returns Committed, then every replica skips the whole op (forged_slots),
    so even the legitimate +1 is silently lost."""
    s = shop("ab")
    net = Net(s, "ab")
    net.connect("a", "b")
    ea = net.engines["a"]
    key = ("stock", "central", "x")

    def ops(tx):
        delta = tx.add(key, 1)
        delta.add(2, 50)  # device 2's slot

    try:
        ea.commit(ops, T0 + 1)
    except TillmeshError:
        return  # refusing is correct
    net.run(T0 + 1)
    assert ea.value(key) == 1 and net.engines["b"].value(key) == 1, "an acknowledged commit had no effect"


def test_nested_commit_does_not_lose_an_acknowledged_write():
    """A commit made from inside a commit callable is not refused: it returns Committed
    (seq 2), the outer returns seq 3, and because deltas carry totals computed without the
    inner write, the inner increment vanishes on every replica."""
    s = shop("ab")
    net = Net(s, "ab")
    net.connect("a", "b")
    ea = net.engines["a"]
    ea.commit([("increment", BAL, 10)], T0 + 1)
    net.run(T0 + 1)
    inner = []

    def ops(tx):
        tx.increment(BAL, 5)
        inner.append(ea.commit([("increment", BAL, 1)], T0 + 2))

    try:
        ea.commit(ops, T0 + 2)
    except TillmeshError:
        return  # refusing the nested commit is correct
    net.run(T0 + 2)
    assert inner, "inner commit did not return"
    assert ea.value(BAL) == 16 and net.engines["b"].value(BAL) == 16


def test_commit_with_no_ops_iterable_raises_invalid_input():
    s = shop("a")
    e = s.engine("a", now=T0)
    with pytest.raises(InvalidInput):
        e.commit(None, T0 + 1)


# ---------------------------------------------------------------------------------------
# Durability: commit -> poll -> flush -> flushed
# ---------------------------------------------------------------------------------------

def _held_by_peer_but_not_durable(s, origin_name, origin_number, peer_engine):
    durable = s.store(origin_name).crashed().head(origin_number)
    durable_seq = durable.seq if durable else 0
    return peer_engine.status().vector.get(origin_number, 0) > durable_seq


def test_flushed_does_not_release_an_auto_grant_appended_after_the_store_flush():
    """Driver: poll() says flush -> store.flush() -> (bytes keep arriving: a rights request)
    -> engine.flushed(). The request makes the engine append a grant after the store flush;
    flushed() releases it as durable, it is reported committed and sent. A crash then re-issues
    that seq with other content: the peer holds a different entry at the same seq, equal
    vectors hide it for minutes, and then the honest device is quarantined as forked
    everywhere (its later sales never replicate)."""
    s = shop("bc")
    net = Net(s, "bc")
    E = net.engines
    eb, ec = E["b"], E["c"]
    net.connect("b", "c")
    t = T0 + 10
    eb.commit([("increment", BAL, 100)], t)
    net.run(t)
    eb.commit([("set", ("setting", "x"), 1)], t + 1)
    assert eb.poll().flush
    s.store("b").flush()                 # the driver's flush completes...
    ec.request_rights(BAL, 40, t + 1)     # ...while the peer's request arrives
    for _ in range(3):
        effc = ec.poll()
        if effc.flush:
            s.store("c").flush(); ec.flushed(t + 1)
        if effc.sends.get("b"):
            eb.received("c", effc.sends["b"], t + 1)
    eb.flushed(t + 1)                   # for the flush that completed before the grant
    effb = eb.poll()
    if effb.sends.get("c"):
        ec.received("b", effb.sends["c"], t + 1)
    assert not _held_by_peer_but_not_durable(s, "b", 1, ec), \
        "an entry left the device before it was durable"


def test_flushed_does_not_release_a_commit_made_after_the_store_flush():
    """Same hazard through the caller: poll() -> store.flush() -> commit() -> flushed().
    The second commit is reported in Effects.committed and sent while the store is still
    dirty; the engine could see it (FeedStore.dirty) but trusts flushed() blindly."""
    s = shop("ab")
    net = Net(s, "ab")
    ea, eb = net.engines["a"], net.engines["b"]
    net.connect("a", "b")
    t = T0 + 10
    ea.commit([("set", ("setting", "x"), 1)], t)
    assert ea.poll().flush
    s.store("a").flush()
    c2 = ea.commit([("set", ("setting", "y"), 2)], t + 1)
    ea.flushed(t + 1)
    eff = ea.poll()
    assert c2.seq not in [c.seq for c in eff.committed], "a non-durable commit was acknowledged"
    if eff.sends.get("b"):
        eb.received("a", eff.sends["b"], t + 1)
    assert not _held_by_peer_but_not_durable(s, "a", 1, eb), "an entry left the device before it was durable"


# ---------------------------------------------------------------------------------------
# Validity must not depend on arrival order
# ---------------------------------------------------------------------------------------

def test_fork_leaves_replicas_identical():
    """A device restored from a backup (or cloned) signs a different seq 2. Every replica
    detects the fork and quarantines the device, but each keeps whichever seq-2 version it
    received first: b shows balance 40 / setting 'a-orig', c and d show 30 / 'a-clone',
    for good (until an operator revokes). The verdict on the entry depends on arrival order."""
    s = shop("abcd")
    net = Net(s, "abcd")
    E = net.engines
    t = T0 + 10
    for x, y in [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")]:
        net.connect(x, y, t)
    E["a"].commit([("increment", BAL, 100), ("set", ("setting", "x"), "a1")], t)
    net.run(t)
    clone_store = s.store("a").crashed()
    clone = Engine(s.keyring("a"), clone_store, random_bytes=seeded(999), now=t, escrow=POS_ESCROW)
    net.engines["a2"] = clone
    net.stores["a2"] = clone_store
    net.disconnect("a", "b", t); net.disconnect("a", "c", t)
    E["a"].commit([("decrement", BAL, 60), ("set", ("setting", "x"), "a-orig")], t + 1)
    clone.commit([("decrement", BAL, 70), ("set", ("setting", "x"), "a-clone")], t + 1)
    net.run(t + 1)
    net.connect("a", "b", t + 2)
    net.connect("a2", "c", t + 2)
    net.connect("b", "c", t + 3)
    net.advance(t + 120_000)
    assert "fork" in kinds(net.take_alerts())
    values = {n: (E[n].value(BAL), E[n].value(("setting", "x"))) for n in "bcd"}
    assert len(set(net.digests("bcd").values())) == 1, values


# ---------------------------------------------------------------------------------------
# Sessions
# ---------------------------------------------------------------------------------------

def test_unauthenticated_connections_do_not_lock_out_enrolled_devices():
    """MAX_PEERS counts connections that have not authenticated. Anyone who can reach the
    port (no network key needed) opens 256 connections, renews them every 10 s handshake
    timeout, and every enrolled till is refused with too_many_peers."""
    s = shop("ab")
    E = {n: s.engine(n, now=T0) for n in "ab"}
    for i in range(256):
        E["a"].connected(("junk", i), False, T0)
    E["a"].poll()
    r = Raw(s, E)
    r.dial("b", "A", "a", "B", T0 + 1)
    states = {p.handle: p.state for p in E["a"].status().peers}
    assert states.get("B") == "live", [(c.peer, c.reason.value) for c in r.closes["a"] if c.peer == "B"]


def test_restarted_device_is_not_locked_out_by_its_stale_session():
    """b (device 2) restarts while a (device 1) still holds the a-initiated session as
    live (half-open). b dials a; a keeps its stale session ('keep the connection the
    lower-numbered device initiated') and refuses every new one as duplicate until its
    45 s ping timeout: a restarted till cannot sync for 45 s, each redial refused."""
    s = shop("ab")
    E = {n: s.engine(n, now=T0) for n in "ab"}
    r = Raw(s, E)
    t = T0 + 1
    r.dial("a", "b1", "b", "a1", t)
    r.wires.clear()  # b vanishes without a FIN
    E["a"].commit([("set", ("setting", "x"), 1)], t)
    r.run(t)
    s.crash("b")
    E["b"] = s.engine("b", now=t + 100)
    synced_at = None
    for i in range(0, 60):
        now = t + 100 + i * 1000
        if not any(k[0] == "b" for k in r.wires):
            r.dial("b", "new-a%d" % i, "a", "new-b%d" % i, now)
        r.tick(now)
        if E["b"].value(("setting", "x")) == 1:
            synced_at = i
            break
    assert synced_at is not None and synced_at <= 5, f"synced after {synced_at} s"


# ---------------------------------------------------------------------------------------
# Smaller surface issues
# ---------------------------------------------------------------------------------------

def test_import_entries_takes_a_backup_in_any_order():
    """import_entries is 'as if a peer had sent them', yet entries before a gap are dropped
    instead of deferred: a backup listed newest first imports 1 of 3, silently."""
    s = shop("ab")
    net = Net(s, "ab")
    E = net.engines
    for i in range(3):
        E["a"].commit([("set", ("setting", "y"), i)], T0 + 10 + i)
    net.run(T0 + 20)
    entries = s.store("a").read(1, 1)
    assert E["b"].import_entries(list(reversed(entries)), T0 + 30) == 3
    assert E["b"].status().vector.get(1) == 3


def test_ack_level_refuses_nonsense_seqs():
    """ack_level(-1) answers ANCHOR for an entry that cannot exist; ack_level('x') raises
    TypeError."""
    s = shop("a")
    e = s.engine("a", now=T0)
    with pytest.raises(InvalidInput):
        e.ack_level(-1)
    with pytest.raises(InvalidInput):
        e.ack_level("x")


def test_transfer_to_a_device_that_cannot_spend_is_refused():
    """commit accepts a transfer of balance rights to a device number never enrolled (99), to
    a string or bytes replica id, to a relay and to the authority (0). The member's value is
    unchanged but those rights can never be spent or returned by anyone: the balance is
    partly frozen for good. One bad device number from an API caller burns it."""
    s = ShopBuilder(escrow=POS_ESCROW)
    s.enroll("a"); s.enroll("r", roles=("relay",)); s.enroll("b")
    net = Net(s, "arb")
    E = net.engines
    net.connect("a", "b")
    E["a"].commit([("increment", BAL, 100)], T0 + 10)
    accepted = []
    for to in [99, "x", b"zz", s.numbers["r"], 0]:
        try:
            E["a"].commit([("transfer", BAL, to, 10)], T0 + 11)
            accepted.append(to)
        except TillmeshError:
            pass
    net.run(T0 + 11)
    assert accepted == [], f"rights sent where nobody can spend them: {accepted}"


# ---------------------------------------------------------------------------------------
# Restarts
# ---------------------------------------------------------------------------------------

def test_restart_with_a_fresh_token_does_not_strand_its_new_entries():
    """ShopBuilder.engine restarts a device with a keyring from a fresh token (as documented).
    After an epoch roll (here: another device revoked) the token knows epoch 1, the device's
    store does not hold the authority entries that grant it. The restarted device seals its
    next sale under epoch 1 and never forwards those authority entries: a peer takes the
    authority feed it can get and the older entry, and silently never applies the new one
    (pending 0, no alert) until some other device brings the authority feed."""
    s = shop("acdb")
    net = Net(s, "acdb")
    E = net.engines
    t = T0 + 10
    E["a"].commit([("set", ("setting", "s0"), 1)], t)
    net.run(t)
    s.authority.revoke(s.numbers["b"], 0, t + 1)  # the admin has not published it yet
    s.crash("a")
    net.start("a", t + 2)
    E["a"].commit([("set", ("setting", "s0"), 2)], t + 3)
    net.run(t + 3)
    net.connect("a", "c", t + 4)
    net.advance(t + 100_000, step=5000)
    assert E["c"].value(("setting", "s0")) == 2, (E["a"].status().vector, E["c"].status().vector)
