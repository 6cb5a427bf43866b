"""The local HTTP API over a fake node handle, through ``httpx.ASGITransport`` under trio,
and once for real with ``serve_api`` on 127.0.0.1.

What matters: a request without the token reaches nothing; a malformed body is a 422 that
names the field and never reaches ``commit``; the node's typed refusals come back as their
statuses and codes.
"""

from __future__ import annotations

import json
import secrets
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from crdt_types import InsufficientRights, InvalidInput, StorageError
from gossip import Authority, DeviceKey, Unauthorized
from gossip.testing import seeded
from node.admin import make_authority_bundle
from node.api import MAX_BODY_BYTES, METRICS_CONTENT_TYPE, build_app, serve_api

STOCK = ["stock", "central", "sku1"]
BALANCE = ["member", "alice", "balance"]
OK = {"origin": 3, "seq": 7, "hash": "ab" * 32, "ack": "local"}
METRICS = b"# HELP tillmesh_peers_live live sessions\n# TYPE tillmesh_peers_live gauge\ntillmesh_peers_live 2.0\n"


class FakeNode:
    """Records every call; raises ``error`` from commit when set."""

    def __init__(self) -> None:
        self.api_token = secrets.token_urlsafe(32)
        self.commits: list[list[tuple]] = []
        self.reads: list[tuple] = []
        self.imports: list[list[bytes]] = []
        self.status_calls = 0
        self.metrics_calls = 0
        self.error: BaseException | None = None
        self.values: dict[tuple, Any] = {("stock", "central", "sku1"): 31, ("rights", "alice", 3): 899,
                                         ("stock", "central", "a/b"): 1}

    @property
    def calls(self) -> int:
        return len(self.commits) + len(self.reads) + len(self.imports) + self.status_calls + self.metrics_calls

    async def commit(self, ops: list[tuple]) -> dict:
        self.commits.append(ops)
        if self.error is not None:
            raise self.error
        return dict(OK)

    def value(self, key: tuple) -> Any:
        self.reads.append(key)
        if key not in self.values:
            raise InvalidInput(f"nothing stored at {key!r}")
        return self.values[key]

    def status(self) -> dict:
        self.status_calls += 1
        return {"device": 3, "peers": [], "digest": "00"}

    def metrics(self) -> bytes:
        self.metrics_calls += 1
        return METRICS

    async def import_authority(self, entries: list[bytes]) -> int:
        self.imports.append(entries)
        return len(entries)


@pytest.fixture
def node() -> FakeNode:
    return FakeNode()


@asynccontextmanager
async def client(node: Any, token: str | None = None):
    headers = {"Authorization": f"Bearer {node.api_token if token is None else token}"}
    transport = httpx.ASGITransport(app=build_app(node))
    async with httpx.AsyncClient(transport=transport, base_url="http://till", headers=headers) as c:
        yield c


def fields_of(response: httpx.Response) -> list[str]:
    body = response.json()
    assert body["code"] == "invalid_input"
    return [e["field"] for e in body["errors"]]


def tx(*ops: dict) -> dict:
    return {"ops": list(ops)}


# --- writes ---------------------------------------------------------------------------------


@pytest.mark.trio
async def test_every_verb_reaches_commit_as_op_data(node):
    ops = [
        {"op": "add", "key": STOCK, "amount": -2},
        {"op": "set", "key": ["price", "sku1"], "value": 899},
        {"op": "increment", "key": BALANCE, "amount": 5000},
        {"op": "decrement", "key": BALANCE, "amount": 899},
        {"op": "transfer", "key": BALANCE, "to": 4, "amount": 100},
        {"op": "record", "key": ["sale", "s1"], "value": {"total": 899, "lines": [{"sku": "sku1", "qty": 1}]}},
        {"op": "set_field", "key": ["order", "o1"], "name": "table", "value": 12},
        {"op": "add_line", "key": ["order", "o1"], "line": {"sku": "sku1", "qty": 2, "price": 899}},
        {"op": "remove_line", "key": ["order", "o1"], "index": 0},
        {"op": "set", "key": ["rights", "alice", 3], "value": 899},
    ]
    async with client(node) as c:
        response = await c.post("/transactions", json=tx(*ops))
    assert response.status_code == 200 and response.json() == OK
    assert node.commits == [[
        ("add", ("stock", "central", "sku1"), -2),
        ("set", ("price", "sku1"), 899),
        ("increment", ("member", "alice", "balance"), 5000),
        ("decrement", ("member", "alice", "balance"), 899),
        ("transfer", ("member", "alice", "balance"), 4, 100),
        ("record", ("sale", "s1"), {"total": 899, "lines": [{"sku": "sku1", "qty": 1}]}),
        ("set_field", ("order", "o1"), "table", 12),
        ("add_line", ("order", "o1"), {"sku": "sku1", "qty": 2, "price": 899}),
        ("remove_line", ("order", "o1"), 0),
        ("set", ("rights", "alice", 3), 899),
    ]]


