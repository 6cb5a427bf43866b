"""Real processes on 127.0.0.1: a chain set up with the CLI, written to over HTTP.

Each device is its own ``tillmesh run`` (or ``anchor``) process with its own data directory
and SQLite file; the test talks to them only as a POS app and an operator would, through
the CLI and the local HTTP API. A fault proxy (a small TCP forwarder in this process) sits on
one till's link and can cut it. Every process is stopped by its pid at the end, and nothing
is left running; pytest removes the temp directories.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from node._polling import wait_until as _wait_until

ROOT = Path(__file__).resolve().parents[2]
STOCK = ["stock", "central", "coffee"]


def wait_until(condition, timeout: float = 30.0, what: str = "condition"):
    return _wait_until(condition, timeout, what, error=AssertionError)


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "node.cli", *args], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise AssertionError(f"tillmesh {' '.join(args[:2])} failed: {result.stderr}")
    return result


class Proxy:
    """A TCP forwarder on 127.0.0.1 that can cut the link (and refuse it) until healed."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.cut_off = False
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.cut_off:
                client.close()
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for s in (source, sink):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        self.cut_off = True
        with self.lock:
            for s in self.sockets:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self.sockets.clear()

    def heal(self) -> None:
        self.cut_off = False

    def close(self) -> None:
        self.cut()
        self.listener.close()


class Device:
    def __init__(self, name: str, data: Path, relay: bool = False) -> None:
        self.name, self.data, self.relay = name, data, relay
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        ports = self.data / "ports.json"
        if ports.exists():
            ports.unlink()
        log = open(self.data / "node.log", "ab")
        self.process = subprocess.Popen([sys.executable, "-m", "node.cli", "anchor" if self.relay else "run",
                                         "--data", str(self.data)], cwd=ROOT, stdout=log, stderr=log,
                                        stdin=subprocess.DEVNULL)
        wait_until(lambda: ports.exists() and json.loads(ports.read_text()), what=f"{self.name} to listen")
        self.ports = json.loads(ports.read_text())
        self.token = (self.data / "api.token").read_text().strip()

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        """Stop the process by its pid; returns its exit status."""
        status = None
        if self.process is not None:
            if self.process.poll() is None:
                os.kill(self.process.pid, sig)
            try:
                status = self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                status = self.process.wait(timeout=10)
        self.process = None
        return status

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.ports['peer']}"

    def api(self, method: str, path: str, **kwargs) -> httpx.Response:
        return httpx.request(method, f"http://127.0.0.1:{self.ports['api']}{path}", timeout=10,
                             headers={"Authorization": f"Bearer {self.token}"}, **kwargs)

    def status(self) -> dict:
        return self.api("GET", "/status").json()

    def commit(self, ops: list[dict]) -> dict:
        response = self.api("POST", "/transactions", json={"ops": ops})
        assert response.status_code == 200, response.text
        return response.json()


