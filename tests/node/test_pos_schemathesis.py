"""schemathesis against ``/openapi.json`` of a running node (its own thread, real SQLite, real
TCP on 127.0.0.1): generated requests to every operation, valid and not; no 5xx, and every
response (status, content type, body) matches what the schema says. ``/events`` is left
out (a stream does not end); its own tests are in test_pos_events.py."""

from __future__ import annotations

import threading
import time

import pytest
import trio
from hypothesis import HealthCheck, given, settings

schemathesis = pytest.importorskip("schemathesis")

from schemathesis.specs.openapi.checks import positive_data_acceptance  # noqa: E402

from node.runtime import Node  # noqa: E402
from node.storage import DataDir  # noqa: E402
from tests.node.pos_helpers import make_chain  # noqa: E402


@pytest.fixture(scope="module")
def running_node(tmp_path_factory):
    root = tmp_path_factory.mktemp("schemathesis")
    dirs = make_chain(root, [("till-1", "central", ("manager",))])
    started = threading.Event()
    state: dict = {}

    async def main() -> None:
        data_dir = DataDir.open(dirs["till-1"])
        with data_dir.lock():
            node = Node(data_dir)
            async with trio.open_nursery() as nursery:
                ports = await nursery.start(node.run)
                state.update(node=node, port=ports["api"], token=trio.lowlevel.current_trio_token())
                started.set()

    thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
    thread.start()
    assert started.wait(30), "the node did not start"
    yield state
    trio.from_thread.run_sync(state["node"].stop, trio_token=state["token"])
    thread.join(30)
    assert not thread.is_alive()


@pytest.fixture(scope="module")
def api_schema(running_node):
    headers = {"Authorization": f"Bearer {running_node['node'].api_token}"}
    schema = schemathesis.openapi.from_url(f"http://127.0.0.1:{running_node['port']}/openapi.json", headers=headers)
    return schema.exclude(path="/events")


def test_every_operation_answers_within_its_schema(api_schema, running_node):
    # The operations are driven from here rather than by schemathesis' pytest plugin, which
    # does not load under this pytest version; the checks are the same (call_and_validate).
    headers = {"Authorization": f"Bearer {running_node['node'].api_token}"}
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 25
    failures = []
    for operation in operations:
        @given(operation.as_strategy())
        @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case) -> None:
            # Schema-valid data may still be refused by the shop's rules (an unknown key kind,
            # payments that do not add up): that check alone is left out.
            case.call_and_validate(headers=headers, timeout=30, excluded_checks=[positive_data_acceptance])

        try:
            check()
        except Exception as exc:  # noqa: BLE001  (collected, reported together below)
            failures.append(f"{operation.method.upper()} {operation.path}: {str(exc)[:1500]}")
    assert not failures, "\n\n".join(failures)
