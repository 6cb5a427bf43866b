"""Real nodes in-process for the POS tests: an authority, data directories with SQLite files,
``Node``s in one trio run linked over TCP on 127.0.0.1 (each non-hub device through a proxy
that can cut its link), and an HTTP client per node on its real API port."""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

import httpx
import trio

from node.admin import AuthorityDir, parse_join_bundle
from node.runtime import Node
from node.storage import DataDir


async def wait_for(condition, seconds: float = 20.0, what: str = "condition") -> Any:
    """Poll ``condition`` with a deadline (a running node has no event to wait on from outside)."""
    with trio.move_on_after(seconds):
        while not (value := condition()):
            await trio.sleep(0.02)  # noqa: sleep-ok  (polling a running node with a deadline)
        return value
    raise AssertionError(f"timed out waiting for {what}")


class TrioProxy:
    """A TCP forwarder on 127.0.0.1 whose link can be cut (and refused) until healed."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.port = 0
        self.up = True
        self._scopes: set[trio.CancelScope] = set()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, client: trio.SocketStream) -> None:
        if not self.up:
            await client.aclose()
            return
        with trio.CancelScope() as scope:
            self._scopes.add(scope)
            try:
                server = await trio.open_tcp_stream("127.0.0.1", self.upstream)
                async with server, client, trio.open_nursery() as nursery:
                    async def pump(a: trio.SocketStream, b: trio.SocketStream) -> None:
                        try:
                            while data := await a.receive_some(65536):
                                await b.send_all(data)
                        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                            pass
                        nursery.cancel_scope.cancel()

                    nursery.start_soon(pump, client, server)
                    nursery.start_soon(pump, server, client)
            except OSError:
                pass
            finally:
                self._scopes.discard(scope)
        await client.aclose()

    def cut(self) -> None:
        self.up = False
        for scope in list(self._scopes):
            scope.cancel()

    def heal(self) -> None:
        self.up = True


@dataclass
class Shop:
    nodes: dict[str, Node] = field(default_factory=dict)
    clients: dict[str, httpx.AsyncClient] = field(default_factory=dict)
    proxies: dict[str, TrioProxy] = field(default_factory=dict)

    def linked(self, a: str, b: str) -> bool:
        other = self.nodes[b].device
        return any(p["device"] == other and p["state"] == "live" for p in self.nodes[a].status()["peers"])


SYNC = "[sync]\nhave_interval_ms = 200\nping_interval_ms = 1000\nping_timeout_ms = 3000\n" \
       "dial_backoff_min_ms = 20\ndial_backoff_max_ms = 200\n"


@asynccontextmanager
async def running_shop(root: Path, devices: list[tuple[str, str, tuple[str, ...]]], *, pos: str = "",
                       proxied: bool = True) -> AsyncIterator[Shop]:
    """Start ``devices`` (name, branch, roles); the first is the hub every other dials.

    ``pos`` is the ``[pos]`` section's body for every node's ``node.toml``.
    """
    dirs = make_chain(root, devices)
    shop = Shop()
    async with trio.open_nursery() as nursery:
        hub_port = None
        opened = []
        try:
            for name, _, _ in devices:
                peers = ""
                if hub_port is not None:
                    port = hub_port
                    if proxied:
                        proxy = TrioProxy(hub_port)
                        port = await nursery.start(proxy.run)
                        shop.proxies[name] = proxy
                    peers = f'[peers]\nstatic = ["127.0.0.1:{port}"]\n'
                (dirs[name] / "node.toml").write_text(peers + SYNC + (f"[pos]\n{pos}\n" if pos else ""))
                data_dir = DataDir.open(dirs[name])
                lock = data_dir.lock()
                lock.__enter__()
                opened.append(lock)
                node = Node(data_dir)
                ports = await nursery.start(node.run)
                hub_port = hub_port or ports["peer"]
                shop.nodes[name] = node
                shop.clients[name] = httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports['api']}", trust_env=False,
                                                       headers={"Authorization": f"Bearer {node.api_token}"},
                                                       timeout=30)
            hub = devices[0][0]
            for name in list(shop.nodes)[1:]:
                await wait_for(lambda: shop.linked(name, hub), what=f"{name} to link to {hub}")
            yield shop
        finally:
            for client in shop.clients.values():
                await client.aclose()
            for node in shop.nodes.values():
                node.stop()
            with trio.move_on_after(10):
                for node in shop.nodes.values():
                    await node._stopped.wait()
            nursery.cancel_scope.cancel()
    for lock in opened:
        lock.__exit__(None, None, None)


def make_chain(root: Path, devices: list[tuple[str, str, tuple[str, ...]]], config_text: str = "") -> dict[str, Path]:
    """An authority under ``root/admin`` and one data directory per device; returns their paths."""
    dirs: dict[str, Path] = {}
    with AuthorityDir.create(root / "admin") as admin:
        for name, branch, roles in devices:
            token, seed = parse_join_bundle(admin.add_device(name, branch=branch, roles=roles,
                                                             now=int(time.time() * 1000) - 60_000))
            dirs[name] = root / name
            DataDir.create(dirs[name], token=token, device_seed=seed, config_text=config_text)
    return dirs
