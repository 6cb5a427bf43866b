"""A bounded parser of Yrs update v1 bytes, run on untrusted updates before Yrs sees them.

Yrs trusts the counts it reads: it reserves memory for a declared number of clients,
structs or map entries before reading them, so ten bytes declaring a quarter of a billion
clients cost half a GiB. This module walks the whole v1 structure in pure Python, checks
every count and length against the bytes that remain and against the limits below, and
only then is the update handed to Yrs, whose work is then proportional to its size.

It also answers the question Yrs cannot: which client ids own structs in an update. An
enrolled device may only write structs under its own client id; deleting (through the
delete set) items of other clients is an ordinary edit and does not make one a writer.

The format is lib0 v1 as read by Yrs 0.28 (``Update::decode``, ``ItemContent::decode``,
``Any::decode``, ``IdSet::decode``)::

    update      = varuint(clients) client_section* delete_set
    section     = varuint(structs) varuint(client) varuint(clock) struct*
    struct      = 0 varuint(len)                                   GC
                | 10 varuint(len)                                  Skip
                | info [id(origin)] [id(right origin)] [parent] content
    parent      = (only when neither origin is present)
                  varuint(1) string(root name) | varuint(0) id(parent item),
                  then string(map key) if the info has the parent-sub bit
    id          = varuint(client) varuint(clock)
    delete_set  = varuint(clients) (varuint(client) varuint(ranges) (varuint(clock) varuint(len))*)*

Where Yrs and Yjs disagree, or Yrs cannot read back what it writes, the construct is
refused rather than guessed: such bytes are never produced by pycrdt, and a parser that
reads them differently from Yrs would report the wrong writers.

It also records how items give their parents (``UpdateInfo.roots``, ``keyed_roots``,
``parent_items``) and which kinds of content they hold (nested shared types, subdocuments…):
facts of the bytes alone, by which a caller that knows its document's shape
(``Document.from_payload``) can refuse an update before it is merged, and refuse it alike
on every replica, whatever state each merges it into.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, NoReturn

from ._errors import MalformedWire

__all__ = [
    "UpdateInfo",
    "parse_update",
    "CONTENT_KINDS",
    "MAX_UPDATE_BYTES",
    "MAX_CLIENTS",
    "MAX_STRUCTS",
    "MAX_DELETE_RANGES",
    "MAX_CLIENT_ID",
    "MAX_CLOCK",
    "MAX_ANY_DEPTH",
    "MAX_ANY_INT",
]

# One transaction's update: an order with a hundred lines is a few KiB.
MAX_UPDATE_BYTES = 64 * 1024
# Client sections (and delete-set clients) per update: one per device that ever wrote the
# order. A shop has tens of devices; Yrs reserves a hash-map entry per declared client.
MAX_CLIENTS = 1024
# Structs per update, over all clients: a full order of 1000 lines with its field history
# is a few thousand; Yrs reserves a block slot per declared struct. Every struct takes at
# least two bytes, so a 64 KiB update could declare 32768: this is the tighter bound.
MAX_STRUCTS = 16 * 1024
# Deleted clock ranges per update, over all clients: at most one per struct ever written.
MAX_DELETE_RANGES = 16 * 1024
# Yrs keeps client ids in 53 bits (JavaScript-safe) and silently drops higher bits, so
# 2**53 + 7 would be read as client 7: a larger id is refused, never aliased.
MAX_CLIENT_ID = 2**53 - 1
# Clocks are u32 in Yrs, added to without overflow checks (``clock += len``,
# ``clock..clock + len``, ``end + 1``). Every clock range must end at or below half of
# the u32 range, which leaves room for that arithmetic; reaching it would take one
# device two billion insertions into one order.
MAX_CLOCK = 2**31 - 1
# lib0 ``any`` values (and embedded JSON) nesting: Yrs decodes them recursively on the
# native stack. Document values nest at most 8 levels (``MAX_VALUE_DEPTH`` in _check).
MAX_ANY_DEPTH = 32
# The lib0 "integer" any tag: encoders write it only for JavaScript-safe integers, and
# Yrs turns it into a double, which holds exactly this many bits.
MAX_ANY_INT = 2**53 - 1

_U32 = 2**32 - 1

# Struct info byte (yrs/src/block.rs).
_GC = 0
_SKIP = 10
_HAS_ORIGIN = 0x80
_HAS_RIGHT_ORIGIN = 0x40
_HAS_PARENT_SUB = 0x20
# Yrs reads the content ref from the low four bits and ignores this one; Yjs reads five.
_UNUSED_INFO_BIT = 0x10
_CONTENT_MASK = 0x0F

# Content refs.
_DELETED, _JSON, _BINARY, _STRING, _EMBED, _FORMAT, _TYPE, _ANY, _DOC = range(1, 10)
_MOVE = 11

# The content kinds ``UpdateInfo.contents`` names (JSON and move content are refused).
CONTENT_KINDS = {
    _DELETED: "deleted", _BINARY: "binary", _STRING: "string", _EMBED: "embed",
    _FORMAT: "format", _TYPE: "type", _ANY: "any", _DOC: "doc",
}

# Type refs of ContentType (yrs/src/types/mod.rs).
_XML_ELEMENT = 3
_XML_HOOK = 5
_WEAK_LINK = 7
_PLAIN_TYPE_REFS = {0: "Array", 1: "Map", 2: "Text", 4: "XmlFragment", 6: "XmlText", 9: "Doc", 15: "Undefined"}

# Fewest bytes each repeated element can take, so that a declared count is checked
# against the bytes that remain before anything is read.
_MIN_SECTION_BYTES = 5  # struct count, client, clock, one GC: info and length
_MIN_STRUCT_BYTES = 2  # GC/Skip: info and length; an item is longer
_MIN_DS_CLIENT_BYTES = 4  # client, range count, one range
_MIN_RANGE_BYTES = 2  # clock, length
_MIN_ANY_BYTES = 1  # a tag
_MIN_ENTRY_BYTES = 2  # key length, value tag


@dataclass(frozen=True, slots=True)
class UpdateInfo:
    """What a Yrs update contains, as far as admission checks need to know.

    Attributes:
        writers: client ids that own struct blocks (items, GC or skip ranges) in the update.
            Clients only named by origins, parents or the delete set are not writers.
        deleted_clients: client ids whose clock ranges the delete set marks deleted.
        struct_count: number of structs over all client sections.
        delete_range_count: number of clock ranges in the delete set.
        clock_ranges: ``(client, first clock, end clock)`` per client section, in the
            order of the update; the end is exclusive.
        roots: root type names that items give as their parent. An item states its
            parent only when it has neither origin nor right origin; with one, Yrs gives
            it the parent (and map key) of the origin's item.
        keyed_roots: the root names among ``roots`` given together with a map key
            (parent-sub), i.e. used as a map.
        parent_items: ``(client, clock)`` ids that items give as their parent item, i.e.
            items that would have to hold a nested shared type.
        implied_parents: number of items whose parent is implied by an origin.
        contents: the kinds of item content present, of ``CONTENT_KINDS``: ``"type"`` is a
            nested shared type (ContentType: Array, Map, Text, Xml…), ``"doc"`` a
            subdocument (ContentDoc), ``"format"`` and ``"embed"`` rich-text content.
    """

    writers: frozenset[int]
    deleted_clients: frozenset[int]
    struct_count: int
    delete_range_count: int
    clock_ranges: tuple[tuple[int, int, int], ...]
    roots: frozenset[str] = frozenset()
    keyed_roots: frozenset[str] = frozenset()
    parent_items: frozenset[tuple[int, int]] = frozenset()
    implied_parents: int = 0
    contents: frozenset[str] = frozenset()


def parse_update(update: bytes, *, trusted: bool = False) -> UpdateInfo:
    """Walk a Yrs update v1 from end to end and check every part of it.

    Args:
        update: the update bytes, as ``Doc.get_update`` or ``merge_updates`` write them.
        trusted: the bytes were written by this process's own Yrs (a document's log, which
            may outgrow one wire update). The size limits (``MAX_UPDATE_BYTES``,
            ``MAX_CLIENTS``, ``MAX_STRUCTS``, ``MAX_DELETE_RANGES``), which exist to bound
            the work untrusted bytes can cause, are then not applied; every other check is.

    Returns:
        The writers, deleted clients and counts of the update, and how its items attach.

    Raises:
        MalformedWire: the bytes are not a well-formed update within the limits; the
            message names the part that is wrong and its byte offset.
    """
    if not isinstance(update, bytes):
        raise MalformedWire(f"yrs update: expected bytes, got {type(update).__name__}")
    if not trusted and len(update) > MAX_UPDATE_BYTES:
        raise MalformedWire(f"yrs update: {len(update)} bytes, the limit is {MAX_UPDATE_BYTES}")
    return _Parser(update, trusted).update()


class _Parser:
    __slots__ = ("data", "pos", "trusted", "roots", "keyed_roots", "parent_items", "implied_parents", "contents")

    def __init__(self, data: bytes, trusted: bool) -> None:
        self.data = data
        self.pos = 0
        self.trusted = trusted
        self.roots: set[str] = set()
        self.keyed_roots: set[str] = set()
        self.parent_items: set[tuple[int, int]] = set()
        self.implied_parents = 0
        self.contents: set[str] = set()

    # --- primitives ------------------------------------------------------------------

    def fail(self, what: str, at: int | None = None) -> NoReturn:
        raise MalformedWire(f"yrs update: {what} at byte {self.pos if at is None else at}")

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def u8(self, what: str) -> int:
        if self.pos >= len(self.data):
            self.fail(f"{what}: unexpected end of update")
        byte = self.data[self.pos]
        self.pos += 1
        return byte

    def take(self, size: int, what: str) -> bytes:
        if size > self.remaining():
            self.fail(f"{what}: {size} bytes declared, {self.remaining()} left")
        start = self.pos
        self.pos += size
        return self.data[start:self.pos]

    def varuint(self, what: str, maximum: int = _U32) -> int:
        # Yrs shifts with wrapping_shl, so an overlong or oversized varint reads as some
        # other number there: only the one minimal encoding of a value in range is read.
        start = self.pos
        max_bytes = -(-maximum.bit_length() // 7)
        value = shift = 0
        for index in range(max_bytes):
            byte = self.u8(what)
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                if byte == 0 and index:
                    self.fail(f"{what}: varint has a redundant trailing zero byte", start)
                if value > maximum:
                    self.fail(f"{what}: {value} is above the limit of {maximum}", start)
                return value
            shift += 7
        self.fail(f"{what}: varint longer than {max_bytes} bytes", start)

    def varint(self, what: str) -> int:
        # lib0 signed varint: the first byte has a continuation bit, a sign bit and six
        # value bits, every further byte a continuation bit and seven.
        start = self.pos
        byte = self.u8(what)
        negative = bool(byte & 0x40)
        value, shift, count = byte & 0x3F, 6, 1
        while byte & 0x80:
            if shift >= MAX_ANY_INT.bit_length():
                self.fail(f"{what}: signed varint longer than {count} bytes", start)
            byte = self.u8(what)
            count += 1
            if byte == 0:
                self.fail(f"{what}: signed varint has a redundant trailing zero byte", start)
            value |= (byte & 0x7F) << shift
            shift += 7
        if value > MAX_ANY_INT:
            self.fail(f"{what}: magnitude {value} is above the limit of {MAX_ANY_INT}", start)
        return -value if negative else value

    def count(self, what: str, min_bytes_each: int, limit: int | None = None, *, used: int = 0) -> int:
        """A declared count: checked against the bytes left and, with ``used`` of the
        ``limit`` already taken by earlier counts of the same kind, against the limit."""
        start = self.pos
        value = self.varuint(what)
        if value * min_bytes_each > self.remaining():
            self.fail(
                f"{what}: {value} declared, but {self.remaining()} bytes left hold at most "
                f"{self.remaining() // min_bytes_each}",
                start,
            )
        if limit is not None and not self.trusted and used + value > limit:
            also = f" after {used} before it" if used else ""
            self.fail(f"{what}: {value} declared{also}, the limit is {limit} per update", start)
        return value

    def client(self, what: str) -> int:
        return self.varuint(what, MAX_CLIENT_ID)

    def clock(self, what: str) -> int:
        return self.varuint(what, MAX_CLOCK)

    def length(self, what: str) -> int:
        start = self.pos
        value = self.varuint(what, MAX_CLOCK)
        if value == 0:
            self.fail(f"{what}: zero length", start)
        return value

    def id(self, what: str) -> tuple[int, int]:
        return self.client(f"{what} client"), self.clock(f"{what} clock")

    def buffer(self, what: str) -> bytes:
        size = self.varuint(f"{what} length")
        return self.take(size, what)

    def string(self, what: str) -> str:
        # Yrs reads strings with from_utf8_unchecked: invalid UTF-8 would be undefined
        # behaviour there, so it never gets that far.
        start = self.pos
        raw = self.buffer(what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            self.fail(f"{what}: not UTF-8 ({exc.reason})", start)

    def json(self, what: str) -> None:
        start = self.pos
        text = self.string(what)

        def no_constants(name: str) -> NoReturn:
            raise ValueError(f"{name} is not JSON")

        try:
            value = json.loads(text, parse_constant=no_constants)
        except (ValueError, RecursionError) as exc:
            self.fail(f"{what}: not JSON ({exc})", start)
        if _json_depth(value) > MAX_ANY_DEPTH:
            self.fail(f"{what}: nested deeper than {MAX_ANY_DEPTH} levels", start)

    def any(self, what: str, depth: int) -> None:
        start = self.pos
        tag = self.u8(what)
        if tag in (127, 126, 121, 120):  # undefined, null, false, true
            return
        if tag == 125:
            self.varint(f"{what} integer")
        elif tag == 124:
            self.take(4, f"{what} float32")
        elif tag in (123, 122):
            self.take(8, f"{what} float64" if tag == 123 else f"{what} bigint")
        elif tag == 119:
            self.string(f"{what} string")
        elif tag == 116:
            self.buffer(f"{what} buffer")
        elif tag in (118, 117):
            if depth >= MAX_ANY_DEPTH:
                self.fail(f"{what}: nested deeper than {MAX_ANY_DEPTH} levels", start)
            if tag == 118:
                for _ in range(self.count(f"{what} map size", _MIN_ENTRY_BYTES)):
                    self.string(f"{what} map key")
                    self.any(f"{what} map value", depth + 1)
            else:
                for _ in range(self.count(f"{what} array size", _MIN_ANY_BYTES)):
                    self.any(f"{what} array element", depth + 1)
        else:
            self.fail(f"{what}: unknown any tag {tag}", start)

    # --- structure -------------------------------------------------------------------

    def update(self) -> UpdateInfo:
        writers: set[int] = set()
        ranges: list[tuple[int, int, int]] = []
        structs = 0
        for _ in range(self.count("number of clients", _MIN_SECTION_BYTES, MAX_CLIENTS)):
            start = self.pos
            declared = self.count("number of structs", _MIN_STRUCT_BYTES, MAX_STRUCTS, used=structs)
            if declared == 0:
                # Yrs never writes one; it would make a writer that owns no struct.
                self.fail("client section with no structs", start)
            client = self.client("client id")
            first = clock = self.clock("starting clock")
            for _ in range(declared):
                struct_at = self.pos
                clock += self.struct()
                if clock > MAX_CLOCK:
                    self.fail(f"struct of client {client} ends at clock {clock}, above {MAX_CLOCK}", struct_at)
            structs += declared
            writers.add(client)
            ranges.append((client, first, clock))
        deleted, delete_ranges = self.delete_set()
        if self.pos != len(self.data):
            self.fail(f"{self.remaining()} trailing bytes after the delete set")
        return UpdateInfo(
            frozenset(writers), frozenset(deleted), structs, delete_ranges, tuple(ranges),
            roots=frozenset(self.roots), keyed_roots=frozenset(self.keyed_roots),
            parent_items=frozenset(self.parent_items), implied_parents=self.implied_parents,
            contents=frozenset(self.contents),
        )

    def struct(self) -> int:
        """Read one struct; return its clock length."""
        start = self.pos
        info = self.u8("struct info")
        if info == _GC:
            return self.length("GC length")
        if info == _SKIP:
            return self.length("skip length")
        if info & _UNUSED_INFO_BIT:
            self.fail(f"struct info {info:#04x} has bit 4 set, which Yrs ignores and Yjs does not", start)
        has_origin, has_right = info & _HAS_ORIGIN, info & _HAS_RIGHT_ORIGIN
        if has_origin:
            self.id("origin")
        if has_right:
            self.id("right origin")
        if not (has_origin or has_right):
            # Without an origin the parent is written out; with one it is the origin's.
            # The parent-sub bit is then set but the key is not repeated.
            parent_at = self.pos
            parent = self.varuint("parent info")
            root = None
            if parent == 1:
                root = self.string("parent root name")
                self.roots.add(root)
            elif parent == 0:
                self.parent_items.add(self.id("parent item"))
            else:
                self.fail(f"parent info {parent}, expected 0 (item) or 1 (root)", parent_at)
            if info & _HAS_PARENT_SUB:
                self.string("parent sub (map key)")
                if root is not None:
                    self.keyed_roots.add(root)
        else:
            self.implied_parents += 1
        return self.content(info & _CONTENT_MASK, start)

    def content(self, ref: int, start: int) -> int:
        """Read an item's content; return its clock length (the number of elements)."""
        # Content of length zero is legal: Yrs writes an empty string when an edit splits a
        # surrogate pair, and drops such an item when it reads it, so it takes no clock.
        if ref in CONTENT_KINDS:
            self.contents.add(CONTENT_KINDS[ref])
        if ref == _DELETED:
            return self.varuint("deleted content length", MAX_CLOCK)
        if ref == _BINARY:
            self.buffer("binary content")
            return 1
        if ref == _STRING:
            text = self.string("string content")
            # Yrs counts string items in UTF-16 code units, as JavaScript does.
            return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)
        if ref == _EMBED:
            self.json("embed content")
            return 1
        if ref == _FORMAT:
            self.string("format key")
            self.json("format value")
            return 1
        if ref == _TYPE:
            self.type_ref(start)
            return 1
        if ref == _ANY:
            values = self.count("number of any values", _MIN_ANY_BYTES)
            for _ in range(values):
                self.any("any content", 0)
            return values
        if ref == _DOC:
            self.string("subdocument guid")
            self.any("subdocument options", 0)
            return 1
        if ref == _JSON:
            # Yrs reads one string more than the count it writes (``while remaining >= 0``),
            # so it cannot read back its own JSON content: the extent is ambiguous.
            self.fail("legacy JSON content (ref 2): Yrs and Yjs read its length differently", start)
        if ref == _MOVE:
            self.fail("move content (ref 11): not enabled in this Yrs", start)
        self.fail(f"unknown content ref {ref}", start)

    def type_ref(self, start: int) -> None:
        ref = self.u8("type ref")
        if ref == _XML_ELEMENT:
            self.string("XmlElement name")
        elif ref == _XML_HOOK:
            # Yjs writes a hook name after the ref, Yrs reads none: the extent is ambiguous.
            self.fail("XmlHook type: Yrs and Yjs encode it differently", start)
        elif ref == _WEAK_LINK:
            self.fail("weak link type: not enabled in this Yrs", start)
        elif ref not in _PLAIN_TYPE_REFS:
            self.fail(f"unknown type ref {ref}", start)

    def delete_set(self) -> tuple[set[int], int]:
        deleted: set[int] = set()
        total = 0
        for _ in range(self.count("number of delete-set clients", _MIN_DS_CLIENT_BYTES, MAX_CLIENTS)):
            client_at = self.pos
            client = self.client("delete-set client id")
            ranges = self.count("number of deleted ranges", _MIN_RANGE_BYTES, MAX_DELETE_RANGES, used=total)
            if ranges == 0:
                self.fail(f"delete-set client {client} with no ranges", client_at)
            for _ in range(ranges):
                range_at = self.pos
                clock = self.clock("deleted range clock")
                end = clock + self.length("deleted range length")
                if end > MAX_CLOCK:
                    self.fail(f"deleted range of client {client} ends at clock {end}, above {MAX_CLOCK}", range_at)
            total += ranges
            deleted.add(client)
        return deleted, total


def _json_depth(value: Any) -> int:
    # Iterative, so that the check itself does not recurse on what it is checking.
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            deepest = max(deepest, depth + 1)
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest
