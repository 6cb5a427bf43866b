"""Escrow: bounded counters replayed deterministically, and rights that move to where they are needed.

Theory of operation
-------------------
A bounded counter (a member's balance) is spent offline against *rights* (see
``crdt_types._bounded``): each spend is checked, on every replica, against the rights its
writer holds. That check is the one place where a replica's verdict on an op could depend on
what else it has seen, and so on arrival order: an op that is honest relative to its writer's
view always passes (its writer's rights as any receiver sees them are at least what the
writer saw, once the entries it depended on are applied), but an op whose backing later
disappears passes or fails depending on which concurrent entries got there first. Backing
disappears when a revocation cutoff removes entries already taken in: a rogue till's top-up
that an honest till spent before the revocation was known. If one replica kept that spend
and another refused it, they would never converge.

So the state of every bounded-counter key is defined as a pure function of the *set* of
valid ops on that key: the ops folded in one canonical order, (HLC stamp, origin, seq), each
checked against the fold so far and skipped when it fails. The canonical order extends
causality for honest writers (a writer's clock has observed every entry it applied before
it wrote), so an honest op always finds what backs it folded before it. Consequences:

- Same set of ops, same state, on every replica, whatever the arrival order. Two replicas
  that hold the same valid entries show the same balances.
- No replica ever shows a value below zero, not even transiently: every op folded leaves
  its writer's rights at zero or more, only the writer's own ops lower its rights, and the
  value is the sum of all rights.
- A revocation that drops entries is a rebuild: the engine replays the valid entries, the
  fold skips every spend whose backing is gone (on every replica alike), and those skips are
  reported as ``overdraft`` alerts. A writer's later spends that carry totals including a
  skipped one are skipped too (their cumulative totals would spend rights that are gone),
  until the writer itself has rebuilt and writes totals from the valid state again.
- Entries in ``deps`` still make delivery causal, which keeps refolds rare, but they are no
  longer what safety rests on: an entry whose dep can never arrive (it is past a cutoff)
  proceeds, and the fold judges its ops.

Keeping the fold incremental: ops usually arrive in canonical order (they are new), and are
folded onto the current state. One that sorts before ops already folded marks its key for a
refold from scratch at the next ``settle``; a restart replays everything and folds each key
once. The cost is memory for every bounded op seen (a balance sees top-ups and charges,
not stock movements) and, rarely, a refold of one key.

Rights requests: a member that cannot charge a balance for lack of rights records a
request, a register (named by the injected ``EscrowKeys``) holding the amount it wants. Any
member that sees an open request and holds rights on that balance answers with a transfer
of what it can spare (at most what is still missing); the requester clears its request once
it holds enough. A member that is itself short on a balance gives none of it away, or two
members short on the same balance would pass the rights back and forth forever.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any, Callable

from crdt_types import MAX_AMOUNT, BoundedCounter, Replica, Timestamp

from ._policy import income_is_known, writes_only_own_slots

__all__ = ["EscrowKeys", "EscrowLedger", "Skip", "rights_work"]


@dataclass(frozen=True)
class EscrowKeys:
    """Where rights requests live, for the bounded-counter keys a schema names.

    Args:
        request_kind: the key kind of request registers (an LWW register per key and device).
        request_key: (bounded key, device number) -> the request register's key.
        bounded_key: request register key -> the bounded key it asks rights for.
    """

    request_kind: str
    request_key: Callable[[tuple, int], tuple]
    bounded_key: Callable[[tuple], tuple]

    @staticmethod
    def device_of(request_key: tuple) -> Any:
        """The device a request register belongs to: its last element."""
        return request_key[-1]


@dataclass(frozen=True, slots=True)
class Skip:
    """A bounded-counter op the fold skipped, and why: ``forged`` (it writes another device's
    slots) or ``overdraft`` (it spends rights, or cites income, that nothing valid backs)."""

    key: tuple
    origin: int
    seq: int
    reason: str


@dataclass(frozen=True, slots=True)
class _Op:
    order: tuple  # (stamp, origin, seq): the canonical fold order
    origin: int
    seq: int
    delta: BoundedCounter


class EscrowLedger:
    """Every valid bounded-counter op, per key, and the fold of each key."""

    def __init__(self) -> None:
        self._ops: dict[tuple, list[_Op]] = {}
        self._state: dict[tuple, BoundedCounter] = {}
        self._folded: dict[tuple, int] = {}  # key -> how many of its ops (a prefix) are folded
        self._dirty: set[tuple] = set()  # keys with ops not yet folded
        self._refold: set[tuple] = set()  # keys that got an op before ops already folded
        self._verdicts: dict[tuple[tuple, int, int], str | None] = {}  # (key, origin, seq) -> skip reason
        self._reported: set[tuple[tuple, int, int]] = set()

    def add(self, key: tuple, origin: int, seq: int, stamp: Timestamp, delta: BoundedCounter) -> None:
        """Take in one op (folded at the next ``settle``)."""
        ops = self._ops.setdefault(key, [])
        op = _Op((stamp, origin, seq), origin, seq, delta)
        index = bisect.bisect_right([o.order for o in ops], op.order) if ops and op.order < ops[-1].order else len(ops)
        ops.insert(index, op)
        if index < self._folded.get(key, 0):
            self._refold.add(key)
        self._dirty.add(key)

    def settle(self, replica: Replica) -> list[Skip]:
        """Fold every key with new ops into ``replica``; returns the newly skipped ops."""
        skipped: list[Skip] = []
        for key in sorted(self._dirty, key=repr):
            ops = self._ops[key]
            if key in self._refold:
                state, start = BoundedCounter(), 0
            else:
                state, start = self._state.get(key, BoundedCounter()), self._folded.get(key, 0)
            for op in ops[start:]:
                reason = _check(state, op)
                ident = (key, op.origin, op.seq)
                self._verdicts[ident] = reason
                if reason is None:
                    state.merge(op.delta)
                elif ident not in self._reported:
                    self._reported.add(ident)
                    skipped.append(Skip(key, op.origin, op.seq, reason))
            self._state[key] = state
            self._folded[key] = len(ops)
            replica.set_state(key, state.copy())
        self._dirty.clear()
        self._refold.clear()
        return skipped

    def export(self) -> list[tuple[tuple, list[tuple[Timestamp, int, int, BoundedCounter]]]]:
        """Every op kept, per key, in fold order: what a snapshot must carry, because a later
        op that sorts before them refolds the key from its first op."""
        return [(key, [(op.order[0], op.origin, op.seq, op.delta) for op in ops])
                for key, ops in sorted(self._ops.items(), key=lambda item: repr(item[0]))]

    def deps(self, keys: list[tuple], own: int, limit: int) -> dict[int, int]:
        """origin -> highest seq among the ops on ``keys`` (others' only), at most ``limit``
        origins (the most recent kept): what a new op on those keys has seen."""
        deps: dict[int, int] = {}
        for key in keys:
            for op in self._ops.get(key, ()):
                if op.origin != own and op.seq > deps.get(op.origin, 0):
                    deps[op.origin] = op.seq
        if len(deps) > limit:
            deps = dict(sorted(deps.items(), key=lambda item: -item[1])[:limit])
        return deps

    def skipped(self, key: tuple, origin: int, seq: int) -> bool:
        return self._verdicts.get((key, origin, seq)) is not None


def _check(state: BoundedCounter, op: _Op) -> str | None:
    """Why ``op`` cannot be folded onto ``state``, or None when it can."""
    writer, delta = op.origin, op.delta
    if not writes_only_own_slots(delta, writer):
        return "forged"
    if not income_is_known(delta, state, writer):
        return "overdraft"  # it cites income that nothing folded so far backs
    trial = state.copy()
    trial.merge(delta)
    if trial.rights(writer) < 0:
        return "overdraft"
    return None


def rights_work(replica: Replica, me: int, keys: EscrowKeys,
                can_hold: Callable[[Any], bool] = lambda number: True) -> list[tuple] | None:
    """The next transaction (a list of ops as data) this member should write: a transfer
    that answers another member's open request, or the clear of its own satisfied request;
    None when there is nothing to do. One at a time: each answer changes the rights the next
    one is worked out from. Requests of devices that could never spend rights (revoked, a
    relay, unknown) are not answered. Of the members that could answer a request, only the
    one holding the most rights (the lowest number among equals) does, as this replica sees
    it, so one request does not draw a transfer from every holder at once."""
    requests = []
    for key in replica.keys(keys.request_kind):
        amount = replica.value(key)
        if isinstance(amount, int) and not isinstance(amount, bool) and amount > 0:
            requests.append((key, amount))
    wanting = {keys.bounded_key(key) for key, _ in requests if keys.device_of(key) == me}
    for key, amount in requests:
        device, bounded = keys.device_of(key), keys.bounded_key(key)
        counter = replica.state(bounded)
        if device == me:
            if counter.rights(me) >= amount:
                return [("set", key, 0)]
            continue
        if bounded in wanting or not can_hold(device):
            continue
        holders = {d: r for d, r in counter.holders().items() if d != device and r > 0 and can_hold(d)}
        if not holders or max(holders, key=lambda d: (holders[d], -d if isinstance(d, int) else 0)) != me:
            continue
        # What the requester still lacks, as this replica sees it: our own transfers are
        # applied here at once, so we never answer the same shortfall twice, and the rule
        # needs no memory beyond the replicated state (a restart changes nothing).
        give = min(counter.rights(me), amount - counter.rights(device), MAX_AMOUNT)
        if give > 0:
            return [("transfer", bounded, device, give)]
    return None
