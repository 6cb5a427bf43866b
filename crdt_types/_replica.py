"""Replica: the whole replicated state of a node, a map of typed keys to CRDTs.

Local writes happen in transactions. A transaction works on private copies of the keys it
touches; only when its block ends without an exception are the copies swapped in and its
deltas, one per key, handed out as a ``DeltaGroup``. A group is applied all-or-nothing on
every replica: ``merge`` validates every op (key, type, shape) before it changes anything.
"""

from __future__ import annotations

import hashlib
from bisect import insort
from dataclasses import dataclass
from typing import Any, Iterator

from ._bounded import BoundedCounter
from ._check import canonical, require_replica, wire_list
from ._counter import PNCounter
from ._document import Document
from ._errors import InvalidInput, MalformedWire, UnknownOps
from ._hlc import Timestamp
from ._record import Record
from ._register import LWWRegister
from ._schema import CRDT_CODES, DEFAULT_SCHEMA, Schema

__all__ = ["DeltaGroup", "Transaction", "Replica", "MergeResult", "MAX_OPS_PER_GROUP", "GROUP_VERSION"]

# A sale with a hundred lines touches ~100 stock keys, a record and a balance.
MAX_OPS_PER_GROUP = 512
# Format version of delta groups and replica snapshots (the types' own versions follow it).
GROUP_VERSION = 1


@dataclass(frozen=True, slots=True)
class DeltaGroup:
    """The deltas of one transaction, applied all-or-nothing."""

    hlc: Timestamp
    writer: Any
    ops: tuple[tuple[tuple, Any], ...]

    def to_wire(self, *, implicit_writer: bool = True, schema: Schema = DEFAULT_SCHEMA) -> list:
        """``[version, hlc, [[key, type_code, payload], ...]]``.

        Keys carry their kind as a one-byte code and each op its type as a one-byte code
        (the schema fixes both; the code is checked on decode). With ``implicit_writer``
        (inside a feed entry, where the origin is known) the writer's own slots are null
        instead of repeating its id.
        """
        writer = self.writer if implicit_writer else None
        ops = []
        for key, delta in self.ops:
            ops.append([schema.key_to_wire(key), delta.CODE, delta.to_wire(writer=writer)[2]])
        return [GROUP_VERSION, self.hlc.pack(), ops]

    @classmethod
    def from_wire(cls, obj: Any, writer: Any, *, schema: Schema = DEFAULT_SCHEMA) -> "DeltaGroup":
        """Decode and fully validate a group written by ``writer``.

        Raises:
            MalformedWire: any op is malformed or of the wrong type for its key.
        """
        version, packed, raw_ops = wire_list(obj, "delta group", length=3)
        if type(version) is int and version > GROUP_VERSION:
            raise UnknownOps(f"delta group: format version {version} is newer than this version's {GROUP_VERSION}")
        if type(version) is not int or version != GROUP_VERSION:
            raise MalformedWire(f"delta group: unsupported version {version!r}, expected {GROUP_VERSION}")
        try:
            writer = require_replica(writer)
        except InvalidInput as exc:
            raise MalformedWire(f"delta group writer: {exc}") from None
        hlc = Timestamp.unpack(packed)
        ops = {}
        resolve = schema.resolve_wire_key
        codes = CRDT_CODES
        # The hot path of taking an entry in (a sale is tens of ops): one dict lookup per
        # check on the way through, the reasons worked out only when a check fails.
        for op in wire_list(raw_ops, "delta group ops", max_length=MAX_OPS_PER_GROUP):
            if type(op) is not list or len(op) != 3:
                raise MalformedWire("delta op: expected [key, type code, payload]")
            raw_key, code, payload = op
            key, crdt = resolve(raw_key)
            if (codes.get(code) if type(code) is int else None) is not crdt:
                if type(code) is int and code > 0 and code not in codes:
                    raise UnknownOps(f"delta op for {key!r}: CRDT type code {code} is not known to this version")
                raise MalformedWire(f"delta op for {key!r}: type code {code!r} but the key holds {crdt.TAG!r}")
            if key in ops:
                raise MalformedWire(f"delta group names key {key!r} twice")
            ops[key] = crdt.from_payload(payload, writer=writer)
        return cls(hlc, writer, tuple(ops.items()))


@dataclass(frozen=True, slots=True)
class MergeResult:
    """What a merge applied: the ops, and the keys now holding conflicting records."""

    ops: tuple[tuple[tuple, Any], ...]
    conflicts: tuple[tuple, ...]

    @property
    def keys(self) -> tuple[tuple, ...]:
        return tuple(key for key, _ in self.ops)


