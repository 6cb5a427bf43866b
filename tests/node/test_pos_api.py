"""The POS endpoints on real nodes: SQLite data directories, TCP links on 127.0.0.1 through
cuttable proxies, the HTTP API on its real port. Each test runs one small shop and walks a
domain through its happy paths and each of its refusals, checking that a refusal writes
nothing (the node's vector does not move, or only by the incident it reports)."""

from __future__ import annotations

import pytest
import trio

from tests.node.pos_helpers import running_shop, wait_for

MANAGER = ("till-1", "central", ("manager",))
CASHIER = ("till-2", "central", ("cashier",))
NORTH = ("north-1", "north", ("manager",))


def own_seq(node) -> int:
    return node.status()["vector"].get(node.device, 0)


def sale(sale_id: str, *lines: tuple, pay: list | None = None) -> dict:
    body_lines = [{"sku": sku, "quantity": q, **({"unit_price": p} if p is not None else {})} for sku, q, p in lines]
    total = sum(q * (p or 0) for _, q, p in lines)
    return {"sale_id": sale_id, "lines": body_lines, "payments": pay or [{"method": "cash", "amount": total}]}


@pytest.mark.trio
async def test_sales_prices_stock_and_refunds(tmp_path):
    async with running_shop(tmp_path, [MANAGER, CASHIER, NORTH], pos="approval_above = 10000") as shop:
        boss, till, north = shop.clients["till-1"], shop.clients["till-2"], shop.clients["north-1"]
        # prices: chain-wide, a branch override, and the effective price
        assert (await boss.post("/prices", json={"sku": "tea", "price": 300})).status_code == 200
        assert (await boss.post("/prices", json={"sku": "tea", "price": 250, "branch": "north"})).status_code == 200
        before = own_seq(shop.nodes["till-2"])
        refused = await till.post("/prices", json={"sku": "tea", "price": 1})
        assert refused.status_code == 403 and refused.json()["code"] == "unauthorized"
        assert own_seq(shop.nodes["till-2"]) == before
        await wait_for(lambda: shop.nodes["north-1"].value(("price", "north", "tea")) == 250, what="the override")
        assert (await north.get("/prices/tea")).json() == {"sku": "tea", "branch": "north", "chain": 300,
                                                          "override": 250, "effective": 250}
        assert (await till.get("/prices/tea")).json()["effective"] == 300

        # stock in, a stocktake, a transfer (a manager's; a cashier may not move another branch's stock)
        receipt = await boss.post("/stock/receipts", json={"lines": [{"sku": "tea", "quantity": 20},
                                                                     {"sku": "mug", "quantity": 5}]})
        assert receipt.json()["stock"] == {"tea": 20, "mug": 5}
        take = await boss.post("/stocktakes", json={"counts": [{"sku": "tea", "counted": 18, "observed": 20},
                                                               {"sku": "mug", "counted": 5}]})
        assert take.json()["adjustments"] == {"tea": -2, "mug": 0} and take.json()["stock"]["tea"] == 18
        twice = await boss.post("/stocktakes", json={"counts": [{"sku": "mug", "counted": 1}, {"sku": "mug", "counted": 2}]})
        assert twice.status_code == 422 and twice.json()["errors"][0]["field"] == "counts.1.sku"
        moved = await boss.post("/transfers", json={"to_branch": "north", "lines": [{"sku": "tea", "quantity": 3}]})
        assert moved.status_code == 200 and moved.json()["stock"] == {"central": {"tea": 15}, "north": {"tea": 3}}
        await wait_for(lambda: shop.nodes["till-2"].value(("stock", "central", "tea")) == 15, what="stock")
        before = own_seq(shop.nodes["till-2"])
        refused = await till.post("/transfers", json={"to_branch": "north", "lines": [{"sku": "tea", "quantity": 1}]})
        assert refused.status_code == 403
        too_many = await boss.post("/transfers", json={"to_branch": "north", "lines": [{"sku": "tea", "quantity": 99}]})
        assert too_many.status_code == 409 and too_many.json()["code"] == "insufficient_stock"
        assert too_many.json()["field"] == "lines.0.quantity"
        same = await boss.post("/transfers", json={"to_branch": "central", "lines": [{"sku": "tea", "quantity": 1}]})
        assert same.status_code == 422 and same.json()["errors"][0]["field"] == "to_branch"
        assert own_seq(shop.nodes["till-2"]) == before

        # a sale at the effective price; refusals that name the field and write nothing
        sold = await till.post("/sales", json=sale("T2-1", ("tea", 2, None)) | {
            "payments": [{"method": "cash", "amount": 600}]})
        assert sold.status_code == 200, sold.text
        assert sold.json()["total"] == 600 and sold.json()["replayed"] is False
        before = own_seq(shop.nodes["till-2"])
        unpriced = await till.post("/sales", json=sale("T2-2", ("scone", 1, None)) | {
            "payments": [{"method": "cash", "amount": 1}]})
        assert unpriced.status_code == 422 and unpriced.json()["errors"][0]["field"] == "lines.0.unit_price"
        short = await till.post("/sales", json=sale("T2-2", ("tea", 1, 300)) | {
            "payments": [{"method": "cash", "amount": 299}]})
        assert short.status_code == 422 and short.json()["errors"][0]["field"] == "payments"
        assert own_seq(shop.nodes["till-2"]) == before
        # the same id with another body: 409 and an incident
        conflict = await till.post("/sales", json=sale("T2-1", ("tea", 3, 300)))
        assert conflict.status_code == 409 and conflict.json()["code"] == "sale_conflict"
        assert own_seq(shop.nodes["till-2"]) == before + 1  # the incident, nothing else
        # an oversell is sold and recorded as an incident in the same entry
        over = await till.post("/sales", json=sale("T2-3", ("mug", 7, 500)))
        assert over.json()["oversold"] == ["mug"]
        assert own_seq(shop.nodes["till-2"]) == before + 2
        kinds = {i["kind"] for i in (await till.get("/incidents")).json()["incidents"]}
        assert {"sale_conflict", "oversell"} <= kinds

        # the sale's safety level rises once another device holds it
        await wait_for(lambda: shop.nodes["till-2"].ack_of(("sale", "T2-1")) == "lan", what="lan ack")
        info = (await till.get("/sales/T2-1")).json()
        assert info["ack"] == "lan" and info["record"]["lines"][0]["unit_price"] == 300
        assert (await till.get("/sales/nope")).status_code == 404
        assert (await till.get("/status")).json()["unheld"] >= 0

        # refunds: of a known sale, at most what was sold, across refunds
        assert (await till.post("/refunds", json={"refund_id": "R1", "sale_id": "nope",
                                                  "lines": [{"sku": "tea", "quantity": 1}]})).status_code == 404
        first = await till.post("/refunds", json={"refund_id": "R1", "sale_id": "T2-1",
                                                  "lines": [{"sku": "tea", "quantity": 1}]})
        assert first.status_code == 200 and first.json()["total"] == 300
        again = await till.post("/refunds", json={"refund_id": "R1", "sale_id": "T2-1",
                                                  "lines": [{"sku": "tea", "quantity": 1}]})
        assert again.json()["replayed"] is True
        before = own_seq(shop.nodes["till-2"])
        beyond = await till.post("/refunds", json={"refund_id": "R2", "sale_id": "T2-1",
                                                   "lines": [{"sku": "tea", "quantity": 2}]})
        assert beyond.status_code == 409 and beyond.json()["code"] == "refund_exceeds_sale"
        assert beyond.json()["field"] == "lines.0.quantity"
        wrong_sku = await till.post("/refunds", json={"refund_id": "R2", "sale_id": "T2-1",
                                                      "lines": [{"sku": "mug", "quantity": 1}]})
        assert wrong_sku.status_code == 422 and wrong_sku.json()["errors"][0]["field"] == "lines.0.sku"
        assert own_seq(shop.nodes["till-2"]) == before
        assert (await till.get("/sales/T2-1")).json()["refunded"] == {"tea": 1}

        # a large sale needs a manager's grant, asked for through replicated keys
        big = sale("T2-BIG", ("tea", 40, 300))
        needs = await till.post("/sales", json=big)
        assert needs.status_code == 409 and needs.json()["code"] == "approval_required"
        asked = await till.post("/approvals", json={"sale_id": "T2-BIG", "total": 12000})
        assert asked.status_code == 200 and asked.json()["grant"] is None
        assert (await till.post("/approvals/T2-BIG/grant")).status_code == 403  # a cashier cannot grant
        await wait_for(lambda: shop.nodes["till-1"].value(("approval", "T2-BIG")), what="the request")
        pending = (await boss.get("/approvals")).json()["approvals"]
        assert [a["sale_id"] for a in pending] == ["T2-BIG"]
        granted = await boss.post("/approvals/T2-BIG/grant")
        assert granted.json()["grant"]["by"] == shop.nodes["till-1"].device
        assert (await boss.post("/approvals/none/grant")).status_code == 404
        await wait_for(lambda: shop.nodes["till-2"].value(("grant", "T2-BIG")), what="the grant")
        done = await till.post("/sales", json=big)
        assert done.status_code == 200 and done.json()["approved_by"] == shop.nodes["till-1"].device
        assert (await boss.get("/approvals")).json()["approvals"] == []

        # incidents are acknowledged by a manager's device only
        incident = (await till.get("/incidents?kind=oversell")).json()["incidents"][0]
        assert (await till.post(f"/incidents/{incident['id']}/ack", json={})).status_code == 403
        await wait_for(lambda: shop.nodes["till-1"].value(("incident", incident["id"])), what="the incident")
        acked = await boss.post(f"/incidents/{incident['id']}/ack", json={"note": "counted again"})
        assert acked.status_code == 200 and acked.json()["ack"]["note"] == "counted again"
        open_ids = {i["id"] for i in (await boss.get("/incidents?open=true")).json()["incidents"]}
        assert incident["id"] not in open_ids
        assert (await boss.post("/incidents/nope/ack")).status_code == 404


