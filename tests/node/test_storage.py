"""node.storage: the SQLite feed store (conformance, group commit, failed flushes, a real
crash, damaged files, a flush running beside reads) and the data directory (files, modes,
refusals, the lock across processes)."""

from __future__ import annotations

import hashlib
import os
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from crdt_types import InvalidInput, StorageError
from gossip import Authority, DeviceKey, Head, MalformedData, MemoryFeedStore, WrongNetwork
from gossip.testing.feedstore_conformance import *  # noqa: F401,F403  (the conformance test functions)
from gossip.testing.feedstore_conformance import d, fill, h, observed, store_fixture
from node.storage import DataDir, DataDirLocked, SqliteFeedStore

store = store_fixture({"sqlite": lambda tmp_path: SqliteFeedStore(tmp_path / "feeds.sqlite")})

ROOT = Path(__file__).resolve().parents[2]
DEADLINE_S = 60.0


@pytest.fixture
def db(tmp_path):
    """A fresh store; closed (with any store it reopened) afterwards."""
    opened = []

    def open_store(path=tmp_path / "feeds.sqlite"):
        opened.append(SqliteFeedStore(path))
        return opened[-1]

    yield open_store
    for each in opened:
        each.close()


def durable(store: SqliteFeedStore, origins=(0, 1, 2, 3), meta=("acks", "other")) -> tuple:
    """What a fresh store over the same file sees."""
    with store.reopen() as again:
        return observed(again, origins), {name: again.get_meta(name) for name in meta}


def now_visible(store, origins=(0, 1, 2, 3), meta=("acks", "other")) -> tuple:
    return observed(store, origins), {name: store.get_meta(name) for name in meta}


