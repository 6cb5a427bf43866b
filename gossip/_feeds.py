"""Taking entries in: verify, detect forks, store; and writing one's own entries.

``Feeds`` couples a keyring and a FeedStore. ``ingest`` is what every node does with an
entry from a peer, in this order, so that nothing unverified is ever stored:

1. shape and size (``Entry.decode``), quarantine;
2. the signature, under the origin's certified key (or the authority's for origin 0);
3. position: a copy of an entry we hold is a no-op; a *different* validly signed entry at
   a seq we hold is a fork, which quarantines the origin and raises ``ForkDetected`` with
   both entries as evidence (Hypercore and Scuttlebutt do the same); a seq beyond the head
   is a gap; a prev_hash that is not our head's hash is a broken chain;
4. the revocation cutoff. Never the certificate's expiry, nor anything else about the
   receiver's clock: every node must reach the same verdict on an entry whenever it
   arrives, or replicas that took it in and replicas that refused it stay apart for good;
5. for members, the body must open under an epoch key we hold and decode to a valid
   delta group (a relay skips this: it cannot read bodies, by design). A group with ops
   this version does not know (a newer device wrote it) is stored all the same and held
   by the applier until an upgrade can read it: mixed versions lose nothing;
6. store; control records of the authority feed are applied to the keyring.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from crdt_types import DEFAULT_SCHEMA, DeltaGroup, InvalidInput, MalformedWire, Schema, UnknownOps

from ._codec import canonical, decode
from ._entry import ENTRY_VERSION, GENESIS_HASH, MAX_DEPS, MAX_ENTRY_BYTES, MAX_SEQ, Entry, open_body, seal
from ._errors import (
    ChainBroken,
    EpochUnavailable,
    ForkDetected,
    MalformedData,
    Quarantined,
    Revoked,
    SeqGap,
    Unauthorized,
    UnreadableEntry,
)
from ._identity import AUTHORITY_NUMBER, MAX_DEVICE_NUMBER, RandomBytes, _random, verify_signature
from ._keyring import Keyring
from ._store import FeedStore

__all__ = ["Feeds", "Ingested", "verify_authority_feed"]


@dataclass(frozen=True, slots=True)
class Ingested:
    """The result of ``Feeds.ingest``: the entry, whether it was new, its opened group (for a
    member), the control record it carried (authority entries), and whether its ops are
    unknown to this version."""

    entry: Entry
    new: bool
    group: DeltaGroup | None = None
    control: Any = None
    unknown_ops: bool = False


class Feeds:
    """Verified feeds of one node.

    Args:
        keyring: this node's keyring (a relay's holds no epoch keys).
        store: where verified entries are kept.
        schema: the key table delta groups are decoded against.
    """

    def __init__(self, keyring: Keyring, store: FeedStore, schema: Schema = DEFAULT_SCHEMA) -> None:
        self.keyring = keyring
        self.store = store
        self.schema = schema

    def ingest(self, data: bytes) -> Ingested:
        """Verify and store one encoded entry.

        Raises:
            MalformedData, BadSignature, UnknownOrigin, Revoked, SeqGap, ChainBroken,
            ForkDetected, Quarantined, EpochUnavailable, DecryptionError, UnreadableEntry:
            the entry was refused and nothing was stored (``ForkDetected`` quarantines).
        """
        entry = Entry.decode(data)
        data = bytes(data)
        if entry.origin in self.store.quarantined():
            raise Quarantined(f"device {entry.origin} is quarantined after a fork")
        if (entry.epoch is None) != (entry.origin == AUTHORITY_NUMBER):
            raise MalformedData(f"entry {entry.origin}/{entry.seq}: device entries are sealed, "
                                "authority entries are not")
        head = self.store.head(entry.origin)
        head_seq = head.seq if head else 0
        held = self.store.get(entry.origin, entry.seq) if entry.seq <= head_seq else None
        if held == data:
            # Byte for byte what was verified when it was stored: a redundant copy (peers
            # forward what we may hold already) needs no second signature check.
            return Ingested(entry, False)
        verify_signature(self.keyring.signing_key_of(entry.origin), entry.signed_bytes(), entry.signature,
                         f"entry {entry.origin}/{entry.seq}")
        if entry.seq <= head_seq:
            # Only a validly signed different entry is a fork: anyone could forge the other kind.
            self.store.quarantine(entry.origin, (held, data))
            raise ForkDetected(f"device {entry.origin} signed two different entries at seq {entry.seq}",
                               origin=entry.origin, seq=entry.seq, evidence=(held, data))
        self.keyring.check_origin(entry.origin, entry.seq)
        if entry.seq > head_seq + 1:
            raise SeqGap(f"feed {entry.origin}: got seq {entry.seq}, expected {head_seq + 1}")
        if entry.prev_hash != (head.hash if head else GENESIS_HASH):
            raise ChainBroken(f"feed {entry.origin}: seq {entry.seq} does not chain to our seq {head_seq}")
        group = control = None
        unknown = False
        if entry.origin == AUTHORITY_NUMBER:
            if entry.seq > self.keyring.authority_seq:  # else the keyring had it from a token
                control = self.keyring.apply_control_entry(entry)
        elif self.keyring.device is not None and not _is_relay(self.keyring):
            try:
                group = self.open(entry)
            except UnknownOps:
                unknown = True
        self.store.append(entry.origin, entry.seq, entry.hash, data)
        return Ingested(entry, True, group, control, unknown)

    def catch_up_authority(self) -> None:
        """Apply the stored authority entries the keyring has not seen (it was built from an
        older token): devices enrolled later, revocations. A restart that skipped them would
        forget every device enrolled after this one.

        Raises:
            BadSignature, MalformedData: a stored authority entry does not verify.
        """
        keyring = self.keyring
        for data in self.store.read(AUTHORITY_NUMBER, keyring.authority_seq + 1):
            entry = Entry.decode(data)
            verify_signature(keyring.authority_key, entry.signed_bytes(), entry.signature,
                             f"authority entry {entry.seq}")
            keyring.apply_control_entry(entry)

    def open(self, entry: Entry) -> DeltaGroup:
        """Decrypt and decode a member entry's delta group.

        Raises:
            EpochUnavailable: this keyring holds no key for the entry's epoch.
            DecryptionError: the body does not open.
            UnreadableEntry: the plaintext is not a valid delta group.
            UnknownOps: a valid group with ops this version does not know.
        """
        if entry.epoch is None:
            raise MalformedData(f"entry {entry.origin}/{entry.seq}: device entries must be sealed")
        key = self.keyring.epoch_key(entry.epoch)
        if key is None:
            raise EpochUnavailable(f"entry {entry.origin}/{entry.seq} is sealed under epoch {entry.epoch}, "
                                   "which this device does not hold")
        # The plaintext is authenticated by the AEAD tag, so its encoding cannot be malleated.
        try:
            payload = decode(open_body(entry, key), limit=MAX_ENTRY_BYTES, what="entry payload", require_canonical=False)
        except MalformedData as exc:
            raise UnreadableEntry(str(exc)) from None
        try:
            return DeltaGroup.from_wire(payload, entry.origin, schema=self.schema)
        except UnknownOps:
            raise
        except (MalformedWire, InvalidInput) as exc:
            raise UnreadableEntry(f"entry {entry.origin}/{entry.seq}: {exc}") from None

    def append_local(self, group: DeltaGroup, *, deps: dict[int, int] | None = None,
                     random_bytes: RandomBytes) -> Entry:
        """Seal, sign and store (buffered, not yet flushed) this device's next entry.

        Raises:
            InvalidInput: this keyring cannot write (no device key, or not a member), or
                the group is not this device's, or the entry would be too large.
            Unauthorized: this device is revoked and its cutoff is reached: the entry
                would be refused everywhere.
        """
        keyring = self.keyring
        if keyring.device is None or keyring.number is None or not keyring.is_member:
            raise InvalidInput("only an enrolled member with the current epoch key can write entries")
        if group.writer != keyring.number:
            raise InvalidInput(f"delta group written by {group.writer!r}, this device is {keyring.number}")
        head = self.store.head(keyring.number)
        seq = (head.seq if head else 0) + 1
        try:
            keyring.check_origin(keyring.number, seq)
        except Revoked as exc:
            raise Unauthorized(f"this device is revoked: {exc}") from None
        prev = head.hash if head else GENESIS_HASH
        dep_pairs = _check_deps(deps or {}, keyring.number)
        epoch = keyring.current_epoch
        header = canonical([ENTRY_VERSION, keyring.number, seq, prev, epoch, [list(d) for d in dep_pairs]])
        body = seal(canonical(group.to_wire(schema=self.schema)), header, keyring.epoch_key(epoch), _random(random_bytes, 24))
        entry = Entry.signed(keyring.number, seq, prev, epoch, dep_pairs, body, header, keyring.device.sign)
        encoded = entry.encode()
        if len(encoded) > MAX_ENTRY_BYTES:
            raise InvalidInput(f"entry would be {len(encoded)} bytes, the limit is {MAX_ENTRY_BYTES}; split the transaction")
        # Built here on top of our own verified head: no need to verify it again.
        self.store.append(entry.origin, entry.seq, entry.hash, encoded)
        return entry


def _check_deps(deps: Any, own: int) -> tuple[tuple[int, int], ...]:
    if not isinstance(deps, dict) or len(deps) > MAX_DEPS:
        raise InvalidInput(f"deps must be a dict of at most {MAX_DEPS} origin -> seq")
    for origin, seq in deps.items():
        for value, low, high in ((origin, 0, MAX_DEVICE_NUMBER), (seq, 1, MAX_SEQ)):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise InvalidInput(f"bad dependency {origin!r}: {seq!r}; expected device number -> seq >= 1")
    return tuple(sorted((o, s) for o, s in deps.items() if o != own))


def _is_relay(keyring: Keyring) -> bool:
    cert = keyring.certificate
    return cert is None or cert.is_relay


def verify_authority_feed(keyring: Keyring, feed: list[Any], *, records: list[Any] | None = None) -> list[Entry]:
    """Verify an authority feed (a list of encoded entries) from seq 1 and apply it to
    ``keyring``; the control records it held are appended to ``records``, if given."""
    entries = []
    prev = GENESIS_HASH
    for seq, data in enumerate(feed, start=1):
        entry = Entry.decode(data)
        if entry.origin != AUTHORITY_NUMBER or entry.seq != seq or entry.prev_hash != prev:
            raise MalformedData(f"authority feed: entry {seq} is out of place")
        verify_signature(keyring.authority_key, entry.signed_bytes(), entry.signature, f"authority entry {seq}")
        record = keyring.apply_control_entry(entry)
        if records is not None:
            records.append(record)
        prev = entry.hash
        entries.append(entry)
    return entries