@pytest.mark.trio
async def test_members_rights_and_the_offline_till(tmp_path):
    async with running_shop(tmp_path, [MANAGER, CASHIER], pos="rights_wait_ms = 5000") as shop:
        boss, till = shop.clients["till-1"], shop.clients["till-2"]
        top = await boss.post("/members/alice/topups", json={"amount": 5000})
        assert top.json()["balance"] == 5000 and top.json()["rights_here"] == 5000
        assert (await boss.post("/members/alice/topups", json={"amount": -5})).status_code == 422
        assert (await boss.post("/members/a%20b/topups", json={"amount": 5})).status_code == 422
        await wait_for(lambda: shop.nodes["till-2"].value(("member", "alice", "balance")) == 5000, what="balance")
        # till-2 holds no rights: it asks, till-1 transfers, the charge goes through
        charged = await till.post("/charges", json={"member": "alice", "amount": 1200})
        assert charged.status_code == 200, charged.text
        assert charged.json()["balance"] == 3800
        paid = await till.post("/sales", json=sale("M-1", ("cake", 1, 800)) | {
            "payments": [{"method": "member", "member": "alice", "amount": 800}]})
        assert paid.status_code == 200, paid.text
        before = own_seq(shop.nodes["till-2"])
        overdraft = await till.post("/charges", json={"member": "alice", "amount": 999_999})
        assert overdraft.status_code == 409 and overdraft.json()["code"] == "insufficient_balance"
        assert own_seq(shop.nodes["till-2"]) == before + 1  # only the incident

        # offline: no rights can come; the charge is refused at once, nothing of the sale written
        shop.proxies["till-2"].cut()
        await wait_for(lambda: shop.nodes["till-2"].links_live() == 0, what="till-2 offline")
        rights = shop.nodes["till-2"].rights(("member", "alice", "balance"))
        before = own_seq(shop.nodes["till-2"])
        refused = await till.post("/sales", json=sale("M-2", ("cake", 1, rights + 100)) | {
            "payments": [{"method": "member", "member": "alice", "amount": rights + 100}]})
        assert refused.status_code == 409 and refused.json()["code"] == "insufficient_rights"
        assert refused.json()["needed"] == rights + 100 and refused.json()["available"] == rights
        assert shop.nodes["till-2"].value(("sale", "M-2")) is None
        assert own_seq(shop.nodes["till-2"]) == before + 1  # the incident only
        # a card taken offline is marked offline-authorized, and the roll-ups total it apart
        card = await till.post("/sales", json=sale("C-1", ("cake", 2, 400)) | {
            "payments": [{"method": "card", "amount": 800, "reference": "auth-77"}]})
        assert card.json()["offline_card"] == 800
        shop.proxies["till-2"].heal()
        await wait_for(lambda: shop.nodes["till-1"].value(("sale", "C-1")), what="the offline sale to arrive")
        rolled = (await boss.get("/rollups")).json()
        till2 = rolled["by_till"][str(shop.nodes["till-2"].device)]
        assert till2["card"] == 800 and till2["card_offline"] == 800 and till2["member"] == 800
        assert rolled["total"]["sales"] == 2
        assert (await boss.get("/members/alice")).json()["balance"] == 3000
        incidents = (await boss.get("/incidents")).json()["incidents"]
        assert "overdraft_refused" in {i["kind"] for i in incidents}
        # the offline refusal says why: no link to ask over, not "no transfer arrived in time"
        assert any(i["kind"] == "overdraft_refused" and "no live link" in i["detail"] for i in incidents)