class FailingCommit:
    """Stands in for the writer connection: everything runs for real, COMMIT fails."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql, *args):
        if sql == "COMMIT":
            raise sqlite3.OperationalError("injected: disk I/O error")
        return self._conn.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self._conn, name)


# -- group commit --------------------------------------------------------------------------------


def test_the_file_is_wal_with_full_sync(db, tmp_path):
    s = db()
    assert s._writer.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert s._writer.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    with sqlite3.connect(tmp_path / "feeds.sqlite") as raw:  # WAL is a property of the file
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {name for (name,) in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"entries", "quarantine", "meta"} <= tables


def test_writes_touch_the_file_only_in_flush_and_flush_is_one_transaction(db):
    s = db()
    fill(s, 1, 3)
    s.flush()
    statements, reads = [], []
    s._writer.set_trace_callback(statements.append)
    s._reader.set_trace_callback(reads.append)
    for origin in (1, 2, 3):
        fill(s, origin, 40, start=s.version_vector().get(origin, 0) + 1)
    assert statements == reads == []  # buffered: no database work per append
    s.truncate(1, 2)  # below what was durable: a DELETE in the same transaction
    assert reads == ["SELECT hash, data FROM entries WHERE origin = 1 AND seq = 2"]  # the new head's hash
    fill(s, 1, 5, start=3)
    s.quarantine(3, (b"a", b"b"))
    s.put_meta("acks", b"x")
    assert statements == []
    s.flush()
    assert statements[0] == "BEGIN IMMEDIATE" and statements[-1] == "COMMIT"
    assert statements.count("BEGIN IMMEDIATE") == 1 and statements.count("COMMIT") == 1
    assert any(x.startswith("DELETE FROM entries") for x in statements)
    s._writer.set_trace_callback(None)
    s._reader.set_trace_callback(None)
    assert not s.dirty
    assert durable(s)[0] == observed(s)
    assert s.read(1, 1) == [d(1, 1), d(1, 2)] + [d(1, q) for q in range(3, 8)]


def test_flush_with_nothing_buffered_does_nothing(db):
    s = db()
    statements = []
    s._writer.set_trace_callback(statements.append)
    s.flush()
    assert statements == [] and not s.dirty


def test_many_appends_and_one_flush(db):
    s = db()
    for i in range(5000):
        origin, seq = i % 7, i // 7 + 1
        s.append(origin, seq, h(origin, seq), d(origin, seq))
    vv = s.version_vector()
    s.flush()
    with s.reopen() as again:
        assert again.version_vector() == vv
        assert again.read(3, 1, limit=50) == [d(3, q) for q in range(1, 51)]


# -- reads merge the buffer over the file ---------------------------------------------------------


def test_reads_combine_buffered_and_durable_entries(db):
    s = db()
    fill(s, 1, 6)
    s.flush()
    fill(s, 1, 4, start=7)
    assert s.read(1, 1) == [d(1, q) for q in range(1, 11)]
    assert s.read(1, 5, 8) == [d(1, q) for q in range(5, 9)]
    assert s.read(1, 5, limit=3) == [d(1, q) for q in (5, 6, 7)]
    assert s.get(1, 6) == d(1, 6) and s.get(1, 7) == d(1, 7) and s.get(1, 11) is None
    s.truncate(1, 3)  # cuts into the durable part
    assert s.head(1) == Head(3, h(1, 3))
    assert s.read(1, 1) == [d(1, q) for q in (1, 2, 3)]
    assert s.get(1, 4) is None and s.get(1, 6) is None
    fill(s, 1, 2, start=4)
    assert s.read(1, 1) == [d(1, q) for q in range(1, 6)]
    assert s.heads() == {1: Head(5, h(1, 5))}
    with s.reopen() as again:  # the file still holds 1..6 until the flush
        assert again.read(1, 1) == [d(1, q) for q in range(1, 7)]
    s.flush()
    with s.reopen() as again:
        assert again.read(1, 1) == [d(1, q) for q in range(1, 6)]
        assert again.get(1, 6) is None


def test_truncate_to_zero_then_flush_forgets_the_feed_on_disk(db):
    s = db()
    fill(s, 2, 3)
    s.flush()
    assert s.truncate(2, 0) == 3
    s.flush()
    with s.reopen() as again:
        assert again.head(2) is None and again.heads() == {}
        fill(again, 2, 1)


def test_an_origin_must_fit_sqlite(db):
    s = db()
    for origin in (-1, 2**63, "1", True, None):
        with pytest.raises(StorageError):
            s.append(origin, 1, h(1, 1), d(1, 1))
    with pytest.raises(StorageError):
        s.quarantine(-1, (b"a", b"b"))
    with pytest.raises(StorageError):
        s.quarantine(1, (b"a", "b"))
    assert not s.dirty


def test_a_closed_store_refuses_everything(db):
    s = db()
    fill(s, 1, 1)
    s.flush()
    s.close()
    s.close()
    for call in (lambda: s.head(1), lambda: s.get(1, 1), lambda: s.read(1, 1), s.heads, s.flush,
                 lambda: s.append(1, 2, h(1, 2), d(1, 2)), lambda: s.get_meta("x")):
        with pytest.raises(StorageError, match="closed"):
            call()


# -- a failed flush -------------------------------------------------------------------------------


def _fail_then_check(s: SqliteFeedStore, fail) -> None:
    fill(s, 1, 3)
    fill(s, 2, 1)
    s.put_meta("acks", b"kept")
    s.flush()
    before = durable(s)
    s.truncate(1, 1)
    fill(s, 1, 300, start=2)
    fill(s, 3, 2)
    s.quarantine(2, (b"x", b"y"))
    s.put_meta("acks", b"lost")
    s.put_meta("other", b"new")
    buffered = now_visible(s)
    with fail():
        with pytest.raises(StorageError, match="flush failed"):
            s.flush()
    assert s.dirty and now_visible(s) == buffered  # still buffered, still visible
    assert durable(s) == before  # nothing of it reached the file
    s.discard_unflushed()
    assert not s.dirty
    assert now_visible(s) == before
    assert s.read(1, 1) == [d(1, 1), d(1, 2), d(1, 3)]


class _PageLimit:
    """SQLITE_FULL for real: the database may not grow by more than a page."""

    def __init__(self, s: SqliteFeedStore) -> None:
        self.s = s

    def __enter__(self):
        pages = self.s._writer.execute("PRAGMA page_count").fetchone()[0]
        self.s._writer.execute(f"PRAGMA max_page_count = {pages + 1}")

    def __exit__(self, *exc):
        self.s._writer.execute("PRAGMA max_page_count = 1073741823")


def test_a_full_disk_fails_the_flush_whole(db):
    s = db()
    _fail_then_check(s, lambda: _PageLimit(s))
    fill(s, 1, 1, start=4)  # the store goes on from the durable state
    s.flush()
    with s.reopen() as again:
        assert again.head(1) == Head(4, h(1, 4))


def test_a_failed_commit_rolls_back_everything_before_it(db):
    s = db()

    class Failing:
        def __enter__(self):
            self.real, s._writer = s._writer, FailingCommit(s._writer)

        def __exit__(self, *exc):
            s._writer = self.real

    _fail_then_check(s, Failing)
    assert not s._writer.in_transaction


def test_a_closed_connection_fails_the_flush(db):
    s = db()

    class Closed:
        def __enter__(self):
            s._writer.close()

        def __exit__(self, *exc):
            pass

    _fail_then_check(s, Closed)


def test_a_failed_flush_can_be_retried_with_later_writes_on_top(db):
    s = db()
    fill(s, 1, 2)
    s.flush()
    fill(s, 1, 2, start=3)
    with _PageLimit(s):
        fill(s, 5, 200)  # enough to need more pages
        with pytest.raises(StorageError):
            s.flush()
    fill(s, 1, 1, start=5)  # on top of the failed writes
    s.truncate(5, 150)
    assert s.head(1) == Head(5, h(1, 5)) and s.head(5) == Head(150, h(5, 150))
    s.flush()
    assert not s.dirty
    with s.reopen() as again:
        assert again.read(1, 1) == [d(1, q) for q in range(1, 6)]
        assert again.head(5) == Head(150, h(5, 150)) and again.get(5, 151) is None


# -- a flush in another thread while the engine reads and writes ----------------------------------


def test_reads_and_writes_go_on_while_a_flush_is_in_its_transaction(db):
    s = db()
    fill(s, 1, 2)
    s.flush()
    fill(s, 1, 3, start=3)
    s.truncate(1, 4)
    inside, go_on = threading.Event(), threading.Event()

    def hold(statement):
        if statement.startswith("INSERT") and not inside.is_set():
            inside.set()
            go_on.wait(DEADLINE_S)

    s._writer.set_trace_callback(hold)
    errors = []
    flusher = threading.Thread(target=lambda: _run(s.flush, errors))
    flusher.start()
    try:
        assert inside.wait(DEADLINE_S)
        # the flush holds its transaction open; the store answers and takes writes meanwhile
        assert s.read(1, 1) == [d(1, q) for q in range(1, 5)]
        fill(s, 1, 2, start=5)
        fill(s, 2, 1)
        s.put_meta("acks", b"during")
        assert s.head(1) == Head(6, h(1, 6)) and s.version_vector() == {1: 6, 2: 1}
        assert s.read(1, 3) == [d(1, q) for q in range(3, 7)]
        assert durable(s)[0][1] == {1: 2}  # not committed yet
    finally:
        go_on.set()
        flusher.join(DEADLINE_S)
    assert not flusher.is_alive() and errors == []
    s._writer.set_trace_callback(None)
    assert s.dirty  # what came during the flush is not part of it
    assert durable(s)[0][1] == {1: 4}
    assert s.read(1, 1) == [d(1, q) for q in range(1, 7)] and s.get_meta("acks") == b"during"
    s.flush()
    assert durable(s) == now_visible(s)


def _run(call, errors):
    try:
        call()
    except Exception as exc:  # reported by the test thread
        errors.append(exc)


# -- the buffer, flushes, failures and restarts against the memory store as a model ---------------


class AgainstMemory(RuleBasedStateMachine):
    """Every sequence of writes, flushes, failed flushes, discards and reopens leaves the SQLite
    store showing what the memory store shows (and, reopened, what a crash would keep)."""

    @initialize()
    def start(self):
        self.dir = Path(__import__("tempfile").mkdtemp(prefix="tillmesh-sm-"))
        self.sql = SqliteFeedStore(self.dir / "feeds.sqlite")
        self.mem = MemoryFeedStore()
        self.tag = 0

    def teardown(self):
        if hasattr(self, "sql"):
            self.sql.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    @rule(origin=st.integers(0, 2), count=st.integers(1, 4))
    def append(self, origin, count):
        for _ in range(count):
            self.tag += 1
            seq = (self.mem.head(origin).seq if self.mem.head(origin) else 0) + 1
            entry = f"{origin}/{seq}/{self.tag}".encode()
            for s in (self.mem, self.sql):
                s.append(origin, seq, hashlib.blake2b(entry, digest_size=32).digest(), entry)

    @rule(origin=st.integers(0, 2), seq=st.integers(-1, 12))
    def append_out_of_place(self, origin, seq):
        head = self.mem.head(origin)
        if seq == (head.seq if head else 0) + 1:
            return
        for s in (self.mem, self.sql):
            with pytest.raises(StorageError):
                s.append(origin, seq, bytes(32), b"no")

    @rule(origin=st.integers(0, 2), back=st.integers(-1, 5))
    def truncate(self, origin, back):
        head = self.mem.head(origin)
        cutoff = max(0, (head.seq if head else 0) - back)  # mostly into the feed, sometimes past it
        assert self.sql.truncate(origin, cutoff) == self.mem.truncate(origin, cutoff)

    @rule(origin=st.integers(0, 3), evidence=st.tuples(st.binary(max_size=4), st.binary(max_size=4)))
    def quarantine(self, origin, evidence):
        self.mem.quarantine(origin, evidence)
        self.sql.quarantine(origin, evidence)

    @rule(name=st.sampled_from(["acks", "other"]), value=st.binary(max_size=8))
    def put_meta(self, name, value):
        self.mem.put_meta(name, value)
        self.sql.put_meta(name, value)

    @rule()
    def flush(self):
        self.mem.flush()
        self.sql.flush()

    @rule()
    def failed_flush(self):
        if not self.sql.dirty:
            return
        real, self.sql._writer = self.sql._writer, FailingCommit(self.sql._writer)
        try:
            with pytest.raises(StorageError):
                self.sql.flush()
        finally:
            self.sql._writer = real
        # the memory store's model of a failed flush: nothing became durable

    @rule()
    def discard(self):
        self.mem.discard_unflushed()
        self.sql.discard_unflushed()

    @rule()
    def reopen(self):
        with self.sql.reopen() as again:
            assert self.view(again) == self.view(self.mem.crashed())

    @invariant()
    def same(self):
        if hasattr(self, "sql"):
            assert self.view(self.sql) == self.view(self.mem)
            assert self.sql.dirty == self.mem.dirty

    @staticmethod
    def view(s):
        vv = s.version_vector()
        return (s.heads(), vv, s.quarantined(), s.get_meta("acks"), s.get_meta("other"),
                {o: s.read(o, 1) for o in range(4)}, {o: s.read(o, 2, 3, limit=1) for o in range(3)},
                {(o, q): s.get(o, q) for o in range(3) for q in range(0, vv.get(o, 0) + 2)})


TestAgainstMemory = AgainstMemory.TestCase
TestAgainstMemory.settings = settings(max_examples=100, stateful_step_count=50, deadline=None)


# -- damaged files --------------------------------------------------------------------------------


def test_a_file_of_garbage_is_refused_with_its_name(tmp_path):
    path = tmp_path / "tillmesh.sqlite"
    path.write_bytes(b"this is not an SQLite database at all " * 200)
    with pytest.raises(StorageError, match="corrupt") as refused:
        SqliteFeedStore(path)
    assert str(path) in str(refused.value)
    assert path.read_bytes() == b"this is not an SQLite database at all " * 200  # left as found


def test_another_programs_database_is_refused(tmp_path):
    path = tmp_path / "feeds.sqlite"
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
    raw.close()
    with pytest.raises(StorageError, match="not a tillmesh feed store") as refused:
        SqliteFeedStore(path)
    assert str(path) in str(refused.value)


def test_a_directory_where_the_file_should_be_is_refused(tmp_path):
    with pytest.raises(StorageError, match=str(tmp_path)):
        SqliteFeedStore(tmp_path)


def test_damaged_pages_raise_storage_errors_not_sqlite_errors(tmp_path):
    path = tmp_path / "feeds.sqlite"
    with SqliteFeedStore(path) as s:
        for origin in (1, 2):
            for seq in range(1, 401):
                s.append(origin, seq, h(origin, seq), d(origin, seq) * 20)
        s.flush()
    size = path.stat().st_size
    with open(path, "r+b") as f:  # keep page 1 (the header and the schema), wreck the rest
        f.seek(4096)
        f.write(hashlib.shake_256(b"garbage").digest(size - 4096))
    try:
        s = SqliteFeedStore(path)
    except StorageError as refused:
        assert str(path) in str(refused)
        return
    with s, pytest.raises(StorageError):
        for origin, head in s.heads().items():
            for first in range(1, head.seq + 1, 100):
                s.read(origin, first, limit=100)


def test_a_missing_row_is_an_error_not_a_shorter_feed(db, tmp_path):
    s = db()
    fill(s, 1, 10)
    s.flush()
    with sqlite3.connect(tmp_path / "feeds.sqlite") as raw:
        raw.execute("DELETE FROM entries WHERE origin = 1 AND seq = 5")
    raw.close()
    with pytest.raises(StorageError, match="missing"):
        s.read(1, 1)
    with pytest.raises(StorageError, match="missing"):
        s.get(1, 5)
    assert s.read(1, 6) == [d(1, q) for q in range(6, 11)]


# -- a real crash ---------------------------------------------------------------------------------

CRASHER = textwrap.dedent("""
    import hashlib, sys
    from node.storage import SqliteFeedStore
    path, batch = sys.argv[1], int(sys.argv[2])
    store = SqliteFeedStore(path)
    seq = 0
    while True:
        for _ in range(batch):
            seq += 1
            for origin in (1, 2):
                data = f"entry {origin}/{seq} ".encode() * 40
                store.append(origin, seq, hashlib.blake2b(data, digest_size=32).digest(), data)
        store.put_meta("last", str(seq).encode())
        store.flush()
        print(f"flushed {seq}", flush=True)
