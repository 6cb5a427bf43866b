"""Model-based: members, a relay and random revocations, including cutoffs below what some
members have already applied, and honest entries built on entries that get revoked.

Members write stock moves, top-ups, transfers of rights and charges; links come and go; the
authority revokes devices with cutoffs anywhere in their feeds and the news reaches one
device at a time. Throughout, no member ever shows a balance below zero. After the final
heal every member that is not revoked shows the same state, and that state is exactly the
replay of the valid entries by a node that never saw an invalid one; no store, the relay's
included, holds an entry past a cutoff.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, event, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from crdt_types import InsufficientRights, InvalidInput
from gossip import AUTHORITY_NUMBER, Engine, Entry, MemoryFeedStore
from gossip.testing import ShopBuilder

from .engine_helpers import T0, heal, store_of

MEMBERS = ("m1", "m2", "m3", "m4")
RELAY = "relay"
BALANCES = (("member", "alice", "balance"), ("member", "bob", "balance"))
STOCK = ("stock", "central", "tea")


class Revocations(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.shop = ShopBuilder(7)
        for name in (*MEMBERS, "observer"):
            self.shop.enroll(name, ("manager",))
        self.shop.enroll(RELAY, ("relay",))
        self.net = self.shop.loopback([*MEMBERS, RELAY])
        self.now = T0
        self.revoked: dict[str, int] = {}
        self.grants: list[str] = []

    def live_members(self) -> list[str]:
        return [m for m in MEMBERS if m not in self.revoked]

    @rule(who=st.sampled_from(MEMBERS), amount=st.integers(1, 5))
    def move_stock(self, who, amount):
        self._commit(who, [("add", STOCK, -amount if amount % 2 else amount)])

    @rule(who=st.sampled_from(MEMBERS), key=st.sampled_from(BALANCES), amount=st.integers(1, 50))
    def top_up(self, who, key, amount):
        self._commit(who, [("increment", key, amount)])

    @rule(who=st.sampled_from(MEMBERS), to=st.sampled_from(MEMBERS), key=st.sampled_from(BALANCES),
          share=st.integers(1, 4))
    def transfer(self, who, to, key, share):
        engine = self.net.engines[who]
        rights = engine.rights(key)
        if who == to or rights <= 0 or who in self.revoked:
            return
        target = self.shop.numbers[to]
        if target in engine.status().revoked:
            # Rights moved to a revoked till could never be spent: the engine refuses.
            with pytest.raises(InvalidInput):
                engine.commit([("transfer", key, target, max(1, rights // share))], self.now)
            return
        self._commit(who, [("transfer", key, target, max(1, rights // share))])

    @rule(who=st.sampled_from(MEMBERS), key=st.sampled_from(BALANCES), share=st.integers(1, 3))
    def charge(self, who, key, share):
        rights = self.net.engines[who].rights(key)
        if rights > 0:
            self._commit(who, [("decrement", key, max(1, rights // share))])

    @rule(giver=st.sampled_from(MEMBERS), spender=st.sampled_from(MEMBERS), key=st.sampled_from(BALANCES),
          amount=st.integers(2, 40))
    def grant_then_spend(self, giver, spender, key, amount):
        """A top-up whose rights move to another till that spends them at once: the honest
        spend a later cutoff of the giver pulls the ground from under."""
        if giver == spender or giver in self.revoked or spender in self.revoked:
            return
        if not self.net.connected(giver, spender):
            self.net.connect(giver, spender, self.now)
        self._commit(giver, [("increment", key, amount)])
        self._commit(giver, [("transfer", key, self.shop.numbers[spender], amount)])
        self._commit(spender, [("decrement", key, amount // 2)])
        self.grants.append(giver)

    @precondition(lambda self: self.grants and len(self.revoked) < 2)
    @rule(depth=st.integers(0, 2), tell=st.sampled_from((*MEMBERS, RELAY)))
    def revoke_a_giver(self, depth, tell):
        """Revoke the last giver with a cutoff at or just below its grant."""
        self.revoke(self.grants[-1], depth, tell)

    def _commit(self, who, ops):
        if who in self.revoked:
            return  # a revoked till is refused by its own engine once it knows; nobody takes it anyway
        try:
            self.net.engines[who].commit(ops, self.now)
        except InsufficientRights:
            pass
        self.net.run(self.now)

    @rule(a=st.sampled_from((*MEMBERS, RELAY)), b=st.sampled_from((*MEMBERS, RELAY)))
    def link(self, a, b):
        if a != b and not self.net.connected(a, b):
            self.net.connect(a, b, self.now)

    @rule(a=st.sampled_from((*MEMBERS, RELAY)), b=st.sampled_from((*MEMBERS, RELAY)))
    def unlink(self, a, b):
        self.net.disconnect(a, b, self.now)
        self.net.run(self.now)

    @rule(ms=st.sampled_from((100, 2_000, 6_000)))
    def wait(self, ms):
        self.now += ms
        self.net.tick(self.now)

    @precondition(lambda self: len(self.revoked) < 2)
    @rule(who=st.sampled_from(MEMBERS), depth=st.integers(0, 3), tell=st.sampled_from((*MEMBERS, RELAY)))
    def revoke(self, who, depth, tell):
        # A cutoff somewhere in the feed as the device itself holds it: below what others
        # may have applied already.
        head = store_of(self.net.engines[who]).head(self.shop.numbers[who])
        top = head.seq if head else 0
        cutoff = max(0, top - depth)
        cutoff = min(cutoff, self.revoked.get(who, cutoff))
        number = self.shop.numbers[who]
        if any(e.is_member and e.status().applied.get(number, 0) > cutoff for e in self.net.engines.values()):
            event("a cutoff below what some member has applied")
        self.shop.authority.revoke(number, cutoff, self.now)
        self.revoked[who] = cutoff
        self.shop.publish(self.net, tell, self.now)

    @invariant()
    def no_balance_below_zero(self):
        for name in MEMBERS:
            for key in BALANCES:
                value = self.net.engines[name].value(key)
                assert value >= 0, f"{name} shows {key} at {value}"

    def teardown(self):
        for name in (*MEMBERS, RELAY):
            self.shop.publish(self.net, name, self.now)  # the authority feed reaches everyone
        live = [*self.live_members(), RELAY]
        for a in list(self.net.engines):
            if a not in live:
                for b in list(self.net.engines):
                    self.net.disconnect(a, b, self.now)
        survivors = type(self.net)()
        for name in live:
            survivors.add(name, self.net.engines[name])
        survivors.links = {link for link in self.net.links if link <= set(live)}
        self.now = heal(survivors, self.now)
        cutoffs = {self.shop.numbers[n]: c for n, c in self.revoked.items()}
        members = [self.net.engines[n] for n in self.live_members()]
        digests = {e.status().digest for e in members}
        assert len(digests) == 1, "members differ after the final heal"
        if any(a.kind.value == "overdraft" for alerts in self.net.alerts.values() for a in alerts):
            event("an honest spend lost its backing to a revocation")
        for name in live:
            for origin, head in store_of(self.net.engines[name]).heads().items():
                assert head.seq <= cutoffs.get(origin, head.seq), f"{name} holds {origin}/{head.seq} past its cutoff"
        # The replay of exactly the valid entries, by a node that never saw anything else.
        store = MemoryFeedStore()
        source = store_of(self.net.engines[RELAY])
        for origin, head in sorted(source.heads().items()):
            for seq, data in enumerate(source.read(origin, 1, head.seq), start=1):
                store.append(origin, seq, Entry.decode(data).hash, data)
        store.flush()
        observer = Engine(self.shop.keyring("observer"), store, random_bytes=self.shop.random_bytes, now=self.now)
        assert observer.status().pending == 0
        assert observer.status().digest in digests
        assert store.head(AUTHORITY_NUMBER).seq == len(self.shop.authority.feed)
        for key in BALANCES:
            assert observer.value(key) >= 0


Revocations.TestCase.settings = settings(max_examples=40, stateful_step_count=30, deadline=None,
                                         suppress_health_check=[HealthCheck.too_slow])
test_revocations = Revocations.TestCase