@pytest.mark.trio
async def test_an_order_edited_on_two_devices_closes_into_a_sale(tmp_path):
    async with running_shop(tmp_path, [MANAGER, CASHIER]) as shop:
        boss, till = shop.clients["till-1"], shop.clients["till-2"]
        await boss.post("/prices", json={"sku": "soup", "price": 650})
        opened = await boss.post("/orders", json={"order_id": "T12", "table": "12"})
        assert opened.json()["status"] == "open" and opened.json()["lines"] == []
        assert (await boss.post("/orders/T12/lines", json={"line_id": "a", "sku": "soup", "quantity": 2})).status_code == 200
        await wait_for(lambda: shop.nodes["till-2"].value(("order", "T12"))["lines"], what="the order")
        await wait_for(lambda: shop.nodes["till-2"].value(("price", "soup")), what="the price")
        added = await till.post("/orders/T12/lines", json={"line_id": "b", "sku": "bread", "quantity": 1,
                                                            "unit_price": 200})
        assert [l["line_id"] for l in added.json()["lines"]] == ["a", "b"]
        dup = await till.post("/orders/T12/lines", json={"line_id": "b", "sku": "bread", "quantity": 9})
        assert dup.status_code == 409 and dup.json()["code"] == "line_exists"
        changed = await till.patch("/orders/T12/lines/a", json={"quantity": 3})
        assert {l["line_id"]: l["quantity"] for l in changed.json()["lines"]} == {"a": 3, "b": 1}
        assert (await till.patch("/orders/T12/lines/zz", json={"quantity": 3})).status_code == 404
        await till.post("/orders/T12/lines", json={"line_id": "c", "sku": "bread", "quantity": 1, "unit_price": 200})
        removed = await till.delete("/orders/T12/lines/c")
        assert [l["line_id"] for l in removed.json()["lines"]] == ["b", "a"]
        assert (await till.get("/orders/none")).status_code == 404
        close = {"sale_id": "T12-S", "payments": [{"method": "cash", "amount": 3 * 650 + 200}]}
        closed = await till.post("/orders/T12/close", json=close)
        assert closed.status_code == 200, closed.text
        assert closed.json()["total"] == 2150 and closed.json()["order_id"] == "T12"
        assert (await till.post("/orders/T12/close", json=close)).json()["replayed"] is True
        assert (await till.get("/orders/T12")).json()["status"] == "closed"
        late = await till.post("/orders/T12/lines", json={"line_id": "d", "sku": "bread", "quantity": 1})
        assert late.status_code == 409 and late.json()["code"] == "order_closed"
        assert shop.nodes["till-2"].value(("stock", "central", "soup")) == -3


