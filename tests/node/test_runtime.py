"""The runtime in-process: real data directories, real SQLite files, real TCP on 127.0.0.1,
two ``Node``s in one trio run.

A till that was away while another wrote 20,000 entries catches up over TCP; a node
restarted over its data directory (snapshot plus replay) is where it was; and a commit
whose flush fails is refused to its caller with nothing of it kept.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import trio

from crdt_types import StorageError
from gossip import Engine
from node import cli
from node.runtime import Node
from node.storage import DataDir

ENTRIES = 20_000


def setup_chain(root: Path, names: list[str], capsys) -> dict[str, DataDir]:
    admin = root / "admin"
    assert cli.main(["network", "init", "--dir", str(admin)]) == 0
    dirs = {}
    for name in names:
        capsys.readouterr()
        assert cli.main(["device", "add", name, "--branch", "central", "--role", "manager", "--dir", str(admin)]) == 0
        bundle = capsys.readouterr().out.strip().splitlines()[0]
        assert cli.main(["join", bundle, "--data", str(root / name)]) == 0
        dirs[name] = DataDir.open(root / name)
    return dirs


def write_directly(data_dir: DataDir, count: int) -> bytes:
    """``count`` sales written by the device's own engine straight into its store (as a till
    that sold all day would have them), flushed once; returns the resulting digest."""
    keyring, _, _ = data_dir.keyring()
    store = data_dir.store()
    # Stamped by the real wall clock: the runtime's peers judge skew by theirs.
    start = int(time.time() * 1000) - count
    engine = Engine(keyring, store, random_bytes=os.urandom, now=start)
    for i in range(count):
        engine.commit([("record", ("sale", f"s{i:06d}"), {"total": 899}), ("add", ("stock", "central", "tea"), -1)],
                      start + i)
    store.flush()
    engine.flushed(start + count)
    digest = engine.status().digest
    store.close()
    return digest


async def wait_for(condition, seconds: float, what: str) -> None:
    with trio.move_on_after(seconds) as scope:
        while not condition():
            await trio.sleep(0.05)  # noqa: sleep-ok  (polling a running node with a deadline)
    assert not scope.cancelled_caught, f"timed out waiting for {what}"


@pytest.mark.trio
async def test_a_till_that_was_away_catches_up_on_twenty_thousand_entries(tmp_path, capsys):
    dirs = setup_chain(tmp_path, ["busy", "away"], capsys)
    expected = write_directly(dirs["busy"], ENTRIES)
    async with trio.open_nursery() as nursery:
        with dirs["busy"].lock():
            busy = Node(dirs["busy"])
            ports = await nursery.start(busy.run)
            (dirs["away"].path / "node.toml").write_text(f'[peers]\nstatic = ["127.0.0.1:{ports["peer"]}"]\n')
            away_dir = DataDir.open(dirs["away"].path)
            with away_dir.lock():
                away = Node(away_dir)
                await nursery.start(away.run)
                device = busy.status()["device"]
                await wait_for(lambda: away.status()["applied"].get(device, 0) == ENTRIES, 120,
                               "the away till to catch up")
                assert away.status()["digest"] == expected.hex() == busy.status()["digest"]
                assert away.value(("stock", "central", "tea")) == -ENTRIES
                away.stop()
                busy.stop()


@pytest.mark.trio
async def test_a_restarted_node_is_where_it_was_and_a_failed_flush_keeps_nothing(tmp_path, capsys):
    dirs = setup_chain(tmp_path, ["till"], capsys)
    data_dir = dirs["till"]
    with data_dir.lock():
        node = Node(data_dir)
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            for i in range(30):
                result = await node.commit([("add", ("stock", "central", "tea"), 1)])
                assert result["seq"] == i + 1 and result["ack"] == "local"
            before = node.status()
            # The disk refuses the next flush: the caller is told, nothing of it is kept.
            real_flush = node.store.flush

            def failing_flush() -> None:
                raise StorageError("disk full (simulated)")

            node.store.flush = failing_flush
            with pytest.raises(StorageError):
                await node.commit([("add", ("stock", "central", "tea"), 1000)])
            node.store.flush = real_flush
            assert node.value(("stock", "central", "tea")) == 30
            assert node.status()["vector"] == before["vector"]
            assert node.counters["flush_failures"] == 1
            assert [a["kind"] for a in node.status()["alerts"]] == ["storage_failed"]  # and says so
            node.stop()
    again = DataDir.open(data_dir.path)
    with again.lock():
        restarted = Node(again)
        assert restarted.status()["digest"] == before["digest"]
        assert restarted.value(("stock", "central", "tea")) == 30
        restarted.store.close()


@pytest.mark.trio
@pytest.mark.parametrize("fails", [False, True])
async def test_commits_go_on_while_a_flush_runs_and_return_only_with_their_own_flush(tmp_path, capsys, fails):
    """The engine takes commits while a flush is in flight on the writer thread; each caller
    returns only once a flush that holds its commit is done, and a failed flush fails every
    commit not yet durable, the ones taken in while it ran included."""
    import threading

    import trio.testing

    dirs = setup_chain(tmp_path, ["till"], capsys)
    data_dir = dirs["till"]
    with data_dir.lock():
        node = Node(data_dir)
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            await node.commit([("add", ("stock", "central", "tea"), 1)])
            real_flush = node.store.flush
            entered, release = threading.Event(), threading.Event()

            def held_flush() -> None:
                entered.set()
                release.wait()
                if fails:
                    raise StorageError("disk full (simulated)")
                real_flush()

            node.store.flush = held_flush
            results: dict[str, object] = {}

            async def commit(name: str, amount: int) -> None:
                try:
                    results[name] = await node.commit([("add", ("stock", "central", "tea"), amount)])
                except StorageError as exc:
                    results[name] = exc

            nursery.start_soon(commit, "first", 10)
            await trio.to_thread.run_sync(entered.wait)  # the first commit's flush is in flight
            node.store.flush = real_flush
            nursery.start_soon(commit, "second", 100)
            try:
                with trio.fail_after(30):  # a bound, not a wait: the loop ends as soon as the engine gets there
                    while node.counters["commits"] < 3:  # taken by the engine, the flush still held
                        await trio.testing.wait_all_tasks_blocked()
                assert node.value(("stock", "central", "tea")) == 111 and results == {}
            finally:
                release.set()
            with trio.fail_after(30):
                while len(results) < 2:
                    await trio.testing.wait_all_tasks_blocked()
            if fails:
                assert all(isinstance(r, StorageError) for r in results.values())
                assert node.value(("stock", "central", "tea")) == 1
                assert node.counters["flush_failures"] == 1
            else:
                assert [results["first"]["seq"], results["second"]["seq"]] == [2, 3]
                assert node.value(("stock", "central", "tea")) == 111 and not node.store.dirty
            node.stop()
    again = DataDir.open(data_dir.path)
    with again.lock():
        restarted = Node(again)
        assert restarted.value(("stock", "central", "tea")) == (1 if fails else 111)
        restarted.store.close()


class _LinksWatch(trio.abc.Instrument):
    """Reads ``node.links_live()`` after every task step: a connection counted as live for
    even one step is seen."""

    def __init__(self, node: Node) -> None:
        self.node, self.most = node, 0

    def after_task_step(self, task: object) -> None:
        self.most = max(self.most, self.node.links_live())


@pytest.mark.trio
async def test_a_connection_that_ends_before_its_handshake_never_counts_as_a_live_link(tmp_path, capsys):
    """A till decides a card payment is offline-authorized by ``links_live() == 0``; a peer
    port that accepts and drops (a cut link, a port scan) must not make it look online, not
    even between the drop and the engine hearing of it."""
    import trio.testing

    dirs = setup_chain(tmp_path, ["till"], capsys)
    with dirs["till"].lock():
        node = Node(dirs["till"])
        async with trio.open_nursery() as nursery:
            ports = await nursery.start(node.run)
            watch = _LinksWatch(node)
            trio.lowlevel.add_instrument(watch)
            try:
                for _ in range(20):
                    stream = await trio.open_tcp_stream("127.0.0.1", ports["peer"])
                    await stream.aclose()
                    with trio.fail_after(10):  # a bound: it returns once the node has handled the drop
                        await trio.testing.wait_all_tasks_blocked()
            finally:
                trio.lowlevel.remove_instrument(watch)
            assert watch.most == 0
            assert node.links_live() == 0 and node.status()["peers"] == []
            node.stop()
