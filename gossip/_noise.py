"""The Noise handshake that opens every tillmesh connection, sans-IO.

Theory of operation
-------------------
Two devices that meet on a LAN or through an anchor must prove three things before a single
feed entry moves: that both hold the network key (a machine without it must not even finish a
handshake), who each of them is (the X25519 static key that the certificate exchange will then
bind to a device), and that nobody in the middle changed a byte. We use the Noise Protocol
Framework, revision 34, with ``Noise_XXpsk3_25519_ChaChaPoly_BLAKE2b``:

    -> e
    <- e, ee, s, es
    -> s, se, psk

XX sends both static keys encrypted, so a passive observer learns neither identity. ``psk3``
mixes the network key in at the end of the third message: if the keys differ, the responder
rejects that message. The initiator, having written the last message, is ``complete`` either way;
it learns that the responder holds the network key only when the first transport message from
the responder decrypts, so the session must not trust the peer before that. Nor does psk3 hide
identities from an *active* peer that lacks the network key: message 2 shows the responder's
static key to any initiator, and message 3 shows the initiator's to any responder, because both
are encrypted before the psk is mixed in. (The first message is keyed from public data only, so
anyone can forge it.) Any
other XX psk placement (``psk0+psk2`` …) works as well, because the published multi-psk vectors
exercise it and it costs nothing; ``psk0`` would make a stranger fail on the first message.

The code follows the specification's object model one to one, so that it can be read next to
section 5 of the spec: ``CipherState`` (a key and a 64-bit counter nonce), ``SymmetricState``
(chaining key ``ck`` and transcript hash ``h``) and ``HandshakeState`` (the token interpreter).
Every primitive comes from a library: X25519 and ChaCha20-Poly1305 (IETF, nonce = 4 zero bytes
followed by the little-endian counter) from libsodium through PyNaCl, BLAKE2b-512 from hashlib
and HKDF as the spec's HMAC construction over ``hmac``. Nothing here draws randomness or reads a
clock: the ephemeral key comes from an injected ``random_bytes`` source (or is fixed, as the test
vectors need), and all I/O is the caller's — ``write_message`` hands bytes out, ``read_message``
takes bytes in.

The handshake is a small state machine kept as data (``_TRANSITIONS``): each side alternately
writes or reads; whatever is not in the table is the caller calling out of turn (``OutOfTurn``, a
local error, nothing changes). A message that fails authentication or carries an unusable key is
the peer's doing (``HandshakeFailed``, an ``IntegrityError``), a message of the wrong size is a
``MalformedNoiseMessage`` (a ``RemoteProtocolError``); either kills the handshake for good
(phase ``FAILED``), because the transcript hash has already absorbed the bad bytes and no retry
on the same state could ever succeed. Sizes are checked before any state changes, so an
oversized payload handed to ``write_message`` is refused and the handshake can go on.

``split()`` returns the two transport ciphers already oriented for the local side (send, recv),
and ``TransportCipher`` wraps them with the 65535-byte Noise message limit. Key material never
appears in a ``repr``; Python cannot reliably zero memory, so we only drop references once keys
have been handed over.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
from collections.abc import Callable, Sequence

from nacl import bindings as _sodium
from nacl import exceptions as _nacl_exc

from crdt_types import InvalidInput, TillmeshError

from ._errors import (
    DecryptionFailed,
    HandshakeFailed,
    MalformedNoiseMessage,
    MessageTooLarge,
    NonceExhausted,
    OutOfTurn,
)

__all__ = [
    "PROTOCOL_NAME",
    "MAX_NOISE_MESSAGE",
    "DHLEN",
    "HASHLEN",
    "KEYLEN",
    "TAGLEN",
    "PSKLEN",
    "MAX_NONCE",
    "HandshakeFailed",
    "DecryptionFailed",
    "MalformedNoiseMessage",
    "MessageTooLarge",
    "NonceExhausted",
    "OutOfTurn",
    "CipherState",
    "SymmetricState",
    "HandshakePhase",
    "HandshakeState",
    "TransportCipher",
]

PROTOCOL_NAME = b"Noise_XXpsk3_25519_ChaChaPoly_BLAKE2b"

# Noise spec section 3: every handshake and transport message is at most 65535 bytes, so that it
# fits a 16-bit length prefix; payload + 16-byte tag (+ keys in handshake messages) counts.
MAX_NOISE_MESSAGE = 65535

DHLEN = 32  # X25519 public keys and shared secrets
HASHLEN = 64  # BLAKE2b-512
KEYLEN = 32  # ChaChaPoly keys; HKDF outputs are truncated to this
TAGLEN = 16  # Poly1305 tag
PSKLEN = 32  # spec section 9: pre-shared keys are exactly 32 bytes

# Spec section 5.1: nonce 2**64-1 is reserved (used by REKEY); reaching it ends the CipherState.
MAX_NONCE = 2**64 - 1

_BLOCKLEN = 128  # BLAKE2b block size, the HMAC block size


# --- primitives (thin adapters over libraries) ------------------------------------------------


def _as_bytes(value: object, what: str) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise InvalidInput(f"{what} must be bytes, got {type(value).__name__}")
    return bytes(value)


def _key_bytes(value: object, what: str, length: int) -> bytes:
    data = _as_bytes(value, what)
    if len(data) != length:
        # The length is safe to report; the value is not.
        raise InvalidInput(f"{what} must be exactly {length} bytes, got {len(data)}")
    return data


def _public_key(private: bytes) -> bytes:
    return _sodium.crypto_scalarmult_base(private)


def _dh(private: bytes, public: bytes) -> bytes:
    try:
        return _sodium.crypto_scalarmult(private, public)
    except _nacl_exc.RuntimeError:
        # libsodium refuses an all-zero result, i.e. a low-order point from the peer.
        raise HandshakeFailed(
            "the peer's public key is a low-order X25519 point (shared secret would be zero)"
        ) from None


def _hash(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=HASHLEN).digest()


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.blake2b).digest()


def _hkdf(chaining_key: bytes, ikm: bytes, outputs: int) -> tuple[bytes, ...]:
    # Spec section 4.3: HKDF with HMAC-HASH, two or three HASHLEN outputs.
    temp_key = _hmac(chaining_key, ikm)
    out: list[bytes] = []
    previous = b""
    for i in range(1, outputs + 1):
        previous = _hmac(temp_key, previous + bytes((i,)))
        out.append(previous)
    return tuple(out)


def _nonce(n: int) -> bytes:
    return b"\x00\x00\x00\x00" + n.to_bytes(8, "little")


# --- CipherState ------------------------------------------------------------------------------


class CipherState:
    """A ChaChaPoly key (possibly absent) and a 64-bit message counter (spec section 5.1).

    Without a key, encryption and decryption are the identity, as the spec requires during the
    first handshake messages.
    """

    __slots__ = ("_k", "_n")

    def __init__(self, key: bytes | None = None, n: int = 0) -> None:
        """Create a CipherState.

        Args:
            key: a 32-byte ChaChaPoly key, or None for an empty (pass-through) state.
            n: the next nonce; 0 for a fresh key. Settable for tests and resumption.

        Raises:
            InvalidInput: the key is not 32 bytes or n is outside 0..2**64-1.
        """
        self._k = None if key is None else _key_bytes(key, "cipher key", KEYLEN)
        self.set_nonce(n)

    def __repr__(self) -> str:
        return f"CipherState(keyed={self._k is not None}, n={self._n})"

    @property
    def n(self) -> int:
        """The nonce the next encryption or decryption will use."""
        return self._n

    def has_key(self) -> bool:
        """Return whether a key is set (HasKey in the spec)."""
        return self._k is not None

    def set_nonce(self, n: int) -> None:
        """Set the next nonce (SetNonce in the spec).

        Args:
            n: an integer in 0..2**64-1.

        Raises:
            InvalidInput: n is not such an integer.
        """
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_NONCE:
            raise InvalidInput(f"nonce must be an integer in 0..2**64-1, got {n!r}")
        self._n = n

    def _check_nonce(self) -> None:
        if self._n >= MAX_NONCE:
            raise NonceExhausted(
                "cipher state has used all 2**64-1 nonces; rekeying cannot help, "
                "a new handshake is needed"
            )

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        """Encrypt and authenticate plaintext with associated data, then advance the nonce.

        Args:
            ad: associated data (authenticated, not sent).
            plaintext: the bytes to encrypt.

        Returns:
            ciphertext || 16-byte tag, or the plaintext itself if no key is set.

        Raises:
            NonceExhausted: the nonce reached 2**64-1.
            InvalidInput: ad or plaintext is not bytes.
        """
        ad = _as_bytes(ad, "associated data")
        plaintext = _as_bytes(plaintext, "plaintext")
        if self._k is None:
            return plaintext
        self._check_nonce()
        out = _sodium.crypto_aead_chacha20poly1305_ietf_encrypt(
            plaintext, ad, _nonce(self._n), self._k
        )
        self._n += 1
        return out

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        """Check and decrypt ciphertext with associated data, then advance the nonce.

        On failure the nonce does not advance, as the spec requires.

        Args:
            ad: associated data the sender used.
            ciphertext: ciphertext || tag.

        Returns:
            The plaintext, or the ciphertext itself if no key is set.

        Raises:
            DecryptionFailed: the tag does not verify (or the input is shorter than a tag).
            NonceExhausted: the nonce reached 2**64-1.
            InvalidInput: ad or ciphertext is not bytes.
        """
        ad = _as_bytes(ad, "associated data")
        ciphertext = _as_bytes(ciphertext, "ciphertext")
        if self._k is None:
            return ciphertext
        self._check_nonce()
        if len(ciphertext) < TAGLEN:
            raise DecryptionFailed(
                f"ciphertext is {len(ciphertext)} bytes, shorter than the {TAGLEN}-byte tag"
            )
        try:
            out = _sodium.crypto_aead_chacha20poly1305_ietf_decrypt(
                ciphertext, ad, _nonce(self._n), self._k
            )
        except _nacl_exc.CryptoError:
            raise DecryptionFailed(
                f"ciphertext of {len(ciphertext)} bytes failed authentication at nonce {self._n}"
            ) from None
        self._n += 1
        return out

    def rekey(self) -> None:
        """Replace the key with REKEY(k) (spec section 4.2 default); the nonce is kept.

        Raises:
            InvalidInput: no key is set.
        """
        if self._k is None:
            raise InvalidInput("cannot rekey a cipher state that has no key")
        self._k = _sodium.crypto_aead_chacha20poly1305_ietf_encrypt(
            bytes(KEYLEN), b"", _nonce(MAX_NONCE), self._k
        )[:KEYLEN]


# --- SymmetricState ---------------------------------------------------------------------------


class SymmetricState:
    """The chaining key ``ck``, the transcript hash ``h`` and a CipherState (spec section 5.2)."""

    __slots__ = ("_ck", "_h", "_cipher")

    def __init__(self, protocol_name: bytes) -> None:
        """InitializeSymmetric(protocol_name).

        Args:
            protocol_name: the full Noise protocol name, as bytes.

        Raises:
            InvalidInput: protocol_name is not bytes.
        """
        name = _as_bytes(protocol_name, "protocol name")
        self._h = name + bytes(HASHLEN - len(name)) if len(name) <= HASHLEN else _hash(name)
        self._ck = self._h
        self._cipher = CipherState()

    def __repr__(self) -> str:
        return f"SymmetricState(keyed={self._cipher.has_key()})"

    def has_key(self) -> bool:
        """Return whether the inner CipherState has a key."""
        return self._cipher.has_key()

    def mix_key(self, input_key_material: bytes) -> None:
        """MixKey: ck, temp_k = HKDF(ck, ikm, 2); the cipher gets temp_k (truncated to 32)."""
        self._ck, temp_k = _hkdf(self._ck, input_key_material, 2)
        self._cipher = CipherState(temp_k[:KEYLEN])

    def mix_hash(self, data: bytes) -> None:
        """MixHash: h = HASH(h || data)."""
        self._h = _hash(self._h + data)

    def mix_key_and_hash(self, input_key_material: bytes) -> None:
        """MixKeyAndHash: used for psk tokens (spec section 5.2)."""
        self._ck, temp_h, temp_k = _hkdf(self._ck, input_key_material, 3)
        self.mix_hash(temp_h)
        self._cipher = CipherState(temp_k[:KEYLEN])

    def get_handshake_hash(self) -> bytes:
        """Return h, the transcript hash (64 bytes)."""
        return self._h

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        """EncryptAndHash: encrypt with h as associated data, then mix the ciphertext into h.

        Raises:
            NonceExhausted: see CipherState.encrypt_with_ad.
        """
        ciphertext = self._cipher.encrypt_with_ad(self._h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        """DecryptAndHash: decrypt with h as associated data, then mix the ciphertext into h.

        Raises:
            DecryptionFailed: authentication failed; h is unchanged.
            NonceExhausted: see CipherState.decrypt_with_ad.
        """
        plaintext = self._cipher.decrypt_with_ad(self._h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        """Split: derive the initiator->responder and responder->initiator CipherStates."""
        temp_k1, temp_k2 = _hkdf(self._ck, b"", 2)
        return CipherState(temp_k1[:KEYLEN]), CipherState(temp_k2[:KEYLEN])


# --- handshake patterns -----------------------------------------------------------------------

# Interactive base patterns without pre-messages, as token lists per message (spec section 7).
# Messages alternate, initiator first. Adding a pattern is adding a line here.
_BASE_PATTERNS: dict[str, tuple[tuple[str, ...], ...]] = {
    "XX": (("e",), ("e", "ee", "s", "es"), ("s", "se")),
}
_DH_TOKENS = frozenset({"ee", "es", "se", "ss"})
_SUFFIX = "_25519_ChaChaPoly_BLAKE2b"
_NAME_RE = re.compile(r"Noise_([A-Z][A-Z0-9]*)((?:psk[0-9]+)(?:\+psk[0-9]+)*)?" + _SUFFIX)


def _parse_protocol_name(name: bytes | str) -> tuple[bytes, tuple[tuple[str, ...], ...]]:
    if isinstance(name, str):
        text = name
    else:
        try:
            text = _as_bytes(name, "protocol name").decode("ascii")
        except UnicodeDecodeError:
            raise InvalidInput("protocol name must be ASCII") from None
    match = _NAME_RE.fullmatch(text)
    if match is None:
        raise InvalidInput(
            f"unsupported protocol name {text!r}; expected "
            f"'Noise_<pattern>[pskN[+pskM...]]{_SUFFIX}'"
        )
    base, modifiers = match.group(1), match.group(2)
    if base not in _BASE_PATTERNS:
        raise InvalidInput(
            f"unsupported handshake pattern {base!r}; supported: {sorted(_BASE_PATTERNS)}"
        )
    messages = [list(tokens) for tokens in _BASE_PATTERNS[base]]
    if modifiers:
        positions = [int(m[3:]) for m in modifiers.split("+")]
        if len(set(positions)) != len(positions):
            raise InvalidInput(f"psk modifier repeated in {text!r}")
        for position in positions:
            if position > len(messages):
                raise InvalidInput(
                    f"psk{position} in {text!r}: pattern {base} has only {len(messages)} messages"
                )
            if position == 0:
                messages[0].insert(0, "psk")
            else:
                messages[position - 1].append("psk")
    return text.encode("ascii"), tuple(tuple(tokens) for tokens in messages)


def _message_size(tokens: tuple[str, ...], keyed: bool, psk_mode: bool, payload: int) -> int:
    """Exact size of a handshake message with these tokens and a payload of ``payload`` bytes."""
    size = 0
    for token in tokens:
        if token == "e":
            size += DHLEN
            keyed = keyed or psk_mode
        elif token == "s":
            size += DHLEN + (TAGLEN if keyed else 0)
        else:  # DH tokens and psk all call MixKey / MixKeyAndHash
            keyed = True
    return size + payload + (TAGLEN if keyed else 0)


# --- HandshakeState ---------------------------------------------------------------------------


class HandshakePhase(enum.Enum):
    """Where a HandshakeState stands."""

    WRITING = "writing"  # the next call must be write_message
    READING = "reading"  # the next call must be read_message
    COMPLETE = "complete"  # all messages done; split() hands out the transport ciphers
    SPLIT = "split"  # transport ciphers handed out; only handshake_hash remains
    FAILED = "failed"  # a message failed; the handshake can never complete


class _Event(enum.Enum):
    WROTE = "wrote"  # wrote a message that is not the last
    WROTE_LAST = "wrote_last"
    READ = "read"  # read a message that is not the last
    READ_LAST = "read_last"
    SPLIT = "split"


_TRANSITIONS: dict[HandshakePhase, dict[_Event, HandshakePhase]] = {
    HandshakePhase.WRITING: {
        _Event.WROTE: HandshakePhase.READING,
        _Event.WROTE_LAST: HandshakePhase.COMPLETE,
    },
    HandshakePhase.READING: {
        _Event.READ: HandshakePhase.WRITING,
        _Event.READ_LAST: HandshakePhase.COMPLETE,
    },
    HandshakePhase.COMPLETE: {_Event.SPLIT: HandshakePhase.SPLIT},
    HandshakePhase.SPLIT: {},
    HandshakePhase.FAILED: {},
}


class HandshakeState:
    """One side of a Noise handshake (spec section 5.3), driven by bytes in and bytes out.

    Typical use::

        hs = HandshakeState(initiator=True, prologue=b"tillmesh/1", s=x25519_private,
                            psks=[network_key], random_bytes=rng.randbytes)
        send(hs.write_message(b""))
        payload = hs.read_message(receive())
        send(hs.write_message(b""))
        channel = TransportCipher(*hs.split())
    """

    __slots__ = (
        "_protocol_name",
        "_initiator",
        "_messages",
        "_psk_mode",
        "_symmetric",
        "_s",
        "_s_pub",
        "_e",
        "_e_pub",
        "_fixed_e",
        "_rs",
        "_re",
        "_psks",
        "_random_bytes",
        "_index",
        "_phase",
        "_handshake_hash",
    )

    def __init__(
        self,
        protocol_name: bytes | str = PROTOCOL_NAME,
        *,
        initiator: bool,
        prologue: bytes = b"",
        s: bytes,
        psks: Sequence[bytes] = (),
        e: bytes | None = None,
        random_bytes: Callable[[int], bytes] | None = None,
    ) -> None:
        """Initialize a handshake (Initialize in the spec).

        Args:
            protocol_name: a full Noise protocol name; the pattern must be XX, optionally with
                psk modifiers (``Noise_XXpsk0+psk2_25519_ChaChaPoly_BLAKE2b``). Default:
                ``PROTOCOL_NAME``.
            initiator: True for the side that sends the first message.
            prologue: bytes both sides must agree on; mixed into the transcript, not sent.
            s: the local static X25519 private key, 32 raw bytes.
            psks: one 32-byte pre-shared key per psk modifier, used in token order.
            e: a fixed 32-byte ephemeral private key (test vectors); used for the one ``e``
                token this side writes. If None, ``random_bytes(32)`` supplies it.
            random_bytes: the injected randomness source, called only to make the ephemeral key.

        Raises:
            InvalidInput: unsupported protocol name, wrong key sizes, wrong number of psks, or
                neither ``e`` nor ``random_bytes`` given.
        """
        self._protocol_name, self._messages = _parse_protocol_name(protocol_name)
        if not isinstance(initiator, bool):
            raise InvalidInput(f"initiator must be a bool, got {type(initiator).__name__}")
        self._initiator = initiator
        prologue = _as_bytes(prologue, "prologue")
        self._s = _key_bytes(s, "static private key", DHLEN)
        self._s_pub = _public_key(self._s)
        if isinstance(psks, (bytes, bytearray, memoryview, str)):
            raise InvalidInput("psks must be a sequence of 32-byte keys, not a single value")
        self._psks = [_key_bytes(psk, f"psk #{i}", PSKLEN) for i, psk in enumerate(psks)]
        needed = sum(tokens.count("psk") for tokens in self._messages)
        if len(self._psks) != needed:
            raise InvalidInput(
                f"{self._protocol_name.decode()} needs {needed} psk(s), got {len(self._psks)}"
            )
        self._psk_mode = needed > 0
        self._fixed_e = None if e is None else _key_bytes(e, "ephemeral private key", DHLEN)
        if self._fixed_e is None and random_bytes is None:
            raise InvalidInput("give either a fixed ephemeral key e or a random_bytes source")
        if random_bytes is not None and not callable(random_bytes):
            raise InvalidInput("random_bytes must be callable as random_bytes(n) -> bytes")
        self._random_bytes = random_bytes
        self._e: bytes | None = None
        self._e_pub: bytes | None = None
        self._rs: bytes | None = None
        self._re: bytes | None = None
        self._handshake_hash: bytes | None = None
        self._index = 0

        self._symmetric: SymmetricState | None = SymmetricState(self._protocol_name)
        self._symmetric.mix_hash(prologue)
        self._phase = HandshakePhase.WRITING if initiator else HandshakePhase.READING

    def __repr__(self) -> str:
        role = "initiator" if self._initiator else "responder"
        return (
            f"HandshakeState({self._protocol_name.decode()!r}, {role}, "
            f"phase={self._phase.name}, message={self._index}/{len(self._messages)})"
        )

    # -- observers --

    @property
    def protocol_name(self) -> bytes:
        """The full protocol name this handshake runs."""
        return self._protocol_name

    @property
    def initiator(self) -> bool:
        """Whether this side sent (or will send) the first message."""
        return self._initiator

    @property
    def phase(self) -> HandshakePhase:
        """What the next call must be (see HandshakePhase)."""
        return self._phase

    @property
    def complete(self) -> bool:
        """Whether every handshake message has been written or read successfully."""
        return self._phase in (HandshakePhase.COMPLETE, HandshakePhase.SPLIT)

    @property
    def handshake_hash(self) -> bytes:
        """The final transcript hash h (64 bytes), for channel binding.

        Raises:
            OutOfTurn: the handshake is not complete.
        """
        if self._handshake_hash is None:
            raise OutOfTurn(
                f"handshake hash is only defined once complete (phase {self._phase.name})"
            )
        return self._handshake_hash

    @property
    def remote_static(self) -> bytes | None:
        """The peer's static X25519 public key once received and authenticated, else None."""
        return self._rs

    @property
    def local_static_public(self) -> bytes:
        """The local static X25519 public key."""
        return self._s_pub

    # -- transitions --

    def _fire(self, event: _Event) -> None:
        self._phase = _TRANSITIONS[self._phase][event]

    def _require(self, phase: HandshakePhase, verb: str) -> SymmetricState:
        if self._phase is not phase or self._symmetric is None:
            raise OutOfTurn(
                f"cannot {verb} in phase {self._phase.name} "
                f"(message {self._index} of {len(self._messages)})"
            )
        return self._symmetric

    def _finish_message(self, wrote: bool) -> None:
        self._index += 1
        last = self._index == len(self._messages)
        if last:
            assert self._symmetric is not None
            self._handshake_hash = self._symmetric.get_handshake_hash()
        if wrote:
            self._fire(_Event.WROTE_LAST if last else _Event.WROTE)
        else:
            self._fire(_Event.READ_LAST if last else _Event.READ)

    def _fail(self) -> None:
        self._phase = HandshakePhase.FAILED
        self._symmetric = None
        self._e = None
        self._rs = None

    def _dh_pair(self, token: str) -> tuple[bytes, bytes]:
        # Spec section 5.3: the first letter is the initiator's key, the second the responder's.
        local_first = token[0] if self._initiator else token[1]
        remote_second = token[1] if self._initiator else token[0]
        private = self._e if local_first == "e" else self._s
        public = self._re if remote_second == "e" else self._rs
        if private is None or public is None:  # impossible for valid patterns
            raise HandshakeFailed(f"token {token!r} used before its keys were known")
        return private, public

    def _draw_ephemeral(self) -> bytes:
        if self._fixed_e is not None:
            private, self._fixed_e = self._fixed_e, None
            return private
        if self._random_bytes is None:
            raise InvalidInput("the fixed ephemeral key was used; a random_bytes source is needed")
        private = self._random_bytes(DHLEN)
        if not isinstance(private, (bytes, bytearray)) or len(private) != DHLEN:
            raise InvalidInput(f"random_bytes({DHLEN}) must return {DHLEN} bytes")
        return bytes(private)

    def write_message(self, payload: bytes = b"") -> bytes:
        """Produce the next handshake message (WriteMessage in the spec).

        Args:
            payload: application bytes to carry (encrypted once a key exists). Empty by default.

        Returns:
            The message to send to the peer.

        Raises:
            OutOfTurn: it is not this side's turn to write (or the handshake is over or failed).
            MessageTooLarge: the message would exceed MAX_NOISE_MESSAGE; nothing changed.
            InvalidInput: payload is not bytes, or the random source misbehaved; nothing changed.
            HandshakeFailed: the peer's ephemeral key is a low-order point; the handshake is dead.
        """
        symmetric = self._require(HandshakePhase.WRITING, "write a handshake message")
        payload = _as_bytes(payload, "payload")
        tokens = self._messages[self._index]
        size = _message_size(tokens, symmetric.has_key(), self._psk_mode, len(payload))
        if size > MAX_NOISE_MESSAGE:
            raise MessageTooLarge(
                f"handshake message {self._index + 1} would be {size} bytes with a "
                f"{len(payload)}-byte payload; the limit is {MAX_NOISE_MESSAGE}"
            )
        ephemeral = self._draw_ephemeral() if "e" in tokens else None

        try:
            out = bytearray()
            for token in tokens:
                if token == "e":
                    assert ephemeral is not None
                    self._e, self._e_pub = ephemeral, _public_key(ephemeral)
                    out += self._e_pub
                    symmetric.mix_hash(self._e_pub)
                    if self._psk_mode:
                        symmetric.mix_key(self._e_pub)
                elif token == "s":
                    out += symmetric.encrypt_and_hash(self._s_pub)
                elif token == "psk":
                    symmetric.mix_key_and_hash(self._psks.pop(0))
                else:
                    symmetric.mix_key(_dh(*self._dh_pair(token)))
            out += symmetric.encrypt_and_hash(payload)
        except TillmeshError:
            self._fail()
            raise
        assert len(out) == size
        self._finish_message(wrote=True)
        return bytes(out)

    def read_message(self, message: bytes) -> bytes:
        """Consume the peer's next handshake message (ReadMessage in the spec).

        Args:
            message: the bytes received, exactly one Noise message.

        Returns:
            The payload the peer put in the message.

        Raises:
            OutOfTurn: it is not this side's turn to read; nothing changed.
            InvalidInput: message is not bytes; nothing changed.
            MalformedNoiseMessage: the message is shorter than the pattern requires or longer
                than MAX_NOISE_MESSAGE; the handshake is dead.
            HandshakeFailed: authentication failed (wrong psk, prologue or tampering) or the
                peer's key is unusable; the handshake is dead.
        """
        symmetric = self._require(HandshakePhase.READING, "read a handshake message")
        message = _as_bytes(message, "handshake message")
        tokens = self._messages[self._index]
        number = self._index + 1
        minimum = _message_size(tokens, symmetric.has_key(), self._psk_mode, 0)
        if not minimum <= len(message) <= MAX_NOISE_MESSAGE:
            self._fail()
            raise MalformedNoiseMessage(
                f"handshake message {number} is {len(message)} bytes; expected "
                f"{minimum}..{MAX_NOISE_MESSAGE} for tokens {', '.join(tokens)}"
            )

        try:
            view = memoryview(message)
            for token in tokens:
                if token == "e":
                    self._re = bytes(view[:DHLEN])
                    view = view[DHLEN:]
                    symmetric.mix_hash(self._re)
                    if self._psk_mode:
                        symmetric.mix_key(self._re)
                elif token == "s":
                    length = DHLEN + (TAGLEN if symmetric.has_key() else 0)
                    sealed, view = bytes(view[:length]), view[length:]
                    self._rs = symmetric.decrypt_and_hash(sealed)
                elif token == "psk":
                    symmetric.mix_key_and_hash(self._psks.pop(0))
                else:
                    symmetric.mix_key(_dh(*self._dh_pair(token)))
            payload = symmetric.decrypt_and_hash(bytes(view))
        except DecryptionFailed:
            self._fail()
            raise HandshakeFailed(
                f"handshake message {number} failed authentication "
                "(wrong network key or prologue, or the message was altered)"
            ) from None
        except TillmeshError:
            self._fail()
            raise
        self._finish_message(wrote=False)
        return payload

    def split(self) -> tuple[CipherState, CipherState]:
        """Derive the transport CipherStates, oriented for this side (Split in the spec).

        May be called once; the handshake then keeps only its hash.

        Returns:
            (send, recv): ``send`` encrypts what this side sends, ``recv`` decrypts what the
            peer sends.

        Raises:
            OutOfTurn: the handshake is not complete, or split() was already called.
        """
        symmetric = self._require(HandshakePhase.COMPLETE, "split")
        initiator_to_responder, responder_to_initiator = symmetric.split()
        self._fire(_Event.SPLIT)
        self._symmetric = None
        self._e = None
        self._s = b""
        self._psks = []
        if self._initiator:
            return initiator_to_responder, responder_to_initiator
        return responder_to_initiator, initiator_to_responder


