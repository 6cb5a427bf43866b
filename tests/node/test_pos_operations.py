"""Retry-safe stock and balance operations (``operation_id``) on a real node over HTTP:
receipts, stocktakes, transfers, top-ups and charges sent again with their id are done once;
another body under an id is refused with nothing written; without an id each is done every
time it is sent, as before."""

from __future__ import annotations

from contextlib import asynccontextmanager

import httpx
import pytest
import trio

from crdt_types import StorageError
from node.runtime import Node
from node.storage import DataDir
from tests.node.pos_helpers import SYNC, make_chain, running_shop, wait_for

MANAGER = ("till-1", "central", ("manager",))
STOCK = ("stock", "central", "tea")
NORTH_STOCK = ("stock", "north", "tea")
BALANCE = ("member", "alice", "balance")

# (path, body with operation_id "op-1", the same with another body, what it moves)
OPERATIONS = [
    ("/stock/receipts", {"lines": [{"sku": "tea", "quantity": 7}], "operation_id": "op-1"},
     {"lines": [{"sku": "tea", "quantity": 8}], "operation_id": "op-1"}, (STOCK, 7)),
    ("/stocktakes", {"counts": [{"sku": "tea", "counted": 90, "observed": 100}], "operation_id": "op-1"},
     {"counts": [{"sku": "tea", "counted": 91, "observed": 100}], "operation_id": "op-1"}, (STOCK, -10)),
    ("/transfers", {"to_branch": "north", "lines": [{"sku": "tea", "quantity": 4}], "operation_id": "op-1"},
     {"to_branch": "north", "lines": [{"sku": "tea", "quantity": 5}], "operation_id": "op-1"}, (NORTH_STOCK, 4)),
    ("/members/alice/topups", {"amount": 500, "operation_id": "op-1"}, {"amount": 501, "operation_id": "op-1"},
     (BALANCE, 500)),
    ("/charges", {"member": "alice", "amount": 300, "operation_id": "op-1"},
     {"member": "alice", "amount": 301, "operation_id": "op-1"}, (BALANCE, -300)),
]


def own_seq(node) -> int:
    return node.status()["vector"].get(node.device, 0)


@pytest.mark.trio
@pytest.mark.parametrize("path, body, other, moves", OPERATIONS, ids=[o[0] for o in OPERATIONS])
async def test_an_operation_sent_again_with_its_id_is_done_once(tmp_path, path, body, other, moves):
    async with running_shop(tmp_path, [MANAGER]) as shop:
        client, node = shop.clients["till-1"], shop.nodes["till-1"]
        assert (await client.post("/stock/receipts", json={"lines": [{"sku": "tea", "quantity": 100}]})).status_code == 200
        assert (await client.post("/members/alice/topups", json={"amount": 1000})).status_code == 200
        key, delta = moves
        start, before = node.value(key), own_seq(node)
        results = []

        async def send() -> None:
            response = await client.post(path, json=body)
            assert response.status_code == 200, response.text
            results.append(response.json())

        async with trio.open_nursery() as nursery:  # a retry racing the first try
            for _ in range(5):
                nursery.start_soon(send)
        await send()  # and one after it
        assert [r["replayed"] for r in results].count(False) == 1
        assert len({r["seq"] for r in results}) == 1
        assert node.value(key) == start + delta
        assert own_seq(node) == before + 1  # one entry: the effect and its operation record

        conflict = await client.post(path, json=other)
        assert conflict.status_code == 409
        assert conflict.json()["code"] == "operation_conflict" and conflict.json()["field"] == "operation_id"
        assert node.value(key) == start + delta and own_seq(node) == before + 1


