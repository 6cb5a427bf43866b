"""``tillmesh demo``: a small chain in real processes on this machine's loopback.

Every device is its own ``tillmesh run`` (or ``tillmesh anchor``) process over its own data
directory and SQLite file, all under one temporary directory, set up with the CLI exactly as
an installer would (``network init``, ``device add``, ``join``; discovery stays off, so
nothing leaves 127.0.0.1). The demo then acts only as a POS app and an operator would: it
sells through each node's HTTP API, cuts the basement till's links with a small TCP proxy
of its own, tops a member up in the north branch and charges her centrally (the rights come
through the anchor), kills a till with SIGKILL in the middle of a burst of sales and
restarts it, heals the basement, waits (polling ``GET /status`` against a deadline) until
every member's digest is equal, and prints every device's view as read through its API.

The chain::

    central LAN:  till-1 (manager)  till-2 (cashier)  basement (cashier)  office (hq)
    north:        north-1 (manager)
    cloud:        anchor (relay: stores and forwards, reads nothing)

    till-2 -> till-1, anchor        office -> till-1, till-2, anchor
    till-1 -> anchor                north-1 -> anchor
    basement -> [proxy] -> till-1, till-2, anchor      (a -> b: a dials b)

Every process started is stopped by its pid in a ``finally`` (also on Ctrl-C, SIGTERM or
an error), the temporary directory is removed, and what is kept goes under the results
directory (``results/demo``: ``summary.json`` and each node's log).
"""

from __future__ import annotations

import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ._polling import POLL_S
from ._polling import wait_until as _wait_until

__all__ = ["run", "DemoFailed", "DEVICES"]

COFFEE, CROISSANT = "coffee-250g", "croissant"
PRICES = {COFFEE: 899, CROISSANT: 250}
ALICE = "alice"
TOPUP = 5_000
START_TIMEOUT_S = 30.0
LINK_TIMEOUT_S = 20.0
CONVERGE_TIMEOUT_S = 45.0
API_TIMEOUT_S = 15.0  # a member charge may wait for rights ([pos] rights_wait_ms) inside one request
BURST_BEFORE_KILL = 25  # sales acknowledged before the till is killed


@dataclass(frozen=True)
class Spec:
    name: str
    branch: str
    role: str
    peers: tuple[str, ...] = ()  # devices this one dials on the LAN
    anchors: tuple[str, ...] = ()
    behind_proxy: bool = False  # its links go through the demo's cuttable proxy

    @property
    def relay(self) -> bool:
        return self.role == "relay"


DEVICES = (
    Spec("anchor", "cloud", "relay"),
    Spec("till-1", "central", "manager", anchors=("anchor",)),
    Spec("till-2", "central", "cashier", peers=("till-1",), anchors=("anchor",)),
    Spec("basement", "central", "cashier", peers=("till-1", "till-2"), anchors=("anchor",), behind_proxy=True),
    Spec("office", "central", "hq", peers=("till-1", "till-2"), anchors=("anchor",)),
    Spec("north-1", "north", "manager", anchors=("anchor",)),
)
KILLED = "till-2"


class DemoFailed(Exception):
    """A step of the demo could not be carried out; the message says which and why."""


# --- a cuttable link ----------------------------------------------------------------------


class Proxy:
    """A TCP forwarder on 127.0.0.1 in front of one device: ``cut()`` drops every connection
    through it and refuses new ones until ``heal()``."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.cut_off = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True, name=f"proxy-{self.port}").start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            if self.cut_off:
                client.close()
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
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
        with self._lock:
            for s in (source, sink):
                if s in self._sockets:
                    self._sockets.remove(s)
                    s.close()

    def cut(self) -> None:
        self.cut_off = True
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def heal(self) -> None:
        self.cut_off = False

    def close(self) -> None:
        self.cut()
        self.listener.close()


# --- one device's process and API ------------------------------------------------------------


def _cli_command() -> list[str]:
    return [sys.executable, "-m", "node.cli"]


def _child_env() -> dict[str, str]:
    """The environment for the processes: this interpreter's ``node`` package first on the path."""
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = package_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


class Unreachable(DemoFailed):
    """A device's API did not answer (its process gone, or not listening)."""


