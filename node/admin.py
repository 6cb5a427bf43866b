"""The admin side of a network, kept off the tills: the authority directory and the bundles
it hands out.

The authority's key decides who belongs to the network, so it lives in one directory on
the owner's admin machine, never on a till. Its feed (certificates, revocations, epoch key
grants) is the network's membership; every till replays it. This module keeps that
directory safe to use from a command line:

- Every change is checked in memory first (``Authority.enroll`` / ``revoke`` publish only
  what they accept), then written to a temporary file, fsynced and renamed over the old
  one, so a crash or a refused input leaves the directory as it was.
- ``devices.json`` is a readable view derived from the feed, never read back: the feed is
  the truth, so the two cannot disagree in a way that matters.
- A lock file stops two admin commands from publishing at once; two writers would fork the
  authority feed, which every till would refuse.
- Secret files are mode 0600 in a 0700 directory, and are refused when others can read them.

Two bundles carry things off this machine: a *join bundle* (``tillmesh-join1:``, the
enrollment token plus the new device's key seed: a secret, for one device) and an
*authority bundle* (``tillmesh-authority1:``, the authority feed: not secret, relays read it
anyway), which brings revocations and new devices into nodes that cannot reach a peer
holding them.
"""

from __future__ import annotations

import base64
import errno
import fcntl
import json
import os
import re
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2
import nacl.exceptions
import nacl.signing
import nacl.utils

from crdt_types import InvalidInput, TillmeshError, canonical
from gossip import (
    AUTHORITY_NUMBER,
    MAX_TOKEN_BYTES,
    Authority,
    BadSignature,
    DeviceKey,
    Entry,
    Keyring,
    MalformedData,
)

__all__ = [
    "AdminError", "AuthorityDir", "DeviceInfo", "JOIN_PREFIX", "AUTHORITY_BUNDLE_PREFIX",
    "make_join_bundle", "parse_join_bundle", "make_authority_bundle", "parse_authority_bundle",
    "verify_authority_entries",
    "write_private", "now_ms",
]

JOIN_PREFIX = "tillmesh-join1:"
AUTHORITY_BUNDLE_PREFIX = "tillmesh-authority1:"
BUNDLE_VERSION = 1
# A join bundle is a token plus 32 bytes; an authority bundle is the feed a token carries.
MAX_BUNDLE_BYTES = MAX_TOKEN_BYTES + 1024
_B64URL = re.compile(r"[A-Za-z0-9_-]*")

AUTHORITY_KEY = "authority.key"
NETWORK_KEY = "network.key"
FEED = "feed.cbor"
DEVICES = "devices.json"
LOCK = "lock"
FILES = (AUTHORITY_KEY, NETWORK_KEY, FEED, DEVICES)


class AdminError(InvalidInput):
    """An admin command that cannot be carried out; the directory is unchanged."""


def now_ms() -> int:
    """Wall-clock milliseconds since the epoch (certificates and revocations are stamped with it)."""
    return time.time_ns() // 1_000_000


# --- files ----------------------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_private(path: str | Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically: a temp file (mode 0600) fsynced, renamed, and
    the directory fsynced, so a crash leaves either the old file or the new one.

    Raises:
        OSError: the directory is not writable or the disk is full; ``path`` is unchanged.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


def _read_private(path: Path, limit: int) -> bytes:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise AdminError(f"{path} is missing: not an authority directory (create one with `tillmesh network init`)") \
            from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise AdminError(f"{path} can be read by other users (mode {stat.S_IMODE(info.st_mode):04o}); "
                         f"run `chmod 600 {path}` and check who copied it")
    if info.st_size > limit:
        raise AdminError(f"{path} is {info.st_size} bytes, more than the {limit} it can be")
    with open(path, "rb") as handle:
        return handle.read(limit + 1)


