"""Typed errors of the gossip layer, all under the one tree rooted in crdt_types."""

from crdt_types import IntegrityError, RemoteProtocolError, TillmeshError

__all__ = [
    "MalformedData", "BadSignature", "CertificateError", "WrongNetwork", "CertificateExpired",
    "Revoked", "UnknownOrigin", "ChainBroken", "SeqGap", "ForkDetected", "Quarantined",
    "EpochUnavailable", "DecryptionError", "UnreadableEntry",
]


class MalformedData(IntegrityError):
    """Bytes from elsewhere (an entry, a token, a record) that do not decode to the expected shape."""


class BadSignature(IntegrityError):
    """A signature that does not verify under the key it must come from."""


class CertificateError(IntegrityError):
    """A certificate that cannot be accepted."""


class WrongNetwork(CertificateError):
    """Data that belongs to another tillmesh network."""


class CertificateExpired(CertificateError):
    """A certificate past its expiry time."""


class Revoked(CertificateError):
    """A device revoked by the authority, or an entry past its revocation cutoff."""


class UnknownOrigin(IntegrityError):
    """An entry or peer whose device number has no certificate here."""


class ChainBroken(IntegrityError):
    """An entry whose prev_hash is not the hash of its predecessor."""


class SeqGap(RemoteProtocolError):
    """An entry that does not directly follow the feed's head (the sender skipped some)."""


class ForkDetected(IntegrityError):
    """Two valid, different entries for one (origin, seq): the origin is quarantined."""

    def __init__(self, message: str, *, origin: int, seq: int, evidence: tuple[bytes, bytes]) -> None:
        super().__init__(message)
        self.origin = origin
        self.seq = seq
        self.evidence = evidence


class Quarantined(IntegrityError):
    """An entry from an origin quarantined after a fork."""


class EpochUnavailable(TillmeshError):
    """An entry sealed under a data-key epoch this keyring does not hold (a relay, or revoked)."""


class UnreadableEntry(MalformedData):
    """A validly signed entry whose opened payload is not a delta group: its origin's fault,
    not that of the peer who forwarded it (a relay cannot look inside)."""


class DecryptionError(IntegrityError):
    """A body that fails authenticated decryption under the right epoch key."""
