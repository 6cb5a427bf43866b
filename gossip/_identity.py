"""Who may take part in a network: keys, certificates, revocations, data-key epochs.

The **authority** (the shop owner's or chain HQ's Ed25519 key) is the root of trust; the
network id is derived from its public key, so two networks can never be confused. Each
**device** generates its own Ed25519 key pair: the public key is its replica id and feed id,
and its X25519 key (for Noise and for sealed key envelopes) is derived from it with
libsodium's ``crypto_sign_ed25519_*_to_curve25519``. The authority signs:

- a **certificate** per device: its device number (small, unique, 0 = the authority; the
  number names the feed on the wire), key, name, branch, roles, issue time, optional expiry;
- a **revocation**: a device and its last valid seq; entries after the cutoff are refused;
- an **epoch key grant**: a data-key epoch's symmetric key sealed (crypto_box with an
  ephemeral key from the injected random source) to one member device. Relays get none.

Every record is a canonical CBOR array signed under its own context (``_codec.signable``).
"""

from __future__ import annotations

import abc
import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable

import nacl.exceptions
from nacl import bindings as _sodium
import nacl.public
import nacl.signing

from crdt_types import InvalidInput

from ._codec import signable
from ._errors import BadSignature, CertificateExpired, DecryptionError, MalformedData, WrongNetwork

__all__ = [
    "ROLES", "AUTHORITY_NUMBER", "RandomBytes", "network_id_for", "DeviceKey", "Certificate",
    "Revocation", "EpochKeyGrant", "RECORD_TYPES", "record_from_wire", "MAX_DEVICE_NUMBER",
]

RandomBytes = Callable[[int], bytes]

ROLES = frozenset({"cashier", "manager", "stock", "hq", "relay"})
AUTHORITY_NUMBER = 0
# Device numbers index version vectors and CRDT slots on the wire: keep them small.
MAX_DEVICE_NUMBER = 2**20
MAX_NAME_CHARS = 64
RECORD_VERSION = 1


def network_id_for(authority_key: bytes) -> bytes:
    """16 bytes naming the network, derived from the authority's public key."""
    return hashlib.blake2b(authority_key, digest_size=16, person=b"tillmesh-net-id").digest()


def _random(random_bytes: RandomBytes, n: int) -> bytes:
    data = random_bytes(n)
    if not isinstance(data, bytes) or len(data) != n:
        raise InvalidInput(f"random source must return {n} bytes")
    return data


class DeviceKey:
    """An Ed25519 signing key pair and the X25519 keys derived from it."""

    __slots__ = ("_signing", "_secret")

    def __init__(self, seed: bytes) -> None:
        if not isinstance(seed, bytes) or len(seed) != 32:
            raise InvalidInput("a device key seed is 32 bytes")
        self._signing = nacl.signing.SigningKey(seed)
        self._secret = _sodium.crypto_sign_seed_keypair(seed)[1]  # for sign(), without the wrapper

    @classmethod
    def generate(cls, random_bytes: RandomBytes) -> "DeviceKey":
        return cls(_random(random_bytes, 32))

    @property
    def public(self) -> bytes:
        return bytes(self._signing.verify_key)

    @property
    def seed(self) -> bytes:
        """The secret seed, for the node's key file only; never log it."""
        return bytes(self._signing)

    @property
    def x25519_private(self) -> bytes:
        return bytes(self._signing.to_curve25519_private_key())

    @property
    def x25519_public(self) -> bytes:
        return x25519_public_of(self.public)

    def sign(self, message: bytes) -> bytes:
        # libsodium directly, as verify_signature does: SigningKey.sign wraps the same call
        # in a SignedMessage, which was a measurable share of a commit.
        return _sodium.crypto_sign(message, self._secret)[:_sodium.crypto_sign_BYTES]

    def __repr__(self) -> str:
        return f"DeviceKey(public={self.public.hex()[:16]}…)"


def x25519_public_of(ed25519_public: bytes) -> bytes:
    try:
        return bytes(nacl.signing.VerifyKey(ed25519_public).to_curve25519_public_key())
    except Exception:
        raise MalformedData("not a valid Ed25519 public key") from None


