"""The running device: one trio task owns the engine, everything else talks to it.

Theory of operation
-------------------
The engine is sans-IO; this module is its driver. One task (``_engine_loop``) is the only
code that touches the engine. Everything else — connection readers, dialers, the HTTP API —
sends it inputs through one memory channel (the inbox) and, for commits, waits for an
answer. Each round the loop takes one input (or wakes at ``engine.next_deadline()``), then
everything else already waiting, then ticks the engine and acts on ``poll()``:

- bytes to send go to each connection's writer task;
- closes end the connection's tasks and its stream;
- ``flush`` hands ``store.flush()`` to the one writer thread and the loop goes on taking
  inputs (commits, bytes) while it runs; it acts on the engine's effects again once the flush
  is done and it has called ``engine.flushed()`` (or ``flush_failed()``). Every commit that
  arrived while a flush ran joins the next one (group commit, pipelined: one flush in flight,
  the next one gathering), and a caller's commit returns only once the flush that holds it
  is done;
- committed entries wake the callers waiting for them; alerts and peer changes are logged.

Connections: a TCP listener, and one dialer per configured peer or anchor that keeps its
link up with exponential backoff and jitter. When two nodes dial each other the engine keeps
one session (the one the lower-numbered device dialled) and closes the other; a dialer
whose peer is already live over another connection waits instead of dialling again. At most
``max_handshakes`` connections may be unauthenticated at once; more are closed at once.

Shutdown (SIGINT/SIGTERM, or ``Node.stop()``): stop accepting, close every session with a
``bye``, flush, close the database. A second signal exits at once.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import json
import logging
import math
import os
import queue
import random
import secrets
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
import trio

from crdt_types import StorageError, TillmeshError, canonical
from gossip import CloseReason, Committed, Engine, EngineConfig, Now

from ._alerts import RecentAlerts
from .pos import POS_ESCROW, POS_POLICY, POS_SCHEMA, Shop

__all__ = ["Node", "run_node", "MAX_CONNECTION_BUFFER"]

log = logging.getLogger("tillmesh")

# Bytes queued for one connection's writer before the peer is deemed too slow and cut off:
# a session's window keeps well under this (1 MiB of entries in flight).
MAX_CONNECTION_BUFFER = 8 * 1024 * 1024
# Inputs waiting for the engine task: readers block past this, which is back-pressure on
# the sockets rather than memory growing without bound.
INBOX_SIZE = 1024
# What one receive_some may return: trio's default, and what the channel's buffer limit
# was sized for.
READ_BYTES = 65536
CONNECT_TIMEOUT_S = 5.0
# Alerts kept for `tillmesh status` and GET /status (the log has them all).
RECENT_ALERTS = 50
# Applied changes kept for GET /events to resume from (a client further behind is told to
# reset: read the state again, then follow from there).
EVENTS_RING = 4096
# Alerts waiting to become incidents; past this they stay in the log and recent_alerts only.
INCIDENT_QUEUE = 256
# Record kinds whose entry (origin, seq) the node remembers: the ack level and seq a replayed
# sale, refund or retry-safe operation reports.
_INDEXED_KINDS = frozenset({"sale", "refund", "operation"})


def _entry_meta_name(key: tuple) -> str:
    """The store's meta name for where ``key``'s record was written (names are at most 64 characters)."""
    return "entry:" + hashlib.blake2b(canonical(list(key)), digest_size=16, person=b"tillmesh-entryof").hexdigest()


def _entry_from_meta(data: bytes | None) -> tuple[int, int] | None:
    if data is None or len(data) > 32:
        return None
    try:
        value = cbor2.loads(data)
    except Exception:  # an unreadable row is as good as none: the caller says "not known"
        return None
    if (isinstance(value, list) and len(value) == 2
            and all(type(v) is int and 0 <= v < 2**53 for v in value)):
        return value[0], value[1]
    return None


def _now() -> Now:
    return Now(int(trio.current_time() * 1000), int(time.time() * 1000))


@dataclass(eq=False)
class Connection:
    """One TCP connection: the handle the engine knows it by."""

    stream: trio.abc.Stream
    address: str
    initiator: bool
    outbox_send: Any = None
    outbox_recv: Any = None
    queued: int = 0
    closed: trio.Event = field(default_factory=trio.Event)

    def __post_init__(self) -> None:
        self.outbox_send, self.outbox_recv = trio.open_memory_channel(math.inf)

    def __repr__(self) -> str:
        return f"Connection({self.address}, {'out' if self.initiator else 'in'})"


@dataclass
class _Waiter:
    done: trio.Event = field(default_factory=trio.Event)
    result: Committed | None = None
    error: BaseException | None = None


class _WriterThread:
    """The one thread that writes the database. ``submit`` hands it a function; what came of
    it is handed back to ``done`` on the trio thread (``run_sync_soon``). A lighter round trip
    than ``trio.to_thread.run_sync`` (no limiter, thread cache or context copy, and the caller
    does not wait): about 100 us less per flush on the benchmark VM, where a flush is ~200 us."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def submit(self, fn: Any, done: Any) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, args=(trio.lowlevel.current_trio_token(),),
                                            name="tillmesh-writer", daemon=True)
            self._thread.start()
        self._jobs.put((fn, done))

    def stop(self) -> None:
        """The thread ends once what was submitted is done."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread = None

    def _work(self, token: Any) -> None:
        while (job := self._jobs.get()) is not None:
            fn, done = job
            try:
                fn()
                error = None
            except BaseException as exc:  # noqa: BLE001  (handed to the engine task, which decides)
                error = exc
            try:
                token.run_sync_soon(done, error)
            except trio.RunFinishedError:
                pass  # trio is gone (an exit at once): nobody waits for this flush any more


class Node:
    """One device's runtime.

    Args:
        data_dir: the node's DataDir (locked by the caller for as long as the node runs).
        relay: run as an anchor (relay): verify, store and forward, read nothing.
        random: injected randomness for jitter (the engine draws its own from os.urandom).
    """

    def __init__(self, data_dir: Any, *, relay: bool | None = None, rng: random.Random | None = None) -> None:
        self.data_dir = data_dir
        self.config = data_dir.config()
        self.relay = self.config.relay if relay is None else relay
        keyring, cert, _ = data_dir.keyring()
        self.certificate = cert
        self._keyring = keyring  # the engine's own: it learns every device enrolled later
        self.store = data_dir.store()
        self.api_token = data_dir.api_token()
        sync = self.config.sync
        engine_config = EngineConfig(have_interval_ms=sync.have_interval_ms, ping_interval_ms=sync.ping_interval_ms,
                                     ping_timeout_ms=sync.ping_timeout_ms,
                                     snapshot_every=self.config.storage.snapshot_every)
        self.engine = Engine(keyring, self.store, random_bytes=os.urandom, now=_now(), policy=POS_POLICY,
                             schema=POS_SCHEMA, escrow=POS_ESCROW, config=engine_config)
        self._rng = rng or random.Random()
        self._inbox_send, self._inbox_recv = trio.open_memory_channel(INBOX_SIZE)
        self._conns: set[Connection] = set()
        self._waiting: dict[int, _Waiter] = {}
        self._writer = _WriterThread()  # the one thread that writes the database
        self._flushing: trio.Event | None = None  # set once the flush in flight is done
        self._flush_error: BaseException | None = None
        self._stopping = trio.Event()
        self._stopped = trio.Event()
        self._pending: set[Connection] = set()  # connected, not yet authenticated
        # Authenticated and with their transport still up. A connection leaves the moment its
        # transport ends, before the engine hears of it: links_live() must not count it then.
        self._live: set[Connection] = set()
        self._serving = 0  # connection tasks still running
        self._all_closed = trio.Event()
        self._listen_scope = trio.CancelScope()
        self._device_at: dict[str, int] = {}  # dialled address -> device number found there
        # Every peer seen live this run, kept after it goes: its row on the status page says
        # "down" and when it was last heard from.
        self._peers_seen: dict[int, dict[str, Any]] = {}
        self.ports: dict[str, int] = {}
        self.recent_alerts = RecentAlerts(RECENT_ALERTS)
        self.counters = {"commits": 0, "flushes": 0, "flush_failures": 0, "bytes_in": 0, "bytes_out": 0,
                         "alerts": 0}
        # -- the POS domain's view of the node (node/pos, GET /events) ---------------------------
        self.counters["incidents_dropped"] = 0
        self.events: collections.deque = collections.deque(maxlen=EVENTS_RING)  # (id, origin, seq, key)
        self.event_epoch = secrets.token_hex(4)  # event ids of another run of this node mean "reset"
        self.event_count = 0
        self._changed = trio.Event()
        self._entries: dict[tuple, tuple[int, int]] = {}
        self._incidents_send, self._incidents_recv = trio.open_memory_channel(INCIDENT_QUEUE)
        self._refunds_to_check: set[tuple] = set()  # other devices' refunds, for _check_refunds
        self._refunds_arrived = trio.Event()
        self.pos = (Shop(self, rights_wait_ms=self.config.pos.rights_wait_ms,
                         approval_above=self.config.pos.approval_above) if self.engine.is_member else None)

    # -- the API's handle ---------------------------------------------------------------------

    async def commit(self, ops: list[tuple]) -> dict:
        """Commit a transaction; returns once it is durable.

        Raises:
            InvalidInput, Unauthorized, InsufficientRights: refused, nothing written.
            StorageError: the flush that held it failed; nothing of it was kept.
        """
        waiter = _Waiter()
        await self._inbox_send.send(("commit", ops, waiter))
        await waiter.done.wait()
        if waiter.error is not None:
            raise waiter.error
        committed = waiter.result
        return {"origin": committed.origin, "seq": committed.seq, "hash": committed.hash.hex(),
                "ack": self.engine.ack_level(committed.seq).value}

    def value(self, key: tuple) -> Any:
        return self.engine.value(key)

    def status(self) -> dict:
        status = self.engine.status()
        return {
            "device": status.device, "name": self.certificate.name, "branch": self.certificate.branch,
            "relay": not status.is_member, "vector": status.vector, "applied": status.applied,
            "durable_seq": status.durable_seq, "digest": status.digest.hex() if status.digest else None,
            "acks": status.acks.as_dict(), "unheld": status.acks.local, "pending": status.pending, "quarantined": list(status.quarantined),
            "revoked": status.revoked, "ports": self.ports,
            "peers": (rows := self._peer_rows(status)),
            "peers_down": self._peers_down(rows),
            "storage": {"path": str(getattr(self.store, "path", "")), "dirty": self.store.dirty},
            "counters": dict(self.counters),
            "alerts": [dict(row) for row in self.recent_alerts],
        }

    def _peer_seen(self, p: Any, now: Now) -> dict[str, Any]:
        """Who a peer is (name and branch from its certificate) and when it was last heard
        from (wall clock, ms): what a status row shows of it, and what is kept when it goes."""
        cert = self._keyring.certificates.get(p.device) if p.device is not None else None
        return {"device": p.device, "name": cert.name if cert else None, "branch": cert.branch if cert else None,
                "relay": p.is_relay, "address": p.handle.address,
                "last_heard_ms": now.wall_ms - max(0, now.mono_ms - p.last_heard_ms)}

    def _peer_rows(self, status: Any) -> list[dict[str, Any]]:
        """Each connection: who it is, when it was last heard from, and how far it is from us
        (``they_lack``, ``we_lack``: entries)."""
        now = _now()
        sync = self.engine.peer_sync()
        rows = []
        for p in status.peers:
            seen = self._peer_seen(p, now)
            they_lack, we_lack = sync.get(p.handle, (0, 0))
            rows.append({**seen, "state": p.state, "initiator": p.initiator, "they_lack": they_lack,
                         "we_lack": we_lack, "bytes_sent": p.bytes_sent, "payload_bytes_sent": p.payload_bytes_sent,
                         "entries_received": p.entries_received})
            if p.device is not None and p.state == "live":
                self._peers_seen[p.device] = seen
        return rows

    def _peers_down(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each peer seen live in this run that has no connection now, and when it was last
        heard from."""
        connected = {r["device"] for r in rows}
        return [{**seen, "state": "down"} for device, seen in sorted(self._peers_seen.items())
                if device not in connected]

    def _remember_peer(self, conn: Any) -> None:
        """Before a connection's session goes: who it was and when it was last heard from."""
        for p in self.engine.status().peers:
            if p.handle is conn and p.device is not None and p.state == "live":
                self._peers_seen[p.device] = self._peer_seen(p, _now())

    def metrics(self) -> bytes:
        from prometheus_client import CollectorRegistry, Gauge, generate_latest

        registry = CollectorRegistry()
        status = self.engine.status()
        Gauge("tillmesh_peers_live", "live sessions", registry=registry).set(
            sum(1 for p in status.peers if p.state == "live"))
        Gauge("tillmesh_entries_pending", "entries stored, not yet applied", registry=registry).set(status.pending)
        local = Gauge("tillmesh_own_entries", "this device's entries by where they are held", ["level"],
                      registry=registry)
        for level, count in status.acks.as_dict().items():
            local.labels(level).set(count)
        totals = Gauge("tillmesh_total", "running totals", ["what"], registry=registry)
        for what, count in self.counters.items():
            totals.labels(what).set(count)
        return generate_latest(registry)

    async def import_authority(self, entries: list[bytes]) -> int:
        """Take in authority-feed entries an admin carried here (a revocation, say)."""
        await self._inbox_send.send(("import", entries))
        return len(entries)

    def stop(self) -> None:
        """Begin a graceful shutdown."""
        self._stopping.set()

    # -- what the POS domain needs of the node (node/pos/_common.PosNode) -------------------

    @property
    def device(self) -> int:
        return self.certificate.number

    @property
    def branch(self) -> str:
        return self.certificate.branch

    @property
    def device_name(self) -> str:
        return self.certificate.name

    def keys(self, kind: str) -> list[tuple]:
        return self.engine.keys(kind)

    def rights(self, key: tuple) -> int:
        return self.engine.rights(key)

    def may_write(self, key: tuple) -> bool:
        """Whether this device's certificate allows writing ``key`` (POS policy)."""
        return POS_POLICY.allows(self.certificate, key)

    def links_live(self) -> int:
        """Connections to peers that are past their handshake (0: this device is offline)."""
        return len(self._live)

    async def request_rights(self, key: tuple, amount: int) -> None:
        """Ask the other devices for ``amount`` rights on the balance ``key`` (a rights request
        register; whoever holds most answers with a transfer); returns once it is durable."""
        await self.commit([("set", POS_ESCROW.request_key(key, self.device), amount)])

    async def wait_for(self, predicate: Any, seconds: float) -> bool:
        """Wait until ``predicate()`` holds, re-checked after every batch of applied changes;
        False when it still does not after ``seconds``."""
        with trio.move_on_after(seconds):
            while not predicate():
                await self._changed.wait()
            return True
        return bool(predicate())

    def entry_of(self, key: tuple) -> tuple[int, int] | None:
        """(origin, seq) of the entry that first wrote a sale, refund or operation record.

        Kept in memory for what this run applied and in the store (``_index_entry``) for what
        earlier runs did, whose entries a restart from a snapshot does not replay.
        """
        where = self._entries.get(key)
        if where is None and key and key[0] in _INDEXED_KINDS:
            where = _entry_from_meta(self.store.get_meta(_entry_meta_name(key)))
            if where is not None:
                self._entries[key] = where
        return where

    def _index_entry(self, key: tuple, origin: int, seq: int) -> None:
        if self.entry_of(key) is not None:  # the first writer stays, also across restarts
            return
        self._entries[key] = (origin, seq)
        # With the next flush, so never later than a snapshot that holds the record (snapshots
        # are written through the same store, after the entries they cover).
        self.store.put_meta(_entry_meta_name(key), canonical([origin, seq]))

    def ack_of(self, key: tuple) -> str | None:
        """Where the entry holding ``key`` is known to be held: ``local``, ``lan`` or ``anchor``.

        Another device's entry is here and at its origin: at least ``lan``. For an own entry
        this run has not seen written (after a restart from a snapshot), the weakest level of
        any own entry is the safe answer.
        """
        entry = self.entry_of(key)
        if entry is not None:
            origin, seq = entry
            return self.engine.ack_level(seq).value if origin == self.device else "lan"
        acks = self.engine.status().acks
        for level in ("local", "lan", "anchor"):
            if getattr(acks, level):
                return level
        return None

    def events_after(self, event_id: int) -> list[tuple]:
        """Applied changes with an id above ``event_id``, oldest first (from the ring)."""
        if not self.events or event_id >= self.events[-1][0]:
            return []
        first = self.events[0][0]
        start = max(0, event_id + 1 - first)
        return list(itertools.islice(self.events, start, None))

    async def wait_events(self, event_id: int, seconds: float) -> None:
        """Return once there is an event above ``event_id``, or after ``seconds``."""
        with trio.move_on_after(seconds):
            while self.event_count <= event_id:
                await self._changed.wait()

    def _observe(self, effects: Any) -> None:
        """Applied changes go to the event ring (and wake whoever waits on them); alerts go to
        the incident reporter."""
        if effects.applied:
            for change in effects.applied:
                for key in change.keys:
                    self.event_count += 1
                    self.events.append((self.event_count, change.origin, change.seq, key))
                    if key[0] in _INDEXED_KINDS:
                        self._index_entry(key, change.origin, change.seq)
                        if key[0] == "refund" and change.origin != self.device and self.pos is not None:
                            self._refunds_to_check.add(key)
                            self._refunds_arrived.set()
            self._changed.set()
            self._changed = trio.Event()
        if self.pos is not None:
            for alert in effects.alerts:
                try:
                    self._incidents_send.send_nowait(alert)
                except trio.WouldBlock:
                    self.counters["incidents_dropped"] += 1

    async def _report_incidents(self) -> None:
        """Engine alerts become incidents in the replicated ledger (node/pos/_incidents.py)."""
        async for alert in self._incidents_recv:
            try:
                await self.pos.report_alert(alert)
            except TillmeshError as exc:
                log.warning("alert %s not recorded as an incident: %s", alert.kind.value, exc)
            except Exception:  # a fault of the domain's checks must not take the node down
                log.exception("the incident reporter failed on alert %s; it goes on", alert.kind.value)

    async def _check_refunds(self) -> None:
        """Other devices' refunds, checked against their sale (node/pos/_refunds.py). They wait
        in a set, not a bounded queue: a catch-up of many refunds drops none of them."""
        while True:
            await self._refunds_arrived.wait()
            self._refunds_arrived = trio.Event()
            keys, self._refunds_to_check = self._refunds_to_check, set()
            for key in sorted(keys):
                try:
                    await self.pos.refund_arrived(key)
                except TillmeshError as exc:
                    log.warning("refund %s not checked: %s", key[1], exc)
                except Exception:  # as for the reporter: never the node's end
                    log.exception("the refund check failed on %s; it goes on", key[1])

    # -- running ------------------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Run until ``stop()``; reports the bound ports through ``task_status``."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._engine_loop)
            if self.pos is not None:
                nursery.start_soon(self._report_incidents)
                nursery.start_soon(self._check_refunds)
            host, port = self.config.address
            listeners = await nursery.start(self._listen, host, port)
            self.ports["peer"] = listeners[0].socket.getsockname()[1]
            if self.config.api_enabled:
                from .api import build_app, serve_api

                api_host, api_port = self.config.api_address
                self.ports["api"] = await nursery.start(serve_api, build_app(self), api_host, api_port,
                                                        self._stopped.wait)
            for address in self.config.dial:
                nursery.start_soon(self._dial_forever, address)
            if self.config.discovery_enabled:  # DNS-SD on the LAN: node/discovery.py
                nursery.start_soon(self._discover, nursery)
            # Written whole or not at all (a reader polls for it): a temporary file, then a rename.
            ports = self.data_dir.path / "ports.json"
            partial = ports.with_name("ports.json.tmp")
            partial.write_text(json.dumps(self.ports))
            os.replace(partial, ports)
            log.info("node %s (%s) up: peers on %s, api on %s", self.certificate.number, self.certificate.name,
                     self.ports.get("peer"), self.ports.get("api"))
            task_status.started(dict(self.ports))
            await self._stopping.wait()
            # New connections are turned away from here (_serve); the sessions say bye and
            # their connections end; only then does the listener go.
            await self._inbox_send.send(("shutdown",))
            await self._stopped.wait()
            self._listen_scope.cancel()
            nursery.cancel_scope.cancel()
        self.store.close()
        log.info("node %s stopped", self.certificate.number)

    async def _engine_loop(self) -> None:
        engine = self.engine
        try:
            while True:
                deadline = engine.next_deadline()
                items = []
                with trio.move_on_at(deadline / 1000 if deadline is not None else math.inf):
                    items.append(await self._inbox_recv.receive())
                while True:
                    try:
                        items.append(self._inbox_recv.receive_nowait())
                    except trio.WouldBlock:
                        break
                now = _now()
                shutdown = False
                for item in items:
                    shutdown = self._input(item, now) or shutdown
                engine.tick(now)
                await self._act(now, drain=shutdown)
                if shutdown:
                    for conn in list(self._conns):
                        self._close_conn(conn)
                    with trio.move_on_after(2):  # the byes go out, then the streams close
                        if self._serving:
                            await self._all_closed.wait()
                    self._stopped.set()
                    return
        finally:
            self._writer.stop()

    def _input(self, item: tuple, now: Now) -> bool:
        engine, kind = self.engine, item[0]
        if kind == "data":
            self.counters["bytes_in"] += len(item[2])
            engine.received(item[1], item[2], now)
        elif kind == "connected":
            engine.connected(item[1], item[1].initiator, now)
        elif kind == "disconnected":
            self._remember_peer(item[1])
            engine.disconnected(item[1], now)
            self._conns.discard(item[1])
            log.info("peer %s down", item[1].address)
        elif kind == "commit":
            _, ops, waiter = item
            try:
                committed = engine.commit(ops, now)
            except TillmeshError as exc:
                waiter.error = exc
                waiter.done.set()
            else:
                self.counters["commits"] += 1
                self._waiting[committed.seq] = waiter
        elif kind == "import":
            try:
                engine.import_entries(item[1], now)
            except TillmeshError as exc:
                log.warning("authority entries refused: %s", exc)
        elif kind == "shutdown":
            for conn in list(self._conns):
                engine.close(conn, now, CloseReason.SHUTDOWN, "the node is stopping")
            return True
        return False

    async def _act(self, now: Now, *, drain: bool = False) -> None:
        """Act on the engine's effects, and start a flush when it asks for one. While a flush
        is in flight the engine is not polled (that poll would move the mark of what the
        flush holds): its effects wait, and the inputs go on, until the flush is done. With
        ``drain`` (shutdown), wait for flushes until nothing is left unflushed."""
        engine = self.engine
        while True:
            if self._flushing is not None:
                if not self._flushing.is_set():
                    if not drain:
                        return  # the writer's "done" wakes the loop (an inbox item)
                    await self._flushing.wait()
                self._flushed()
            effects = engine.poll()
            self._observe(effects)
            for conn, data in effects.sends.items():
                if conn in self._conns:
                    conn.queued += len(data)
                    if conn.queued > MAX_CONNECTION_BUFFER:
                        log.warning("peer %s reads too slowly: connection cut", conn.address)
                        engine.disconnected(conn, now)
                        self._close_conn(conn)
                        continue
                    conn.outbox_send.send_nowait(data)
            for close in effects.closes:
                if close.peer in self._conns:
                    log.info("peer %s closed: %s%s", close.peer.address, close.reason.value,
                             f" ({close.detail})" if close.detail else "")
                    self._close_conn(close.peer)
            for alert in effects.alerts:
                self.counters["alerts"] += 1
                line = self.recent_alerts.add(alert, int(time.time() * 1000))
                if line is not None:
                    log.warning("%s", line)
            self._note_authenticated()
            for committed in effects.committed:
                waiter = self._waiting.pop(committed.seq, None)
                if waiter is not None:
                    waiter.result = committed
                    waiter.done.set()
            if not effects.flush:
                return
            self._flushing, self._flush_error = trio.Event(), None
            self._writer.submit(self.store.flush, self._flush_done)
            if not drain:
                return

    def _flush_done(self, error: BaseException | None) -> None:
        """On the trio thread, from the writer: the flush in flight is done."""
        self._flush_error = error
        self._flushing.set()
        try:
            self._inbox_send.send_nowait(("flushed",))  # wakes the loop (_input ignores it)
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the inbox is full: the loop is not waiting for it, it sees the flush next round

    def _flushed(self) -> None:
        """The flush in flight is done: tell the engine how it went."""
        engine, error = self.engine, self._flush_error
        self._flushing = self._flush_error = None
        if error is None:
            self.counters["flushes"] += 1
            engine.flushed(_now())
            return
        if not isinstance(error, StorageError):
            raise error
        self.counters["flush_failures"] += 1
        log.error("flush failed: %s; the commits in it are dropped", error)
        for lost in engine.flush_failed(_now()):
            waiter = self._waiting.pop(lost.seq, None)
            if waiter is not None:
                waiter.error = error
                waiter.done.set()
        # The entries of the failed flush are gone (their seqs will be reused), and so are the
        # index rows written with them: forget what pointed at them.
        store = self.store
        self._entries = {key: (origin, seq) for key, (origin, seq) in self._entries.items()
                         if (head := store.head(origin)) is not None and seq <= head.seq}

    # -- connections --------------------------------------------------------------------------

    async def _listen(self, host: str, port: int, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        with self._listen_scope:
            await trio.serve_tcp(self._accept, port, host=host, task_status=task_status)

    async def _accept(self, stream: trio.SocketStream) -> None:
        peer = stream.socket.getpeername()
        await self._serve(stream, f"{peer[0]}:{peer[1]}", initiator=False)

    async def _serve(self, stream: trio.abc.Stream, address: str, *, initiator: bool) -> None:
        if self._stopping.is_set():
            await stream.aclose()
            return
        if len(self._pending) >= self.config.sync.max_handshakes:
            log.warning("refused %s: %d handshakes already pending", address, len(self._pending))
            await stream.aclose()
            return
        conn = Connection(stream, address, initiator)
        self._conns.add(conn)
        self._pending.add(conn)
        self._serving += 1
        await self._inbox_send.send(("connected", conn))
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._writer_task, conn, nursery.cancel_scope)
                try:
                    while True:
                        data = await stream.receive_some(READ_BYTES)
                        if not data:
                            break
                        await self._inbox_send.send(("data", conn, data))
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass
                nursery.cancel_scope.cancel()
        finally:
            self._pending.discard(conn)
            self._live.discard(conn)
            with trio.CancelScope(shield=True):
                if conn in self._conns:  # the transport ended under us: the engine must hear it
                    await self._inbox_send.send(("disconnected", conn))
                try:
                    await stream.aclose()
                except (trio.BrokenResourceError, OSError):
                    pass
            conn.closed.set()
            self._serving -= 1
            if self._serving == 0:
                self._all_closed.set()

    async def _writer_task(self, conn: Connection, scope: trio.CancelScope) -> None:
        """Write what the engine sends; once the outbox is closed and drained (a close, whose
        bye is the last thing queued), end the connection."""
        try:
            async for data in conn.outbox_recv:
                conn.queued -= len(data)
                self.counters["bytes_out"] += len(data)
                with trio.fail_after(CONNECT_TIMEOUT_S):
                    await conn.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError, OSError):
            pass
        scope.cancel()

    def _close_conn(self, conn: Connection) -> None:
        """The engine is done with ``conn``: its writer sends what is queued, then it ends."""
        self._conns.discard(conn)
        self._pending.discard(conn)
        self._live.discard(conn)
        conn.outbox_send.close()

    def _note_authenticated(self) -> None:
        """Connections whose session is now authenticated stop counting as pending."""
        if not self._pending:
            return
        devices = {p.handle: p.device for p in self.engine.status().peers if p.device is not None}
        for conn in [c for c in self._pending if c in devices]:
            self._pending.discard(conn)
            self._live.add(conn)
            if conn.initiator:
                self._device_at[conn.address] = devices[conn]
            log.info("peer %s up: device %s", conn.address, devices[conn])

    async def _dial_forever(self, target: tuple[str, int]) -> None:
        sync = self.config.sync
        backoff = sync.dial_backoff_min_ms / 1000
        host, port = target
        address = f"{host}:{port}"
        while not self._stopping.is_set():
            device = self._device_at.get(address)
            if device is not None and any(p.device == device and p.state == "live" for p in self.engine.status().peers):
                await self._sleep_or_stop(sync.dial_backoff_max_ms / 1000)  # linked over another connection
                continue
            try:
                with trio.fail_after(CONNECT_TIMEOUT_S):
                    stream = await trio.open_tcp_stream(host, port)
            except (OSError, trio.TooSlowError):
                # Exponential backoff with full jitter: tills that lost the same anchor do not
                # all come back at the same instant.
                await self._sleep_or_stop(self._rng.uniform(0, backoff))
                backoff = min(backoff * 2, sync.dial_backoff_max_ms / 1000)
                continue
            started = trio.current_time()
            await self._serve(stream, address, initiator=True)
            if trio.current_time() - started > 10:
                backoff = sync.dial_backoff_min_ms / 1000  # it held: start again from short waits
            await self._sleep_or_stop(self._rng.uniform(0, backoff))
            backoff = min(backoff * 2, sync.dial_backoff_max_ms / 1000)

    async def _sleep_or_stop(self, seconds: float) -> None:
        with trio.move_on_after(seconds):
            await self._stopping.wait()

    # -- LAN discovery ([discovery] enabled) --------------------------------------------------

    async def _discover(self, nursery: trio.Nursery) -> None:
        """Advertise this node by DNS-SD and dial each node of its network found on the LAN,
        every address once (the configured ones have their dialers already). If discovery
        cannot start (no multicast, say), that is logged and the node runs on without it."""
        from .discovery import interfaces_for, run_discovery

        dialled = set(self.config.dial)

        def found(address: tuple[str, int]) -> None:
            if address not in dialled and not self._stopping.is_set():
                dialled.add(address)
                log.info("discovered a peer at %s:%d", *address)
                nursery.start_soon(self._dial_forever, address)

        keyring, _, _ = self.data_dir.keyring()
        try:
            await run_discovery(self.ports["peer"], keyring.network_id, found,
                                interfaces=interfaces_for(self.config.address[0]))
        except Exception as exc:  # noqa: BLE001  (the till keeps selling without discovery)
            log.error("discovery stopped: %s", exc, exc_info=True)


def run_node(path: str | Path, *, relay: bool = False) -> int:
    """Run the node of data directory ``path`` until SIGINT/SIGTERM; returns an exit status.

    A second signal exits at once.
    """
    from .storage import DataDir

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    data_dir = DataDir.open(Path(path))

    async def main() -> None:
        with data_dir.lock():
            node = Node(data_dir, relay=relay or None)
            async with trio.open_nursery() as nursery:
                async def signals() -> None:
                    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
                        count = 0
                        async for signum in received:
                            count += 1
                            if count == 1:
                                log.info("signal %s: stopping (again to exit at once)", signum)
                                node.stop()
                            else:
                                nursery.cancel_scope.cancel()

                nursery.start_soon(signals)
                await node.run()
                nursery.cancel_scope.cancel()

    trio.run(main)
    return 0
