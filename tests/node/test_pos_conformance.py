"""A POS conformance run in the style of a real integration: a scripted day of a store.

A back office (manager) and three tills (cashiers) on real nodes. Opening stock and prices;
200 sales on 3 tills at the effective price (the app sends no unit prices); member top-ups
at the office and charges at the tills (rights move through gossip); a price change at
midday; till-3 offline for a stretch (its card payments marked offline-authorized, and it
keeps selling at the price it knows); two refunds; a stocktake at closing. At the end every
node agrees, and stock, takings and balances equal a model of the day computed alongside.
"""

from __future__ import annotations

import random

import pytest

from tests.node.pos_helpers import running_shop, wait_for

DEVICES = [("office", "central", ("manager",)), ("till-1", "central", ("cashier",)),
           ("till-2", "central", ("cashier",)), ("till-3", "central", ("cashier",))]
TILLS = ["till-1", "till-2", "till-3"]
PRICES = {"coffee": 350, "tea": 300, "cake": 420, "bagel": 280, "juice": 390}
OPENING = {"coffee": 400, "tea": 400, "cake": 400, "bagel": 400, "juice": 400}
MEMBERS = {"ana": 20_000, "ben": 15_000, "cy": 10_000}
OFFLINE = range(80, 140)  # sale numbers during which till-3 has no link
PRICE_CHANGE_AT = 100


@pytest.mark.trio
async def test_a_store_day_ends_equal_to_its_model(tmp_path):
    rnd = random.Random(2026)
    async with running_shop(tmp_path, DEVICES, pos="rights_wait_ms = 5000\napproval_above = 0") as shop:
        office, nodes, c = shop.clients["office"], shop.nodes, shop.clients
        for sku, price in PRICES.items():
            assert (await office.post("/prices", json={"sku": sku, "price": price})).status_code == 200
        await office.post("/stock/receipts", json={"lines": [{"sku": s, "quantity": q} for s, q in OPENING.items()]})
        for member, amount in MEMBERS.items():
            await office.post(f"/members/{member}/topups", json={"amount": amount})
        await wait_for(lambda: all(nodes[t].value(("member", "cy", "balance")) == MEMBERS["cy"] and
                                   nodes[t].value(("price", "juice")) == PRICES["juice"] for t in TILLS),
                       what="opening state everywhere")

        stock, balances = dict(OPENING), dict(MEMBERS)
        price_at = {t: dict(PRICES) for t in TILLS}
        takings = {t: {"gross": 0, "card": 0, "card_offline": 0, "member": 0, "cash": 0, "refunds": 0} for t in TILLS}
        sales: dict[str, tuple[str, list]] = {}
        for n in range(200):
            till = TILLS[n % 3]
            if n == OFFLINE.start:
                shop.proxies["till-3"].cut()
                await wait_for(lambda: nodes["till-3"].links_live() == 0, what="till-3 offline")
            if n == OFFLINE.stop:
                shop.proxies["till-3"].heal()
                await wait_for(lambda: shop.linked("till-3", "office"), what="till-3 back")
                await wait_for(lambda: nodes["till-3"].value(("price", "coffee")) == 370, what="till-3's prices")
                price_at["till-3"]["coffee"] = 370
            if n == PRICE_CHANGE_AT:
                await office.post("/prices", json={"sku": "coffee", "price": 370})
                await wait_for(lambda: all(nodes[t].value(("price", "coffee")) == 370 for t in ("till-1", "till-2")),
                               what="the new price")
                for t in ("till-1", "till-2"):
                    price_at[t]["coffee"] = 370
            offline = till == "till-3" and n in OFFLINE
            lines = [(sku, rnd.randint(1, 3)) for sku in rnd.sample(sorted(PRICES), rnd.randint(1, 3))]
            total = sum(q * price_at[till][sku] for sku, q in lines)
            kind = rnd.choice(["cash", "card", "card", "member"] if not offline else ["cash", "card"])
            payment: dict = {"method": kind, "amount": total}
            if kind == "card":
                payment["reference"] = f"auth-{n}"
            if kind == "member":
                member = rnd.choice(sorted(MEMBERS))
                if balances[member] < total:
                    kind, payment = "cash", {"method": "cash", "amount": total}
                else:
                    payment["member"] = member
                    balances[member] -= total
            sale_id = f"{till}-{n:04d}"
            response = await c[till].post("/sales", json={"sale_id": sale_id, "payments": [payment],
                                                          "lines": [{"sku": s, "quantity": q} for s, q in lines]})
            assert response.status_code == 200, (n, response.text)
            assert response.json()["total"] == total
            sales[sale_id] = (till, lines)
            for sku, q in lines:
                stock[sku] -= q
            takings[till]["gross"] += total
            takings[till][kind] += total
            if kind == "card" and offline:
                takings[till]["card_offline"] += total
                assert response.json()["offline_card"] == total

        # member charges outside a sale, and two refunds at till-1
        for member, amount in (("ana", 1_000), ("ben", 500)):
            response = await c["till-2"].post("/charges", json={"member": member, "amount": amount})
            assert response.status_code == 200, response.text
            balances[member] -= amount
        refundable = [sid for sid, (till, _) in sales.items() if till == "till-1"][:2]
        for i, sale_id in enumerate(refundable):
            sku, q = sales[sale_id][1][0]
            response = await c["till-1"].post("/refunds", json={"refund_id": f"R{i}", "sale_id": sale_id,
                                                                "lines": [{"sku": sku, "quantity": q}]})
            assert response.status_code == 200, response.text
            stock[sku] += q
            takings["till-1"]["refunds"] += response.json()["total"]
            assert response.json()["total"] == q * response.json()["lines"][0]["unit_price"]

        # every node holds everything; a closing stocktake finds two cakes missing
        digests = lambda: {nodes[n].status()["digest"] for n in nodes}  # noqa: E731
        await wait_for(lambda: len(digests()) == 1 and all(nodes[n].value(("refund", "R1")) for n in nodes),
                       seconds=30, what="every node to converge")
        take = await office.post("/stocktakes", json={"counts": [{"sku": "cake", "counted": stock["cake"] - 2,
                                                                  "observed": stock["cake"]}]})
        assert take.json()["adjustments"] == {"cake": -2}
        stock["cake"] -= 2
        await wait_for(lambda: len(digests()) == 1, what="the stocktake everywhere")

        for name in nodes:
            rolled = (await c[name].get("/rollups")).json()
            assert rolled["stock"]["central"] == stock, name
            assert rolled["total"]["sales"] == 200
            for till in TILLS:
                got = rolled["by_till"][str(nodes[till].device)]
                want = takings[till]
                assert {k: got[k] for k in want} == want, (name, till)
                assert got["takings"] == want["gross"] - want["refunds"]
            for member, balance in balances.items():
                assert (await c[name].get(f"/members/{member}")).json()["balance"] == balance
        assert takings["till-3"]["card_offline"] > 0