""")


class Child:
    """A python subprocess whose stdout is read line by line against a deadline."""

    def __init__(self, script: str, *args: str, stdin: bool = False) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen([sys.executable, "-c", script, *args], cwd=ROOT, env=env, bufsize=0,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.PIPE if stdin else subprocess.DEVNULL)
        self._buffer = b""

    def line(self, timeout: float = DEADLINE_S) -> str | None:
        """The next line it printed (None once it has exited and everything was read)."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line from pid {self.proc.pid} within {timeout}s")
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    return None
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def kill(self) -> int:
        """SIGKILL by pid (if still running) and reap it; its exit status."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        return self.proc.wait(DEADLINE_S)

    def close(self) -> None:
        self.kill()
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def spawn():
    """Starts Child processes; every one still running at the end is killed by its pid."""
    children = []

    def start(script, *args, stdin=False):
        children.append(Child(script, *args, stdin=stdin))
        return children[-1]

    yield start
    for child in children:
        child.close()
    assert all(child.proc.returncode is not None for child in children)


@pytest.mark.parametrize("batch,flushes_seen", [(50, 3), (200, 5), (7, 20)])
def test_a_killed_process_keeps_exactly_its_flushed_entries(tmp_path, spawn, batch, flushes_seen):
    path = tmp_path / "feeds.sqlite"
    child = spawn(CRASHER, str(path), str(batch))
    printed = []
    while len(printed) < flushes_seen:
        line = child.line()
        assert line is not None, child.proc.stderr.read().decode()
        printed.append(int(line.removeprefix("flushed ")))
    assert child.kill() == -signal.SIGKILL  # in the middle of the next appends or flush
    while (line := child.line()) is not None:  # anything it printed before it died
        printed.append(int(line.removeprefix("flushed ")))
    with sqlite3.connect(path) as raw:  # recovers the WAL
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    raw.close()
    with SqliteFeedStore(path) as again:
        head = again.version_vector()[1]
        assert again.version_vector() == {1: head, 2: head}  # nothing partial: whole flushes only
        assert head % batch == 0 and printed[-1] <= head <= printed[-1] + batch
        assert again.get_meta("last") == str(head).encode()
        for origin in (1, 2):
            entries = [x for first in range(1, head + 1, 10_000) for x in again.read(origin, first)]
            assert entries == [f"entry {origin}/{seq} ".encode() * 40 for seq in range(1, head + 1)]
            assert again.head(origin).hash == hashlib.blake2b(entries[-1], digest_size=32).digest()
            assert again.get(origin, head + 1) is None
        again.append(1, head + 1, h(1, head + 1), b"after the crash")  # and it goes on
        again.flush()


# -- the data directory ---------------------------------------------------------------------------

NOW_MS = 1_800_000_000_000
CONFIG_TEXT = '[node]\nlisten = "127.0.0.1:0"\n'


@pytest.fixture(scope="module")
def network():
    """An authority and a device's (token, seed)."""
    authority = Authority.create(os.urandom, NOW_MS)
    seed = os.urandom(32)
    cert = authority.enroll(DeviceKey(seed).public, name="till-1", branch="central", roles=("cashier",),
                            now_ms=NOW_MS)
    return authority, authority.token(cert.number), seed, cert