@pytest.mark.trio
async def test_an_operation_id_is_one_operation_whatever_its_kind(tmp_path):
    async with running_shop(tmp_path, [MANAGER]) as shop:
        client, node = shop.clients["till-1"], shop.nodes["till-1"]
        first = await client.post("/members/alice/topups", json={"amount": 500, "operation_id": "shared"})
        assert first.status_code == 200
        before = own_seq(node)
        for path, body in [("/charges", {"member": "alice", "amount": 500, "operation_id": "shared"}),
                           ("/members/bob/topups", {"amount": 500, "operation_id": "shared"})]:
            response = await client.post(path, json=body)
            assert response.status_code == 409 and response.json()["code"] == "operation_conflict", path
        assert own_seq(node) == before
        assert node.value(BALANCE) == 500 and node.value(("member", "bob", "balance")) == 0


@pytest.mark.trio
async def test_without_an_id_each_request_is_done_and_a_refused_one_leaves_its_id_free(tmp_path):
    async with running_shop(tmp_path, [MANAGER]) as shop:
        client, node = shop.clients["till-1"], shop.nodes["till-1"]
        for _ in range(2):
            response = await client.post("/members/alice/topups", json={"amount": 100})
            assert response.status_code == 200 and response.json()["replayed"] is False
        assert node.value(BALANCE) == 200
        # Beyond the balance: refused, nothing written, so the same id may be used once it can pass.
        refused = await client.post("/charges", json={"member": "alice", "amount": 300, "operation_id": "c-1"})
        assert refused.status_code == 409 and refused.json()["code"] == "insufficient_balance"
        assert node.value(("operation", "c-1")) is None
        await client.post("/members/alice/topups", json={"amount": 100})
        done = await client.post("/charges", json={"member": "alice", "amount": 300, "operation_id": "c-1"})
        assert done.status_code == 200 and done.json()["replayed"] is False and done.json()["balance"] == 0
        bad = await client.post("/charges", json={"member": "alice", "amount": 1, "operation_id": "has space"})
        assert bad.status_code == 422 and any(e["field"] == "operation_id" for e in bad.json()["errors"])


@pytest.mark.trio
async def test_status_names_each_peer_its_last_sync_and_how_far_apart_they_are(tmp_path):
    import time

    from tests.node.pos_helpers import wait_for

    cashier = ("till-2", "central", ("cashier",))
    async with running_shop(tmp_path, [MANAGER, cashier]) as shop:
        hub, till = shop.nodes["till-1"], shop.nodes["till-2"]
        await shop.clients["till-2"].post("/stock/receipts", json={"lines": [{"sku": "tea", "quantity": 3}]})
        await wait_for(lambda: hub.value(STOCK) == 3, what="the receipt to reach till-1")
        response = await shop.clients["till-1"].get("/status")
        rows = [p for p in response.json()["peers"] if p["state"] == "live"]
        assert [(r["name"], r["branch"], r["device"]) for r in rows] == [("till-2", "central", till.device)]
        assert abs(rows[0]["last_heard_ms"] - time.time() * 1000) < 10_000
        await wait_for(lambda: all(p["they_lack"] == 0 == p["we_lack"] for p in hub.status()["peers"]),
                       what="till-1 to know till-2 holds all it holds")
        assert response.json()["peers_down"] == []

        shop.proxies["till-2"].cut()
        await wait_for(lambda: hub.status()["peers_down"], what="till-1 to see till-2 go")
        down = hub.status()["peers_down"]
        assert [(d["name"], d["state"]) for d in down] == [("till-2", "down")]
        assert down[0]["last_heard_ms"] <= time.time() * 1000
        shop.proxies["till-2"].heal()
        await wait_for(lambda: not hub.status()["peers_down"], what="till-2 back")


@asynccontextmanager
async def one_node(path):
    """A node on an existing data directory, with its API client; stopped at the end."""
    data_dir = DataDir.open(path)
    with data_dir.lock():
        node = Node(data_dir)
        async with trio.open_nursery() as nursery:
            ports = await nursery.start(node.run)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports['api']}", trust_env=False, timeout=30,
                                         headers={"Authorization": f"Bearer {node.api_token}"}) as client:
                try:
                    yield node, client
                finally:
                    node.stop()
            await node._stopped.wait()