def decode(raw: bytes, *, limit: int, what: str) -> Any:
    """One canonical CBOR item of at most ``limit`` bytes.

    Raises:
        MalformedData: over the limit, not CBOR, trailing bytes, or not in canonical form.
    """
    if len(raw) > limit:
        raise MalformedData(f"{what}: {len(raw)} bytes, the limit is {limit}")
    try:
        obj = cbor2.loads(raw)
        again = canonical(obj)
    except Exception as exc:  # cbor2 raises several types; canonical refuses what it cannot encode
        raise MalformedData(f"{what}: not valid CBOR ({type(exc).__name__})") from None
    if again != raw:
        raise MalformedData(f"{what}: not in canonical CBOR form")
    return obj


# --- bundles --------------------------------------------------------------------------------


def _encode_bundle(prefix: str, payload: Any) -> str:
    return prefix + base64.urlsafe_b64encode(canonical(payload)).decode("ascii").rstrip("=")


def _decode_bundle(text: Any, prefix: str, what: str) -> Any:
    if not isinstance(text, str) or not text.startswith(prefix):
        raise MalformedData(f"{what}: expected text starting with {prefix!r}")
    body = text[len(prefix):].strip()
    if len(body) > MAX_BUNDLE_BYTES * 4 // 3 + 4:
        raise MalformedData(f"{what}: longer than {MAX_BUNDLE_BYTES} bytes")
    if not _B64URL.fullmatch(body) or len(body) % 4 == 1:
        raise MalformedData(f"{what}: not base64url text (was it cut off or mistyped?)")
    raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    try:
        return decode(raw, limit=MAX_BUNDLE_BYTES, what=what)
    except MalformedData as exc:
        raise MalformedData(f"{exc} (was it copied whole?)") from None


def make_join_bundle(token: str, device_seed: bytes) -> str:
    """The one line a new device needs: its enrollment token and its key seed.

    It is a secret: whoever holds it can act as that device and read the network's data.

    Args:
        token: the device's enrollment token (``Authority.token``).
        device_seed: the device's 32-byte Ed25519 seed.
    Returns:
        ``"tillmesh-join1:" + base64url(canonical CBOR [1, token, seed])``.
    Raises:
        InvalidInput: a token that is not a string, or a seed that is not 32 bytes.
    """
    if not isinstance(token, str) or not isinstance(device_seed, bytes) or len(device_seed) != 32:
        raise InvalidInput("a join bundle holds a token (str) and a 32-byte device seed")
    return _encode_bundle(JOIN_PREFIX, [BUNDLE_VERSION, token, device_seed])


def parse_join_bundle(bundle: Any) -> tuple[str, bytes]:
    """Split a join bundle into its token and device seed (not yet verified: ``import_token`` does).

    Returns:
        ``(token, device_seed)``.
    Raises:
        MalformedData: not a join bundle of this version.
    """
    obj = _decode_bundle(bundle, JOIN_PREFIX, "join bundle")
    if (not isinstance(obj, list) or len(obj) != 3 or obj[0] != BUNDLE_VERSION or not isinstance(obj[1], str)
            or not isinstance(obj[2], bytes) or len(obj[2]) != 32):
        raise MalformedData("join bundle: expected [1, token, 32-byte device seed]")
    return obj[1], obj[2]


def make_authority_bundle(entries: list[Entry]) -> str:
    """The authority feed as one line of text, for ``tillmesh import-authority``.

    The whole feed is carried, not only the newest entries: a node that missed an earlier
    bundle catches up from any later one, and entries it holds already are skipped.

    Returns:
        ``"tillmesh-authority1:" + base64url(canonical CBOR [1, [entry, ...]])``.
    """
    return _encode_bundle(AUTHORITY_BUNDLE_PREFIX, [BUNDLE_VERSION, [e.encode() for e in entries]])


