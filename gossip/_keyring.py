"""What a device knows about its network: the Keyring.

A keyring is built by replaying the authority's feed (certificates, revocations, epoch key
grants) in order; ``authority_seq`` says how far. A member's keyring opens the epoch keys
granted to its own device number; a relay's has none, so it can verify everything and read
nothing. Whether an entry is valid is decided from the keyring alone (signature, certificate,
revocation cutoff), never from the receiver's clock: certificate expiry stops handshakes
(``check_peer``) but does not void entries, or entries synced after an expiry would be taken
on some nodes and refused on others. The admin side, which writes the feed, is
``_enrollment.Authority``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from crdt_types import InvalidInput

from ._codec import decode
from ._entry import Entry
from ._errors import MalformedData, Revoked, UnknownOrigin
from ._identity import (
    AUTHORITY_NUMBER,
    Certificate,
    DeviceKey,
    EpochKeyGrant,
    Revocation,
    network_id_for,
    record_from_wire,
)

__all__ = ["Keyring", "MAX_CONTROL_RECORD_BYTES"]

MAX_CONTROL_RECORD_BYTES = 4 * 1024


class Keyring:
    """Keys and certificates of one network, as one device knows them.

    Args:
        authority_key: the authority's Ed25519 public key.
        network_key: the 32-byte secret shared by enrolled nodes (Noise psk).
        device: this device's key, or None for a read-only verifier.
        number: this device's number.
    """

    def __init__(self, authority_key: bytes, network_key: bytes, device: DeviceKey | None = None,
                 number: int | None = None) -> None:
        if not isinstance(authority_key, bytes) or len(authority_key) != 32:
            raise InvalidInput("authority key must be 32 bytes")
        if not isinstance(network_key, bytes) or len(network_key) != 32:
            raise InvalidInput("network key must be 32 bytes")
        self.authority_key = authority_key
        self.network_id = network_id_for(authority_key)
        self._network_key = network_key
        self.device = device
        self.number = number
        self.certificates: dict[int, Certificate] = {}
        self.revocations: dict[int, int] = {}
        self._epoch_keys: dict[int, bytes] = {}
        self.current_epoch: int | None = None
        self.authority_seq = 0  # authority-feed entries applied, in order

    def copy(self) -> "Keyring":
        """An independent keyring in the same state (records are immutable: shared)."""
        return self._copy(self.device, self.number)

    def enrolled_as(self, device: DeviceKey, number: int, grants: Iterable[EpochKeyGrant]) -> "Keyring":
        """This keyring's view of the network for ``device``, enrolled as ``number``: a copy
        holding that device, with the epoch keys of ``grants`` opened. The grants are
        verified (``apply_control``); the rest of the state is this keyring's, already
        verified, which is why only a keyring that opens no grants itself (no device of its
        own) may be copied this way.

        Raises:
            InvalidInput: this keyring has a device of its own.
            BadSignature / MalformedData: a grant that does not verify or does not open.
        """
        if self.device is not None:
            raise InvalidInput("only a keyring without a device of its own can be enrolled as another")
        twin = self._copy(device, number)
        for grant in grants:
            twin.apply_control(grant)
        return twin

    def _copy(self, device: DeviceKey | None, number: int | None) -> "Keyring":
        twin = Keyring(self.authority_key, self._network_key, device, number)
        twin.certificates = dict(self.certificates)
        twin.revocations = dict(self.revocations)
        twin._epoch_keys = dict(self._epoch_keys)
        twin.current_epoch = self.current_epoch
        twin.authority_seq = self.authority_seq
        return twin

    @property
    def network_key(self) -> bytes:
        return self._network_key

    def __repr__(self) -> str:
        return (f"Keyring(network={self.network_id.hex()}, number={self.number}, "
                f"devices={len(self.certificates)}, epochs={sorted(self._epoch_keys)})")

    @property
    def is_member(self) -> bool:
        """True when this device can open entries of the current epoch."""
        return self.current_epoch is not None and self.current_epoch in self._epoch_keys

    @property
    def certificate(self) -> Certificate | None:
        return self.certificates.get(self.number) if self.number is not None else None

    def epoch_key(self, epoch: int) -> bytes | None:
        return self._epoch_keys.get(epoch)

    def signing_key_of(self, origin: int) -> bytes:
        """The Ed25519 key that signs ``origin``'s feed.

        Raises:
            UnknownOrigin: no certificate for that device number.
        """
        if origin == AUTHORITY_NUMBER:
            return self.authority_key
        cert = self.certificates.get(origin)
        if cert is None:
            raise UnknownOrigin(f"no certificate for device {origin}")
        return cert.device_key

    def check_origin(self, origin: int, seq: int) -> None:
        """Raise unless entry ``seq`` of ``origin`` may be accepted: a function of the
        authority feed alone, so every node reaches the same verdict whenever it asks.

        Raises:
            UnknownOrigin: no certificate for ``origin`` (yet).
            Revoked: ``seq`` is past the origin's revocation cutoff.
        """
        if origin == AUTHORITY_NUMBER:
            return
        if origin not in self.certificates:
            raise UnknownOrigin(f"no certificate for device {origin}")
        cutoff = self.revocations.get(origin)
        if cutoff is not None and seq > cutoff:
            raise Revoked(f"device {origin} was revoked after seq {cutoff}; entry seq {seq} refused")

    def check_peer(self, cert: Certificate, now_ms: int) -> None:
        """Raise unless ``cert`` is valid for a live session at ``now_ms``."""
        cert.verify(self.authority_key, self.network_id)
        if cert.number in self.revocations:
            raise Revoked(f"device {cert.number} ({cert.name}) is revoked")
        known = self.certificates.get(cert.number)
        if known is not None and known.device_key != cert.device_key:
            raise UnknownOrigin(f"device number {cert.number} belongs to another key")
        cert.check_time(now_ms)

    def apply_control(self, record: Any) -> Any:
        """Take in one control record (verifying its signature); returns it.

        A revocation cutoff only ever tightens: of all cutoffs published for a device, the
        lowest holds, so a second, looser revocation cannot bring entries back.
        """
        record.verify(self.authority_key, self.network_id)
        if isinstance(record, Certificate):
            self.certificates[record.number] = record
        elif isinstance(record, Revocation):
            previous = self.revocations.get(record.number)
            self.revocations[record.number] = record.last_valid_seq if previous is None else min(previous, record.last_valid_seq)
        elif isinstance(record, EpochKeyGrant):
            self.current_epoch = record.epoch if self.current_epoch is None else max(self.current_epoch, record.epoch)
            if self.device is not None and record.number == self.number:
                self._epoch_keys[record.epoch] = record.open(self.device)
        return record

    def apply_control_entry(self, entry: Entry) -> Any:
        """Decode the record in the next authority-feed entry and apply it; returns the record.

        Raises:
            MalformedData: not an unsealed authority entry, not the next one in order, or
                not a control record.
        """
        if entry.origin != AUTHORITY_NUMBER or entry.epoch is not None:
            raise MalformedData("control records travel in the authority feed, unsealed")
        if entry.seq != self.authority_seq + 1:
            raise MalformedData(f"authority entry {entry.seq} out of order: this keyring has applied "
                                f"{self.authority_seq}")
        record = self.apply_control(record_from_wire(decode(entry.body, limit=MAX_CONTROL_RECORD_BYTES,
                                                            what="control record")))
        self.authority_seq = entry.seq
        return record

    def is_revoked(self, number: int) -> bool:
        return number in self.revocations


