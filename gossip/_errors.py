"""Every typed error of the gossip layer, under the one tree rooted in crdt_types.

The type carries the blame (h11's Local/RemoteProtocolError, trio's Closed/BrokenResource):

- ``InvalidInput`` — the caller's fault; nothing changed.
- ``RemoteProtocolError`` — the *peer* broke the protocol; the session ends.
- ``IntegrityError`` — data failed a cryptographic or structural check.
- ``NotYet`` — nobody's fault: an entry whose certificate, predecessors or epoch key have
  not arrived yet. The entry is refused for now and will be accepted once they have.
- ``OriginFault`` — the entry's *origin* did something wrong (forked, was revoked, sealed
  garbage). The peer who forwarded it is not to blame, so its session stays up.

The engine's intake dispatches on exactly these bases, so a new error lands in the right
branch by where it sits in the tree, not by an ``except`` ladder that lists it by name.
"""

from __future__ import annotations

from crdt_types import IntegrityError, InvalidInput, RemoteProtocolError, TillmeshError

__all__ = [
    # entry and record intake
    "NotYet", "OriginFault", "MalformedData", "BadSignature", "CertificateError", "WrongNetwork",
    "CertificateExpired", "Revoked", "UnknownOrigin", "ChainBroken", "SeqGap", "ForkDetected",
    "Quarantined", "EpochUnavailable", "DecryptionError", "UnreadableEntry",
    # local refusals
    "Unauthorized",
    # the Noise handshake
    "HandshakeFailed", "DecryptionFailed", "MalformedNoiseMessage", "MessageTooLarge",
    "NonceExhausted", "OutOfTurn",
    # the secure channel
    "PeerKeyMismatch", "FrameTooLarge", "BufferOverflow", "HandshakeTimeout", "ConnectionLost",
    "UnexpectedMessage", "ChannelNotEstablished", "ClosedChannelError", "OutgoingFrameTooLarge",
    # sessions
    "SessionProtocolError",
]


class NotYet(TillmeshError):
    """An entry that cannot be taken in *yet*: what it needs has not arrived."""


class OriginFault(IntegrityError):
    """A validly forwarded entry that its origin should never have written (or may no longer)."""


# --- entries and control records ------------------------------------------------------------


class MalformedData(IntegrityError):
    """Bytes from elsewhere (an entry, a token, a record) that do not decode to the expected shape."""


class BadSignature(IntegrityError):
    """A signature that does not verify under the key it must come from."""


class CertificateError(IntegrityError):
    """A certificate that cannot be accepted."""


class WrongNetwork(CertificateError):
    """Data that belongs to another tillmesh network."""


class CertificateExpired(CertificateError):
    """A certificate past its expiry time (stops handshakes; never voids entries)."""


class Revoked(CertificateError, OriginFault):
    """A device revoked by the authority, or an entry past its revocation cutoff."""


class UnknownOrigin(NotYet):
    """An entry or peer whose device number has no certificate here (yet)."""


class ChainBroken(OriginFault):
    """An entry whose prev_hash is not the hash of its predecessor: its origin has two histories."""


class SeqGap(NotYet):
    """An entry that does not directly follow the feed's head: its predecessors come later."""


class ForkDetected(OriginFault):
    """Two valid, different entries for one (origin, seq): the origin is quarantined."""

    def __init__(self, message: str, *, origin: int, seq: int, evidence: tuple[bytes, bytes]) -> None:
        super().__init__(message)
        self.origin = origin
        self.seq = seq
        self.evidence = evidence


class Quarantined(OriginFault):
    """An entry from an origin quarantined after a fork."""


class EpochUnavailable(NotYet):
    """An entry sealed under a data-key epoch this keyring does not hold (yet, or ever: a relay)."""


class DecryptionError(OriginFault):
    """A body that fails authenticated decryption under the right epoch key."""


class UnreadableEntry(OriginFault, MalformedData):
    """A validly signed entry whose opened payload is not a delta group: its origin's fault,
    not that of the peer who forwarded it (a relay cannot look inside)."""


# --- local refusals ---------------------------------------------------------------------------


class Unauthorized(InvalidInput):
    """A local write that this device's roles or branch do not allow; nothing changed."""


# --- the Noise handshake ----------------------------------------------------------------------


class HandshakeFailed(IntegrityError):
    """A handshake message failed authentication or carried an unusable public key.

    Wrong network key (psk), a different prologue, tampering in transit and a low-order
    public key all end here. The handshake is dead afterwards.
    """


class DecryptionFailed(IntegrityError):
    """A transport message (or a CipherState ciphertext) failed AEAD authentication."""


class MalformedNoiseMessage(RemoteProtocolError):
    """A received Noise message is shorter than its pattern requires or longer than 65535."""


class MessageTooLarge(InvalidInput):
    """The caller asked to send a message that would exceed ``MAX_NOISE_MESSAGE`` bytes."""


class NonceExhausted(TillmeshError):
    """A CipherState has used every nonce (n reached 2**64-1); the session must be rebuilt."""


class OutOfTurn(InvalidInput):
    """A handshake method was called in a phase that does not allow it."""


# --- the secure channel -----------------------------------------------------------------------


class PeerKeyMismatch(IntegrityError):
    """The peer's certificate is for a device key other than the one it completed Noise with."""


class FrameTooLarge(RemoteProtocolError):
    """The peer announced a frame longer than ``MAX_FRAME_BYTES``."""


class BufferOverflow(RemoteProtocolError):
    """More than ``MAX_BUFFERED_BYTES`` of received data was waiting for the application."""


class HandshakeTimeout(RemoteProtocolError):
    """The handshake and certificate exchange did not finish within ``HANDSHAKE_TIMEOUT_MS``."""


class ConnectionLost(RemoteProtocolError):
    """The transport closed during the handshake or in the middle of a message or frame."""


class UnexpectedMessage(RemoteProtocolError):
    """The peer sent something the channel protocol does not allow at this point."""


class ChannelNotEstablished(InvalidInput):
    """``send_frame`` before the peer's certificate was accepted; nothing was sent."""


class ClosedChannelError(InvalidInput):
    """``send_frame`` on a closed channel; nothing was sent."""


class OutgoingFrameTooLarge(InvalidInput):
    """``send_frame`` with an object whose encoding exceeds ``MAX_FRAME_BYTES``; nothing was sent."""


# --- sessions ---------------------------------------------------------------------------------


class SessionProtocolError(RemoteProtocolError):
    """The peer sent a frame that is malformed or not allowed in the session's state."""
