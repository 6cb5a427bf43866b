"""The data directory of one node: its database, settings, secrets, and the lock on them.

A node is its directory: ``tillmesh.sqlite`` (the feeds), ``node.toml`` (settings),
``device.key`` (the 32-byte Ed25519 seed), ``network.token`` (the enrollment token, which
carries the network key), ``api.token`` (the bearer token of the local API) and ``lock``.
The three secrets are mode 0600 and a directory whose secrets others can read is refused,
as ssh refuses a readable private key. Two node processes on one directory would both
append to the same feed and fork it, so a running node holds ``lock`` with ``flock``; a
second one is refused before it touches anything.

``create`` is all or nothing: the files are written and synced in a temporary sibling
directory that is renamed into place, so a crash or a bad input leaves no half-made node.
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

from crdt_types import InvalidInput, StorageError
from gossip import AUTHORITY_NUMBER, Certificate, DeviceKey, Keyring, import_token

from ._sqlite import SqliteFeedStore

__all__ = ["DataDir", "DataDirLocked"]

DATABASE = "tillmesh.sqlite"
CONFIG = "node.toml"
DEVICE_KEY = "device.key"
NETWORK_TOKEN = "network.token"
API_TOKEN = "api.token"
LOCK = "lock"
SECRETS = (DEVICE_KEY, NETWORK_TOKEN, API_TOKEN)
REQUIRED = (CONFIG, *SECRETS)
MAX_FILE_BYTES = 8 * 1024 * 1024  # a token carries the authority feed: a few MiB at most


class DataDirLocked(StorageError):
    """Another process (or another lock in this one) holds the data directory."""


class DataDirLock:
    """The held ``flock`` on a data directory; released by ``release`` or leaving ``with``."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    def release(self) -> None:
        """Let go of the lock (closing the file releases the flock). Idempotent."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    @property
    def held(self) -> bool:
        """True until released."""
        return self._fd is not None

    def __enter__(self) -> "DataDirLock":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


class DataDir:
    """The files of one node. Constructing one touches nothing; ``open`` checks the files.

    Args:
        path: the directory.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._imported: tuple[Keyring, Certificate, list] | None = None

    def __repr__(self) -> str:
        return f"DataDir({str(self.path)!r})"

    # -- making and finding one ---------------------------------------------------------------

    @classmethod
    def create(cls, path: str | Path, *, token: str, device_seed: bytes, config_text: str) -> "DataDir":
        """Write a new data directory for the device that ``token`` enrolls.

        Everything is checked before anything is written: the token must import under the
        seed's key and the settings must parse. The files are written in a temporary sibling
        directory, synced, and renamed to ``path``; a fresh ``api.token`` is drawn.

        Args:
            path: where the directory goes: absent, or an empty directory.
            token: the enrollment token (``tillmesh1:...``).
            device_seed: the device's 32-byte Ed25519 seed.
            config_text: the contents of ``node.toml``.
        Returns:
            The new DataDir.
        Raises:
            StorageError: ``path`` exists and is not an empty directory, or the files cannot
                be written; nothing is left behind.
            InvalidInput: a seed that is not 32 bytes; ``ConfigError`` (an InvalidInput) for
                settings that do not parse.
            MalformedData / WrongNetwork / BadSignature: the token is malformed or is not for
                this device key.
        """
        path = Path(path)
        if not isinstance(device_seed, bytes) or len(device_seed) != 32:
            raise InvalidInput("a device seed is 32 bytes")
        if not isinstance(config_text, str):
            raise InvalidInput(f"node.toml contents must be text, got {type(config_text).__name__}")
        from node.config import parse_config

        import_token(token, DeviceKey(device_seed))
        parse_config(config_text, source=str(path / CONFIG))
        _refuse_existing(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create data directory {path}: {exc.strerror}") from exc
        staging = path.parent / f".{path.name}.creating-{secrets.token_hex(4)}"
        try:
            staging.mkdir(mode=0o700)
            os.chmod(staging, 0o700)
            _write(staging / DEVICE_KEY, device_seed, 0o600)
            _write(staging / NETWORK_TOKEN, (token + "\n").encode("ascii"), 0o600)
            _write(staging / API_TOKEN, (secrets.token_urlsafe(32) + "\n").encode("ascii"), 0o600)
            _write(staging / CONFIG, config_text.encode("utf-8"), 0o644)
            _write(staging / LOCK, b"", 0o600)
            _fsync_dir(staging)
            _refuse_existing(path)  # again: someone may have made it meanwhile
            os.rename(staging, path)  # replaces an empty directory, fails on a non-empty one
            _fsync_dir(path.parent)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise StorageError(f"data directory {path} already exists and is not empty; "
                                   "refusing to overwrite it") from exc
            raise StorageError(f"cannot create data directory {path}: {exc.strerror or exc}") from exc
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return cls(path)

    @classmethod
    def open(cls, path: str | Path) -> "DataDir":
        """An existing data directory, checked: its files are there, its secrets private.

        Args:
            path: the directory ``create`` made.
        Returns:
            The DataDir (nothing is read beyond the checks; the lock is not taken).
        Raises:
            StorageError: not a directory, a file missing, or a secret file that others may
                read or write (mode beyond 0600); the message names the file.
        """
        data_dir = cls(path)
        root = data_dir.path
        if not root.is_dir():
            raise StorageError(f"no data directory at {root} (create one with `tillmesh join`)")
        for name in REQUIRED:
            if not (root / name).is_file():
                raise StorageError(f"data directory {root} is incomplete: {name} is missing")
        for name in SECRETS:
            mode = os.stat(root / name).st_mode & 0o777
            if mode & 0o077:
                raise StorageError(f"{root / name} is accessible to other users (mode {mode:04o}); "
                                   f"it holds a secret: chmod 600 it")
        return data_dir

    # -- the lock -----------------------------------------------------------------------------

    def lock(self) -> DataDirLock:
        """Take the directory's lock now (``flock`` on ``lock``), for as long as a node runs.

        Use as ``with data_dir.lock(): ...`` or keep the result and ``release()`` it. The
        holder's pid is written into the lock file for the refusal message.

        Returns:
            The held lock.
        Raises:
            DataDirLocked: another process, or another lock in this one, holds it; nothing
                was touched.
            StorageError: the directory is missing or the lock file cannot be opened.
        """
        target = self.path / LOCK
        try:
            fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StorageError(f"cannot open the lock of data directory {self.path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise DataDirLocked(f"data directory {self.path} is in use by another node process"
                                f"{f' (pid {holder})' if holder else ''}; only one node may run on it "
                                "at a time") from None
        except OSError as exc:
            os.close(fd)
            raise StorageError(f"cannot lock data directory {self.path}: {exc.strerror}") from exc
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        except OSError:
            pass  # the pid is only for the message; the flock is what counts
        return DataDirLock(self.path, fd)

    # -- what is in it ------------------------------------------------------------------------

    def device_seed(self) -> bytes:
        """The device's 32-byte Ed25519 seed (a secret: never log it).

        Raises:
            StorageError: unreadable, or not 32 bytes.
        """
        seed = _read(self.path / DEVICE_KEY)
        if len(seed) != 32:
            raise StorageError(f"{self.path / DEVICE_KEY}: expected a 32-byte seed, found {len(seed)} bytes")
        return seed

    def token(self) -> str:
        """The enrollment token (a secret: it carries the network key).

        Raises:
            StorageError: unreadable or not text.
        """
        return _read_text(self.path / NETWORK_TOKEN)

    def api_token(self) -> str:
        """The bearer token of the local API (a secret).

        Raises:
            StorageError: unreadable, not text, or empty.
        """
        text = _read_text(self.path / API_TOKEN)
        if not text:
            raise StorageError(f"{self.path / API_TOKEN} is empty")
        return text

    def keyring(self) -> tuple[Keyring, Certificate, list]:
        """This node's keyring, certificate and the token's authority feed entries.

        Returns:
            ``gossip.import_token(token, DeviceKey(seed))``: (Keyring, Certificate,
            list of authority ``Entry``). Computed once per DataDir.
        Raises:
            StorageError: a secret file is unreadable.
            MalformedData / WrongNetwork / BadSignature: the stored token does not import
                under the stored key.
        """
        if self._imported is None:
            self._imported = import_token(self.token(), DeviceKey(self.device_seed()))
        keyring, cert, feed = self._imported
        return keyring, cert, list(feed)

    def store(self) -> SqliteFeedStore:
        """Open the node's feed store; on first open it is seeded with the token's authority
        feed and flushed. The caller closes it (and should hold ``lock()``).

        Returns:
            The open store.
        Raises:
            StorageError: the database is unreadable or corrupt, or its authority feed is not
                this token's (a database from another network).
            MalformedData / WrongNetwork / BadSignature: as ``keyring``.
        """
        _, _, feed = self.keyring()
        store = SqliteFeedStore(self.path / DATABASE)
        try:
            if store.head(AUTHORITY_NUMBER) is None:
                for entry in feed:
                    store.append(entry.origin, entry.seq, entry.hash, entry.encode())
                store.flush()
            elif feed and store.get(AUTHORITY_NUMBER, 1) != feed[0].encode():
                raise StorageError(f"{store.path} holds another network's feeds than {self.path / NETWORK_TOKEN}")
        except BaseException:
            store.close()
            raise
        return store

    def config(self) -> Any:
        """The node's settings from ``node.toml``.

        Returns:
            A ``node.config.NodeConfig``.
        Raises:
            ConfigError: the file does not parse or holds unknown keys or wrong types.
        """
        from node.config import load_config

        return load_config(self.path / CONFIG)


def _refuse_existing(path: Path) -> None:
    if path.is_symlink() or path.exists():
        if not path.is_dir() or path.is_symlink():
            raise StorageError(f"cannot create data directory {path}: something else is there")
        if any(path.iterdir()):
            raise StorageError(f"data directory {path} already exists and is not empty; refusing to overwrite it")


def _write(target: Path, data: bytes, mode: int) -> None:
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # exactly, whatever the umask
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read(target: Path) -> bytes:
    try:
        with open(target, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise StorageError(f"cannot read {target}: {exc.strerror}") from exc
    if len(data) > MAX_FILE_BYTES:
        raise StorageError(f"{target} is larger than {MAX_FILE_BYTES} bytes")
    return data


def _read_text(target: Path) -> str:
    try:
        return _read(target).decode("ascii").strip()
    except UnicodeDecodeError:
        raise StorageError(f"{target} is not ASCII text") from None


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None
