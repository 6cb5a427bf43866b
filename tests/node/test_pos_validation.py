"""The POS endpoints' front door over a fake shop (``httpx.ASGITransport``): every malformed
body is a 422 naming the field and never reaches the shop; without the token nothing
happens; domain refusals keep their status and code. Also the policy and config pieces
the domain relies on."""

from __future__ import annotations

import json
import secrets

import httpx
import pytest

from gossip import Certificate
from node.api import MAX_BODY_BYTES, build_app
from node.config import ConfigError, parse_config
from node.pos import POS_POLICY, Refused, RightsShort

SALE = {"sale_id": "s1", "lines": [{"sku": "tea", "quantity": 1, "unit_price": 300}],
        "payments": [{"method": "cash", "amount": 300}]}


class FakeShop:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.error: Exception | None = None

    def __getattr__(self, name: str):
        async def call(*args, **kwargs):
            self.calls.append(name)
            if self.error is not None:
                raise self.error
            return {"ok": name}
        return call


class FakeNode:
    def __init__(self) -> None:
        self.api_token = secrets.token_urlsafe(32)
        self.pos = FakeShop()


_APPS: dict[int, object] = {}


def client(node: FakeNode, token: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {node.api_token if token is None else token}"}
    if id(node) not in _APPS:
        _APPS[id(node)] = build_app(node)
    app = _APPS[id(node)]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://till", headers=headers)


_SHARED = FakeNode()


def fresh() -> FakeNode:
    """The shared fake node with its calls and error reset (building an app takes a while)."""
    _SHARED.pos = FakeShop()
    return _SHARED


def with_(body: dict, **changes) -> dict:
    return {**body, **changes}


CASES = [
    ("/sales", with_(SALE, lines=[{"sku": "tea", "quantity": 1.0, "unit_price": 300}]), "lines.0.quantity"),
    ("/sales", with_(SALE, lines=[{"sku": "tea", "quantity": 1, "unit_price": 2.99}]), "lines.0.unit_price"),
    ("/sales", with_(SALE, payments=[{"method": "cash", "amount": 300.0}]), "payments.0.amount"),
    ("/sales", with_(SALE, payments=[{"method": "cash", "amount": -300}]), "payments.0.amount"),
    ("/sales", with_(SALE, payments=[{"method": "cheque", "amount": 300}]), "payments.0.method"),
    ("/sales", with_(SALE, payments=[{"amount": 300}]), "payments.0.method"),
    ("/sales", with_(SALE, payments=[{"method": "card", "amount": 300}]), "payments.0.reference"),
    ("/sales", with_(SALE, payments=[{"method": "member", "amount": 300}]), "payments.0.member"),
    ("/sales", with_(SALE, lines=[{"sku": "tea", "quantity": 0}]), "lines.0.quantity"),
    ("/sales", with_(SALE, lines=[{"sku": "t ea", "quantity": 1}]), "lines.0.sku"),
    ("/sales", with_(SALE, lines=[]), "lines"),
    ("/sales", with_(SALE, sale_id=""), "sale_id"),
    ("/sales", with_(SALE, discount=5), "discount"),
    ("/sales", {"lines": SALE["lines"], "payments": SALE["payments"]}, "sale_id"),
    ("/refunds", {"refund_id": "r", "sale_id": "s", "lines": [{"sku": "t", "quantity": -1}]}, "lines.0.quantity"),
    ("/refunds", {"refund_id": "r", "sale_id": "s", "lines": [{"sku": "t", "quantity": 1}], "method": "gold"}, "method"),
    ("/stock/receipts", {"lines": [{"sku": "t", "quantity": 2.5}]}, "lines.0.quantity"),
    ("/stocktakes", {"counts": [{"sku": "t", "counted": -1}]}, "counts.0.counted"),
    ("/transfers", {"lines": [{"sku": "t", "quantity": 1}]}, "to_branch"),
    ("/prices", {"sku": "t", "price": 8.99}, "price"),
    ("/prices", {"sku": "t", "price": -1}, "price"),
    ("/prices", {"sku": "t", "price": "899"}, "price"),
    ("/members/alice/topups", {"amount": 0}, "amount"),
    ("/members/alice/topups", {"amount": 10, "currency": "EUR"}, "currency"),
    ("/charges", {"member": "alice", "amount": 1.5}, "amount"),
    ("/orders", {"order_id": "o", "tabel": "3"}, "tabel"),
    ("/orders/o1/lines", {"line_id": "a", "sku": "t", "quantity": True}, "quantity"),
    ("/orders/o1/close", {"sale_id": "s", "payments": []}, "payments"),
    ("/approvals", {"sale_id": "s", "total": 0}, "total"),
]


@pytest.mark.trio
@pytest.mark.parametrize("path, body, field", CASES)
async def test_a_malformed_body_is_422_naming_the_field_and_never_reaches_the_shop(path, body, field):
    node = fresh()
    async with client(node) as c:
        response = await c.post(path, json=body)
    assert response.status_code == 422, response.text
    assert field in [e["field"] for e in response.json()["errors"]], response.json()
    assert node.pos.calls == []


@pytest.mark.trio
async def test_an_oversized_body_and_a_bad_path_id_are_422():
    node = fresh()
    async with client(node) as c:
        big = with_(SALE, sale_id="x" * MAX_BODY_BYTES)
        assert len(json.dumps(big)) > MAX_BODY_BYTES
        response = await c.post("/sales", json=big)
        assert response.status_code == 422 and response.json()["errors"][0]["field"] == "body"
        response = await c.post("/members/a%20b/topups", json={"amount": 5})
        assert response.status_code == 422 and response.json()["errors"][0]["field"] == "member_id"
        assert (await c.get("/rollups?day=yesterday")).status_code == 422
    assert node.pos.calls == []


ENDPOINTS = [("POST", "/sales", SALE), ("GET", "/sales/s1", None), ("POST", "/refunds", {}),
             ("POST", "/stock/receipts", {}), ("POST", "/stocktakes", {}), ("POST", "/transfers", {}),
             ("POST", "/prices", {}), ("GET", "/prices/tea", None), ("POST", "/members/a/topups", {}),
             ("GET", "/members/a", None), ("POST", "/charges", {}), ("POST", "/orders", {}),
             ("GET", "/orders/o", None), ("POST", "/orders/o/lines", {}), ("PATCH", "/orders/o/lines/a", {}),
             ("DELETE", "/orders/o/lines/a", None), ("POST", "/orders/o/close", {}), ("POST", "/approvals", {}),
             ("GET", "/approvals", None), ("POST", "/approvals/s/grant", None), ("GET", "/incidents", None),
             ("POST", "/incidents/i/ack", None), ("GET", "/rollups", None), ("GET", "/events", None)]


@pytest.mark.trio
@pytest.mark.parametrize("method, path, body", ENDPOINTS)
async def test_without_the_token_no_pos_endpoint_does_anything(method, path, body):
    node = fresh()
    for token in ("", "wrong", node.api_token[:-1]):
        async with client(node, token) as c:
            response = await c.request(method, path, json=body)
        assert response.status_code == 401 and response.json()["code"] == "unauthorized"
    assert node.pos.calls == []


@pytest.mark.trio
@pytest.mark.parametrize("error, status, code", [
    (Refused("no", code="sale_conflict", field="sale_id"), 409, "sale_conflict"),
    (RightsShort("short", needed=900, available=100), 409, "insufficient_rights"),
])
async def test_domain_refusals_keep_their_status_and_code(error, status, code):
    node = fresh()
    node.pos.error = error
    async with client(node) as c:
        response = await c.post("/sales", json=SALE)
    assert response.status_code == status and response.json()["code"] == code
    if isinstance(error, RightsShort):
        assert response.json()["needed"] == 900 and response.json()["available"] == 100


@pytest.mark.trio
async def test_a_node_without_a_shop_says_so():
    node = fresh()
    node.pos = None
    async with client(node) as c:
        assert (await c.post("/sales", json=SALE)).status_code == 501
        assert (await c.get("/events")).status_code == 501


def cert(roles: tuple[str, ...], branch: str = "central") -> Certificate:
    return Certificate(network_id=b"\0" * 16, number=5, device_key=b"\0" * 32, name="t", branch=branch,
                       roles=roles, issued_ms=0, expires_ms=None)


def test_the_policy_lets_managers_move_stock_between_branches_and_grant_but_not_cashiers():
    manager, cashier = cert(("manager",)), cert(("cashier",))
    assert POS_POLICY.allows(manager, ("stock", "north", "tea"))
    assert POS_POLICY.allows(cashier, ("stock", "central", "tea"))
    assert not POS_POLICY.allows(cashier, ("stock", "north", "tea"))
    for kind in ("grant", "incident_ack"):
        assert POS_POLICY.allows(manager, (kind, "x")) and not POS_POLICY.allows(cashier, (kind, "x"))
    for kind in ("refund", "approval", "incident", "sale"):
        assert POS_POLICY.allows(cashier, (kind, "x"))
    assert POS_POLICY.allows(cert(("hq",)), ("grant", "x"))
    assert not POS_POLICY.allows(cert(("relay",)), ("incident", "x"))


def test_the_pos_section_of_node_toml():
    config = parse_config("[pos]\nrights_wait_ms = 500\napproval_above = 0\n")
    assert config.pos.rights_wait_ms == 500 and config.pos.approval_above == 0
    assert parse_config("").pos.rights_wait_ms == 3000
    for bad in ("rights_wait_ms = 1.5", "rights_wait_ms = -1", "approval_above = true", "wait = 3"):
        with pytest.raises(ConfigError, match="pos"):
            parse_config(f"[pos]\n{bad}\n")
