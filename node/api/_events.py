"""``GET /events``: the changes this node applies, as a server-sent-events stream.

Each applied change of a key is one event::

    id: 3f9a01c2-1042
    event: change
    data: {"key": ["price", "coffee"], "value": 899, "device": 4, "seq": 17}

``value`` is the key's value when the event is sent. Ids are ``<run>-<n>``: ``n`` counts the
node's applied changes, ``run`` names this run of the node. A client that reconnects with
``Last-Event-ID`` (the header ``EventSource`` sends, or the ``last_event_id`` query) gets
every change after that id, each once. When the id is older than the node's ring of recent
changes, or from another run (the node restarted), the stream starts with one ``reset``
event: the client must read the state it shows again (``GET /keys/...``, ``/rollups``),
then follow from there. Without an id the stream starts at the newest change. ``kinds``
(``price,stock,approval``) keeps only those key kinds; a comment line every 15 s keeps idle
connections open.
"""

from __future__ import annotations

import json
import re
from typing import Any, AsyncIterator

from fastapi import FastAPI, Header, Query
from fastapi.responses import Response, StreamingResponse
from typing_extensions import Annotated

from . import _error, _invalid
from ._domain import POS_REFUSALS

__all__ = ["add_routes", "parse_event_id", "HEARTBEAT_S"]

HEARTBEAT_S = 15.0
MAX_EVENT_ID_CHARS = 64
_ID = re.compile(r"^([0-9a-f]{1,16})-([0-9]{1,18})$")


def parse_event_id(text: str | None) -> tuple[str, int] | None:
    """``"<run>-<n>"`` -> (run, n); None for no id.

    Raises:
        ValueError: not of that form.
    """
    if text is None or text == "":
        return None
    match = _ID.match(text) if len(text) <= MAX_EVENT_ID_CHARS else None
    if match is None:
        raise ValueError(f"an event id is <run>-<n>, as sent in the id: lines, got {text[:MAX_EVENT_ID_CHARS]!r}")
    return match.group(1), int(match.group(2))


def _frame(event_id: str, kind: str, data: Any) -> bytes:
    return f"id: {event_id}\nevent: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def _stream(handle: Any, since: tuple[str, int] | None, kinds: frozenset[str] | None,
                  max_events: int | None) -> AsyncIterator[bytes]:
    epoch = handle.event_epoch
    yield b"retry: 2000\n: tillmesh events\n\n"
    latest = handle.event_count
    sent = 0
    if since is None:
        cursor = latest
    else:
        run, number = since
        oldest = handle.events[0][0] if handle.events else latest + 1
        if run != epoch or number > latest or number < oldest - 1:
            reason = ("the node restarted since that id" if run != epoch else
                      "that id is older than the changes this node keeps" if number < oldest - 1 else
                      "that id is newer than any change of this node")
            yield _frame(f"{epoch}-{latest}", "reset", {"reason": reason, "resume_from": f"{epoch}-{latest}"})
            cursor, sent = latest, 1
            if max_events is not None and sent >= max_events:
                return
        else:
            cursor = number
    while True:
        events = handle.events_after(cursor)
        if events and events[0][0] > cursor + 1:  # fell behind the ring while this client was slow
            yield _frame(f"{epoch}-{events[0][0] - 1}", "reset",
                         {"reason": "this client fell behind the changes the node keeps",
                          "resume_from": f"{epoch}-{events[0][0] - 1}"})
        for number, origin, seq, key in events:
            cursor = number
            if kinds is not None and key[0] not in kinds:
                continue
            try:
                value = handle.value(key)
            except Exception:  # noqa: BLE001  (a key this version cannot read: send it without a value)
                value = None
            yield _frame(f"{epoch}-{number}", "change", {"key": list(key), "value": value, "device": origin,
                                                         "seq": seq})
            sent += 1
            if max_events is not None and sent >= max_events:
                return
        if not events:
            before = cursor
            await handle.wait_events(cursor, HEARTBEAT_S)
            if handle.event_count <= before:
                yield b": keepalive\n\n"


def add_routes(app: FastAPI, handle: Any) -> None:
    @app.get("/events", summary="Follow applied changes (server-sent events)", tags=["events"],
             response_class=StreamingResponse,
             responses={200: {"content": {"text/event-stream": {}},
                              "description": "`change` and `reset` events; see the module docs"},
                        **{k: v for k, v in POS_REFUSALS.items() if k in (401, 422, 501)}})
    async def get_events(
            last_event_id_header: Annotated[str | None, Header(alias="Last-Event-ID", max_length=MAX_EVENT_ID_CHARS)
                                            ] = None,
            last_event_id: Annotated[str | None, Query(max_length=MAX_EVENT_ID_CHARS)] = None,
            kinds: Annotated[str | None, Query(max_length=256, pattern=r"^[a-z_]+(,[a-z_]+)*$",
                                               description="comma-separated key kinds")] = None,
            max_events: Annotated[int | None, Query(ge=1, le=100_000, description="end after this many")] = None,
    ) -> Response:
        """Every applied change (key, value, device, seq); resumes from `Last-Event-ID`."""
        if getattr(handle, "event_epoch", None) is None or getattr(handle, "pos", None) is None:
            return _error(501, "not_supported", "this node keeps no event stream (a relay)")
        try:
            since = parse_event_id(last_event_id_header if last_event_id_header else last_event_id)
        except ValueError as exc:
            return _invalid([{"field": "Last-Event-ID", "message": str(exc)}])
        wanted = frozenset(kinds.split(",")) if kinds else None
        return StreamingResponse(_stream(handle, since, wanted, max_events), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