class ApiError(DemoFailed):
    def __init__(self, device: str, method: str, path: str, status: int, body: Any) -> None:
        self.status, self.body = status, body
        code = body.get("code") if isinstance(body, dict) else None
        detail = body.get("detail") if isinstance(body, dict) else body
        super().__init__(f"{device}: {method} {path} answered {status} {code or ''}: {detail}")


@dataclass(eq=False)
class Device:
    spec: Spec
    data: Path
    listen_port: int
    env: dict[str, str]
    process: subprocess.Popen | None = None
    pids: list[int] = field(default_factory=list)
    api_port: int = 0
    token: str = ""
    number: int = 0

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def log_path(self) -> Path:
        return self.data / "node.log"

    def start(self) -> None:
        """Start ``tillmesh run`` (or ``anchor``) in its own session; ``wait_started`` follows."""
        (self.data / "ports.json").unlink(missing_ok=True)  # a previous run's
        command = "anchor" if self.spec.relay else "run"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([*_cli_command(), command, "--data", str(self.data)], cwd=self.data.parent,
                                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=self.env, start_new_session=True)
        self.pids.append(self.process.pid)

    def wait_started(self, deadline: float) -> None:
        ports_file = self.data / "ports.json"
        while True:
            if self.process is None or self.process.poll() is not None:
                raise DemoFailed(f"{self.name} exited at start: {self.log_tail()}")
            try:
                ports = json.loads(ports_file.read_text())
            except (OSError, ValueError):  # not there yet, or half written
                ports = None
            if isinstance(ports, dict) and ports.get("api") and ports.get("peer"):
                break
            if time.monotonic() > deadline:
                raise DemoFailed(f"{self.name} did not start within {START_TIMEOUT_S:.0f} s: {self.log_tail()}")
            time.sleep(POLL_S)  # noqa: sleep-ok  (polling a real process against a deadline)
        if ports["peer"] != self.listen_port:
            raise DemoFailed(f"{self.name} listens on {ports['peer']}, not on {self.listen_port} as joined")
        self.api_port = ports["api"]
        self.token = (self.data / "api.token").read_text().strip()
        self.number = self.status()["device"]

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM by pid (the node says bye, flushes, exits); SIGKILL if it does not."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            try:
                os.kill(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            return process.wait(timeout=10)

    def kill(self) -> int:
        """SIGKILL by pid: no bye, no flush."""
        process, self.process = self.process, None
        assert process is not None
        os.kill(process.pid, signal.SIGKILL)
        return process.wait(timeout=10)

    def log_tail(self) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").strip().splitlines()[-5:]) or "(empty log)"
        except OSError:
            return "(no log)"

    # -- the local API, as a POS app calls it --------------------------------------------------

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        payload = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.api_port}{path}", data=payload, method=method,
                                         headers={"Authorization": f"Bearer {self.token}",
                                                  "Content-Type": "application/json"})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, whatever http_proxy says
        try:
            with opener.open(request, timeout=API_TIMEOUT_S) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return exc.code, json.loads(raw)
            except ValueError:
                return exc.code, raw.decode(errors="replace")
        except (OSError, http.client.HTTPException) as exc:  # URLError, a reset, a timeout, a dropped answer
            raise Unreachable(f"{self.name}: {method} {path} got no answer ({getattr(exc, 'reason', exc)}); "
                              f"its log ends: {self.log_tail()}") from None

    def get(self, path: str) -> Any:
        status, body = self.call("GET", path)
        if status != 200:
            raise ApiError(self.name, "GET", path, status, body)
        return body

    def post(self, path: str, body: Any) -> Any:
        status, answer = self.call("POST", path, body)
        if status != 200:
            raise ApiError(self.name, "POST", path, status, answer)
        return answer

    def status(self) -> dict:
        return self.get("/status")


def sale_body(sale_id: str, lines: list[tuple[str, int]], method: str = "card", member: str | None = None) -> dict:
    """A sale as a till app sends it: lines at the effective price, one payment of the total."""
    total = sum(PRICES[sku] * quantity for sku, quantity in lines)
    payment: dict[str, Any] = {"method": method, "amount": total}
    if method == "card":
        payment["reference"] = f"auth-{sale_id}"
    elif method == "member":
        payment["member"] = member
    return {"sale_id": sale_id, "lines": [{"sku": sku, "quantity": q} for sku, q in lines], "payments": [payment]}


# --- the chain -------------------------------------------------------------------------------


