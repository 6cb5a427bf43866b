"""Document: a shared open order edited on several devices at once, backed by pycrdt (Yrs).

The state is a pycrdt ``Doc`` with two roots: ``fields`` (a map: table, customer, status…)
and ``lines`` (an array of line items). A delta is the Yrs update produced by one
transaction; merge is ``apply_update``, which is commutative, idempotent and tolerant of
out-of-order delivery (Yrs holds updates whose dependencies are missing until they arrive).

Yrs needs a client id per writer that never collides within a document. Integer replica
ids (device numbers, which is what the wire uses) map to themselves, which is injective;
any other replica id is hashed into the range above 2**52, where no device number lands.

The state of a copy is ``_log``: every update it has merged, folded into one with
``merge_updates``, which is a pure function of the set of updates and loses nothing.
The readable ``Doc`` is only a view, rebuilt from the log when it is next read after a
merge. Applying updates to a live ``Doc`` one by one is not safe when they arrive out of
order: Yrs keeps one pending update and an older pending one can be dropped when another
unintegrable update arrives (found by the property tests: deltas d3, d2, d1 of one writer,
delivered backwards, lost d3). Equality compares the integrated state (state vector and
content); an update still waiting for its predecessors is not visible to it.

Yrs stores small integers as doubles (JavaScript numbers). Floats are refused on input, so
every integral double read back is turned into an int again.

Update bytes from the network are walked by ``parse_update`` (_yupdate.py) before Yrs sees
them: Yrs reserves memory for whatever counts an update declares, and only the parse can
tell which client ids write structs in it, which the engine checks against the sender.

The parse also says how the update's items attach, and ``from_payload`` admits only the
shape this document has (``_check_shape``): items under the root ``fields`` (by map key)
or ``lines`` (no key), or implied by an origin, holding plain data. An update is judged by
its bytes alone, never by the state it will be merged into: replicas receive deltas in
different orders, and a refusal that depended on what a replica already holds would make
them hold different sets of updates for good. This matters because Yrs itself refuses
late: an item that names another client's plain item as its parent waits harmlessly in an
empty document, but once that item is present Yrs cannot integrate it, and every later
rebuild of the view raises. As a last line, reading a view that Yrs cannot build raises
``IntegrityError``, never a bare Yrs error.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import pycrdt

from ._check import canonical, require_int, require_replica, require_value, wire_header
from ._errors import IntegrityError, InvalidInput, MalformedWire, TillmeshError
from ._yupdate import MAX_UPDATE_BYTES, UpdateInfo, parse_update

__all__ = ["Document", "client_id_for"]

# Yrs stores numbers as doubles: integers beyond 2**53 would come back rounded.
MAX_DOC_INT = 2**53 - 1
MAX_LINES = 1000
_DEVICE_ID_LIMIT = 2**52
# Client id of a copy that only receives; it is never used to write.
_READER_CLIENT_ID = 2**53 - 1
# The two roots of a document: ``fields`` is used as a map (its items carry a key),
# ``lines`` as an array (its items carry none).
_MAP_ROOT, _ARRAY_ROOT = "fields", "lines"
# Item content that holds plain data (lib0 any values, strings, bytes) or marks a deletion:
# what a document's own edits write. Nested shared types, subdocuments and rich-text
# format/embed content never are (a format item under a map key even breaks pycrdt's read).
_PLAIN_CONTENTS = frozenset({"any", "string", "binary", "deleted"})


def client_id_for(replica: Any) -> int:
    """The Yrs client id a replica writes documents with."""
    replica = require_replica(replica)
    if isinstance(replica, int) and replica < _DEVICE_ID_LIMIT:
        return replica
    digest = hashlib.blake2b(canonical(replica), digest_size=8, person=b"tillmesh-yclient").digest()
    return _DEVICE_ID_LIMIT + int.from_bytes(digest, "big") % (_DEVICE_ID_LIMIT - 1)


def _plain(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bytearray):
        return bytes(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _require_doc_ints(name: str, value: Any) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_DOC_INT:
        raise InvalidInput(f"{name}: documents hold integers up to {MAX_DOC_INT} (Yrs stores doubles), got {value}")
    if isinstance(value, list):
        for item in value:
            _require_doc_ints(name, item)
    elif isinstance(value, dict):
        for item in value.values():
            _require_doc_ints(name, item)


def _read_varuint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise MalformedWire("bad varuint in Yrs state vector")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _check_shape(info: UpdateInfo) -> None:
    """Refuse an update that could not have been written by a document's own edits.

    Judged from the update alone: every replica refuses the same bytes, whatever it holds.

    Raises:
        MalformedWire: an item names an item as its parent (only a nested shared type can
            be one, and documents hold none), names a root other than ``fields`` and
            ``lines``, gives a map key under ``lines``, or content is not plain data.
    """
    if info.parent_items:
        client, clock = min(info.parent_items)
        raise MalformedWire(
            f"doc: an item gives item {client}:{clock} as its parent; a document's items "
            f"attach to its roots, never to other items"
        )
    others = info.roots - {_MAP_ROOT, _ARRAY_ROOT}
    if others:
        raise MalformedWire(
            f"doc: an item gives root {sorted(others)[0]!r} as its parent; a document has only "
            f"{_MAP_ROOT!r} and {_ARRAY_ROOT!r}"
        )
    if _ARRAY_ROOT in info.keyed_roots:
        raise MalformedWire(f"doc: an item gives a map key under {_ARRAY_ROOT!r}, which is an array")
    foreign = info.contents - _PLAIN_CONTENTS
    if foreign:
        names = {"type": "a nested shared type", "doc": "a subdocument"}
        kind = sorted(foreign)[0]
        raise MalformedWire(f"doc: an item holds {names.get(kind, kind + ' content')}; a document holds plain data")


@contextmanager
def _yrs_errors(doing: str) -> Iterator[None]:
    """Turn whatever Yrs raises (ValueError, RuntimeError, KeyError, a Rust panic, which is
    a BaseException) into ``IntegrityError``: callers see tillmesh's errors only."""
    try:
        yield
    except (TillmeshError, KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:
        raise IntegrityError(f"doc: Yrs cannot {doing} ({type(exc).__name__}: {exc})") from exc


def _state_vector(data: bytes) -> tuple[tuple[int, int], ...]:
    count, pos = _read_varuint(data, 0)
    pairs = []
    for _ in range(count):
        client, pos = _read_varuint(data, pos)
        clock, pos = _read_varuint(data, pos)
        pairs.append((client, clock))
    return tuple(sorted(pairs))


class Document:
    TAG = "doc"
    CODE = 5  # one-byte type code inside delta groups
    VERSION = 1

    __slots__ = ("_view", "_writer", "_log", "_parsed")

    def __init__(self) -> None:
        self._view: pycrdt.Doc | None = None  # rebuilt from the log on demand
        self._writer: Any = None
        self._log: bytes = pycrdt.Doc(client_id=_READER_CLIENT_ID).get_update()
        # The parse of the log it was made from: valid while that log is still ``_log``.
        self._parsed: tuple[bytes, UpdateInfo] | None = None

    @property
    def _doc(self) -> pycrdt.Doc:
        if self._view is None:
            client = _READER_CLIENT_ID if self._writer is None else client_id_for(self._writer)
            view = pycrdt.Doc(client_id=client)
            with _yrs_errors("rebuild the document from its log"):
                view.apply_update(self._log)
            self._view = view
        return self._view

    @property
    def value(self) -> dict:
        """``{"fields": {...}, "lines": [...]}`` as plain Python data.

        Raises:
            IntegrityError: Yrs cannot build or read the state. Not expected of a state
                made only of updates that ``from_payload`` admitted or this document's
                edits wrote (the property tests merge such updates in any order).
        """
        doc = self._doc
        with _yrs_errors("read the document"):
            fields = doc.get(_MAP_ROOT, type=pycrdt.Map)
            lines = doc.get(_ARRAY_ROOT, type=pycrdt.Array)
            return {"fields": _plain(fields.to_py() or {}), "lines": _plain(lines.to_py() or [])}

    def change(self, replica: Any, edit: Callable[[pycrdt.Map, pycrdt.Array], None]) -> "Document":
        """Run ``edit(fields, lines)`` in one Yrs transaction written by ``replica``.

        The edit must itself validate what it writes; prefer the typed helpers below.
        Returns:
            The delta: a document holding exactly this transaction's update.
        """
        self._become_writer(require_replica(replica))
        before = self._doc.get_state()
        fields = self._doc.get("fields", type=pycrdt.Map)
        lines = self._doc.get("lines", type=pycrdt.Array)
        with self._doc.transaction():
            edit(fields, lines)
        update = self._doc.get_update(before)
        self._log = pycrdt.merge_updates(self._log, update)
        return Document._from_update(update)

    def set_field(self, replica: Any, name: str, value: Any) -> "Document":
        if not isinstance(name, str) or not 0 < len(name) <= 64:
            raise InvalidInput(f"field name must be a 1..64 char string, got {name!r}")
        value = require_value(f"field {name!r}", value)
        _require_doc_ints(f"field {name!r}", value)

        def edit(fields: pycrdt.Map, lines: pycrdt.Array) -> None:
            fields[name] = value

        return self.change(replica, edit)

    def add_line(self, replica: Any, line: dict) -> "Document":
        """Append a line item (a map of plain data, integers for quantities and prices)."""
        if not isinstance(line, dict):
            raise InvalidInput(f"a line item must be a map, got {type(line).__name__}")
        line = require_value("line item", line)
        _require_doc_ints("line item", line)
        if len(self._doc.get("lines", type=pycrdt.Array)) >= MAX_LINES:
            raise InvalidInput(f"an order holds at most {MAX_LINES} lines")

        def edit(fields: pycrdt.Map, lines: pycrdt.Array) -> None:
            lines.append(line)

        return self.change(replica, edit)

    def remove_line(self, replica: Any, index: int) -> "Document":
        size = len(self._doc.get("lines", type=pycrdt.Array))
        index = require_int("line index", index, minimum=0)
        if index >= size:
            raise InvalidInput(f"line index {index} out of range (order has {size} lines)")

        def edit(fields: pycrdt.Map, lines: pycrdt.Array) -> None:
            del lines[index]

        return self.change(replica, edit)

    def _become_writer(self, replica: Any) -> None:
        if self._writer == replica:
            return
        # pycrdt fixes the client id at construction: the view is rebuilt under the writer's id.
        self._writer, self._view = replica, None

    @classmethod
    def _from_update(cls, update: bytes) -> "Document":
        delta = cls()
        delta._log = update
        return delta

    def merge(self, other: "Document") -> None:
        if not isinstance(other, Document):
            raise InvalidInput(f"cannot merge {type(other).__name__} into Document")
        # Raises IntegrityError (state unchanged) should Yrs refuse to fold the logs.
        with _yrs_errors("merge the update logs"):
            log = pycrdt.merge_updates(self._log, other._log)
        self._log, self._view = log, None

    def copy(self) -> "Document":
        return Document._from_update(self._log)

    def writers(self) -> frozenset[int]:
        """The Yrs client ids that own structs in this document's update log.

        For a delta this is the writer of its transaction (``client_id_for(replica)``), or
        nothing for a transaction that only deleted. Deleting other clients' items does not
        make a client a writer.

        Returns:
            The client ids, as ``client_id_for`` maps replicas to them.
        """
        parsed = self._parsed
        if parsed is None or parsed[0] is not self._log:
            # The log was written by this process's Yrs, or admitted by from_payload.
            parsed = (self._log, parse_update(self._log, trusted=True))
            self._parsed = parsed
        return parsed[1].writers

    def first_clock(self, client: int) -> int | None:
        """The lowest clock at which ``client`` writes structs in this document's update
        log (for a delta: where its writer's transaction starts), or None."""
        self.writers()  # parses the log if it has not been
        starts = [first for c, first, _ in self._parsed[1].clock_ranges if c == client]
        return min(starts) if starts else None

    def next_clock(self, client: int) -> int:
        """The clock ``client``'s next struct would have here: how far this state holds its writes."""
        doc = self._doc
        with _yrs_errors("read the state vector"):
            state = doc.get_state()
        return dict(_state_vector(state)).get(client, 0)

    def fingerprint(self) -> list:
        """Plain data equal on two replicas iff they hold the same document state.

        Raises:
            IntegrityError: as ``value``.
        """
        doc = self._doc
        with _yrs_errors("read the state vector"):
            state = doc.get_state()
        return [[list(pair) for pair in _state_vector(state)], self.value]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Document):
            return NotImplemented
        return self.fingerprint() == other.fingerprint()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        value = self.value
        return f"Document(fields={len(value['fields'])}, lines={len(value['lines'])})"

    def to_wire(self, *, writer: Any = None) -> list:
        """``["doc", 1, update_bytes]``: the full Yrs update of this state."""
        return [self.TAG, self.VERSION, self._log]

    @classmethod
    def from_wire(cls, obj: Any, *, writer: Any = None) -> "Document":
        """Decode ``[tag, version, payload]``; raises ``MalformedWire`` for anything else."""
        return cls.from_payload(wire_header(obj, cls.TAG, cls.VERSION), writer=writer)

    @classmethod
    def from_payload(cls, payload: Any, *, writer: Any = None) -> "Document":
        """Decode the payload alone (inside a delta group the tag and version are implied).

        Raises:
            MalformedWire: the payload is not a Yrs update within the limits of _yupdate.py,
                or not one of a document's shape (see ``_check_shape``).
        """
        update = payload
        if not isinstance(update, bytes) or len(update) > MAX_UPDATE_BYTES:
            raise MalformedWire(f"doc: expected an update of at most {MAX_UPDATE_BYTES} bytes")
        try:
            # Before Yrs: it would reserve memory for whatever counts the bytes declare.
            info = parse_update(update)
        except MalformedWire as exc:
            raise MalformedWire(f"doc: {exc}") from None
        # From the bytes alone, before Yrs: an item that Yrs can only refuse once the state
        # it is merged into holds its parent must be refused here, on every replica alike.
        _check_shape(info)
        try:
            # The parse bounds this work by the size of the update.
            pycrdt.Doc(client_id=_READER_CLIENT_ID).apply_update(update)  # garbage fails here, not later
            reread = pycrdt.merge_updates(update)
        except BaseException as exc:  # Yrs reports bad input as ValueError, a Rust panic as BaseException
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            raise MalformedWire(f"doc: not a valid Yrs update ({exc})") from None
        # writers() is what the engine admits a delta by, so it must be what Yrs reads:
        # the update as Yrs re-encodes it has to name the same writers.
        try:
            reread_info = parse_update(reread, trusted=True)
        except MalformedWire as exc:
            raise MalformedWire(f"doc: Yrs re-encodes this update into one that does not parse ({exc})") from None
        # Logs are folded with merge_updates, so what it writes must have the shape too.
        _check_shape(reread_info)
        reread_writers = reread_info.writers
        if reread_writers != info.writers:
            raise MalformedWire(
                f"doc: the update declares writers {sorted(info.writers)} but Yrs reads {sorted(reread_writers)}"
            )
        delta = cls._from_update(update)
        delta._parsed = (update, info)
        return delta
