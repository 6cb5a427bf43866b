"""LAN discovery (node/discovery.py): what is advertised, who counts as a peer, the runtime hook,
and two real nodes with no configured peers finding each other over DNS-SD.

The end-to-end test runs in a private network namespace the test makes itself:
``unshare`` (user, net, pid and mount namespaces; ``lo`` only, up, multicast on, a route for
224.0.0.0/4) runs this file as a driver (``python -m tests.node.test_discovery --driver
DIR``) that starts the nodes as subprocesses, commits, polls and prints one JSON line; the
test asserts on that JSON. No packet can leave the machine, and mDNS of the host is never
touched. The driver stops every node it started by its pid; as a backstop, the namespace's
pid 1 is the driver and ``--kill-child`` kills it if the test times out, and with it (the
kernel sees to that) everything left in the namespace. Only where the namespace cannot be made
does the test skip, saying why.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import trio

from node import discovery
from node.discovery import MAX_FOUND, SERVICE_TYPE, Discovery, instance_name, interfaces_for, peer_of, txt_properties
from tests.node.test_processes import ROOT, STOCK, Device, add, cli, converged, wait_until

NET = bytes(range(32))
OTHER_NET = bytes(range(1, 33))
MDNS_PORT = 5353
NAMESPACE = ["unshare", "--user", "--map-root-user", "--net", "--pid", "--fork", "--kill-child", "--mount-proc"]
SETUP_LO = "ip link set lo up && ip link set lo multicast on && ip route add 224.0.0.0/4 dev lo"


# -- what is advertised, and who is a peer (no network) -----------------------------------------


def test_the_instance_name_is_a_hash_that_changes_with_each_start():
    a, b = instance_name(NET, b"salt-1"), instance_name(NET, b"salt-2")
    assert a != b and instance_name(NET, b"salt-1") == a
    assert a.startswith("tillmesh-") and len(a) == len("tillmesh-") + 20
    int(a.removeprefix("tillmesh-"), 16)
    assert NET.hex() not in a and instance_name(OTHER_NET, b"salt-1") != a
    node = Discovery(4000, NET, lambda address: None)
    assert node.instance != Discovery(4000, NET, lambda address: None).instance  # random salt by default


def test_the_txt_record_is_the_network_id_only():
    assert txt_properties(NET) == {"net": NET.hex()}


def info(name="tillmesh-aa._tillmesh._tcp.local.", net=NET.hex().encode(), port=4100, v4=("127.0.0.1",),
         v6=()):
    properties = {} if net is None else {b"net": net}

    def parsed_scoped_addresses(version):
        return list(v6) if version.name == "V6Only" else list(v4)

    return SimpleNamespace(name=name, port=port, properties=properties, parsed_scoped_addresses=parsed_scoped_addresses)


def test_a_service_of_the_same_network_is_a_peer():
    assert peer_of(info(), NET, "tillmesh-me._tillmesh._tcp.local.") == ("127.0.0.1", 4100)
    assert peer_of(info(v4=("203.0.113.9", "198.51.100.2"), v6=("fe80::1%2",)), NET) == ("198.51.100.2", 4100)
    assert peer_of(info(v4=(), v6=("fe80::1%2",)), NET) == ("fe80::1%2", 4100)


@pytest.mark.parametrize("service", [
    info(net=OTHER_NET.hex().encode()),  # another network
    info(net=NET.hex().upper().encode()),  # not the form we write
    info(net=None),  # no TXT net
    info(net=b""),
    info(port=0), info(port=70000), info(port=None),
    info(v4=(), v6=()),  # nothing to dial
    info(name="TILLMESH-ME._tillmesh._tcp.local."),  # ourselves
])
def test_anything_else_is_ignored(service):
    assert peer_of(service, NET, "tillmesh-me._tillmesh._tcp.local.") is None


def test_each_address_is_reported_once_never_ourselves_and_at_most_max_found():
    found = []
    node = Discovery(4000, NET, found.append)
    node.name, node.addresses = "tillmesh-me._tillmesh._tcp.local.", ["127.0.0.1"]
    node._consider(info(port=4100))
    node._consider(info(name="tillmesh-bb._tillmesh._tcp.local.", port=4100))  # same address again
    node._consider(info(name="tillmesh-cc._tillmesh._tcp.local.", port=4000))  # our own address
    node._consider(info(name="tillmesh-me._tillmesh._tcp.local.", port=4200))
    assert found == [("127.0.0.1", 4100)]
    for i in range(MAX_FOUND + 5):
        node._consider(info(name=f"tillmesh-{i}._tillmesh._tcp.local.", port=10_000 + i))
    assert len(found) == MAX_FOUND


def test_interfaces_follow_the_listen_address():
    from zeroconf import InterfaceChoice

    assert interfaces_for("127.0.0.1") == ["127.0.0.1"]
    assert interfaces_for("198.51.100.20") == ["198.51.100.20"]
    assert interfaces_for("localhost") == ["127.0.0.1"]
    for wildcard in ("0.0.0.0", "", "::", "[::]", "till-3.lan"):
        assert interfaces_for(wildcard) is InterfaceChoice.All


def test_a_bad_port_is_refused():
    for port in (0, 65536, "4000"):
        with pytest.raises(ValueError):
            Discovery(port, NET, lambda address: None)


# -- the runtime hook (in process, discovery itself replaced by a fake) ------------------------------------


def make_data_dir(root: Path, name: str = "t1", *, discovery_on: bool = False, peers: tuple[str, ...] = ()):
    from node.storage import DataDir

    admin = root / "admin"
    if not admin.exists():
        cli("network", "init", "--dir", str(admin))
    bundle = cli("device", "add", name, "--branch", "central", "--role", "manager", "--dir", str(admin)).stdout.strip()
    data = root / name
    args = ["join", bundle, "--data", str(data)]
    for peer in peers:
        args += ["--peer", peer]
    cli(*args)
    if discovery_on:
        with open(data / "node.toml", "a") as handle:
            handle.write("\n[discovery]\nenabled = true\n")
    return DataDir.open(data)


async def run_briefly(data_dir, check) -> dict:
    """Run a Node until ``check(node)`` has been called once it is up; returns its status."""
    from node.runtime import Node

    with data_dir.lock():
        node = Node(data_dir)
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            await check(node)
            status = node.status()
            node.stop()
    return status


def test_with_discovery_off_no_zeroconf_is_started(tmp_path, monkeypatch):
    started = []

    async def no_discovery(*args, **kwargs):
        started.append(args)

    def no_zeroconf(*args, **kwargs):
        started.append("Zeroconf")
        raise AssertionError("a Zeroconf instance was created with discovery off")

    import zeroconf

    monkeypatch.setattr(discovery, "run_discovery", no_discovery)
    monkeypatch.setattr(zeroconf, "Zeroconf", no_zeroconf)
    data_dir = make_data_dir(tmp_path)
    assert data_dir.config().discovery_enabled is False  # the default

    async def check(node):
        await trio.lowlevel.checkpoint()

    status = trio.run(run_briefly, data_dir, check)
    assert started == [] and "discovery" not in status


def test_with_discovery_on_each_found_address_is_dialled_once(tmp_path, monkeypatch):
    configured = ("127.0.0.1", 1)
    data_dir = make_data_dir(tmp_path, discovery_on=True, peers=("127.0.0.1:1",))
    calls, dialled = [], []
    reported = trio.Event()

    async def fake_discovery(node_port, network_id, found, *, interfaces, task_status=trio.TASK_STATUS_IGNORED):
        calls.append((node_port, network_id, interfaces))
        for address in [("127.0.0.1", 4100), ("127.0.0.1", 4100), configured, ("127.0.0.1", 4200)]:
            found(address)
        reported.set()
        await trio.Event().wait()  # until the node stops

    async def record_dial(self, target):
        dialled.append(target)

    from node.runtime import Node

    monkeypatch.setattr(discovery, "run_discovery", fake_discovery)
    monkeypatch.setattr(Node, "_dial_forever", record_dial)

    async def check(node):
        await reported.wait()
        for _ in range(10):
            await trio.lowlevel.checkpoint()

    trio.run(run_briefly, data_dir, check)
    keyring, _, _ = data_dir.keyring()
    assert calls and calls[0][1] == keyring.network_id and calls[0][2] == ["127.0.0.1"]
    assert calls[0][0] not in (0, None)  # the bound peer port, not the configured 0
    assert sorted(dialled) == [configured, ("127.0.0.1", 4100), ("127.0.0.1", 4200)]


def test_a_discovery_that_cannot_start_leaves_the_node_running(tmp_path, monkeypatch, caplog):
    data_dir = make_data_dir(tmp_path, discovery_on=True)
    failed = trio.Event()

    async def broken(*args, **kwargs):
        failed.set()
        raise OSError("no multicast here")

    monkeypatch.setattr(discovery, "run_discovery", broken)

    async def check(node):
        await failed.wait()
        await node.commit([("add", tuple(STOCK), 3)])  # the till keeps selling
        assert node.value(tuple(STOCK)) == 3

    trio.run(run_briefly, data_dir, check)
    assert "discovery stopped: no multicast here" in caplog.text


# -- two real nodes in a private network namespace ----------------------------------------------


def _namespace_unavailable() -> str | None:
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    try:
        probe = subprocess.run([*NAMESPACE, "sh", "-c", SETUP_LO], capture_output=True, text=True, timeout=30,
                               stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run unshare: {exc}"
    if probe.returncode != 0:
        return (f"cannot make a private network namespace ({' '.join(NAMESPACE)}; {SETUP_LO}): "
                f"{probe.stderr.strip() or f'exit {probe.returncode}'}")
    return None


def test_two_nodes_without_peers_find_each_other_over_dns_sd_and_converge(tmp_path):
    reason = _namespace_unavailable()
    if reason is not None:
        # Justified skip: multicast may only be sent inside a namespace the test made itself;
        # where the kernel refuses one, there is nowhere safe to run this, and it says why.
        pytest.skip(f"needs a private network namespace (user+net via unshare) to run mDNS in: {reason}")
    command = [*NAMESPACE, "sh", "-c", f'{SETUP_LO} && exec "$0" -m tests.node.test_discovery --driver "$1"',
               sys.executable, str(tmp_path)]
    # On a timeout subprocess.run kills unshare, and --kill-child takes the namespace down with it.
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL)
    lines = result.stdout.strip().splitlines()
    assert result.returncode == 0 and lines, f"driver failed ({result.returncode}):\n{result.stderr[-4000:]}"
    report = json.loads(lines[-1])
    assert report["error"] is None, report
    t1, t2, t3 = report["t1"], report["t2"], report["t3"]
    # Found over DNS-SD (nothing configured) and converged: each sees the other's commit.
    assert t1["value"] == t2["value"] == 12, report
    assert t1["peer_devices"] == [t2["device"]] and t2["peer_devices"] == [t1["device"]], report
    assert "discovered a peer at 127.0.0.1" in t1["log"] and "discovered a peer at 127.0.0.1" in t2["log"], report
    # Both advertise themselves, on mDNS; what they advertise is the network id and the port.
    assert t1["mdns_sockets"] and t2["mdns_sockets"], report
    adverts = report["adverts"]
    assert sorted(a["port"] for a in adverts) == sorted([t1["peer_port"], t2["peer_port"]]), report
    for advert in adverts:
        assert advert["properties"] == {"net": report["network_id"]}, advert
        assert advert["addresses"] == ["127.0.0.1"], advert
        # Names are a hash: no device name, branch or key in them (nor the machine's host name).
        assert re.fullmatch(r"tillmesh-[0-9a-f]{20}\._tillmesh\._tcp\.local\.", advert["name"]), advert
        assert re.fullmatch(r"tillmesh-[0-9a-f]{20}\.local\.", advert["server"]), advert
        for device in (t1, t2):
            assert device["device_key"][:8] not in advert["name"] + advert["server"], advert
    # The third node has discovery off (the default): no mDNS socket, not advertised, not found.
    assert t3["mdns_sockets"] == [] and t3["peer_devices"] == [] and t3["value"] == 0, report  # saw neither commit
    assert t3["peer_port"] not in [a["port"] for a in adverts], report
    # Everything stopped gracefully, and they said goodbye on mDNS.
    assert [report[n]["exit"] for n in ("t1", "t2", "t3")] == [0, 0, 0], report
    assert report["removed_after_stop"] == 2, report
    assert report["left_running"] == [], report


# -- the driver, run inside the namespace -------------------------------------------------------


def _udp_ports(pid: int) -> list[int]:
    """The local UDP ports of the sockets process ``pid`` holds (its namespace's tables)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[len("socket:["):-1])
    ports = []
    for table in ("udp", "udp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            parts = line.split()
            if parts[9] in inodes:
                ports.append(int(parts[1].rsplit(":", 1)[1], 16))
    return sorted(ports)


class _Adverts:
    """A plain DNS-SD browser in the driver: what the nodes put on the air."""

    def __init__(self) -> None:
        from zeroconf import ServiceBrowser, Zeroconf

        self.seen: dict[str, dict] = {}
        self.removed: set[str] = set()
        self.lock = threading.Lock()
        self.zc = Zeroconf(interfaces=["127.0.0.1"])
        self.browser = ServiceBrowser(self.zc, SERVICE_TYPE, handlers=[self._changed])

    def _changed(self, zeroconf, service_type, name, state_change) -> None:  # the browser's thread
        if state_change.name == "Removed":
            with self.lock:
                self.removed.add(name)
            return
        info = zeroconf.get_service_info(service_type, name, 3000)
        if info is not None:
            with self.lock:
                self.seen[name] = {
                    "name": info.name, "server": info.server, "port": info.port,
                    "addresses": info.parsed_addresses(),
                    "properties": {k.decode(): v.decode() if v is not None else None
                                   for k, v in info.properties.items()},
                }

    def close(self) -> None:
        self.browser.cancel()
        self.zc.close()


def drive(root: Path) -> dict:
    report: dict = {"error": None}
    admin = root / "admin"
    cli("network", "init", "--dir", str(admin))
    devices: dict[str, Device] = {}
    adverts = None
    try:
        for name, on in (("t1", True), ("t2", True), ("t3", False)):
            bundle = cli("device", "add", name, "--branch", "central", "--role", "manager",
                         "--dir", str(admin)).stdout.strip()
            cli("join", bundle, "--data", str(root / name))  # no --peer, no --anchor
            if on:
                with open(root / name / "node.toml", "a") as handle:
                    handle.write("\n[discovery]\nenabled = true\n")
        adverts = _Adverts()
        for name in ("t1", "t2", "t3"):
            devices[name] = Device(name, root / name)
            devices[name].start()
        t1, t2 = devices["t1"], devices["t2"]
        t1.commit([add(5)])
        t2.commit([add(7)])
        path = "/keys/" + "/".join(STOCK)
        wait_until(lambda: converged([t1, t2]) and all(d.api("GET", path).json().get("value") == 12 for d in (t1, t2)),
                   timeout=90, what="t1 and t2 to find each other and converge")
        wait_until(lambda: len(adverts.seen) >= 2, timeout=30, what="both advertisements to resolve")
        # Each found the other (whichever dialled first made the link the commits took).
        wait_until(lambda: all(b"discovered a peer at" in (root / n / "node.log").read_bytes() for n in ("t1", "t2")),
                   timeout=30, what="each node to discover the other")
        from node.storage import DataDir

        keyring, _, _ = DataDir.open(root / "t1").keyring()
        report["network_id"] = keyring.network_id.hex()
        with adverts.lock:
            report["adverts"] = list(adverts.seen.values())
        for name, device in devices.items():
            status = device.status()
            response = device.api("GET", path)
            cert = DataDir.open(root / name).keyring()[1]
            report[name] = {
                "device": status["device"], "peer_port": device.ports["peer"],
                "peer_devices": sorted(p["device"] for p in status["peers"] if p["state"] == "live"),
                "value": response.json().get("value") if response.status_code == 200 else None,
                "mdns_sockets": [p for p in _udp_ports(device.process.pid) if p == MDNS_PORT],
                "device_key": cert.device_key.hex(),
            }
    except BaseException as exc:  # reported as JSON, so the test shows it with the logs
        report["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        pids = [d.process.pid for d in devices.values() if d.process is not None]
        for name, device in devices.items():
            report.setdefault(name, {})["exit"] = device.stop()
            log = root / name / "node.log"
            report[name]["log"] = log.read_text(errors="replace")[-6000:] if log.exists() else ""
        if adverts is not None:
            try:
                wait_until(lambda: len(adverts.removed) >= 2, timeout=10, what="the goodbyes")
            except AssertionError:
                pass
            report["removed_after_stop"] = len(adverts.removed)
            adverts.close()
        report["left_running"] = [pid for pid in pids if Path(f"/proc/{pid}").exists()]
    return report


if __name__ == "__main__" and sys.argv[1:2] == ["--driver"]:
    print(json.dumps(drive(Path(sys.argv[2]))), flush=True)