def add(**extra: Any) -> dict:
    return {"op": "add", "key": STOCK, "amount": 1, **extra}


@pytest.mark.trio
@pytest.mark.parametrize("body, field", [
    # floats, anywhere money or quantities go
    (tx(add(amount=1.0)), "ops.0.amount"),
    (tx(add(amount=-2.5)), "ops.0.amount"),
    (tx({"op": "set", "key": ["price", "sku1"], "value": 8.99}), "ops.0.value"),
    (tx({"op": "record", "key": ["sale", "s1"], "value": {"lines": [{"qty": 1.5}]}}), "ops.0.value"),
    (tx({"op": "add_line", "key": ["order", "o1"], "line": {"price": 0.5}}), "ops.0.line.price"),
    # not an int at all
    (tx(add(amount="1")), "ops.0.amount"),
    (tx(add(amount=True)), "ops.0.amount"),
    (tx(add(amount=None)), "ops.0.amount"),
    # unknown fields
    (tx(add(ammount=1)), "ops.0.ammount"),
    ({"ops": [add()], "note": "x"}, "note"),
    # negative / zero where not allowed
    (tx({"op": "increment", "key": BALANCE, "amount": -5}), "ops.0.amount"),
    (tx({"op": "decrement", "key": BALANCE, "amount": 0}), "ops.0.amount"),
    (tx({"op": "transfer", "key": BALANCE, "to": -1, "amount": 5}), "ops.0.to"),
    (tx({"op": "transfer", "key": BALANCE, "to": 4, "amount": -5}), "ops.0.amount"),
    (tx({"op": "remove_line", "key": ["order", "o1"], "index": -1}), "ops.0.index"),
    (tx(add(amount=0)), "ops.0.amount"),
    (tx(add(amount=2**60)), "ops.0.amount"),
    # unknown or missing verbs
    (tx({"op": "delete", "key": STOCK}), "ops.0.op"),
    (tx({"op": 1, "key": STOCK}), "ops.0.op"),
    (tx({"key": STOCK, "amount": 1}), "ops.0.op"),
    (tx(add(), {"op": "transfer", "key": BALANCE, "amount": 5}), "ops.1.to"),
    # wrong key shapes
    (tx(add(key="stock/central/sku1")), "ops.0.key"),
    (tx(add(key=["stock"])), "ops.0.key"),
    (tx(add(key=["stock", "central", "sku1", "x", "y"])), "ops.0.key"),
    (tx(add(key=["stock", "central", ""])), "ops.0.key"),
    (tx(add(key=["stock", "central", 1.5])), "ops.0.key"),
    (tx(add(key=["stock", "central", True])), "ops.0.key"),
    (tx(add(key=["stock", "central", -1])), "ops.0.key"),
    (tx(add(key=["stock", "central", "x" * 129])), "ops.0.key"),
    (tx(add(key=["bogus", "central", "sku1"])), "ops.0.key"),
    (tx(add(key=["stock", "central"])), "ops.0.key"),
    (tx(add(key=BALANCE)), "ops.0.key"),  # a balance is no stock counter: "add" cannot touch it
    (tx({"op": "decrement", "key": STOCK, "amount": 1}), "ops.0.key"),
    # the transaction itself
    ({"ops": []}, "ops"),
    ({"ops": [add()] * 513}, "ops"),
    ({}, "ops"),
    ([add()], "body"),
    ({"ops": add()}, "ops"),
])
async def test_invalid_bodies_are_422_naming_the_field_and_never_reach_commit(node, body, field):
    async with client(node) as c:
        response = await c.post("/transactions", json=body)
    assert response.status_code == 422, response.text
    assert field in fields_of(response)
    assert field in response.json()["detail"]
    assert node.commits == []