class Chain:
    """An authority, an anchor and members, set up with the CLI as an installer would."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.admin = root / "admin"
        cli("network", "init", "--dir", str(self.admin))
        self.devices: dict[str, Device] = {}
        self.proxies: list[Proxy] = []

    def bundle(self, name: str, role: str, branch: str = "central") -> str:
        return cli("device", "add", name, "--branch", branch, "--role", role, "--dir", str(self.admin)).stdout.strip()

    def anchor(self, name: str = "anchor") -> Device:
        data = self.root / name
        cli("join", self.bundle(name, "relay", "cloud"), "--data", str(data), "--relay")
        device = self.devices[name] = Device(name, data, relay=True)
        device.start()
        return device

    def member(self, name: str, role: str = "manager", *, anchors: list[str] = (), peers: list[str] = ()) -> Device:
        data = self.root / name
        args = ["join", self.bundle(name, role), "--data", str(data)]
        for address in anchors:
            args += ["--anchor", address]
        for address in peers:
            args += ["--peer", address]
        cli(*args)
        device = self.devices[name] = Device(name, data)
        device.start()
        return device

    def proxy_to(self, device: Device) -> Proxy:
        proxy = Proxy(("127.0.0.1", device.ports["peer"]))
        self.proxies.append(proxy)
        return proxy

    def stop(self) -> None:
        for device in self.devices.values():
            device.stop()
        for proxy in self.proxies:
            proxy.close()


@pytest.fixture
def chain(tmp_path):
    chain = Chain(tmp_path)
    try:
        yield chain
    finally:
        chain.stop()
        assert all(d.process is None for d in chain.devices.values())


def converged(members: list[Device]):
    statuses = [m.status() for m in members]
    digests = {s["digest"] for s in statuses}
    vectors = [s["vector"] for s in statuses]
    return len(digests) == 1 and all(v == vectors[0] for v in vectors) and statuses


def add(amount: int) -> dict:
    return {"op": "add", "key": STOCK, "amount": amount}


def test_three_members_and_an_anchor_converge_and_a_partitioned_till_catches_up(chain):
    anchor = chain.anchor()
    t1 = chain.member("t1", anchors=[anchor.address])
    t2 = chain.member("t2", anchors=[anchor.address])
    proxy = chain.proxy_to(anchor)
    t3 = chain.member("t3", anchors=[f"127.0.0.1:{proxy.port}"])
    members = [t1, t2, t3]
    for i, till in enumerate(members):
        assert till.commit([add(10 + i)])["seq"] == 1
    wait_until(lambda: converged(members), what="the chain to converge")
    assert t3.api("GET", "/keys/stock/central/coffee").json()["value"] == 33
    proxy.cut()  # the basement loses its link
    wait_until(lambda: all(p["state"] != "live" for p in t3.status()["peers"]), what="t3 to notice")
    t1.commit([add(-2)])
    t3.commit([add(-5)])
    assert t3.api("GET", "/keys/stock/central/coffee").json()["value"] == 28
    assert t1.api("GET", "/keys/stock/central/coffee").json()["value"] == 31
    proxy.heal()
    statuses = wait_until(lambda: converged(members), timeout=60, what="the chain to converge after the heal")
    assert t2.api("GET", "/keys/stock/central/coffee").json()["value"] == 26
    assert all(not s["quarantined"] for s in statuses)
    # A graceful stop: the node says bye to its peers, flushes, and exits 0; the anchor
    # sees its session with t1 end at once (the bye), not after a ping timeout.
    t1_device = t1.status()["device"]
    assert t1.stop(signal.SIGTERM) == 0
    assert b"stopped" in (t1.data / "node.log").read_bytes()
    wait_until(lambda: t1_device not in {p["device"] for p in anchor.status()["peers"]}, timeout=5,
               what="the anchor to see t1 go")


def test_a_till_killed_mid_burst_keeps_every_acknowledged_commit_and_no_peer_sees_a_fork(chain):
    anchor = chain.anchor()
    till = chain.member("till", anchors=[anchor.address])
    watcher = chain.member("watcher", anchors=[anchor.address])
    acknowledged: list[str] = []
    stop = threading.Event()

    def burst() -> None:
        i = 0
        while not stop.is_set():
            sale = f"s{i:05d}"
            try:
                response = till.api("POST", "/transactions", json={"ops": [
                    {"op": "record", "key": ["sale", sale], "value": {"total": 899}}, add(-1)]})
            except httpx.HTTPError:
                return  # the till is gone
            if response.status_code == 200:
                acknowledged.append(sale)
            i += 1

    thread = threading.Thread(target=burst)
    thread.start()
    wait_until(lambda: len(acknowledged) >= 30, what="a burst of acknowledged sales")
    till.stop(signal.SIGKILL)
    stop.set()
    thread.join(timeout=30)
    till.start()
    for sale in acknowledged:
        response = till.api("GET", f"/keys/sale/{sale}")
        assert response.status_code == 200 and response.json()["value"] == {"total": 899}, sale
    till.commit([add(-1)])  # the restarted till writes on from its durable head
    wait_until(lambda: converged([till, watcher]), timeout=60, what="till and watcher to converge")
    for device in (watcher, anchor):
        assert not device.status()["quarantined"]