def parse_authority_bundle(bundle: Any) -> list[bytes]:
    """The encoded authority-feed entries in an authority bundle, shape-checked.

    Signatures are checked where the entries are taken in (``Engine.import_entries``).

    Returns:
        The encoded entries, in feed order.
    Raises:
        MalformedData: not an authority bundle, or an entry that is not an authority entry.
    """
    obj = _decode_bundle(bundle, AUTHORITY_BUNDLE_PREFIX, "authority bundle")
    if not isinstance(obj, list) or len(obj) != 2 or obj[0] != BUNDLE_VERSION or not isinstance(obj[1], list) \
            or not obj[1]:
        raise MalformedData("authority bundle: expected [1, [entry, ...]] with at least one entry")
    for data in obj[1]:
        entry = Entry.decode(data)
        if entry.origin != AUTHORITY_NUMBER:
            raise MalformedData(f"authority bundle: holds an entry of device {entry.origin}, not the authority's")
    return list(obj[1])


def verify_authority_entries(entries: list[bytes], authority_key: bytes, network_key: bytes) -> list[Entry]:
    """Check that ``entries`` are this network's authority feed from seq 1, before a node
    takes them in: in order, chained, signed by the authority, and records of this network.

    A bundle from another network is refused here with ``WrongNetwork`` rather than reaching
    a node's intake, which would only see entries that do not fit.

    Args:
        entries: encoded entries (``parse_authority_bundle``).
        authority_key: the network's authority public key (from the node's keyring).
        network_key: the network key.
    Returns:
        The decoded entries.
    Raises:
        WrongNetwork: the records belong to another network.
        BadSignature: an entry the authority did not sign.
        MalformedData: out of order, not chained, or not a control record.
    """
    keyring = Keyring(authority_key, network_key)
    verifier = nacl.signing.VerifyKey(authority_key)
    out: list[Entry] = []
    for data in entries:
        entry = Entry.decode(data)
        if entry.origin != AUTHORITY_NUMBER or entry.seq != len(out) + 1 \
                or (out and entry.prev_hash != out[-1].hash):
            raise MalformedData(f"authority bundle: entry {len(out) + 1} is out of place (the bundle carries the "
                                f"feed from seq 1, in order)")
        try:
            verifier.verify(entry.signed_bytes(), entry.signature)
        except nacl.exceptions.BadSignatureError:
            raise BadSignature(f"authority bundle: entry {entry.seq} is not signed by this network's authority "
                               f"(a bundle of another network?)") from None
        keyring.apply_control_entry(entry)
        out.append(entry)
    return out


# --- the authority directory ----------------------------------------------------------------


@dataclass(frozen=True)
class DeviceInfo:
    """One enrolled device as ``devices.json`` lists it."""

    name: str
    number: int
    branch: str
    roles: tuple[str, ...]
    revoked_after: int | None  # the revocation cutoff (last valid seq), None while enrolled

    def as_json(self) -> dict[str, Any]:
        return {"number": self.number, "branch": self.branch, "roles": list(self.roles),
                "revoked_after": self.revoked_after}