@pytest.mark.trio
async def test_the_same_sale_sent_100_times_is_one_sale_and_one_decrement(tmp_path):
    async with running_shop(tmp_path, [MANAGER]) as shop:
        boss, node = shop.clients["till-1"], shop.nodes["till-1"]
        await boss.post("/stock/receipts", json={"lines": [{"sku": "tea", "quantity": 500}]})
        body = sale("RETRY-1", ("tea", 3, 300))
        before = own_seq(node)
        results = []

        async def send() -> None:
            response = await boss.post("/sales", json=body)
            results.append(response.json())

        async with trio.open_nursery() as nursery:  # 50 at once, racing the first
            for _ in range(50):
                nursery.start_soon(send)
        for _ in range(50):  # and 50 more one after another
            await send()
        assert len(results) == 100
        assert sum(1 for r in results if r["replayed"] is False) == 1
        assert {(r["sale_id"], r["seq"], r["total"]) for r in results} == {("RETRY-1", before + 1, 900)}
        assert node.value(("stock", "central", "tea")) == 497
        assert own_seq(node) == before + 1


async def stock_and_sell_three(client, sale_id: str) -> None:
    """Ten teas in stock, then a sale of three at 250."""
    await client.post("/stock/receipts", json={"lines": [{"sku": "tea", "quantity": 10}]})
    assert (await client.post("/sales", json=sale(sale_id, ("tea", 3, 250)))).status_code == 200