@pytest.mark.trio
async def test_a_retry_after_a_restart_from_a_snapshot_returns_the_first_result(tmp_path):
    # The snapshot the restart loads holds the sale and the operation: the entries that wrote
    # them are not replayed, and the retry must still name them, as the first answer did.
    dirs = make_chain(tmp_path, [MANAGER, ("till-2", "central", ("cashier",))])
    (dirs["till-2"] / "node.toml").write_text(SYNC)  # a peer, so that the till's engine ticks
    sale = {"sale_id": "s-1", "lines": [{"sku": "tea", "quantity": 2, "unit_price": 300}],
            "payments": [{"method": "cash", "amount": 600}]}
    topup = {"amount": 500, "operation_id": "op-1"}
    async with one_node(dirs["till-2"]) as (hub, _):
        (dirs["till-1"] / "node.toml").write_text(f'[peers]\nstatic = ["127.0.0.1:{hub.ports["peer"]}"]\n'
                                                  + SYNC + "[storage]\nsnapshot_every = 1\n")
        async with one_node(dirs["till-1"]) as (node, client):
            first_sale = (await client.post("/sales", json=sale)).json()
            first_topup = (await client.post("/members/alice/topups", json=topup)).json()
            before = node.store.get_meta("snapshot")
            for _ in range(10):  # entries after them, so that a snapshot is due after them
                assert (await client.post("/stock/receipts", json={"lines": [{"sku": "tea", "quantity": 1}]})
                        ).status_code == 200
            await wait_for(lambda: node.store.get_meta("snapshot") not in (None, before) and not node.store.dirty,
                           what="a snapshot taken after the sale to be durable")
        async with one_node(dirs["till-1"]) as (node, client):
            replayed = {key for _, _, _, key in node.events}
            assert ("sale", "s-1") not in replayed and ("operation", "op-1") not in replayed  # from the snapshot
            again_sale = await client.post("/sales", json=sale)
            again_topup = await client.post("/members/alice/topups", json=topup)
            assert again_sale.status_code == again_topup.status_code == 200
            assert again_sale.json()["replayed"] is again_topup.json()["replayed"] is True
            assert again_sale.json()["device"] == first_sale["device"] == node.device
            assert first_sale["seq"] is not None and first_topup["seq"] is not None
            assert again_sale.json()["seq"] == first_sale["seq"]
            assert again_topup.json()["seq"] == first_topup["seq"]


@pytest.mark.trio
async def test_a_retry_after_a_failed_flush_names_its_own_entry(tmp_path):
    # The failed try's entry is gone with its flush; the retry's entry is the one to name,
    # here and in the store (where a restart from a snapshot reads it).
    path = make_chain(tmp_path, [MANAGER])["till-1"]
    sale = {"sale_id": "s-1", "lines": [{"sku": "tea", "quantity": 2, "unit_price": 300}],
            "payments": [{"method": "cash", "amount": 600}]}
    async with one_node(path) as (node, client):
        working = node.store.flush

        def disk_full() -> None:
            raise StorageError("disk full")

        node.store.flush = disk_full
        assert (await client.post("/sales", json=sale)).status_code == 503
        node.store.flush = working
        receipt = await client.post("/stock/receipts", json={"lines": [{"sku": "tea", "quantity": 1}]})
        assert receipt.status_code == 200  # it took the seq the failed sale had
        first = (await client.post("/sales", json=sale)).json()
        again = (await client.post("/sales", json=sale)).json()
        assert (first["replayed"], again["replayed"]) == (False, True)
        assert first["seq"] == again["seq"] == receipt.json()["seq"] + 1
        await wait_for(lambda: not node.store.dirty, what="the flush")
    async with one_node(path) as (node, client):
        assert node.entry_of(("sale", "s-1")) == (node.device, first["seq"])