class AuthorityDir:
    """An authority directory, opened for one admin command (a context manager: the lock is
    held until it is closed).

    Use ``AuthorityDir.create`` for a new network and ``AuthorityDir.open`` for an existing
    one; both lock the directory.
    """

    def __init__(self, path: Path, authority: Authority, lock_fd: int) -> None:
        self.path = path
        self.authority = authority
        self._lock_fd: int | None = lock_fd

    def __enter__(self) -> "AuthorityDir":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"AuthorityDir({str(self.path)!r}, network={self.authority.network_id.hex()})"

    def close(self) -> None:
        """Release the directory's lock."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    @staticmethod
    def _lock(path: Path) -> int:
        fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise AdminError(f"{path} is in use by another tillmesh admin command; try again when it ends") \
                    from None
            raise
        return fd

    @classmethod
    def create(cls, path: str | Path, *, random_bytes: Callable[[int], bytes] = nacl.utils.random,
               now: int | None = None) -> "AuthorityDir":
        """Start a new network in a new directory ``path``.

        The files are written into a temporary directory beside ``path``, which is renamed
        into place at the end: an error at any point leaves nothing behind.

        Args:
            path: the directory to create (an existing empty directory is taken over).
            random_bytes: where keys come from (libsodium's CSPRNG by default).
            now: creation time in ms (the wall clock by default).
        Returns:
            The directory, opened and locked.
        Raises:
            AdminError: ``path`` exists and is not empty, or its parent does not exist.
            OSError: the filesystem refused a write.
        """
        path = Path(path)
        parent = path.parent
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise AdminError(f"{path} exists and is not empty: refusing to overwrite an authority directory")
        if not parent.is_dir():
            raise AdminError(f"{parent} does not exist: create it first")
        authority = Authority.create(random_bytes, now_ms() if now is None else now)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent))
        try:
            os.chmod(tmp, 0o700)
            write_private(tmp / AUTHORITY_KEY, authority.key.seed)
            write_private(tmp / NETWORK_KEY, authority.keyring.network_key)
            cls._write_state(tmp, authority)
            try:
                os.rename(tmp, path)  # atomic; fails if someone filled ``path`` meanwhile
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                    raise AdminError(f"{path} exists and is not empty: refusing to overwrite an authority "
                                     f"directory") from None
                raise
        except BaseException:
            for child in tmp.iterdir() if tmp.exists() else ():
                child.unlink()
            if tmp.exists():
                tmp.rmdir()
            raise
        _fsync_dir(parent)
        return cls(path, authority, cls._lock(path))

    @classmethod
    def open(cls, path: str | Path) -> "AuthorityDir":
        """Open and lock an existing authority directory, verifying its feed.

        Returns:
            The directory, its authority rebuilt with ``Authority.restore``.
        Raises:
            AdminError: not an authority directory, a key file others can read, a file of the
                wrong size or shape, a feed that does not verify under the key, or another
                admin command holding the lock.
        """
        path = Path(path)
        if not path.is_dir():
            raise AdminError(f"{path} is not a directory: not an authority directory "
                             f"(create one with `tillmesh network init`)")
        if not (path / AUTHORITY_KEY).exists():
            raise AdminError(f"{path} holds no {AUTHORITY_KEY}: not an authority directory")
        lock_fd = cls._lock(path)
        try:
            seed = _read_private(path / AUTHORITY_KEY, 32)
            network_key = _read_private(path / NETWORK_KEY, 32)
            if len(seed) != 32 or len(network_key) != 32:
                raise AdminError(f"{path}: {AUTHORITY_KEY} and {NETWORK_KEY} must hold 32 bytes each")
            raw = _read_private(path / FEED, MAX_TOKEN_BYTES)
            try:
                feed = decode(raw, limit=MAX_TOKEN_BYTES, what=str(path / FEED))
                if not isinstance(feed, list):
                    raise MalformedData(f"{path / FEED}: expected a list of entries")
                authority = Authority.restore(DeviceKey(seed), network_key, nacl.utils.random, feed)
            except TillmeshError as exc:
                raise AdminError(f"{path / FEED} does not verify under {AUTHORITY_KEY}: {exc}") from None
        except BaseException:
            os.close(lock_fd)
            raise
        return cls(path, authority, lock_fd)

    @staticmethod
    def _write_state(path: Path, authority: Authority) -> None:
        # The feed first: devices.json is derived from it and never read back.
        write_private(path / FEED, canonical([e.encode() for e in authority.feed]))
        devices = {d.name: d.as_json() for d in AuthorityDir.devices_of(authority)}
        write_private(path / DEVICES, (json.dumps(devices, indent=2, sort_keys=True) + "\n").encode())

    @staticmethod
    def devices_of(authority: Authority) -> list[DeviceInfo]:
        """Every enrolled device (revoked ones too), by number."""
        keyring = authority.keyring
        return [DeviceInfo(c.name, n, c.branch, c.roles, keyring.revocations.get(n))
                for n, c in sorted(keyring.certificates.items()) if n != AUTHORITY_NUMBER]

    @property
    def devices(self) -> dict[str, DeviceInfo]:
        """Enrolled devices by name."""
        return {d.name: d for d in self.devices_of(self.authority)}

    def _require_open(self) -> None:
        if self._lock_fd is None:
            raise AdminError(f"{self.path} was closed")

    def add_device(self, name: str, *, branch: str, roles: list[str] | tuple[str, ...],
                   random_bytes: Callable[[int], bytes] = nacl.utils.random, now: int | None = None) -> str:
        """Enroll a new device under a fresh key and return its join bundle (a secret).

        Args:
            name: the device's name, unique in this network (revoked devices keep theirs).
            branch: its branch.
            roles: its roles (``gossip.ROLES``); "relay" makes a blind relay.
            random_bytes: where the device key comes from.
            now: certificate issue time in ms (the wall clock by default).
        Returns:
            The join bundle for ``tillmesh join``.
        Raises:
            AdminError: the name is taken or reserved.
            InvalidInput: a bad name, branch or role; nothing is written.
            OSError: the new feed could not be written; the directory keeps the old one.
        """
        self._require_open()
        for what, text in (("name", name), ("branch", branch)):
            if not isinstance(text, str) or not text or not text.isprintable() or text.strip() != text:
                raise AdminError(f"the device {what} must be printable text without surrounding spaces, "
                                 f"got {text!r}")
        taken = {c.name: n for n, c in self.authority.keyring.certificates.items()}
        if name in taken:
            what = "the authority's own name" if taken[name] == AUTHORITY_NUMBER else f"device {taken[name]}"
            revoked = " (revoked; pick a new name for its replacement)" \
                if taken[name] in self.authority.keyring.revocations else ""
            raise AdminError(f"the name {name!r} is taken by {what}{revoked}")
        seed = random_bytes(32)
        if not isinstance(seed, bytes) or len(seed) != 32:
            raise AdminError("the random source did not return 32 bytes")
        device = DeviceKey(seed)
        feed_before = len(self.authority.feed)
        cert = self.authority.enroll(device.public, name=name, branch=branch, roles=tuple(roles),
                                     now_ms=now_ms() if now is None else now)
        bundle = make_join_bundle(self.authority.token(cert.number), device.seed)
        self._save(feed_before)
        return bundle

    def revoke(self, name: str, last_valid_seq: int, *, now: int | None = None) -> str:
        """Revoke device ``name`` after its entry ``last_valid_seq``, roll a data-key epoch it
        cannot open, and return the authority bundle that carries both.

        Args:
            name: the device's name.
            last_valid_seq: its last entry that stays valid (0: none does).
            now: revocation time in ms (the wall clock by default).
        Returns:
            An authority bundle of the whole feed, for ``tillmesh import-authority``.
        Raises:
            AdminError: no such device, or it is revoked already at or below that seq.
            InvalidInput: a bad seq; nothing is written.
            OSError: the new feed could not be written; the directory keeps the old one.
        """
        self._require_open()
        device = self.devices.get(name)
        if device is None:
            known = ", ".join(sorted(self.devices)) or "none yet"
            raise AdminError(f"no device named {name!r} in this network (devices: {known})")
        if isinstance(last_valid_seq, bool) or not isinstance(last_valid_seq, int) or last_valid_seq < 0:
            raise AdminError(f"the last valid seq is an integer >= 0, got {last_valid_seq!r}")
        if device.revoked_after is not None and device.revoked_after <= last_valid_seq:
            raise AdminError(f"{name} is revoked already after seq {device.revoked_after}; a revocation can "
                             f"only move the cutoff lower")
        feed_before = len(self.authority.feed)
        self.authority.revoke(device.number, last_valid_seq, now_ms() if now is None else now)
        self._save(feed_before)
        return self.authority_bundle()

    def authority_bundle(self) -> str:
        """The whole authority feed as an authority bundle."""
        return make_authority_bundle(self.authority.feed)

    def _save(self, feed_before: int) -> None:
        try:
            self._write_state(self.path, self.authority)
        except BaseException:
            # What was published in memory never reached the disk: forget it, so this
            # object cannot hand out entries the directory does not hold.
            del self.authority.feed[feed_before:]
            self.close()
            raise