# --- transport --------------------------------------------------------------------------------


class TransportCipher:
    """The two transport CipherStates of an established session, with the Noise size limit.

    ``TransportCipher(*handshake.split())``.
    """

    __slots__ = ("_send", "_recv")

    def __init__(self, send: CipherState, recv: CipherState) -> None:
        """Wrap a (send, recv) pair as returned by HandshakeState.split().

        Raises:
            InvalidInput: either is not a keyed CipherState.
        """
        for what, cipher in (("send", send), ("recv", recv)):
            if not isinstance(cipher, CipherState) or not cipher.has_key():
                raise InvalidInput(f"{what} must be a keyed CipherState")
        self._send = send
        self._recv = recv

    def __repr__(self) -> str:
        return f"TransportCipher(sent={self._send.n}, received={self._recv.n})"

    def encrypt(self, plaintext: bytes) -> bytes:
        """Encrypt one transport message.

        Args:
            plaintext: at most MAX_NOISE_MESSAGE - 16 bytes.

        Returns:
            The Noise transport message (plaintext length + 16 bytes).

        Raises:
            MessageTooLarge: the message would exceed MAX_NOISE_MESSAGE; nothing changed.
            NonceExhausted: the send nonce is used up.
        """
        plaintext = _as_bytes(plaintext, "plaintext")
        if len(plaintext) + TAGLEN > MAX_NOISE_MESSAGE:
            raise MessageTooLarge(
                f"plaintext of {len(plaintext)} bytes exceeds the transport limit of "
                f"{MAX_NOISE_MESSAGE - TAGLEN} bytes ({MAX_NOISE_MESSAGE} with the tag)"
            )
        return self._send.encrypt_with_ad(b"", plaintext)

    def decrypt(self, ciphertext: bytes) -> bytes:
        """Check and decrypt one transport message from the peer.

        Args:
            ciphertext: one Noise transport message, 16..MAX_NOISE_MESSAGE bytes.

        Returns:
            The plaintext.

        Raises:
            MalformedNoiseMessage: the message is shorter than a tag or over the limit.
            DecryptionFailed: authentication failed; the receive nonce did not advance.
            NonceExhausted: the receive nonce is used up.
        """
        ciphertext = _as_bytes(ciphertext, "transport message")
        if not TAGLEN <= len(ciphertext) <= MAX_NOISE_MESSAGE:
            raise MalformedNoiseMessage(
                f"transport message is {len(ciphertext)} bytes; expected "
                f"{TAGLEN}..{MAX_NOISE_MESSAGE}"
            )
        return self._recv.decrypt_with_ad(b"", ciphertext)

    def rekey_send(self) -> None:
        """Rekey the sending direction (the peer must call rekey_recv at the same point)."""
        self._send.rekey()

    def rekey_recv(self) -> None:
        """Rekey the receiving direction (matching the peer's rekey_send)."""
        self._recv.rekey()