class Transaction:
    """Mutators for one local transaction; see ``Replica.transaction``."""

    def __init__(self, replica: "Replica", hlc: Timestamp) -> None:
        if not isinstance(hlc, Timestamp):
            raise InvalidInput(f"hlc must be a Timestamp, got {type(hlc).__name__}")
        self._replica = replica
        self.hlc = hlc
        self._work: dict[tuple, Any] = {}
        self._deltas: dict[tuple, Any] = {}
        self.delta: DeltaGroup | None = None
        self.stamp = hlc  # the highest stamp this transaction wrote with

    def _target(self, key: tuple, expected: type) -> Any:
        crdt = self._replica.schema.type_of(key)
        if crdt is not expected:
            raise InvalidInput(f"key {key!r} holds a {crdt.__name__}, not a {expected.__name__}")
        if key not in self._work:
            if len(self._work) >= MAX_OPS_PER_GROUP:
                raise InvalidInput(f"a transaction touches at most {MAX_OPS_PER_GROUP} keys")
            current = self._replica._states.get(key)
            self._work[key] = current.copy() if current is not None else crdt()
        return self._work[key]

    def _keep(self, key: tuple, delta: Any) -> Any:
        previous = self._deltas.get(key)
        if previous is None:
            self._deltas[key] = delta
        else:
            previous.merge(delta)
        return delta

    @property
    def _me(self) -> Any:
        return self._replica.replica_id

    def add(self, key: tuple, amount: int) -> PNCounter:
        """PN-counter add (stock): negative to remove."""
        return self._keep(key, self._target(key, PNCounter).add(self._me, amount))

    def set(self, key: tuple, value: Any) -> LWWRegister:
        """Register write (price, profile field, setting), stamped with the transaction's HLC.

        A write always wins over what its writer has seen: when the register already holds
        a stamp at or above the transaction's (written by a device whose clock runs ahead,
        within the skew the HLC tolerates), this write is stamped just above that one.
        The highest stamp used is ``stamp``, which the caller's HLC must witness.
        """
        register = self._target(key, LWWRegister)
        stamp = self.hlc
        current = register.stamp
        if current is not None and current[0] >= stamp:
            stamp = current[0].successor()
        if stamp > self.stamp:
            self.stamp = stamp
        return self._keep(key, register.set(value, stamp, self._me))

    # Ops as data, the form an API or a simulator hands in: (verb, key, *arguments).
    VERBS = {"add": 1, "set": 1, "increment": 1, "decrement": 1, "transfer": 2, "record": 1,
             "set_field": 2, "add_line": 1, "remove_line": 1}

    def apply(self, op: Any) -> Any:
        """Run one op given as data, ``(verb, key, *arguments)``, e.g. ``("add", key, -2)``.

        Raises:
            InvalidInput: not such a tuple, an unknown verb, or the verb's own refusal.
        """
        if not isinstance(op, (tuple, list)) or len(op) < 2 or not isinstance(op[0], str):
            raise InvalidInput(f"an op is (verb, key, *arguments), got {op!r}")
        verb, key, args = op[0], op[1], tuple(op[2:])
        arity = self.VERBS.get(verb)
        if arity is None:
            raise InvalidInput(f"unknown op verb {verb!r}; expected one of {sorted(self.VERBS)}")
        if len(args) != arity:
            raise InvalidInput(f"op {verb!r} takes {arity} argument(s) after the key, got {len(args)}")
        if isinstance(key, list):
            key = tuple(key)
        return getattr(self, verb)(key, *args)

    def increment(self, key: tuple, amount: int) -> BoundedCounter:
        return self._keep(key, self._target(key, BoundedCounter).increment(self._me, amount))

    def decrement(self, key: tuple, amount: int) -> BoundedCounter:
        return self._keep(key, self._target(key, BoundedCounter).decrement(self._me, amount))

    def transfer(self, key: tuple, to_replica: Any, amount: int) -> BoundedCounter:
        return self._keep(key, self._target(key, BoundedCounter).transfer(self._me, to_replica, amount))

    def record(self, key: tuple, record: Any) -> Record:
        return self._keep(key, self._target(key, Record).write(record))

    def set_field(self, key: tuple, name: str, value: Any) -> Document:
        return self._keep(key, self._target(key, Document).set_field(self._me, name, value))

    def add_line(self, key: tuple, line: dict) -> Document:
        return self._keep(key, self._target(key, Document).add_line(self._me, line))

    def remove_line(self, key: tuple, index: int) -> Document:
        return self._keep(key, self._target(key, Document).remove_line(self._me, index))

    def rights(self, key: tuple) -> int:
        """This replica's rights on a bounded counter, as the transaction sees it so far."""
        return self._target(key, BoundedCounter).rights(self._me)

    def value(self, key: tuple) -> Any:
        """A key's value as the transaction sees it so far."""
        if key in self._work:
            return self._work[key].value
        return self._replica.value(key)


