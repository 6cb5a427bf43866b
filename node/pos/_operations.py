"""Retry-safe stock and balance operations: the optional ``operation_id``.

A sale is retry-safe by its sale id. Receipts, stocktakes, transfers, top-ups and charges
carry an optional ``operation_id`` for the same purpose: a request that has one writes, in
the same entry as its effect, the record ``("operation", operation_id)`` with its kind, a
fingerprint of the request and what it did. A retry with the same id and body finds that
record and answers with the first result (``replayed: true``, the state as it is now)
without writing anything; another body, or another kind of operation, under that id is a
409 ``operation_conflict`` with nothing written. Without an id an operation is done each
time it is asked for: a client that may retry (after a timeout, say) should send one.

The caller serializes requests per operation id (``Shop``), so a retry racing its first
try waits for it and then finds its record.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from pydantic import BaseModel

from ._common import PosNode, fingerprint
from ._errors import Refused

__all__ = ["once"]

Plan = tuple[list[tuple], dict[str, Any]]  # the ops, and what they do (stored with them)


async def once(node: PosNode, kind: str, request: BaseModel, plan: Callable[[], Plan],
               present: Callable[[dict[str, Any]], dict[str, Any]], *,
               commit: Callable[[list[tuple]], Awaitable[dict[str, Any]]] | None = None,
               context: tuple = ()) -> dict[str, Any]:
    """Do ``kind`` once per ``request.operation_id`` (every time, without one).

    ``plan()`` gives the ops and a summary of what they do (checked before anything is
    written; it may raise a refusal); ``present(summary)`` the response around it;
    ``commit`` writes the ops (default ``node.commit``); ``context``: what else the request
    means that is not in its body (a member id from the path). Returns ``present(summary)`` with
    ``seq``, ``ack`` and ``replayed``.

    Raises:
        Refused: ``operation_conflict``, the id holds another request.
    """
    commit = commit or node.commit
    operation_id = getattr(request, "operation_id", None)
    if operation_id is None:
        ops, summary = plan()
        entry = await commit(ops) if ops else None
        return _answer(present(summary), entry, replayed=False)
    key = ("operation", operation_id)
    print_ = fingerprint(request, kind, *context)
    existing = node.value(key)
    if existing is not None:
        if isinstance(existing, dict) and existing.get("kind") == kind and existing.get("fingerprint") == print_:
            where = node.entry_of(key)
            return {**present(existing["summary"]), "seq": where[1] if where else None,
                    "ack": node.ack_of(key) or "local", "replayed": True}
        raise Refused(f"operation id {operation_id} already holds another request; use a new id",
                      code="operation_conflict", field="operation_id")
    ops, summary = plan()
    record = {"kind": kind, "fingerprint": print_, "device": node.device, "summary": summary}
    entry = await commit([*ops, ("record", key, record)])
    return _answer(present(summary), entry, replayed=False)


def _answer(result: dict[str, Any], entry: dict[str, Any] | None, *, replayed: bool) -> dict[str, Any]:
    return {**result, "seq": entry["seq"] if entry else None, "ack": entry["ack"] if entry else None,
            "replayed": replayed}
