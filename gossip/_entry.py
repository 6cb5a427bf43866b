"""Feed entries: sealed, signed, hash-chained.

An entry is the canonical CBOR array ``[version, origin, seq, prev_hash, epoch, deps, body,
signature]``. The first six fields are the header. ``body`` is ``nonce || ciphertext``: the
CBOR payload (a delta group) sealed with XChaCha20-Poly1305 under the epoch's data key, a
random 24-byte nonce from the injected source, and the canonical header as associated data.
The signature is the origin's Ed25519 signature over ``signable(entry, [header, body])``:
sign after encrypt, so anyone, a relay included, can check who wrote an entry and that it
is intact without being able to read it. The entry's hash (BLAKE2b-256 of its encoding) is
the next entry's ``prev_hash``. The authority's feed (origin 0) carries control records,
which relays must read, so its bodies are not sealed: their ``epoch`` is null.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import cbor2
from nacl import bindings as sodium

from crdt_types import canonical

from ._codec import decode, signable
from ._errors import DecryptionError, MalformedData

__all__ = ["Entry", "ENTRY_VERSION", "MAX_ENTRY_BYTES", "MAX_DEPS", "GENESIS_HASH", "entry_hash", "seal", "open_body"]

ENTRY_VERSION = 1
# An entry must fit one Noise transport message (65535 bytes, less tag and frame header)
# with room to spare; a 100-line sale is about 6 KiB, a full order document far less than this.
MAX_ENTRY_BYTES = 60 * 1024
MAX_DEPS = 256
NONCE_BYTES = 24
HASH_BYTES = 32
GENESIS_HASH = bytes(HASH_BYTES)
MAX_SEQ = 2**53


# "context || 0x00 || 0x82" (a two-element array) opens every entry's signable bytes.
_ENTRY_SIGNABLE_PREFIX = signable(b"tillmesh/v1/entry", [])[:-1] + b"\x82"


def entry_hash(encoded: bytes) -> bytes:
    return hashlib.blake2b(encoded, digest_size=HASH_BYTES).digest()


@dataclass(frozen=True)
class Entry:
    origin: int
    seq: int
    prev_hash: bytes
    epoch: int | None
    deps: tuple[tuple[int, int], ...]
    body: bytes
    signature: bytes
    version: int = ENTRY_VERSION

    def header(self) -> list:
        return [self.version, self.origin, self.seq, self.prev_hash, self.epoch, [list(d) for d in self.deps]]

    # Encodings are computed once per entry: verifying, opening and hashing an entry all
    # need them, and re-encoding was most of the cost of taking an entry in.
    @cached_property
    def _header_bytes(self) -> bytes:
        return canonical(self.header())

    @cached_property
    def _encoded(self) -> bytes:
        return canonical([*self.header(), self.body, self.signature])

    def header_bytes(self) -> bytes:
        return self._header_bytes

    @cached_property
    def _body_encoded(self) -> bytes:
        return cbor2.dumps(self.body)

    def signed_bytes(self) -> bytes:
        # signable(ENTRY, [header, body]), assembled from the cached encodings (a decoded
        # entry's body encoding is a slice of what arrived) rather than re-encoding;
        # test_entry_signed_bytes_are_the_signable_form pins it.
        return b"".join((_ENTRY_SIGNABLE_PREFIX, self._header_bytes, self._body_encoded))

    def encode(self) -> bytes:
        return self._encoded

    @cached_property
    def hash(self) -> bytes:
        return entry_hash(self._encoded)

    @classmethod
    def signed(cls, origin: int, seq: int, prev_hash: bytes, epoch: int | None, deps: tuple[tuple[int, int], ...],
               body: bytes, header_bytes: bytes, sign: Any) -> "Entry":
        """A new entry signed with ``sign`` (message -> signature), its encodings assembled
        from ``header_bytes`` (``canonical(header)``, which sealing used already) instead of
        encoding the header three times and the whole entry once more: the canonical form
        is the array head, the header's fields, the body and the signature, as ``decode``
        checks it."""
        body_encoded = _bytes_head(len(body)) + body
        signature = sign(b"".join((_ENTRY_SIGNABLE_PREFIX, header_bytes, body_encoded)))
        entry = cls(origin, seq, prev_hash, epoch, deps, body, signature)
        entry.__dict__["_header_bytes"] = header_bytes
        entry.__dict__["_body_encoded"] = body_encoded
        entry.__dict__["_encoded"] = b"".join((b"\x88", header_bytes[1:], body_encoded, b"\x58\x40", signature))
        return entry

    @classmethod
    def decode(cls, data: bytes) -> "Entry":
        """Parse and shape-check an entry (nothing cryptographic yet).

        Raises:
            MalformedData: oversized, not canonical CBOR, or any field of the wrong shape.
        """
        obj = decode(data, limit=MAX_ENTRY_BYTES, what="entry", require_canonical=False)
        data = bytes(data)
        if not isinstance(obj, list) or len(obj) != 8:
            raise MalformedData("entry: expected an array of 8 fields")
        version, origin, seq, prev_hash, epoch, deps, body, signature = obj
        if version != ENTRY_VERSION:
            raise MalformedData(f"entry: unsupported version {version!r}, expected {ENTRY_VERSION}")
        if not _is_int(origin, 0, 2**20) or not _is_int(seq, 1, MAX_SEQ):
            raise MalformedData(f"entry: bad origin {origin!r} or seq {seq!r}")
        if not isinstance(prev_hash, bytes) or len(prev_hash) != HASH_BYTES:
            raise MalformedData("entry: prev_hash must be 32 bytes")
        if epoch is not None and not _is_int(epoch, 0, 2**20):
            raise MalformedData(f"entry: bad epoch {epoch!r}")
        if not isinstance(deps, list) or len(deps) > MAX_DEPS:
            raise MalformedData(f"entry: deps must be an array of at most {MAX_DEPS} [origin, seq] pairs")
        pairs = []
        for dep in deps:
            if not (isinstance(dep, list) and len(dep) == 2 and _is_int(dep[0], 0, 2**20) and _is_int(dep[1], 1, MAX_SEQ)):
                raise MalformedData(f"entry: bad dependency {dep!r}")
            pairs.append((dep[0], dep[1]))
        if pairs != sorted(set(pairs)) or len({o for o, _ in pairs}) != len(pairs):
            raise MalformedData("entry: deps must be sorted with one pair per origin")
        if not isinstance(body, bytes) or not isinstance(signature, bytes) or len(signature) != 64:
            raise MalformedData("entry: body must be bytes and the signature 64 bytes")
        if epoch is not None and len(body) < NONCE_BYTES + sodium.crypto_aead_xchacha20poly1305_ietf_ABYTES:
            raise MalformedData("entry: sealed body too short for nonce and tag")
        entry = cls(origin, seq, prev_hash, epoch, tuple(pairs), body, signature)
        # Canonical form, checked without re-encoding the body: an entry is the array head,
        # the header's fields, the body and the signature, each encoded minimally. The header
        # is re-encoded (it is small, and signing needs it anyway); the body's and the
        # signature's length prefixes are checked in place.
        header = entry._header_bytes
        body_head = _bytes_head(len(body))
        body_at = len(header)
        if (len(data) != body_at + len(body_head) + len(body) + 2 + 64 or data[0] != 0x88
                or data[1:body_at] != header[1:] or data[body_at:body_at + len(body_head)] != body_head
                or data[-66:-64] != b"\x58\x40"):
            raise MalformedData("entry: not in canonical CBOR form")
        entry.__dict__["_encoded"] = data
        entry.__dict__["_body_encoded"] = memoryview(data)[body_at:len(data) - 66]
        return entry


def _bytes_head(length: int) -> bytes:
    """The canonical CBOR head of a byte string of ``length`` bytes (major type 2)."""
    if length < 24:
        return bytes((0x40 | length,))
    if length < 0x100:
        return bytes((0x58, length))
    if length < 0x10000:
        return b"\x59" + length.to_bytes(2, "big")
    return b"\x5a" + length.to_bytes(4, "big")


def _is_int(value: Any, low: int, high: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and low <= value <= high


def seal(payload: bytes, header: list | bytes, key: bytes, nonce: bytes) -> bytes:
    """XChaCha20-Poly1305 with the canonical header (given as the header, or as its
    canonical encoding) as associated data; returns nonce || ciphertext."""
    associated = header if isinstance(header, bytes) else canonical(header)
    ciphertext = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(payload, associated, nonce, key)
    return nonce + ciphertext


def open_body(entry: Entry, key: bytes) -> bytes:
    """Decrypt a sealed body.

    Raises:
        DecryptionError: wrong key, or body or header altered.
    """
    nonce, ciphertext = entry.body[:NONCE_BYTES], entry.body[NONCE_BYTES:]
    try:
        return sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(ciphertext, entry.header_bytes(), nonce, key)
    except Exception:
        raise DecryptionError(f"entry {entry.origin}/{entry.seq}: body does not open under epoch {entry.epoch}") from None