def tree(path: Path) -> dict:
    return {str(p.relative_to(path)): (p.read_bytes() if p.is_file() else None, p.stat().st_mode)
            for p in sorted(path.rglob("*"))}


def test_create_writes_the_files_with_private_modes(tmp_path, network):
    _, token, seed, cert = network
    old = os.umask(0)  # even a permissive umask leaves the secrets private
    try:
        data_dir = DataDir.create(tmp_path / "node", token=token, device_seed=seed, config_text=CONFIG_TEXT)
    finally:
        os.umask(old)
    root = tmp_path / "node"
    assert data_dir.path == root
    assert sorted(p.name for p in root.iterdir()) == ["api.token", "device.key", "lock", "network.token", "node.toml"]
    for name in ("device.key", "network.token", "api.token"):
        assert os.stat(root / name).st_mode & 0o777 == 0o600, name
    assert os.stat(root).st_mode & 0o777 == 0o700
    assert (root / "device.key").read_bytes() == seed
    assert (root / "node.toml").read_text() == CONFIG_TEXT
    assert [p.name for p in tmp_path.iterdir()] == ["node"]  # no staging directory left

    opened = DataDir.open(root)
    assert opened.token() == token and opened.device_seed() == seed
    api = opened.api_token()
    assert isinstance(api, str) and len(api) >= 40 and "\n" not in api
    keyring, got_cert, feed = opened.keyring()
    assert got_cert == cert and keyring.number == cert.number
    assert [e.seq for e in feed] == list(range(1, len(feed) + 1))
    from node.config import NodeConfig

    config = opened.config()
    assert isinstance(config, NodeConfig)


