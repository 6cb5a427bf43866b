"""What a device knows about its network: the Keyring, and the Authority that feeds it.

A keyring is built by replaying the authority's feed (certificates, revocations, epoch key
grants). A member's keyring opens the epoch keys granted to its own device number; a relay's
has none, so it can verify everything and read nothing. The ``Authority`` is the admin side:
it creates the network, enrolls devices, revokes them, rolls data-key epochs and writes all
of it as entries of its own feed (origin 0), whose bodies are signed records in the clear.
"""

from __future__ import annotations

import base64
from typing import Any

from crdt_types import InvalidInput

from ._codec import canonical, decode
from ._entry import GENESIS_HASH, Entry
from ._errors import MalformedData, Revoked, UnknownOrigin, WrongNetwork
from ._identity import (
    AUTHORITY_NUMBER,
    MAX_DEVICE_NUMBER,
    Certificate,
    DeviceKey,
    EpochKeyGrant,
    RandomBytes,
    Revocation,
    _random,
    network_id_for,
    record_from_wire,
    sign_record,
    x25519_public_of,
)

__all__ = ["Keyring", "Authority", "import_token", "TOKEN_PREFIX", "MAX_TOKEN_BYTES", "MAX_CONTROL_RECORD_BYTES"]

TOKEN_PREFIX = "tillmesh1:"
# A token carries the authority feed so far: ~300 bytes per enrolled device and epoch.
MAX_TOKEN_BYTES = 4 * 1024 * 1024
MAX_CONTROL_RECORD_BYTES = 4 * 1024
TOKEN_VERSION = 1


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

    def check_origin(self, origin: int, seq: int, now_ms: int) -> None:
        """Raise if ``origin`` may not have entry ``seq`` accepted at ``now_ms``."""
        if origin == AUTHORITY_NUMBER:
            return
        cert = self.certificates.get(origin)
        if cert is None:
            raise UnknownOrigin(f"no certificate for device {origin}")
        cutoff = self.revocations.get(origin)
        if cutoff is not None and seq > cutoff:
            raise Revoked(f"device {origin} was revoked after seq {cutoff}; entry seq {seq} refused")
        cert.check_time(now_ms)

    def check_peer(self, cert: Certificate, now_ms: int) -> None:
        """Raise unless ``cert`` is valid for a live session at ``now_ms``."""
        cert.verify(self.authority_key, self.network_id)
        if cert.number in self.revocations:
            raise Revoked(f"device {cert.number} ({cert.name}) is revoked")
        known = self.certificates.get(cert.number)
        if known is not None and known.device_key != cert.device_key:
            raise UnknownOrigin(f"device number {cert.number} belongs to another key")
        cert.check_time(now_ms)

    def apply_control(self, record: Any) -> None:
        """Take in one control record from the authority feed (verifying its signature)."""
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

    def apply_control_entry(self, entry: Entry) -> None:
        """Decode the record in an authority-feed entry and apply it."""
        if entry.origin != AUTHORITY_NUMBER or entry.epoch is not None:
            raise MalformedData("control records travel in the authority feed, unsealed")
        self.apply_control(record_from_wire(decode(entry.body, limit=MAX_CONTROL_RECORD_BYTES, what="control record")))


