"""The admin side of a network: the ``Authority`` and the enrollment tokens it issues.

The authority (the shop owner's or chain HQ's key, possibly kept on an offline admin
machine) creates the network, enrolls devices, revokes them, rolls data-key epochs, and
writes all of it as entries of its own feed (origin 0), whose bodies are signed records in
the clear so that relays can read them. An enrollment token carries what a new device needs
to start: its certificate, the network key, and the authority feed so far. A token is a
secret (it carries the network key).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any

from crdt_types import InvalidInput

from ._codec import canonical, decode
from ._entry import GENESIS_HASH, Entry
from ._errors import MalformedData, WrongNetwork
from ._feeds import verify_authority_feed
from ._identity import (
    AUTHORITY_NUMBER,
    MAX_DEVICE_NUMBER,
    Certificate,
    DeviceKey,
    EpochKeyGrant,
    RandomBytes,
    Revocation,
    _random,
    _time,
    record_from_wire,
    sign_record,
    x25519_public_of,
)
from ._keyring import MAX_CONTROL_RECORD_BYTES, Keyring

__all__ = ["Authority", "import_token", "import_tokens", "TOKEN_PREFIX", "MAX_TOKEN_BYTES"]

TOKEN_PREFIX = "tillmesh1:"
# A token carries the authority feed so far: ~300 bytes per enrolled device and epoch.
MAX_TOKEN_BYTES = 4 * 1024 * 1024
TOKEN_VERSION = 1


class Authority:
    """The network's owner: creates it, enrolls and revokes devices, rolls epochs.

    Constructing one starts a network under ``key``: the authority's own certificate and
    data-key epoch 0 are the first entries of its feed. ``Authority.create`` draws the keys.

    Args:
        key: the authority's signing key (its public key names the network).
        network_key: the 32-byte secret every enrolled node shares (the Noise psk).
        random_bytes: injected randomness (epoch keys, key envelopes).
        now_ms: wall-clock time of creation.

    Raises:
        InvalidInput: a key of the wrong type or size, or a bad time.
    """

    def __init__(self, key: DeviceKey, network_key: bytes, random_bytes: RandomBytes, now_ms: int) -> None:
        if not isinstance(key, DeviceKey):
            raise InvalidInput(f"the authority key must be a DeviceKey, got {type(key).__name__}")
        _time(now_ms, "creation time")
        self.key = key
        self._random = random_bytes
        self.keyring = Keyring(key.public, network_key, key, AUTHORITY_NUMBER)
        self.network_id = self.keyring.network_id
        self.feed: list[Entry] = []
        self._epoch_data_keys: dict[int, bytes] = {}
        self._new_epoch(now_ms)

    @classmethod
    def create(cls, random_bytes: RandomBytes, now_ms: int) -> "Authority":
        """A new network: authority key, network key, and data-key epoch 0."""
        return cls(DeviceKey.generate(random_bytes), _random(random_bytes, 32), random_bytes, now_ms)

    @classmethod
    def restore(cls, key: DeviceKey, network_key: bytes, random_bytes: RandomBytes,
                feed_entries: Iterable[bytes | Entry]) -> "Authority":
        """Rebuild an authority from its keys and its own feed, as kept on the admin machine.

        The feed is verified from seq 1 exactly as a device verifies a token's (signatures,
        chain, order, records), and the data key of every epoch is recovered from the grant
        the authority sealed to itself, so a restored authority enrolls, revokes and rolls
        epochs as the original would. The network key cannot be checked against the feed
        (it appears nowhere in it): a wrong one yields tokens no enrolled node can talk to.
        Restoring from an older copy of the feed (a prefix) is not detectable here either,
        and publishing from it would fork the authority feed: keep the feed file current.

        Args:
            key: the authority's signing key.
            network_key: the network's 32-byte secret.
            random_bytes: injected randomness for what the restored authority publishes.
            feed_entries: the authority feed in order, encoded entries or ``Entry`` objects.
        Returns:
            The authority, its feed and keyring as they were after the last entry.
        Raises:
            InvalidInput: a key of the wrong type or size.
            WrongNetwork: the feed is another authority's (another network).
            MalformedData / BadSignature: the feed is empty, malformed, out of order, wrongly
                signed, or lacks the authority's own certificate or an epoch's key grant.
        """
        if not isinstance(key, DeviceKey):
            raise InvalidInput(f"the authority key must be a DeviceKey, got {type(key).__name__}")
        keyring = Keyring(key.public, network_key, key, AUTHORITY_NUMBER)
        if isinstance(feed_entries, (bytes, str)):
            raise InvalidInput("feed_entries is a sequence of entries, not one byte string")
        encoded = [e.encode() if isinstance(e, Entry) else e for e in feed_entries]
        if not encoded:
            raise MalformedData("authority feed is empty: it starts with the authority's own certificate")
        first_body = Entry.decode(encoded[0]).body
        first = record_from_wire(decode(first_body, limit=MAX_CONTROL_RECORD_BYTES, what="authority entry 1"))
        if first.network_id != keyring.network_id:
            raise WrongNetwork("authority feed belongs to another network (another authority key)")
        entries = verify_authority_feed(keyring, encoded)
        own = keyring.certificates.get(AUTHORITY_NUMBER)
        if own is None or own.device_key != key.public:
            raise MalformedData("authority feed does not hold this authority's own certificate")
        epoch_keys: dict[int, bytes] = {}
        for epoch in range((keyring.current_epoch if keyring.current_epoch is not None else -1) + 1):
            data_key = keyring.epoch_key(epoch)
            if data_key is None:
                raise MalformedData(f"authority feed lacks the authority's own grant of epoch {epoch}")
            epoch_keys[epoch] = data_key
        if not epoch_keys:
            raise MalformedData("authority feed holds no data-key epoch")
        authority = cls.__new__(cls)
        authority.key = key
        authority._random = random_bytes
        authority.keyring = keyring
        authority.network_id = keyring.network_id
        authority.feed = entries
        authority._epoch_data_keys = epoch_keys
        return authority

    def __repr__(self) -> str:
        return f"Authority(network={self.network_id.hex()}, devices={len(self.keyring.certificates)})"

    @property
    def current_epoch(self) -> int:
        """The newest data-key epoch (0 right after creation)."""
        return max(self._epoch_data_keys)

    def _publish(self, record: Any) -> Entry:
        signed = sign_record(record, self.key)
        prev = self.feed[-1].hash if self.feed else GENESIS_HASH
        unsigned = Entry(AUTHORITY_NUMBER, len(self.feed) + 1, prev, None, (), canonical(signed.to_wire()), bytes(64))
        entry = Entry(unsigned.origin, unsigned.seq, prev, None, (), unsigned.body, self.key.sign(unsigned.signed_bytes()))
        self.keyring.apply_control_entry(entry)
        self.feed.append(entry)
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
        """Certify a device and, unless it is a relay, grant it every epoch's key.

        Args:
            number: the device number to assign; the next free one when omitted.
        Raises:
            InvalidInput: the number is taken or out of range, the key is already enrolled,
                or a certificate field is invalid. Nothing is published then.
        """
        taken = set(self.keyring.certificates)
        if number is None:
            number = max(taken) + 1  # the authority's own certificate is always there
        if isinstance(number, bool) or not isinstance(number, int) or number in taken \
                or not 0 < number <= MAX_DEVICE_NUMBER:
            raise InvalidInput(f"device number {number!r} is taken or out of range 1..{MAX_DEVICE_NUMBER}")
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
        Raises:
            InvalidInput: not an enrolled device, or a bad cutoff; nothing is published.
        """
        if number not in self.keyring.certificates or number == AUTHORITY_NUMBER:
            raise InvalidInput(f"device {number} is not an enrolled device")
        self._publish(Revocation(self.network_id, number, last_valid_seq, now_ms))
        return self._new_epoch(now_ms)

    def token(self, number: int) -> str:
        """The enrollment token for device ``number``: its certificate, the network key and
        the authority feed so far. It is a secret (it carries the network key).

        Raises:
            InvalidInput: no such device.
        """
        cert = self.keyring.certificates.get(number)
        if cert is None:
            raise InvalidInput(f"device {number} is not enrolled")
        payload = canonical([TOKEN_VERSION, self.keyring.authority_key, self.keyring.network_key,
                             cert.to_wire(), [e.encode() for e in self.feed]])
        return TOKEN_PREFIX + base64.urlsafe_b64encode(payload).decode("ascii").rstrip("=")