def test_two_data_dirs_get_different_api_tokens(tmp_path, network):
    _, token, seed, _ = network
    a = DataDir.create(tmp_path / "a", token=token, device_seed=seed, config_text="")
    b = DataDir.create(tmp_path / "b", token=token, device_seed=seed, config_text="")
    assert a.api_token() != b.api_token()


def test_create_into_an_empty_directory(tmp_path, network):
    _, token, seed, _ = network
    (tmp_path / "node").mkdir()
    DataDir.create(tmp_path / "node", token=token, device_seed=seed, config_text="")
    assert (tmp_path / "node" / "device.key").read_bytes() == seed


def test_create_refuses_a_directory_that_is_not_empty_and_changes_nothing(tmp_path, network):
    _, token, seed, _ = network
    root = tmp_path / "node"
    root.mkdir()
    (root / "notes.txt").write_text("mine")
    (root / "device.key").write_bytes(b"k" * 32)
    before, around = tree(root), sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(StorageError, match="not empty") as refused:
        DataDir.create(root, token=token, device_seed=seed, config_text="")
    assert str(root) in str(refused.value)
    assert tree(root) == before and sorted(p.name for p in tmp_path.iterdir()) == around
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorageError, match="something else"):
        DataDir.create(tmp_path / "file", token=token, device_seed=seed, config_text="")