class Replica:
    """The replicated state of one node.

    Args:
        replica_id: this node's id (its device number on the wire).
        schema: the key table; the POS schema by default.
    """

    def __init__(self, replica_id: Any, *, schema: Schema = DEFAULT_SCHEMA) -> None:
        self.replica_id = require_replica(replica_id)
        self.schema = schema
        self._states: dict[tuple, Any] = {}
        self._kinds: dict[str, set[tuple]] = {}  # kind -> keys holding state
        self._prepared: DeltaGroup | None = None
        self._digest: bytes | None = None  # cached until the state changes
        # What the digest hashes, kept per key (dropped when that key changes), and the keys'
        # canonical order, into which added keys are inserted: a digest after a change
        # re-encodes only what changed, not the whole state. A key's canonical form, which
        # orders it, is kept for good (keys are never removed).
        self._forms: dict[tuple, bytes] = {}
        self._order: list[tuple] | None = None
        self._added: list[tuple] = []  # keys added since ``_order`` was last brought up to date
        self._key_forms: dict[tuple, bytes] = {}

    def transaction(self, hlc: Timestamp, *, apply: bool = True) -> "_TransactionContext":
        """``with replica.transaction(hlc) as tx: ...``; afterwards ``tx.delta`` is the group.

        If the block raises, nothing changes and ``tx.delta`` stays None. With
        ``apply=False`` the replica is left untouched even on success: the caller makes the
        group durable first and then merges it (merging a group equals applying it) or
        discards it. Until then no other transaction may start: it would compute totals
        without the prepared one, and merging both would lose a write.

        Raises:
            InvalidInput: a prepared transaction is neither merged nor discarded yet.
        """
        if self._prepared is not None:
            raise InvalidInput("a prepared transaction is pending: merge or discard it first")
        return _TransactionContext(self, hlc, apply)

    def discard(self, delta: "DeltaGroup") -> None:
        """Forget a prepared (``apply=False``) transaction that will not be merged."""
        if delta is self._prepared:
            self._prepared = None

    def merge(self, delta: DeltaGroup) -> MergeResult:
        """Apply a delta group all-or-nothing.

        Raises:
            InvalidInput: the group, or any op in it, is invalid; nothing was changed.
        """
        if not isinstance(delta, DeltaGroup):
            raise InvalidInput(f"merge expects a DeltaGroup, got {type(delta).__name__}")
        if self._prepared is not None and delta == self._prepared:
            self._prepared = None  # equal, not only identical: it may come back from storage
        type_of = self.schema.type_of
        ops = delta.ops
        for key, op in ops:
            if type(op) is not type_of(key):
                raise InvalidInput(f"op for {key!r} is a {type(op).__name__}, the key holds {type_of(key).__name__}")
        states = self._states
        conflicts = ()
        self._digest = None
        forms = self._forms
        for key, op in ops:
            state = states.get(key)
            forms.pop(key, None)
            if state is None:
                states[key] = state = op.copy()
                self._kinds.setdefault(key[0], set()).add(key)
                self._added.append(key)
            else:
                state.merge(op)
            if type(state) is Record and state.conflict:
                conflicts += (key,)
        return MergeResult(ops, conflicts)

    def set_state(self, key: tuple, state: Any) -> None:
        """Replace the CRDT at ``key`` with ``state`` (a state computed elsewhere: the
        engine's escrow fold owns its bounded-counter keys).

        Raises:
            InvalidInput: ``state`` is not of the type the key holds.
        """
        crdt = self.schema.type_of(key)
        if type(state) is not crdt:
            raise InvalidInput(f"key {key!r} holds a {crdt.__name__}, not a {type(state).__name__}")
        self._changed((key,))
        self._states[key] = state
        self._kinds.setdefault(key[0], set()).add(key)

    def value(self, key: tuple) -> Any:
        """The value at ``key``; the type's empty value when nothing was written."""
        crdt = self.schema.type_of(key)  # validates the key before it is used to look up
        state = self._states.get(key)
        return (state if state is not None else crdt()).value

    def state(self, key: tuple) -> Any:
        """A copy of the CRDT at ``key`` (for rights, conflicts, stamps)."""
        crdt = self.schema.type_of(key)
        state = self._states.get(key)
        return state.copy() if state is not None else crdt()

    def keys(self, kind: str | None = None) -> Iterator[tuple]:
        """Keys holding state, in canonical order; only those of ``kind`` when given."""
        if kind is not None:
            return iter(sorted(self._kinds.get(kind, ()), key=self._key_form))
        order, added = self._order, self._added
        if added or order is None:
            if order is None or len(added) > 64 or len(order) + len(added) != len(self._states):
                order = sorted(self._states, key=self._key_form)
            else:
                order = order.copy()  # a caller may still be iterating the old list
                for key in added:
                    insort(order, key, key=self._key_form)
            self._order, self._added = order, []
        return iter(order)

    def _key_form(self, key: tuple) -> bytes:
        form = self._key_forms.get(key)
        if form is None:
            form = self._key_forms[key] = canonical(key)
        return form

    def _changed(self, keys) -> None:
        """``keys`` are about to change (or appear): forget what the digest kept of them."""
        self._digest = None
        forms, states = self._forms, self._states
        for key in keys:
            forms.pop(key, None)
            if key not in states:
                self._added.append(key)

    def _index(self, keys) -> None:
        for key in keys:
            self._kinds.setdefault(key[0], set()).add(key)

    def digest(self) -> bytes:
        """BLAKE2b-256 of the canonical full state: equal iff the states are equal."""
        if self._digest is not None:
            return self._digest
        forms, states = self._forms, self._states
        parts = []
        for key in self.keys():
            form = forms.get(key)
            if form is None:
                state = states[key]
                if state == type(state)():
                    form = b""  # an empty state hashes as if the key were not there
                else:
                    wire = state.fingerprint() if isinstance(state, Document) else state.to_wire()
                    form = canonical([list(key), wire])
                forms[key] = form
            parts.append(form)
        # One update of the joined forms hashes the same bytes as one update per key, at a
        # fraction of the calls.
        self._digest = hashlib.blake2b(b"".join(parts), digest_size=32, person=b"tillmesh-replica").digest()
        return self._digest

    def to_wire(self) -> list:
        """Full state (a snapshot): ``[version, [[key, type_code, payload], ...]]``, ids explicit."""
        schema = self.schema
        rows = [[schema.key_to_wire(key), self._states[key].CODE, self._states[key].to_wire()[2]] for key in self.keys()]
        return [GROUP_VERSION, rows]

    @classmethod
    def from_wire(cls, replica_id: Any, obj: Any, *, schema: Schema = DEFAULT_SCHEMA) -> "Replica":
        """Restore a snapshot made by ``to_wire``.

        Raises:
            MalformedWire: the snapshot is not of that shape.
        """
        version, rows = wire_list(obj, "replica snapshot", length=2)
        if type(version) is not int or version != GROUP_VERSION:
            raise MalformedWire(f"replica snapshot: unsupported version {version!r}")
        replica = cls(replica_id, schema=schema)
        for row in wire_list(rows, "replica snapshot rows"):
            raw_key, code, payload = wire_list(row, "replica snapshot row", length=3)
            key = schema.key_from_wire(raw_key)
            crdt = schema.type_of(key)
            if type(code) is not int or CRDT_CODES.get(code) is not crdt or key in replica._states:
                raise MalformedWire(f"snapshot row for {key!r}: bad type code {code!r} or repeated key")
            replica._states[key] = crdt.from_payload(payload)
        replica._index(replica._states)
        replica._digest = None
        return replica

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Replica):
            return NotImplemented
        return self.digest() == other.digest()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Replica({self.replica_id!r}, keys={len(self._states)})"


class _TransactionContext:
    def __init__(self, replica: Replica, hlc: Timestamp, apply: bool) -> None:
        self._tx = Transaction(replica, hlc)
        self._apply = apply

    def __enter__(self) -> Transaction:
        return self._tx

    def __exit__(self, exc_type, exc, tb) -> bool:
        tx = self._tx
        if exc_type is not None:
            return False
        # The group carries the highest stamp inside it, so that a receiver judging clock
        # skew by the group's stamp judges every register write in it.
        tx.delta = DeltaGroup(tx.stamp, tx._replica.replica_id, tuple(tx._deltas.items()))
        if self._apply:
            tx._replica._changed(tx._work)
            tx._replica._states.update(tx._work)
            tx._replica._index(tx._work)
        else:
            tx._replica._prepared = tx.delta
        return False