class Authority:
    """The network's owner: creates it, enrolls and revokes devices, rolls epochs.

    The authority's own feed is a list of entries kept here (and, once the network runs,
    in the authority node's FeedStore like any other feed).
    """

    def __init__(self, key: DeviceKey, network_key: bytes, random_bytes: RandomBytes) -> None:
        self.key = key
        self._random = random_bytes
        self.keyring = Keyring(key.public, network_key, key, AUTHORITY_NUMBER)
        self.network_id = self.keyring.network_id
        self.feed: list[Entry] = []
        self._epoch_data_keys: dict[int, bytes] = {}

    @classmethod
    def create(cls, random_bytes: RandomBytes, now_ms: int) -> "Authority":
        """A new network: authority key, network key, and data-key epoch 0."""
        authority = cls(DeviceKey.generate(random_bytes), _random(random_bytes, 32), random_bytes)
        authority._new_epoch(now_ms)
        return authority

    def __repr__(self) -> str:
        return f"Authority(network={self.network_id.hex()}, devices={len(self.keyring.certificates)})"

    @property
    def current_epoch(self) -> int:
        return max(self._epoch_data_keys)

    def _publish(self, record: Any) -> Entry:
        signed = sign_record(record, self.key)
        prev = self.feed[-1].hash if self.feed else GENESIS_HASH
        unsigned = Entry(AUTHORITY_NUMBER, len(self.feed) + 1, prev, None, (), canonical(signed.to_wire()), bytes(64))
        entry = Entry(unsigned.origin, unsigned.seq, prev, None, (), unsigned.body, self.key.sign(unsigned.signed_bytes()))
        self.feed.append(entry)
        self.keyring.apply_control(signed)
        return entry

    def _members(self) -> list[Certificate]:
        return [c for n, c in sorted(self.keyring.certificates.items())
                if not c.is_relay and n not in self.keyring.revocations]

    def _grant(self, epoch: int, cert: Certificate) -> None:
        ephemeral, nonce, sealed = EpochKeyGrant.seal(self._epoch_data_keys[epoch], x25519_public_of(cert.device_key), self._random)
        self._publish(EpochKeyGrant(self.network_id, epoch, cert.number, ephemeral, nonce, sealed))

    def _new_epoch(self, now_ms: int) -> int:
        epoch = 0 if not self._epoch_data_keys else self.current_epoch + 1
        self._epoch_data_keys[epoch] = _random(self._random, 32)
        if epoch == 0:
            self._publish(Certificate(self.network_id, AUTHORITY_NUMBER, self.key.public, "authority", "hq",
                                      ("hq", "manager"), now_ms, None))
        for cert in self._members():
            self._grant(epoch, cert)
        return epoch

    def enroll(self, device_key: bytes, *, name: str, branch: str, roles: tuple[str, ...] | list[str],
               now_ms: int, expires_ms: int | None = None, number: int | None = None) -> Certificate:
        """Certify a device and, unless it is a relay, grant it the current epoch's key."""
        taken = set(self.keyring.certificates)
        if number is None:
            number = max(taken) + 1
        if number in taken or not 0 < number <= MAX_DEVICE_NUMBER:
            raise InvalidInput(f"device number {number} is taken or out of range 1..{MAX_DEVICE_NUMBER}")
        if any(c.device_key == device_key for c in self.keyring.certificates.values()):
            raise InvalidInput("that device key is already enrolled")
        cert = Certificate(self.network_id, number, device_key, name, branch, tuple(roles), now_ms, expires_ms)
        self._publish(cert)
        if not cert.is_relay:
            # Every epoch, not just the current one: the new till must read feeds written
            # before the last roll too, or it could never catch up on them.
            for epoch in sorted(self._epoch_data_keys):
                self._grant(epoch, self.keyring.certificates[number])
        return self.keyring.certificates[number]

    def revoke(self, number: int, last_valid_seq: int, now_ms: int) -> int:
        """Revoke a device after ``last_valid_seq`` and roll a new epoch it cannot open.

        Returns:
            The new epoch number.
        """
        if number not in self.keyring.certificates or number == AUTHORITY_NUMBER:
            raise InvalidInput(f"device {number} is not an enrolled device")
        self._publish(Revocation(self.network_id, number, last_valid_seq, now_ms))
        return self._new_epoch(now_ms)

    def token(self, number: int) -> str:
        """The enrollment token for device ``number``: its certificate, the network key and
        the authority feed so far. It is a secret (it carries the network key)."""
        cert = self.keyring.certificates.get(number)
        if cert is None:
            raise InvalidInput(f"device {number} is not enrolled")
        payload = canonical([TOKEN_VERSION, self.keyring.authority_key, self.keyring.network_key,
                             cert.to_wire(), [e.encode() for e in self.feed]])
        return TOKEN_PREFIX + base64.urlsafe_b64encode(payload).decode("ascii").rstrip("=")


def import_token(token: Any, device: DeviceKey | None) -> tuple[Keyring, Certificate, list[Entry]]:
    """Turn an enrollment token into a working keyring for ``device``.

    Returns:
        The keyring (with the authority feed applied), this device's certificate, and the
        authority feed entries (to seed the device's FeedStore).
    Raises:
        MalformedData: not a token, or any part malformed or wrongly signed.
        WrongNetwork / BadSignature: the certificate is not the authority's for this network.
    """
    if not isinstance(token, str) or not token.startswith(TOKEN_PREFIX):
        raise MalformedData(f"a token is a string starting with {TOKEN_PREFIX!r}")
    text = token[len(TOKEN_PREFIX):]
    if len(text) > MAX_TOKEN_BYTES * 4 // 3 + 4:
        raise MalformedData(f"token longer than {MAX_TOKEN_BYTES} bytes")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError):
        raise MalformedData("token is not base64url") from None
    obj = decode(raw, limit=MAX_TOKEN_BYTES, what="token")
    if not isinstance(obj, list) or len(obj) != 5 or obj[0] != TOKEN_VERSION:
        raise MalformedData("token: expected [version, authority key, network key, certificate, feed]")
    _, authority_key, network_key, cert_wire, feed = obj
    if not (isinstance(authority_key, bytes) and len(authority_key) == 32
            and isinstance(network_key, bytes) and len(network_key) == 32 and isinstance(feed, list)):
        raise MalformedData("token: bad keys or feed")
    cert = record_from_wire(cert_wire)
    if not isinstance(cert, Certificate):
        raise MalformedData("token: the certificate field holds another record")
    if device is not None and cert.device_key != device.public:
        raise WrongNetwork("token: the certificate is for another device key")
    keyring = Keyring(authority_key, network_key, device, cert.number)
    cert.verify(authority_key, keyring.network_id)
    from ._feeds import verify_authority_feed

    entries = verify_authority_feed(keyring, feed)
    if keyring.certificates.get(cert.number) != cert:
        raise MalformedData("token: the authority feed does not contain the device's certificate")
    return keyring, cert, entries