@pytest.mark.parametrize("case", ["garbage token", "another device's seed", "short seed", "bad config"])
def test_create_with_bad_input_writes_nothing(tmp_path, network, case):
    _, token, seed, _ = network
    args = {"token": token, "device_seed": seed, "config_text": ""}
    expected = {"garbage token": MalformedData, "another device's seed": WrongNetwork,
                "short seed": InvalidInput, "bad config": InvalidInput}[case]
    args.update({"garbage token": {"token": "tillmesh1:nope"}, "another device's seed": {"device_seed": bytes(32)},
                 "short seed": {"device_seed": seed[:31]}, "bad config": {"config_text": "[nope]\nx = 1\n"}}[case])
    with pytest.raises(expected):
        DataDir.create(tmp_path / "node", **args)
    assert list(tmp_path.iterdir()) == []


def test_open_checks_the_files(tmp_path, network):
    _, token, seed, _ = network
    with pytest.raises(StorageError, match="no data directory"):
        DataDir.open(tmp_path / "absent")
    root = DataDir.create(tmp_path / "node", token=token, device_seed=seed, config_text="").path
    os.chmod(root / "device.key", 0o644)
    with pytest.raises(StorageError, match="chmod 600") as refused:
        DataDir.open(root)
    assert "device.key" in str(refused.value)
    os.chmod(root / "device.key", 0o600)
    (root / "api.token").unlink()
    with pytest.raises(StorageError, match="api.token is missing"):
        DataDir.open(root)