def verify_signature(public_key: bytes, message: bytes, signature: bytes, what: str) -> None:
    """Raise ``BadSignature`` unless ``signature`` by ``public_key`` covers ``message``.

    libsodium's ``crypto_sign_open`` is called directly: it is what ``VerifyKey.verify``
    does underneath, without the wrapper's per-call object work, which was a measurable
    share of taking an entry in (a node catching up verifies thousands a second).
    """
    if not (isinstance(public_key, bytes) and len(public_key) == _sodium.crypto_sign_PUBLICKEYBYTES
            and isinstance(signature, bytes) and len(signature) == _sodium.crypto_sign_BYTES
            and isinstance(message, bytes)):
        raise BadSignature(f"{what}: signature does not verify (malformed key or signature)")
    try:
        _sodium.crypto_sign_open(signature + message, public_key)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, TypeError, ValueError):
        raise BadSignature(f"{what}: signature does not verify") from None


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_NAME_CHARS:
        raise InvalidInput(f"{what} must be a 1..{MAX_NAME_CHARS} char string, got {value!r}")
    return value


def _time(value: Any, what: str, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**48:
        raise InvalidInput(f"{what} must be milliseconds since the epoch (int), got {value!r}")
    return value


def _bytes(value: Any, n: int, what: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != n:
        raise InvalidInput(f"{what} must be {n} bytes")
    return value


def _number(value: Any, what: str = "device number") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_DEVICE_NUMBER:
        raise InvalidInput(f"{what} must be an int in 0..{MAX_DEVICE_NUMBER}, got {value!r}")
    return value


class _Signed(abc.ABC):
    """A record signed by the authority: ``[type, body..., signature]`` on the wire."""

    TYPE: str = ""
    CONTEXT: bytes = b""
    signature: bytes

    @abc.abstractmethod
    def body(self) -> list:
        """The record's fields, in wire order, without the signature."""

    def signed_bytes(self) -> bytes:
        return signable(self.CONTEXT, [self.TYPE, RECORD_VERSION, *self.body()])

    def to_wire(self) -> list:
        return [self.TYPE, RECORD_VERSION, *self.body(), self.signature]

    def verify(self, authority_key: bytes, network_id: bytes) -> None:
        """Raise ``WrongNetwork`` or ``BadSignature`` unless the authority signed this for this network."""
        if self.network_id != network_id:
            raise WrongNetwork(f"{self.TYPE} belongs to network {self.network_id.hex()}, not {network_id.hex()}")
        verify_signature(authority_key, self.signed_bytes(), self.signature, self.TYPE)


@dataclass(frozen=True)
class Certificate(_Signed):
    network_id: bytes
    number: int
    device_key: bytes
    name: str
    branch: str
    roles: tuple[str, ...]
    issued_ms: int
    expires_ms: int | None
    signature: bytes = field(default=b"", repr=False)

    TYPE = "cert"
    CONTEXT = b"tillmesh/v1/certificate"

    def __post_init__(self) -> None:
        _bytes(self.network_id, 16, "network id")
        _number(self.number)
        _bytes(self.device_key, 32, "device key")
        _text(self.name, "device name")
        _text(self.branch, "branch")
        if (not isinstance(self.roles, tuple) or not self.roles
                or not all(isinstance(role, str) for role in self.roles) or not set(self.roles) <= ROLES):
            raise InvalidInput(f"roles must be a non-empty tuple drawn from {sorted(ROLES)}, got {self.roles!r}")
        if list(self.roles) != sorted(set(self.roles)):
            object.__setattr__(self, "roles", tuple(sorted(set(self.roles))))
        _time(self.issued_ms, "issue time")
        _time(self.expires_ms, "expiry", optional=True)
        if self.expires_ms is not None and self.expires_ms <= self.issued_ms:
            raise InvalidInput("a certificate must expire after it is issued")

    @property
    def is_relay(self) -> bool:
        return "relay" in self.roles

    def body(self) -> list:
        return [self.network_id, self.number, self.device_key, self.name, self.branch,
                list(self.roles), self.issued_ms, self.expires_ms]

    def check_time(self, now_ms: int) -> None:
        """Raise ``CertificateExpired`` when ``now_ms`` is at or past the expiry."""
        if self.expires_ms is not None and now_ms >= self.expires_ms:
            raise CertificateExpired(
                f"certificate of device {self.number} ({self.name}) expired at {self.expires_ms}, now {now_ms}")


@dataclass(frozen=True)
class Revocation(_Signed):
    network_id: bytes
    number: int
    last_valid_seq: int
    issued_ms: int
    signature: bytes = field(default=b"", repr=False)

    TYPE = "revoke"
    CONTEXT = b"tillmesh/v1/revocation"

    def __post_init__(self) -> None:
        _bytes(self.network_id, 16, "network id")
        if _number(self.number) == AUTHORITY_NUMBER:
            raise InvalidInput("the authority cannot be revoked")
        if isinstance(self.last_valid_seq, bool) or not isinstance(self.last_valid_seq, int) or self.last_valid_seq < 0:
            raise InvalidInput(f"last valid seq must be an int >= 0, got {self.last_valid_seq!r}")
        _time(self.issued_ms, "issue time")

    def body(self) -> list:
        return [self.network_id, self.number, self.last_valid_seq, self.issued_ms]


@dataclass(frozen=True)
class EpochKeyGrant(_Signed):
    """One epoch's data key, sealed to one member device."""

    network_id: bytes
    epoch: int
    number: int
    ephemeral: bytes
    nonce: bytes
    sealed: bytes
    signature: bytes = field(default=b"", repr=False)

    TYPE = "epoch-key"
    CONTEXT = b"tillmesh/v1/epoch-key"

    def __post_init__(self) -> None:
        _bytes(self.network_id, 16, "network id")
        _number(self.epoch, "epoch")
        _number(self.number)
        _bytes(self.ephemeral, 32, "ephemeral key")
        _bytes(self.nonce, 24, "nonce")
        _bytes(self.sealed, 48, "sealed key")

    def body(self) -> list:
        return [self.network_id, self.epoch, self.number, self.ephemeral, self.nonce, self.sealed]

    @staticmethod
    def seal(data_key: bytes, recipient_x25519: bytes, random_bytes: RandomBytes) -> tuple[bytes, bytes, bytes]:
        """crypto_box the key to the recipient with a fresh ephemeral key; returns (ephemeral, nonce, sealed)."""
        ephemeral = nacl.public.PrivateKey(_random(random_bytes, 32))
        nonce = _random(random_bytes, 24)
        box = nacl.public.Box(ephemeral, nacl.public.PublicKey(recipient_x25519))
        sealed = box.encrypt(data_key, nonce).ciphertext
        return bytes(ephemeral.public_key), nonce, sealed

    def open(self, device: DeviceKey) -> bytes:
        """The epoch's data key, for the device it was sealed to."""
        box = nacl.public.Box(nacl.public.PrivateKey(device.x25519_private), nacl.public.PublicKey(self.ephemeral))
        try:
            return box.decrypt(self.sealed, self.nonce)
        except nacl.exceptions.CryptoError:
            raise DecryptionError(f"epoch {self.epoch} key grant does not open with this device key") from None


RECORD_TYPES = {cls.TYPE: cls for cls in (Certificate, Revocation, EpochKeyGrant)}


def record_from_wire(obj: Any) -> Certificate | Revocation | EpochKeyGrant:
    """Decode a control record (signature not yet verified).

    Raises:
        MalformedData: not a known record of the right shape.
    """
    if not isinstance(obj, list) or len(obj) < 3:
        raise MalformedData("control record: expected an array [type, version, ..., signature]")
    cls = RECORD_TYPES.get(obj[0]) if isinstance(obj[0], str) else None
    if cls is None or obj[1] != RECORD_VERSION:
        raise MalformedData(f"control record: unknown type or version {obj[:2]!r}")
    fields = obj[2:]
    expected = len(cls.__dataclass_fields__)
    if len(fields) != expected:
        raise MalformedData(f"{cls.TYPE}: expected {expected} fields, got {len(fields)}")
    if cls is Certificate:
        roles = fields[5]
        if not isinstance(roles, list):
            raise MalformedData("cert: roles must be an array")
        fields = [*fields[:5], tuple(roles), *fields[6:]]
    if not isinstance(fields[-1], bytes) or len(fields[-1]) != 64:
        raise MalformedData(f"{cls.TYPE}: signature must be 64 bytes")
    try:
        record = cls(*fields)
    except InvalidInput as exc:
        raise MalformedData(f"{cls.TYPE}: {exc}") from None
    if cls is Certificate and list(record.roles) != fields[5] and list(record.roles) != list(fields[5]):
        raise MalformedData("cert: roles are not in canonical order")
    return record


def sign_record(record: Any, authority: DeviceKey) -> Any:
    """Return ``record`` with the authority's signature filled in."""
    from dataclasses import replace

    return replace(record, signature=authority.sign(record.signed_bytes()))
