"""API benchmark: sales per second through the HTTP API against the node's own commit rate.

Prints one JSON object. One node (a real ``Node`` on a temporary ``DataDir`` with its SQLite
file) runs in this process under trio, its API on 127.0.0.1. In the same run:

- ``commit_per_s``: 8 trio tasks each calling ``Node.commit`` with the ops of a sale (a sale
  record and a stock decrement) in a loop: the node's own in-process rate, group commit
  included.
- ``api_sales_per_s``: 8 concurrent clients, each on one keep-alive connection (threads with
  ``http.client`` in a child process, so they do not share this process's interpreter lock
  with the server), each sending ``POST /sales`` with a fresh sale id in a loop. Every
  response must be 200. ``sale_p50_ms``/``sale_p99_ms`` are per request, as a client sees it.
- ``api_sales_vs_commit`` = api_sales_per_s / commit_per_s (goal >= 0.5).
- ``bare_server_per_s``: the same clients and bodies against the node's Hypercorn set-up
  (``node.api.serve_api``) serving an ASGI app that only reads each request and answers a
  constant: what the HTTP server alone allows, so ``bare_server_vs_commit`` bounds what
  ``api_sales_vs_commit`` can reach with this server.

Everything is on loopback; the child process and the node are stopped before it exits, and
the temporary directory is removed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._bare_server import constant_app  # noqa: E402

CLIENTS = 8


def client_main(port: int, token: str, per_client: int) -> None:
    """Child process: CLIENTS threads, each sending ``per_client`` sales; prints latencies."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(CLIENTS + 1)

    def run(index: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine = []
        barrier.wait()
        for i in range(per_client):
            body = json.dumps({"sale_id": f"c{index}-{i}", "lines": [{"sku": "tea", "quantity": 1, "unit_price": 300}],
                               "payments": [{"method": "cash", "amount": 300}]})
            start = time.perf_counter()
            conn.request("POST", "/sales", body=body, headers={"Authorization": f"Bearer {token}",
                                                               "Content-Type": "application/json"})
            response = conn.getresponse()
            data = response.read()
            mine.append(time.perf_counter() - start)
            if response.status != 200:
                errors.append(f"{response.status}: {data[:200]!r}")
        conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    print(json.dumps({"elapsed": elapsed, "latencies": latencies, "errors": errors[:5]}))


def make_node_dir(root: Path) -> Path:
    from node.admin import AuthorityDir, parse_join_bundle
    from node.storage import DataDir

    with AuthorityDir.create(root / "admin") as admin:
        token, seed = parse_join_bundle(admin.add_device("till", branch="central", roles=("manager",),
                                                         now=int(time.time() * 1000) - 60_000))
    DataDir.create(root / "till", token=token, device_seed=seed, config_text="[pos]\napproval_above = 0\n")
    return root / "till"


async def measure(path: Path, per_client: int) -> dict:
    from node.api import serve_api
    from node.runtime import Node
    from node.storage import DataDir

    data_dir = DataDir.open(path)
    with data_dir.lock():
        node = Node(data_dir)
        async with trio.open_nursery() as nursery:
            ports = await nursery.start(node.run)
            await node.commit([("add", ("stock", "central", "tea"), 10 ** 9)])

            async def committer(index: int) -> None:
                for i in range(per_client):
                    await node.commit([("record", ("sale", f"n{index}-{i}"), {"total": 300, "lines": [
                        {"sku": "tea", "quantity": 1, "unit_price": 300}]}), ("add", ("stock", "central", "tea"), -1)])

            start = time.perf_counter()
            async with trio.open_nursery() as tasks:
                for index in range(CLIENTS):
                    tasks.start_soon(committer, index)
            commit_s = time.perf_counter() - start

            result = await run_clients(ports["api"], node.api_token, per_client)
            node.stop()
        # The HTTP server alone: the same clients and bodies against the node's own Hypercorn
        # set-up (``serve_api``) serving an app that answers every request with a constant.
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_api, constant_app, "127.0.0.1", 0, stop.wait)
            bare = await run_clients(port, node.api_token, per_client)
            stop.set()
    total = CLIENTS * per_client
    latencies = sorted(result["latencies"])
    for run in (result, bare):
        if run["errors"]:
            raise SystemExit(f"requests failed: {run['errors']}")
    commit_rate = total / commit_s
    api_rate = total / result["elapsed"]
    bare_rate = total / bare["elapsed"]
    return {
        "clients": CLIENTS, "sales_per_side": total,
        "commit_per_s": round(commit_rate, 1), "api_sales_per_s": round(api_rate, 1),
        "sale_p50_ms": round(statistics.median(latencies) * 1000, 2),
        "sale_p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, 2),
        "bare_server_per_s": round(bare_rate, 1),
        "bare_server_p50_ms": round(statistics.median(bare["latencies"]) * 1000, 2),
        "ratios": {"api_sales_vs_commit": round(api_rate / commit_rate, 3),
                   "bare_server_vs_commit": round(bare_rate / commit_rate, 3),
                   "api_sales_vs_bare_server": round(api_rate / bare_rate, 3)},
        "goal": {"api_sales_vs_commit": 0.5, "bare_server_vs_commit": "reported: the most the server allows",
                 "api_sales_vs_bare_server": "reported"},
    }


async def run_clients(port: int, token: str, per_client: int) -> dict:
    """The client child process against ``port``; its figures."""
    child = await trio.lowlevel.open_process([sys.executable, __file__, "--client", str(port), token, str(per_client)],
                                             stdout=subprocess.PIPE)
    try:
        chunks = []
        async for chunk in child.stdout:
            chunks.append(chunk)
        await child.wait()
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    return json.loads(b"".join(chunks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--client", nargs=3, metavar=("PORT", "TOKEN", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client_main(int(args.client[0]), args.client[1], int(args.client[2]))
        return
    per_client = 25 if args.quick else 250
    with tempfile.TemporaryDirectory(prefix="tillmesh-bench-api-") as tmp:
        path = make_node_dir(Path(tmp))
        print(json.dumps(trio.run(measure, path, per_client)))


if __name__ == "__main__":
    main()