@pytest.mark.trio
async def test_refunds_of_one_sale_on_two_offline_tills_that_together_exceed_it_are_an_incident(tmp_path):
    # Each till checks what it holds, so both refunds pass; once they meet, the writer of the
    # later refund reports the over-refund, once, for every device to see.
    async with running_shop(tmp_path, [MANAGER, CASHIER]) as shop:
        boss, till = shop.clients["till-1"], shop.clients["till-2"]
        await stock_and_sell_three(boss, "S-9")
        await wait_for(lambda: shop.nodes["till-2"].value(("sale", "S-9")), what="the sale on till-2")
        shop.proxies["till-2"].cut()
        await wait_for(lambda: shop.nodes["till-2"].links_live() == 0, what="till-2 offline")
        for client, refund_id, quantity in ((boss, "R-a", 2), (till, "R-b", 3)):
            response = await client.post("/refunds", json={"refund_id": refund_id, "sale_id": "S-9", "method": "cash",
                                                           "lines": [{"sku": "tea", "quantity": quantity}]})
            assert response.status_code == 200, response.text
        assert not [i for i in (await boss.get("/incidents")).json()["incidents"] if i["kind"] == "over_refund"]
        shop.proxies["till-2"].heal()

        def over_refunds(name: str) -> list:
            node = shop.nodes[name]
            return [node.value(k) for k in node.keys("incident") if node.value(k)["kind"] == "over_refund"]

        await wait_for(lambda: over_refunds("till-1") and over_refunds("till-2"), what="the over-refund incident")
        await wait_for(lambda: len({n.status()["digest"] for n in shop.nodes.values()}) == 1,
                       what="the two to converge")
        (incident,) = over_refunds("till-1")
        assert incident["evidence"]["sale_id"] == "S-9"
        assert incident["evidence"]["lines"] == [{"sku": "tea", "sold": 3, "refunded": 5}]
        assert sorted(incident["evidence"]["refunds"]) == ["R-a", "R-b"]
        listed = (await boss.get("/incidents?kind=over_refund")).json()["incidents"]
        assert [i["id"] for i in listed] == [i["id"] for i in (await till.get("/incidents?kind=over_refund")).json()["incidents"]]
        assert len(listed) == 1


@pytest.mark.trio
async def test_a_malformed_refund_record_from_another_device_is_ignored_not_fatal(tmp_path):
    # Any writer may put any plain data under a refund key through POST /transactions; the
    # refund checks of the other devices skip what is not a refund line.
    async with running_shop(tmp_path, [MANAGER, CASHIER]) as shop:
        boss, till = shop.clients["till-1"], shop.clients["till-2"]
        await stock_and_sell_three(boss, "S-1")
        for i, junk in enumerate([{"sale_id": "S-1", "lines": [{"sku": "tea"}]},
                                  {"sale_id": "S-1", "lines": [{"sku": "tea", "quantity": "2"}], "at_ms": "x"},
                                  {"sale_id": "S-1", "lines": "none"}, {"sale_id": "S-1"}, ["S-1"]]):
            written = await boss.post("/transactions", json={"ops": [{"op": "record", "key": ["refund", f"junk-{i}"],
                                                                      "value": junk}]})
            assert written.status_code == 200, written.text
        await wait_for(lambda: shop.nodes["till-2"].value(("refund", "junk-4")) is not None, what="the junk to arrive")
        refunded = await till.post("/refunds", json={"refund_id": "R-1", "sale_id": "S-1", "method": "cash",
                                                     "lines": [{"sku": "tea", "quantity": 3}]})
        assert refunded.status_code == 200, refunded.text
        await wait_for(lambda: shop.nodes["till-1"].value(("refund", "R-1")) is not None, what="the refund on till-1")
        assert (await till.get("/status")).status_code == (await boss.get("/status")).status_code == 200
        too_many = await boss.post("/refunds", json={"refund_id": "R-2", "sale_id": "S-1", "method": "cash",
                                                     "lines": [{"sku": "tea", "quantity": 1}]})
        assert too_many.status_code == 409 and too_many.json()["code"] == "refund_exceeds_sale"