def test_store_is_seeded_with_the_authority_feed_once(tmp_path, network):
    authority, token, seed, _ = network
    data_dir = DataDir.create(tmp_path / "node", token=token, device_seed=seed, config_text="")
    with data_dir.store() as s:
        assert not s.dirty
        assert s.version_vector() == {0: len(authority.feed)}
        assert s.read(0, 1) == [e.encode() for e in authority.feed]
        assert s.path == tmp_path / "node" / "tillmesh.sqlite"
    with DataDir.open(data_dir.path).store() as again:  # flushed, and not seeded twice
        assert again.version_vector() == {0: len(authority.feed)}


def test_store_refuses_another_networks_database(tmp_path, network):
    _, token, seed, _ = network
    other = Authority.create(os.urandom, NOW_MS)
    other_seed = os.urandom(32)
    other_cert = other.enroll(DeviceKey(other_seed).public, name="x", branch="b", roles=("cashier",), now_ms=NOW_MS)
    theirs = DataDir.create(tmp_path / "theirs", token=other.token(other_cert.number), device_seed=other_seed,
                            config_text="")
    theirs.store().close()
    ours = DataDir.create(tmp_path / "ours", token=token, device_seed=seed, config_text="")
    shutil.copy(theirs.path / "tillmesh.sqlite", ours.path / "tillmesh.sqlite")
    with pytest.raises(StorageError, match="another network"):
        ours.store()


def test_a_corrupt_database_in_a_data_dir_is_named(tmp_path, network):
    _, token, seed, _ = network
    data_dir = DataDir.create(tmp_path / "node", token=token, device_seed=seed, config_text="")
    (data_dir.path / "tillmesh.sqlite").write_bytes(os.urandom(8192))
    with pytest.raises(StorageError, match="tillmesh.sqlite"):
        data_dir.store()


# -- the lock, across processes -------------------------------------------------------------------

TRY_LOCK = textwrap.dedent("""
    import sys
    from node.storage import DataDir, DataDirLocked
    try:
        held = DataDir(sys.argv[1]).lock()
    except DataDirLocked as refused:
        print("refused:", refused, flush=True)
        sys.exit(3)
    print("acquired", flush=True)
    held.release()
""")

HOLD_LOCK = textwrap.dedent("""
    import sys
    from node.storage import DataDir
    with DataDir(sys.argv[1]).lock():
        print("holding", flush=True)
        sys.stdin.readline()
    print("released", flush=True)
""")


def test_a_second_process_cannot_take_the_lock_until_it_is_released(tmp_path, network, spawn):
    _, token, seed, _ = network
    data_dir = DataDir.create(tmp_path / "node", token=token, device_seed=seed, config_text="")
    before = tree(data_dir.path)
    held = data_dir.lock()
    try:
        child = spawn(TRY_LOCK, str(data_dir.path))
        line = child.line()
        assert child.proc.wait(DEADLINE_S) == 3
        assert line.startswith("refused:") and str(data_dir.path) in line and f"pid {os.getpid()}" in line
        assert "only one node" in line
        assert (data_dir.path / "lock").read_text() == f"{os.getpid()}\n"  # the refused one wrote nothing
    finally:
        held.release()
    assert not held.held
    child = spawn(TRY_LOCK, str(data_dir.path))
    assert child.line() == "acquired" and child.proc.wait(DEADLINE_S) == 0
    after = tree(data_dir.path)
    assert {k: v for k, v in after.items() if k != "lock"} == {k: v for k, v in before.items() if k != "lock"}


def test_the_lock_held_by_another_process_refuses_this_one(tmp_path, network, spawn):
    _, token, seed, _ = network
    data_dir = DataDir.create(tmp_path / "node", token=token, device_seed=seed, config_text="")
    holder = spawn(HOLD_LOCK, str(data_dir.path), stdin=True)
    assert holder.line() == "holding"
    with pytest.raises(DataDirLocked, match="in use by another node process") as refused:
        DataDir(data_dir.path).lock()
    assert str(data_dir.path) in str(refused.value) and f"pid {holder.proc.pid}" in str(refused.value)
    assert isinstance(refused.value, StorageError)
    holder.proc.stdin.write(b"\n")
    holder.proc.stdin.flush()
    assert holder.line() == "released" and holder.proc.wait(DEADLINE_S) == 0
    with DataDir(data_dir.path).lock() as mine:
        assert mine.held
        with pytest.raises(DataDirLocked):  # a second lock in the same process is refused too
            data_dir.lock()
    assert not mine.held