@pytest.mark.trio
@pytest.mark.parametrize("content", [b"{\"ops\": [", b"not json", b"", "{\"ops\": [{\"op\": \"add\"}]}".encode()[:-3]])
async def test_unparseable_bodies_are_422(node, content):
    async with client(node) as c:
        response = await c.post("/transactions", content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == 422 and node.commits == []


@pytest.mark.trio
async def test_an_oversized_body_is_refused_naming_the_body_and_never_reaches_commit(node):
    big = tx({"op": "record", "key": ["sale", "s1"], "value": {"note": "x" * MAX_BODY_BYTES}})
    assert len(json.dumps(big)) > MAX_BODY_BYTES
    async with client(node) as c:
        response = await c.post("/transactions", json=big)
        assert response.status_code == 422 and fields_of(response) == ["body"]

        async def chunks():  # no Content-Length: the limit holds while reading
            for _ in range(MAX_BODY_BYTES // 1024 + 2):
                yield b" " * 1024

        response = await c.post("/transactions", content=chunks(), headers={"Content-Type": "application/json"})
        assert response.status_code == 422 and fields_of(response) == ["body"]
        assert "content-length" not in {k.lower() for k in response.request.headers}
    assert node.commits == []


@pytest.mark.trio
@pytest.mark.parametrize("error, status, body", [
    (Unauthorized("a cashier may not set prices"), 403, {"code": "unauthorized"}),
    (InsufficientRights("too few rights", needed=899, available=100), 409,
     {"code": "insufficient_rights", "needed": 899, "available": 100}),
    (InvalidInput("key holds a PNCounter"), 422, {"code": "invalid_input"}),
    (StorageError("disk full"), 503, {"code": "storage_error"}),
])
async def test_refusals_from_the_node_keep_their_type(node, error, status, body):
    node.error = error
    async with client(node) as c:
        response = await c.post("/transactions", json=tx(add()))
    assert response.status_code == status
    assert body.items() <= response.json().items()
    assert str(error) in response.json()["detail"]
    assert len(node.commits) == 1


# --- the token ------------------------------------------------------------------------------


REQUESTS = [("POST", "/transactions", tx(add())), ("GET", "/keys/stock/central/sku1", None),
            ("GET", "/status", None), ("GET", "/metrics", None), ("GET", "/openapi.json", None),
            ("POST", "/authority", {"bundle": "x"}), ("GET", "/nowhere", None)]


@pytest.mark.trio
@pytest.mark.parametrize("method, path, body", REQUESTS)
async def test_without_the_right_token_nothing_happens(node, method, path, body):
    wrong = [None, "", f"Bearer {node.api_token[:-1]}", f"Bearer {node.api_token}x", f"bearer {node.api_token}",
             f"Basic {node.api_token}", node.api_token, f"Bearer  {node.api_token}"]
    transport = httpx.ASGITransport(app=build_app(node))
    async with httpx.AsyncClient(transport=transport, base_url="http://till") as c:
        for header in wrong:
            headers = {} if header is None else {"Authorization": header}
            response = await c.request(method, path, json=body, headers=headers)
            assert response.status_code == 401, header
            assert response.json()["code"] == "unauthorized"
            assert response.headers["www-authenticate"] == "Bearer"
    assert node.calls == 0


@pytest.mark.trio
async def test_an_unauthenticated_oversized_body_is_401_not_read(node):
    async with client(node, token="wrong") as c:
        response = await c.post("/transactions", content=b" " * (MAX_BODY_BYTES * 2))
    assert response.status_code == 401 and node.calls == 0


def test_build_app_refuses_a_missing_or_short_token(node):
    for token in (None, "", "short", 12345, "x" * 15, "ä" * 20):
        node.api_token = token
        with pytest.raises(InvalidInput):
            build_app(node)


# --- reads ----------------------------------------------------------------------------------


@pytest.mark.trio
async def test_keys_are_read_by_path(node):
    async with client(node) as c:
        response = await c.get("/keys/stock/central/sku1")
        assert response.status_code == 200 and response.json() == {"key": STOCK, "value": 31}
        response = await c.get("/keys/rights/alice/int:3")  # int: marks an integer part
        assert response.json() == {"key": ["rights", "alice", 3], "value": 899}
        response = await c.get("/keys/stock/central/a%2Fb")  # an escaped slash stays in its part
        assert response.json() == {"key": ["stock", "central", "a/b"], "value": 1}
    assert node.reads == [("stock", "central", "sku1"), ("rights", "alice", 3), ("stock", "central", "a/b")]


@pytest.mark.trio
async def test_a_newline_in_a_key_part_reaches_the_key_check(node):
    # schemathesis found it: Starlette's path convertor stopped at %0A and the route fell
    # through to an undocumented 404.
    async with client(node) as c:
        response = await c.get("/keys/stock/central/a%0Ab")
    assert response.status_code in (200, 422), response.text


@pytest.mark.trio
@pytest.mark.parametrize("path", ["/keys/bogus/x", "/keys/stock/central", "/keys/stock/central//x",
                                  "/keys/stock/central/sku1/x/y", "/keys/rights/alice/int:x", "/keys/stock/central/%ff",
                                  f"/keys/stock/central/{'x' * 129}"])
async def test_bad_key_paths_are_422_naming_the_key_and_nothing_is_read(node, path):
    async with client(node) as c:
        response = await c.get(path)
    assert response.status_code == 422 and fields_of(response) == ["key"]
    assert node.reads == []


@pytest.mark.trio
async def test_an_unknown_key_is_422_from_the_node(node):
    async with client(node) as c:
        response = await c.get("/keys/stock/central/nothing")
    assert response.status_code == 422 and fields_of(response) == ["key"]
    assert "nothing stored" in response.json()["detail"]


@pytest.mark.trio
async def test_status_and_metrics(node):
    async with client(node) as c:
        status = await c.get("/status")
        metrics = await c.get("/metrics")
    assert status.json() == {"device": 3, "peers": [], "digest": "00"}
    assert metrics.status_code == 200 and metrics.headers["content-type"] == METRICS_CONTENT_TYPE
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(metrics.text)}
    assert families["tillmesh_peers_live"].samples[0].value == 2.0


@pytest.mark.trio
async def test_openapi_lists_every_endpoint_and_the_bearer_scheme(node):
    async with client(node) as c:
        response = await c.get("/openapi.json")
        docs = await c.get("/docs")
    spec = response.json()
    assert {"/transactions", "/keys/{kind}/{parts}", "/status", "/metrics", "/authority"} <= set(spec["paths"])
    assert "post" in spec["paths"]["/transactions"] and "get" in spec["paths"]["/status"]
    assert any(s.get("scheme") == "bearer" for s in spec["components"]["securitySchemes"].values())
    ops = spec["components"]["schemas"]["TransactionRequest"]["properties"]["ops"]
    assert "discriminator" in json.dumps(ops) or "oneOf" in json.dumps(ops)
    assert docs.status_code == 404  # no docs UI that would fetch scripts from the internet


@pytest.mark.trio
async def test_unknown_paths_and_methods_keep_the_error_shape(node):
    async with client(node) as c:
        assert (await c.get("/nowhere")).json()["code"] == "not_found"
        assert (await c.get("/transactions")).json()["code"] == "method_not_allowed"


# --- the authority feed ---------------------------------------------------------------------


def authority_bundle() -> tuple[str, int]:
    authority = Authority.create(seeded(3), 1_700_000_000_000)
    authority.enroll(DeviceKey.generate(seeded(4)).public, name="t1", branch="b", roles=("cashier",),
                     now_ms=1_700_000_000_000)
    return make_authority_bundle(authority.feed), len(authority.feed)


@pytest.mark.trio
async def test_an_authority_bundle_is_imported(node):
    bundle, count = authority_bundle()
    async with client(node) as c:
        response = await c.post("/authority", json={"bundle": bundle})
    assert response.status_code == 200 and response.json() == {"imported": count}
    assert len(node.imports) == 1 and len(node.imports[0]) == count


@pytest.mark.trio
@pytest.mark.parametrize("body, field", [({"bundle": "tillmesh-authority1:AAAA"}, "bundle"),
                                         ({"bundle": "tillmesh-join1:AAAA"}, "bundle"),
                                         ({"bundle": 5}, "bundle"), ({}, "bundle"),
                                         ({"bundle": "x", "extra": 1}, "extra")])
async def test_a_malformed_authority_bundle_is_422_and_not_imported(node, body, field):
    async with client(node) as c:
        response = await c.post("/authority", json=body)
    assert response.status_code == 422 and field in fields_of(response)
    assert node.imports == []


@pytest.mark.trio
async def test_a_node_that_cannot_import_says_so(node):
    class NoImport(FakeNode):
        import_authority = None  # type: ignore[assignment]

    bundle, _ = authority_bundle()
    async with client(NoImport()) as c:
        response = await c.post("/authority", json={"bundle": bundle})
    assert response.status_code == 501 and response.json()["code"] == "not_supported"


# --- for real -------------------------------------------------------------------------------


@pytest.mark.trio
async def test_serve_api_on_a_free_port_answers_and_shuts_down_cleanly(node):
    stop = trio.Event()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            # The trigger goes positionally, as nursery.start passes no keywords (the runtime's call).
            port = await nursery.start(serve_api, build_app(node), "127.0.0.1", 0, stop.wait)
            assert isinstance(port, int) and port > 0
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False) as c:
                status = await c.get("/status", headers={"Authorization": f"Bearer {node.api_token}"})
                refused = await c.get("/status")
                committed = await c.post("/transactions", json=tx(add()),
                                         headers={"Authorization": f"Bearer {node.api_token}"})
            assert status.status_code == 200 and status.json()["device"] == 3
            assert refused.status_code == 401
            assert committed.json() == OK
            stop.set()
    assert node.status_calls == 1 and len(node.commits) == 1
