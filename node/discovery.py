"""LAN discovery by DNS-SD (mDNS): find the other nodes of this network without configuring them.

What is advertised
------------------
One service of type ``_tillmesh._tcp.local.`` per running node. It says only which network
the node belongs to and where it listens:

- the instance name is ``tillmesh-<20 hex>``, a hash of the network id and a random salt
  drawn at each start: it identifies nothing (no device key, device name or branch name,
  and it changes at every start, so a till cannot be followed around by it);
- the host name (SRV target) is derived the same way, never the machine's host name;
- the TXT record is ``net=<hex of keyring.network_id>``, nothing else;
- the port is the node's peer port, and the addresses are those it listens on.

Anyone on the LAN can therefore see that a tillmesh network with that id is present, and
nothing more: joining it still takes a certificate from the authority, and every session is
authenticated (Noise) before a byte of data flows. Discovery only saves typing addresses.

How it runs
-----------
python-zeroconf is asyncio inside. Its *synchronous* ``Zeroconf`` runs that asyncio loop on
a thread of its own, so nothing asyncio ever runs in trio's thread: every blocking call
(start, register, resolve, close) goes through ``trio.to_thread.run_sync``, and the
``ServiceBrowser`` callbacks (which zeroconf fires on the browser's own thread) hand the
service name to trio with ``trio.from_thread.run_sync(..., trio_token=token)``. One trio task
resolves the names one at a time and calls ``found((host, port))`` — in trio — for each new
address of a node of the same network that is not this node. Others (another network, no or
a malformed TXT record, a bad port, ourselves) are ignored.

Which interfaces: ``interfaces_for(listen_host)``. A node listening on one address
advertises and browses on that address only (the default ``127.0.0.1`` finds only nodes of
the same machine, which is also all that could reach it); a node listening on the wildcard
uses every interface and advertises the address its host uses for multicast.

Known limits: IPv4 is what is tested; the advertised addresses are taken at start (a till
whose network comes up later advertises none until it restarts); a node that goes away is not
forgotten (its dialer keeps backing off), and at most ``MAX_FOUND`` addresses are reported.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import socket
from functools import partial
from typing import Any, Callable, Sequence

import trio

from gossip import MAX_PEERS

__all__ = ["SERVICE_TYPE", "MAX_FOUND", "Discovery", "run_discovery", "instance_name", "txt_properties",
           "peer_of", "interfaces_for"]

log = logging.getLogger("tillmesh.discovery")

SERVICE_TYPE = "_tillmesh._tcp.local."
# More distinct addresses than the engine could ever hold sessions for are not worth dialling
# (and a LAN flooded with fake advertisements must not become thousands of dialers).
MAX_FOUND = MAX_PEERS
RESOLVE_TIMEOUT_MS = 3000
CLOSE_TIMEOUT_S = 5.0
# Names waiting to be resolved; more are dropped (the browser reports them again later).
MAX_QUEUED = 64
_HASH_LABEL = b"tillmesh/dns-sd/instance/v1"
_WILDCARDS = {"", "0.0.0.0", "::", "*"}


def instance_name(network_id: bytes, salt: bytes) -> str:
    """The DNS-SD instance label: a hash of the network id and a per-start salt.

    Returns:
        ``tillmesh-`` and 20 hex digits (80 bits: two nodes do not collide).
    """
    return "tillmesh-" + hashlib.sha256(_HASH_LABEL + network_id + salt).hexdigest()[:20]


def txt_properties(network_id: bytes) -> dict[str, str]:
    """The TXT record: the network id, and nothing else."""
    return {"net": network_id.hex()}


def interfaces_for(listen_host: str) -> Any:
    """Which interfaces to run mDNS on for a node listening on ``listen_host``.

    Returns:
        ``InterfaceChoice.All`` for a wildcard (or a host name), else ``[listen_host]``.
    """
    from zeroconf import InterfaceChoice

    host = listen_host.strip("[]")
    if host in _WILDCARDS:
        return InterfaceChoice.All
    if host == "localhost":
        return ["127.0.0.1"]
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return InterfaceChoice.All
    return [host]


def _advertised_addresses(interfaces: Any) -> list[str]:
    """The addresses peers should dial: the listed interfaces, or for "all", the address this
    host sends multicast from (a UDP connect picks it; no packet is sent)."""
    if isinstance(interfaces, (list, tuple)):
        return [str(i) for i in interfaces if isinstance(i, str)]
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("224.0.0.251", 5353))
        address = probe.getsockname()[0]
    except OSError:
        return []
    finally:
        probe.close()
    return [] if address in _WILDCARDS else [address]


def peer_of(info: Any, network_id: bytes, own_name: str | None = None) -> tuple[str, int] | None:
    """The (host, port) to dial for a resolved service, or None if it is not a peer.

    Args:
        info: a resolved ``zeroconf.ServiceInfo`` (anything with ``name``, ``port``,
            ``properties`` and ``parsed_scoped_addresses``).
        network_id: this node's network id; services of any other network are ignored.
        own_name: this node's own service name, ignored too.
    Returns:
        An IPv4 address if there is one (else IPv6) and the port; None for ourselves, another
        network, a missing or malformed TXT ``net``, a port out of range or no address.
    """
    if own_name is not None and str(info.name).lower() == own_name.lower():
        return None
    try:
        net = (info.properties or {}).get(b"net")
    except Exception:  # a TXT record that does not parse is not a peer
        return None
    if not isinstance(net, bytes) or net != network_id.hex().encode("ascii"):
        return None
    port = info.port
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        return None
    from zeroconf import IPVersion

    for version in (IPVersion.V4Only, IPVersion.V6Only):
        addresses = sorted(info.parsed_scoped_addresses(version))
        if addresses:
            return addresses[0], port
    return None


class Discovery:
    """Advertise this node and browse for the others of its network (see the module doc).

    Args:
        node_port: the peer port to advertise.
        network_id: ``keyring.network_id``.
        found: called in trio with ``(host, port)`` once per new peer address.
        interfaces: where to run mDNS: ``zeroconf.InterfaceChoice`` or a list of addresses
            (``["127.0.0.1"]`` keeps it on the loopback interface).
        salt: the instance-name salt (random by default).
    """

    def __init__(self, node_port: int, network_id: bytes, found: Callable[[tuple[str, int]], None], *,
                 interfaces: Any = None, salt: bytes | None = None) -> None:
        if not isinstance(node_port, int) or not 1 <= node_port <= 65535:
            raise ValueError(f"node_port: expected 1..65535, got {node_port!r}")
        self.node_port = node_port
        self.network_id = bytes(network_id)
        self.found = found
        self.interfaces = interfaces
        self.instance = instance_name(self.network_id, salt if salt is not None else os.urandom(16))
        self.name: str | None = None  # our full service name, once registered
        self.addresses: list[str] = []
        self.reported: set[tuple[str, int]] = set()
        self._queued: set[str] = set()
        self._send, self._recv = trio.open_memory_channel(MAX_QUEUED)
        self._full_warned = False

    def status(self) -> dict:
        return {"service": self.name, "addresses": list(self.addresses), "found": sorted(self.reported)}

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Register, browse and report until cancelled; ``started()`` once registered."""
        from zeroconf import InterfaceChoice, ServiceBrowser, ServiceInfo, Zeroconf

        interfaces = InterfaceChoice.All if self.interfaces is None else self.interfaces
        token = trio.lowlevel.current_trio_token()
        made: list[Any] = []  # filled even if we are cancelled while the thread runs
        browser = None
        try:
            await trio.to_thread.run_sync(lambda: made.append(Zeroconf(interfaces=interfaces)))
            zc = made[0]
            self.addresses = _advertised_addresses(interfaces)
            if not self.addresses:
                log.warning("discovery: no address to advertise; this node can find others but not be found")
            info = ServiceInfo(SERVICE_TYPE, f"{self.instance}.{SERVICE_TYPE}", port=self.node_port,
                               properties=txt_properties(self.network_id), server=f"{self.instance}.local.",
                               parsed_addresses=self.addresses)
            await trio.to_thread.run_sync(partial(zc.register_service, info, allow_name_change=True))
            self.name = info.name

            def on_change(zeroconf: Any, service_type: str, name: str, state_change: Any) -> None:
                # On zeroconf's browser thread: hand the name to trio, do nothing else here.
                if state_change.name == "Removed":
                    return
                try:
                    trio.from_thread.run_sync(self._enqueue, name, trio_token=token)
                except (trio.RunFinishedError, trio.Cancelled):
                    pass

            browser = await trio.to_thread.run_sync(partial(ServiceBrowser, zc, SERVICE_TYPE, handlers=[on_change]))
            log.info("discovery: advertising %s on %s port %d", self.name, self.addresses or "no address",
                     self.node_port)
            task_status.started(self.name)
            async for name in self._recv:
                self._queued.discard(name)
                if name.lower() == self.name.lower() or len(self.reported) >= MAX_FOUND:
                    continue
                try:
                    resolved = await trio.to_thread.run_sync(zc.get_service_info, SERVICE_TYPE, name,
                                                             RESOLVE_TIMEOUT_MS, abandon_on_cancel=True)
                except Exception as exc:  # a name off the network that zeroconf will not look up
                    log.debug("discovery: cannot resolve %r: %s", name, exc)
                    continue
                if resolved is not None:
                    self._consider(resolved)
        finally:
            self._send.close()
            with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT_S):
                if browser is not None:
                    await trio.to_thread.run_sync(browser.cancel, abandon_on_cancel=True)
                if made:
                    await trio.to_thread.run_sync(made[0].close, abandon_on_cancel=True)  # says goodbye first

    def _enqueue(self, name: str) -> None:
        """In trio: queue a service name to resolve (once, however often it is reported)."""
        if name in self._queued:
            return
        try:
            self._send.send_nowait(name)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            return
        self._queued.add(name)

    def _consider(self, info: Any) -> None:
        address = peer_of(info, self.network_id, self.name)
        if address is None or address in self.reported:
            return
        if address[0] in self.addresses and address[1] == self.node_port:
            return  # ourselves under another name
        if len(self.reported) >= MAX_FOUND:
            if not self._full_warned:
                self._full_warned = True
                log.warning("discovery: %d peer addresses found already; ignoring more", MAX_FOUND)
            return
        self.reported.add(address)
        self.found(address)


async def run_discovery(node_port: int, network_id: bytes, found: Callable[[tuple[str, int]], None], *,
                        interfaces: Sequence[str] | Any = None, salt: bytes | None = None,
                        task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Advertise this node and report peers of its network until cancelled.

    Args:
        node_port: this node's peer port.
        network_id: ``keyring.network_id``.
        found: called in trio with ``(host, port)`` for each new peer of the same network.
        interfaces: ``zeroconf.InterfaceChoice`` or a list of addresses; all interfaces by
            default (see ``interfaces_for``).
        salt: the instance-name salt (random by default).
        task_status: ``started(service_name)`` once the advertisement is registered.
    """
    await Discovery(node_port, network_id, found, interfaces=interfaces, salt=salt).run(task_status=task_status)