# Records of any shape, as any writer may put them under the domain's keys with POST /transactions.
MALFORMED = [
    (["sale", "P1"], {"sale_id": "P1"}),
    (["sale", "P4"], {"sale_id": "P4", "total": "x", "lines": [], "payments": [{"method": "bitcoin", "amount": 1}]}),
    (["refund", "P5"], {"a": 1}),
    (["refund", "P6"], {"sale_id": "P1", "lines": "x", "total": 5}),
    (["incident", "P2"], {"at_ms": "soon"}),
    (["incident", "P7"], [1]),
    (["approval", "P3"], "x"),
]


@pytest.mark.trio
async def test_records_of_any_shape_under_domain_keys_never_make_an_endpoint_fail(tmp_path):
    async with running_shop(tmp_path, [MANAGER, CASHIER], pos="approval_above = 1000") as shop:
        boss, till = shop.clients["till-1"], shop.clients["till-2"]
        assert (await boss.post("/sales", json=sale("OK-1", ("tea", 1, 300)))).status_code == 200
        ops = [{"op": "record", "key": key, "value": value} for key, value in MALFORMED]
        ops += [{"op": "set_field", "key": ["order", "o1"], "name": "status", "value": "open"},
                {"op": "add_line", "key": ["order", "o1"], "line": {"foo": 1}},
                {"op": "set_field", "key": ["order", "o2"], "name": "status", "value": 7},
                {"op": "set_field", "key": ["order", "o3"], "name": "status", "value": "open"},
                {"op": "add_line", "key": ["order", "o3"], "line": {"sku": "tea", "quantity": -4, "unit_price": 1}}]
        assert (await till.post("/transactions", json={"ops": ops})).status_code == 200
        await wait_for(lambda: shop.nodes["till-1"].value(("approval", "P3")) is not None, what="the records")
        for method, path, body in [
                ("GET", "/rollups", None), ("GET", "/incidents", None), ("GET", "/incidents?open_only=true", None),
                ("GET", "/sales/P1", None), ("GET", "/sales/P4", None), ("GET", "/sales/OK-1", None),
                ("GET", "/approvals", None), ("POST", "/approvals/P3/grant", None),
                ("POST", "/approvals", {"sale_id": "P3", "total": 2000}),
                ("POST", "/incidents/P2/ack", {}), ("POST", "/incidents/P7/ack", {}),
                ("POST", "/refunds", {"refund_id": "R-1", "sale_id": "P1", "lines": [{"sku": "tea", "quantity": 1}]}),
                ("POST", "/sales", sale("P1", ("tea", 1, 300))),
                ("GET", "/orders/o1", None), ("POST", "/orders/o1/close", {"sale_id": "O-1", "payments": [{"method": "cash", "amount": 300}]}),
                ("POST", "/orders/o1/lines", {"sku": "tea", "quantity": 1}),
                ("GET", "/orders/o2", None), ("POST", "/orders/o2/close", {"sale_id": "O-2", "payments": [{"method": "cash", "amount": 300}]}),
                ("POST", "/orders/o3/close", {"sale_id": "O-3", "payments": [{"method": "cash", "amount": 300}]})]:
            response = await boss.request(method, path, json=body)
            assert response.status_code < 500, (method, path, response.status_code, response.text)
        rolled = (await boss.get("/rollups")).json()
        assert rolled["total"]["sales"] == 1 and rolled["total"]["gross"] == 300  # the malformed ones left out
        assert (await boss.get("/sales/OK-1")).json()["total"] == 300


@pytest.mark.trio
async def test_oversells_of_two_sales_with_long_ids_are_two_incidents(tmp_path):
    # Sale ids may be 128 characters: ids that share their first 119 must not share an incident.
    async with running_shop(tmp_path, [MANAGER]) as shop:
        boss, node = shop.clients["till-1"], shop.nodes["till-1"]
        ids = ["x" * 120 + "-first", "x" * 120 + "-secnd"]
        for sale_id in ids:
            assert (await boss.post("/sales", json=sale(sale_id, ("tea", 1, 300)))).status_code == 200
        oversells = [node.value(k) for k in node.keys("incident") if node.value(k)["kind"] == "oversell"]
        assert sorted(i["evidence"]["sale_id"] for i in oversells) == sorted(ids)
