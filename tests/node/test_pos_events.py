"""``GET /events`` on real nodes: a client that disconnects and resumes from its last id misses
nothing and sees nothing twice; a price set on another node arrives on the stream; an id the
node no longer keeps (or from another run) starts with a reset event."""

from __future__ import annotations

import json

import pytest
import trio

from node.api._events import parse_event_id
from tests.node.pos_helpers import running_shop, wait_for


async def read_events(client, count: int, *, last: str | None = None, query: str = "") -> list[dict]:
    headers = {"Last-Event-ID": last} if last else {}
    events, current = [], {}
    with trio.fail_after(20):
        async with client.stream("GET", f"/events?max_events={count}{query}", headers=headers) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            async for line in response.aiter_lines():
                if line.startswith("id: "):
                    current["id"] = line[4:]
                elif line.startswith("event: "):
                    current["event"] = line[7:]
                elif line.startswith("data: "):
                    current["data"] = json.loads(line[6:])
                elif line == "" and "event" in current:
                    events.append(current)
                    current = {}
    return events


@pytest.mark.trio
async def test_a_resumed_stream_misses_nothing_and_repeats_nothing(tmp_path):
    async with running_shop(tmp_path, [("till-1", "central", ("manager",)), ("till-2", "central", ("cashier",))]
                            ) as shop:
        boss, till = shop.clients["till-1"], shop.clients["till-2"]
        seen: list[dict] = []

        async def follow(count: int, last: str | None) -> None:
            seen.extend(await read_events(till, count, last=last))

        node = shop.nodes["till-2"]
        start = f"{node.event_epoch}-{node.event_count}"  # "from now", however soon the stream connects
        async with trio.open_nursery() as nursery:
            nursery.start_soon(follow, 3, start)
            for i in range(3):
                await till.post("/stock/receipts", json={"lines": [{"sku": f"s{i}", "quantity": 1}]})
        assert [e["data"]["key"] for e in seen] == [["stock", "central", f"s{i}"] for i in range(3)]
        # disconnected: five more changes happen, one of them on another node
        for i in range(3, 7):
            await till.post("/stock/receipts", json={"lines": [{"sku": f"s{i}", "quantity": 1}]})
        await boss.post("/prices", json={"sku": "tea", "price": 410})
        await wait_for(lambda: shop.nodes["till-2"].value(("price", "tea")) == 410, what="the price")
        resumed = await read_events(till, 5, last=seen[-1]["id"])
        keys = [e["data"]["key"] for e in resumed]
        assert keys == [["stock", "central", f"s{i}"] for i in range(3, 7)] + [["price", "tea"]]
        assert resumed[-1]["data"]["value"] == 410 and resumed[-1]["data"]["device"] == shop.nodes["till-1"].device
        ids = [parse_event_id(e["id"])[1] for e in seen + resumed]
        assert ids == list(range(ids[0], ids[0] + len(ids)))  # consecutive: none missed, none twice
        # a kitchen display follows prices only
        await till.post("/stock/receipts", json={"lines": [{"sku": "x", "quantity": 1}]})
        await boss.post("/prices", json={"sku": "tea", "price": 420})
        only = await read_events(till, 1, last=resumed[-1]["id"], query="&kinds=price")
        assert only[0]["data"] == {"key": ["price", "tea"], "value": 420, "device": shop.nodes["till-1"].device,
                                   "seq": only[0]["data"]["seq"]}


@pytest.mark.trio
async def test_an_id_the_node_no_longer_keeps_starts_with_a_reset(tmp_path, monkeypatch):
    async with running_shop(tmp_path, [("till-1", "central", ("manager",))]) as shop:
        client, node = shop.clients["till-1"], shop.nodes["till-1"]
        await client.post("/stock/receipts", json={"lines": [{"sku": "a", "quantity": 1}]})
        other_run = await read_events(client, 1, last="00000000-1")
        assert other_run[0]["event"] == "reset" and "restarted" in other_run[0]["data"]["reason"]
        # the ring forgets the oldest changes
        while node.events:
            node.events.popleft()
        await client.post("/stock/receipts", json={"lines": [{"sku": "b", "quantity": 1}]})
        old = await read_events(client, 1, last=f"{node.event_epoch}-0")
        assert old[0]["event"] == "reset" and "older" in old[0]["data"]["reason"]
        bad = await client.get("/events", headers={"Last-Event-ID": "not-an-id"})
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "Last-Event-ID"
        assert (await client.get("/events", headers={"Authorization": "Bearer wrong"})).status_code == 401