def _free_ports(count: int) -> list[int]:
    """Distinct free ports on 127.0.0.1 for the devices to listen on, across restarts.

    They are taken below the kernel's ephemeral range (``ip_local_port_range``), where no
    ``bind(0)`` (a node's API, the proxies) or outgoing connection can be handed one of them
    between now and the moment its node binds it; each is tried by binding it, all held
    together while picked.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 0
    held: list[socket.socket] = []
    try:
        if low > 12_000:
            start = random.randrange(10_000, low - count - 1_000)
            for port in range(start, low):
                try:
                    held.append(socket.create_server(("127.0.0.1", port)))
                except OSError:
                    continue
                if len(held) == count:
                    break
        while len(held) < count:  # no range to stay below: any free ports
            held.append(socket.create_server(("127.0.0.1", 0)))
        return [s.getsockname()[1] for s in held]
    finally:
        for s in held:
            s.close()


class Chain:
    """The authority directory, the devices and the basement's proxies, under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.admin = root / "admin"
        self.env = _child_env()
        self.devices: dict[str, Device] = {}
        self.proxies: dict[str, Proxy] = {}

    def cli(self, *args: str, stdin: str | None = None) -> str:
        result = subprocess.run([*_cli_command(), *args], cwd=self.root, capture_output=True, text=True,
                                input=stdin, timeout=60, env=self.env)
        if result.returncode != 0:
            raise DemoFailed(f"`tillmesh {' '.join(args[:2])}` failed: {result.stderr.strip()}")
        return result.stdout.strip()

    def set_up(self) -> None:
        """``network init``, ``device add`` for each device, then every ``join`` (at once)."""
        self.cli("network", "init", "--dir", str(self.admin))
        bundles = {spec.name: self.cli("device", "add", spec.name, "--branch", spec.branch, "--role", spec.role,
                                       "--dir", str(self.admin)) for spec in DEVICES}
        ports = dict(zip((spec.name for spec in DEVICES), _free_ports(len(DEVICES))))
        for spec in DEVICES:
            self.devices[spec.name] = Device(spec, self.root / spec.name, ports[spec.name], self.env)
        basement = next(spec for spec in DEVICES if spec.behind_proxy)
        for target in (*basement.peers, *basement.anchors):
            self.proxies[target] = Proxy(ports[target])

        def address(dialer: Spec, target: str) -> str:
            port = self.proxies[target].port if dialer.behind_proxy else ports[target]
            return f"127.0.0.1:{port}"

        joins: list[tuple[Spec, subprocess.Popen]] = []
        try:
            self._join_all(joins, bundles, address, ports)
        finally:
            for _, process in joins:  # interrupted: no join goes on writing into the directory
                if process.poll() is None:
                    process.kill()
                    process.wait()
        from .config import load_config

        for device in self.devices.values():
            if load_config(device.data / "node.toml").discovery_enabled:
                raise DemoFailed(f"{device.data / 'node.toml'}: discovery is on; the demo stays on 127.0.0.1")

    def _join_all(self, joins: list, bundles: dict[str, str], address: Any, ports: dict[str, int]) -> None:
        """Every device's ``join -``, side by side (each into its own directory)."""
        for spec in DEVICES:
            args = ["join", "-", "--data", str(self.root / spec.name), "--listen", f"127.0.0.1:{ports[spec.name]}"]
            args += [item for target in spec.peers for item in ("--peer", address(spec, target))]
            args += [item for target in spec.anchors for item in ("--anchor", address(spec, target))]
            if spec.relay:
                args.append("--relay")
            process = subprocess.Popen([*_cli_command(), *args], cwd=self.root, stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env)
            joins.append((spec, process))
        for spec, process in joins:
            # The bundle goes in on stdin (`join -`): a secret stays out of `ps` and the history.
            _, err = process.communicate(bundles[spec.name] + "\n", timeout=60)
            if process.returncode != 0:
                raise DemoFailed(f"`tillmesh join` of {spec.name} failed: {err.strip()}")

    def start_all(self) -> None:
        for device in self.devices.values():
            device.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        for device in self.devices.values():
            device.wait_started(deadline)

    @property
    def members(self) -> list[Device]:
        return [d for d in self.devices.values() if not d.spec.relay]

    def neighbours(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {name: set() for name in self.devices}
        for spec in DEVICES:
            for target in (*spec.peers, *spec.anchors):
                out[spec.name].add(target)
                out[target].add(spec.name)
        return out

    def stop_all(self) -> list[int]:
        """Stop every process by its pid (the stops run side by side); returns the pids."""
        threads = [threading.Thread(target=device.stop) for device in self.devices.values() if device.process]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for proxy in self.proxies.values():
            proxy.close()
        return [pid for device in self.devices.values() for pid in device.pids]


def wait_until(condition: Any, timeout: float, what: str) -> Any:
    """Poll ``condition`` until it returns something truthy; DemoFailed after ``timeout`` s."""
    return _wait_until(condition, timeout, what, error=DemoFailed)


def live_peers(device: Device) -> set[int]:
    return {p["device"] for p in device.status()["peers"] if p["state"] == "live"}


def converged_statuses(members: list[Device]) -> list[dict] | None:
    """Every member's status when all their digests (and vectors) are equal, else None."""
    statuses = [m.status() for m in members]
    digests = {s["digest"] for s in statuses}
    if len(digests) == 1 and None not in digests and all(s["vector"] == statuses[0]["vector"] for s in statuses):
        return statuses
    return None


# --- the story -------------------------------------------------------------------------------


class Demo:
    def __init__(self, out: TextIO, results: Path) -> None:
        from rich.console import Console

        tty = hasattr(out, "isatty") and out.isatty()
        self.console = Console(file=out, highlight=False, width=None if tty else 120)
        self.results = results
        self.started = time.monotonic()
        self.steps: list[dict] = []
        self.summary: dict[str, Any] = {}

    def step(self, text: str) -> None:
        at = round(time.monotonic() - self.started, 1)
        self.steps.append({"at_s": at, "step": text})
        self.say(f"[{at:5.1f}s] {text}")

    def say(self, text: str) -> None:
        """One line as it is (no markup, no wrapping by rich)."""
        self.console.print(text, markup=False, soft_wrap=True)

    def story(self, chain: Chain) -> tuple[bool, list[str]]:
        """The steps; returns whether every member's digest is equal, and the acknowledged sales lost."""
        chain.set_up()
        d = chain.devices
        t1, t2, basement, north = (d[n] for n in ("till-1", "till-2", "basement", "north-1"))
        self.step(f"set up with the CLI: network init, {len(DEVICES)} x device add, {len(DEVICES)} x join "
                  f"(data directories under {chain.root})")
        chain.start_all()
        self.step("started " + ", ".join(f"{x.name} (pid {x.process.pid})" for x in d.values()))
        numbers = {x.name: x.number for x in d.values()}
        expected = {name: {numbers[n] for n in names} for name, names in chain.neighbours().items()}
        wait_until(lambda: all(expected[x.name] <= live_peers(x) for x in d.values()), LINK_TIMEOUT_S,
                   "every link to come up")
        self.step(f"links up: {sum(len(v) for v in expected.values()) // 2} links, LAN and through the anchor")

        # Morning: the managers price and receive stock; everyone sees it before selling.
        t1.post("/prices", {"sku": COFFEE, "price": PRICES[COFFEE]})
        t1.post("/prices", {"sku": CROISSANT, "price": PRICES[CROISSANT]})
        t1.post("/stock/receipts", {"lines": [{"sku": COFFEE, "quantity": 60}, {"sku": CROISSANT, "quantity": 200}]})
        north.post("/stock/receipts", {"lines": [{"sku": COFFEE, "quantity": 25}, {"sku": CROISSANT, "quantity": 40}]})
        north.post("/members/alice/topups", {"amount": TOPUP})
        wait_until(lambda: converged_statuses(chain.members), CONVERGE_TIMEOUT_S, "the morning's entries to spread")
        self.step(f"morning: till-1 sets prices and receives stock, north-1 receives stock and tops alice up "
                  f"{TOPUP} (her rights are north-1's); every member has it")

        sold = 0
        for till, prefix in ((t1, "T1"), (t2, "T2"), (basement, "TB"), (north, "N1")):
            for i in range(1, 3):
                till.post("/sales", sale_body(f"{prefix}-{i:04d}", [(COFFEE, 1), (CROISSANT, i)],
                                              "card" if i == 1 else "cash"))
                sold += 1
        self.step(f"selling: {sold} sales through POST /sales on till-1, till-2, basement and north-1")

        for proxy in chain.proxies.values():
            proxy.cut()
        wait_until(lambda: not live_peers(basement), LINK_TIMEOUT_S, "the basement to notice it is cut off")
        self.step("partition: the basement till's links are cut (its proxy drops and refuses them)")
        for i in range(1, 4):
            result = basement.post("/sales", sale_body(f"TB-OFF-{i:04d}", [(COFFEE, 1)], "card"))
        self.step(f"basement sells offline: 3 card sales, marked offline-authorized ({result['offline_card']} "
                  f"each, ack '{result['ack']}')")
        status, refused = basement.call("POST", "/sales", sale_body("TB-M-0001", [(COFFEE, 1)], "member", ALICE))
        if status == 200:
            raise DemoFailed("the basement charged alice while offline, with no rights of its own")
        self.step(f"basement: alice's member payment refused at once, {status} {refused.get('code')} "
                  f"(needed {refused.get('needed')}, rights here {refused.get('available')}); nothing of the sale written")

        started = time.monotonic()
        paid = None
        for _ in range(2):  # the same sale id again is always safe
            status, paid = t2.call("POST", "/sales", sale_body("T2-M-0001", [(COFFEE, 1)], "member", ALICE))
            if status == 200:
                break
            if not (status == 409 and isinstance(paid, dict) and paid.get("code") == "insufficient_rights"):
                raise ApiError(t2.name, "POST", "/sales", status, paid)
        else:
            raise ApiError(t2.name, "POST", "/sales", status, paid)
        member = t2.get(f"/members/{ALICE}")
        self.step(f"alice pays {paid['total']} from her balance at till-2: it asked for rights, north-1 "
                  f"transferred them through the anchor, charged after {time.monotonic() - started:.1f} s "
                  f"(balance {member['balance']}, rights left here {member['rights_here']})")

        acknowledged, in_flight = self.burst_and_kill(t2)
        self.step(f"SIGKILL: till-2 killed in the middle of a burst, {len(acknowledged)} sales acknowledged "
                  f"before the kill")
        t2.start()
        t2.wait_started(time.monotonic() + START_TIMEOUT_S)
        lost = [sale for sale in acknowledged if t2.call("GET", f"/sales/{sale}")[0] != 200]
        retried = ""
        if in_flight is not None:
            again = t2.post("/sales", sale_body(in_flight, [(CROISSANT, 1)], "cash"))
            retried = (f"; the sale in flight at the kill, sent again with its id: "
                       f"{'replayed (it was on disk)' if again['replayed'] else 'written now (it was not on disk)'}")
        for i in range(1, 4):
            t2.post("/sales", sale_body(f"T2-AFTER-{i:04d}", [(CROISSANT, 1)], "cash"))
        self.step(f"restarted till-2 (pid {t2.process.pid}): {len(acknowledged) - len(lost)} of "
                  f"{len(acknowledged)} acknowledged sales there{retried}; it sells on")
        self.summary["kill"] = {"acknowledged": len(acknowledged), "lost": lost, "in_flight": in_flight}
        if lost:
            self.step(f"LOST after the restart: {', '.join(lost)}")

        for proxy in chain.proxies.values():
            proxy.heal()
        healed = time.monotonic()
        self.step("heal: the basement's links are back")
        if self.wait_converged(chain):
            self.step(f"converged {time.monotonic() - healed:.1f} s after the heal: every member's digest is equal "
                      f"(GET /status on each)")
        else:
            self.step(f"NOT converged {CONVERGE_TIMEOUT_S:.0f} s after the heal")
        # Acks travel with the haves: give them a moment to settle, never longer than a deadline.
        try:
            wait_until(lambda: all(m.status()["acks"]["local"] == 0 for m in chain.members), 10.0,
                       "every member's entries to be held elsewhere")
        except DemoFailed:
            pass
        for _ in range(3):  # one device after another: an entry landing in between is read again
            views = self.read_views(chain)
            digests = {views[m.name]["digest"] for m in chain.members}
            if len(digests) == 1 and None not in digests:
                break
            self.wait_converged(chain, timeout=5.0)
        self.table(chain, views)
        self.summary["devices"] = views
        return len(digests) == 1 and None not in digests, lost

    def burst_and_kill(self, till: Device) -> tuple[list[str], str | None]:
        """Sales one after another on ``till`` (as its app would); SIGKILL once enough are
        acknowledged. Returns the acknowledged ids and the one in flight at the kill (if any)."""
        acknowledged: list[str] = []
        state: dict[str, Any] = {"in_flight": None}
        stop = threading.Event()

        def burst() -> None:
            i = 0
            while not stop.is_set():
                i += 1
                sale_id = f"T2-B{i:04d}"
                state["in_flight"] = sale_id
                try:
                    status, _ = till.call("POST", "/sales", sale_body(sale_id, [(CROISSANT, 1)], "cash"))
                except Unreachable:
                    return  # the till is gone: this sale's fate is unknown to the app
                if status != 200:
                    state["error"] = status
                    return
                acknowledged.append(sale_id)
                state["in_flight"] = None

        thread = threading.Thread(target=burst, daemon=True, name="burst")
        thread.start()
        try:
            wait_until(lambda: len(acknowledged) >= BURST_BEFORE_KILL or not thread.is_alive(), 30.0,
                       "a burst of acknowledged sales")
            if len(acknowledged) < BURST_BEFORE_KILL:
                raise DemoFailed(f"the burst on {till.name} stopped: status {state.get('error')}")
            till.kill()
        finally:
            stop.set()
            thread.join(timeout=API_TIMEOUT_S + 5)
        return list(acknowledged), state["in_flight"]

    def wait_converged(self, chain: Chain, timeout: float = CONVERGE_TIMEOUT_S) -> list[dict] | None:
        try:
            return wait_until(lambda: converged_statuses(chain.members), timeout, "every member's digest to be equal")
        except DemoFailed:
            return None

    def read_views(self, chain: Chain) -> dict[str, dict]:
        """Each device's view, read through its API."""
        views: dict[str, dict] = {}
        for device in chain.devices.values():
            status = device.status()
            view: dict[str, Any] = {
                "device": status["device"], "branch": device.spec.branch, "role": device.spec.role,
                "digest": status["digest"], "entries_held": sum(status["vector"].values()),
                "acks": status["acks"], "bytes_out": status["counters"]["bytes_out"],
                "bytes_in": status["counters"]["bytes_in"], "pids": device.pids,
            }
            if not device.spec.relay:
                rollups = device.get("/rollups")
                own = rollups["by_till"].get(str(status["device"]), {})
                member = device.get(f"/members/{ALICE}")
                incidents = device.get("/incidents?limit=500")["incidents"]
                view |= {
                    "sales": rollups["total"]["sales"], "own_sales": own.get("sales", 0),
                    "by_branch": rollups["by_branch"],
                    "own_card_offline": own.get("card_offline", 0),
                    "stock": rollups["stock"], "alice_balance": member["balance"],
                    "alice_rights_here": member["rights_here"], "incidents": len(incidents),
                    "incident_list": [{"kind": i.get("kind"), "device": i.get("device"), "detail": i.get("detail")}
                                      for i in incidents],
                }
            views[device.name] = view
        return views

    def table(self, chain: Chain, views: dict[str, dict]) -> None:
        from rich.table import Table

        names = list(chain.devices)
        table = Table(title="Every device's view, read through its own API", title_justify="left")
        table.add_column("", no_wrap=True)
        for name in names:
            v = views[name]
            table.add_column(f"{name}\n{v['branch']}\n{v['role']}", justify="right", no_wrap=True)

        def row(label: str, read: Any, blind: str = "(blind)") -> None:
            cells = []
            for name in names:
                v = views[name]
                cells.append(blind if "sales" not in v and blind is not None else str(read(v)))
            table.add_row(label, *cells)

        def stock(branch: str, sku: str) -> Any:
            return lambda v: v["stock"].get(branch, {}).get(sku, 0)

        row("sales (whole chain)", lambda v: v["sales"])
        row("  of them sold here", lambda v: v["own_sales"])
        row("  card taken offline", lambda v: v["own_card_offline"])
        row(f"stock central {COFFEE}", stock("central", COFFEE))
        row(f"stock central {CROISSANT}", stock("central", CROISSANT))
        row(f"stock north {COFFEE}", stock("north", COFFEE))
        row("alice balance", lambda v: v["alice_balance"])
        row("alice rights here", lambda v: v["alice_rights_here"])
        row("acks local/lan/anchor",
            lambda v: "{local}/{lan}/{anchor}".format(**v["acks"]), blind=None)
        row("entries held", lambda v: v["entries_held"], blind=None)
        row("bytes sent/received", lambda v: f"{_kb(v['bytes_out'])}/{_kb(v['bytes_in'])}", blind=None)
        row("incidents", lambda v: v["incidents"])
        row("digest", lambda v: (v["digest"] or "-")[:10], blind=None)
        self.console.print()
        self.console.print(table)
        self.say("acks: how many of this device's own entries are known to be held only locally, on the LAN, "
                 "by an anchor; bytes (k = 1000) since each process started, till-2's since its restart.")
        office = views["office"]
        takings = ", ".join(f"{branch} {figures['sales']} sales, takings {figures['takings']} (card taken offline "
                            f"{figures['card_offline']})" for branch, figures in sorted(office["by_branch"].items()))
        self.say(f"the office's roll-ups, from replicated state: {takings}")
        seen = office.get("incident_list", [])
        self.say(f"incidents (the replicated ledger, as office reads it): {len(seen)}")
        for incident in seen:
            self.say(f"  {incident['kind']} (device {incident['device']}): {incident['detail']}")


def _kb(n: int) -> str:
    return f"{round(n / 1000)}k" if n >= 1000 else str(n)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run(out: TextIO, results: Path = Path("results/demo")) -> int:
    """Run the demo in real processes, writing progress and the table to ``out``.

    Args:
        out: where to print.
        results: the directory for ``summary.json`` and the node logs (replaced).
    Returns:
        The exit status: 0 converged (every member's digest equal, no acknowledged sale lost),
        1 not, or a step failed; 130 interrupted. Every process is stopped and the temporary
        directory removed in every case.
    """
    demo = Demo(out, results)
    main_thread = threading.current_thread() is threading.main_thread()
    if main_thread:
        def terminated(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt  # SIGTERM stops everything below through the finally, as Ctrl-C does

        previous_term = signal.signal(signal.SIGTERM, terminated)
        previous_int = signal.getsignal(signal.SIGINT)
    converged, lost, status, failure = False, [], 1, None
    pids: list[int] = []
    left: list[int] = []
    root = Path(tempfile.mkdtemp(prefix="tillmesh-demo-"))
    chain = Chain(root)
    demo.say("A chain in real processes on 127.0.0.1: an authority, till-1, till-2, the basement till and the "
             "office PC in the central branch, north-1 in the north branch, a relay anchor in the cloud.")
    try:
        converged, lost = demo.story(chain)
        status = 0 if converged and not lost else 1
    except DemoFailed as exc:
        failure = str(exc)
        demo.step(f"failed: {failure}")
    except KeyboardInterrupt:
        failure, status = "interrupted", 130
        demo.step("interrupted: stopping every process")
    finally:
        if main_thread:  # stopping takes a moment: a second Ctrl-C must not cut it short
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            pids = chain.stop_all()
            left = [pid for pid in pids if _pid_alive(pid)]
            _keep(chain, demo, results, pids, converged, lost, failure, root)
        finally:
            shutil.rmtree(root, ignore_errors=True)
            if main_thread:
                signal.signal(signal.SIGTERM, previous_term)
                signal.signal(signal.SIGINT, previous_int)
    demo.step(f"stopped {len(pids)} processes by pid ({len(left)} still running), removed {root}; "
              f"summary and node logs in {results}")
    if lost:
        demo.say(f"acknowledged sales lost by the kill: {len(lost)}")
    demo.say(f"\nconverged: {'yes' if converged else 'no'}")
    return status


def _keep(chain: Chain, demo: Demo, results: Path, pids: list[int], converged: bool, lost: list[str],
          failure: str | None, root: Path) -> None:
    """``summary.json`` and every node's log under ``results`` (the previous run's replaced)."""
    if results.exists():
        shutil.rmtree(results)
    logs = results / "logs"
    logs.mkdir(parents=True)
    for device in chain.devices.values():
        if device.log_path.exists():
            shutil.copyfile(device.log_path, logs / f"{device.name}.log")
    summary = {"converged": converged, "lost_acknowledged_sales": lost, "failure": failure, "seconds": round(time.monotonic() - demo.started, 1),
               "tempdir": str(root), "pids": pids,
               "pids_by_device": {d.name: d.pids for d in chain.devices.values()},
               "steps": demo.steps, **demo.summary}
    (results / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