def _read_token(token: Any, device: DeviceKey | None) -> tuple[bytes, bytes, Certificate, list[Any]]:
    """The parts of a token, checked for shape (not yet for signatures): authority key,
    network key, certificate, authority feed."""
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
    return authority_key, network_key, cert, feed


def _check_holds(keyring: Keyring, cert: Certificate) -> None:
    if keyring.certificates.get(cert.number) != cert:
        raise MalformedData("token: the authority feed does not contain the device's certificate")


def import_token(token: Any, device: DeviceKey | None) -> tuple[Keyring, Certificate, list[Entry]]:
    """Turn an enrollment token into a working keyring for ``device``.

    Returns:
        The keyring (with the authority feed applied), this device's certificate, and the
        authority feed entries (to seed the device's FeedStore).
    Raises:
        MalformedData: not a token, or any part malformed or wrongly signed.
        WrongNetwork / BadSignature: the certificate is not the authority's for this network.
    """
    authority_key, network_key, cert, feed = _read_token(token, device)
    keyring = Keyring(authority_key, network_key, device, cert.number)
    cert.verify(authority_key, keyring.network_id)
    entries = verify_authority_feed(keyring, feed)
    _check_holds(keyring, cert)
    return keyring, cert, entries


def import_tokens(pairs: Iterable[tuple[Any, DeviceKey]]) -> list[tuple[Keyring, Certificate, list[Entry]]]:
    """``import_token`` for many devices of one network at once (an installer setting up a
    whole shop, a simulation setting up a chain): the same results, in order, but an
    authority feed that several tokens carry byte for byte is verified once, not once per
    token. Each token's own certificate and its device's key grants are still checked.

    Raises:
        What ``import_token`` raises, for the first bad token (nothing is returned then).
    """
    verified: dict[tuple, tuple[Keyring, list[Entry], dict[int, list[EpochKeyGrant]]]] = {}
    out = []
    for token, device in pairs:
        authority_key, network_key, cert, feed = _read_token(token, device)
        known = (authority_key, network_key, tuple(feed))  # the exact bytes: nothing else is trusted
        if known not in verified:
            verifier = Keyring(authority_key, network_key)  # no device: it opens no grant
            records: list[Any] = []
            entries = verify_authority_feed(verifier, feed, records=records)
            grants: dict[int, list[EpochKeyGrant]] = {}
            for record in records:
                if isinstance(record, EpochKeyGrant):
                    grants.setdefault(record.number, []).append(record)
            verified[known] = (verifier, entries, grants)
        verifier, entries, grants = verified[known]
        keyring = verifier.enrolled_as(device, cert.number, grants.get(cert.number, ()))
        cert.verify(authority_key, keyring.network_id)
        _check_holds(keyring, cert)
        out.append((keyring, cert, list(entries)))
    return out
