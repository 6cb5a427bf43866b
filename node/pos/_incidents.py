"""The incident ledger: replicated records of what a manager must look at.

Incidents come from two places. The domain writes them where it refuses or sees something
wrong (an oversell, in the same entry as the sale that caused it; a refused overdraft; a
sale id reused with another body; refunds on unlinked devices that together exceed the sale). The node turns the engine's alerts (clock skew, forks,
unauthorized ops, forged slots, overdrafts skipped in the escrow fold, conflicting records,
entries of revoked devices dropped) into incidents as they arrive. Each is a ``Record`` at
``("incident", id)`` with its time, the device it concerns, the reporting device and
evidence; the id is derived from what it reports, so the same alert seen again (after a
restart replays the feeds) is not written twice. A manager's device acknowledges one with a
register at ``("incident_ack", id)``.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from crdt_types import TillmeshError

from ._common import PosNode, day_of, ident, now_ms
from ._errors import NotFound
from ._requests import IncidentAck, parse
from ._shapes import incident_ok, require

__all__ = ["incident_record", "incident_id_of", "readable_incident_id", "report", "report_alert", "list_incidents", "acknowledge", "ALERT_KINDS",
           "DOMAIN_KINDS"]

log = logging.getLogger("tillmesh.pos")

# Engine alert kind -> incident kind. Alerts not listed are operational noise (a peer that
# broke the protocol, a full session table) and stay in the log and GET /status.
ALERT_KINDS = {
    "clock_skew": "clock_skew", "fork": "fork", "fork_suspected": "fork_suspected",
    "unauthorized": "unauthorized_op", "forged_slots": "unauthorized_op", "overdraft": "overdraft_skipped",
    "record_conflict": "conflicting_records", "revoked_entries_dropped": "revoked_device",
    "entry_refused": "entry_refused", "rights_refused": "rights_refused",
}
DOMAIN_KINDS = ("oversell", "overdraft_refused", "sale_conflict", "over_refund")
_LEDGER_KINDS = ("incident", "incident_ack")
MAX_LISTED = 500
MAX_ID_CHARS = 128  # an incident id is a key part


def incident_record(node: PosNode, kind: str, detail: str, *, device: int | None = None,
                    evidence: dict[str, Any] | None = None, at_ms: int | None = None) -> dict[str, Any]:
    at = now_ms() if at_ms is None else at_ms
    return {"kind": kind, "device": node.device if device is None else device, "reporter": node.device,
            "reporter_name": node.device_name, "branch": node.branch, "detail": detail[:500],
            "evidence": evidence or {}, "at_ms": at, "day": day_of(at)}


async def report(node: PosNode, incident_id: str, record: dict[str, Any]) -> bool:
    """Write an incident unless it is there already; never raises (an incident that cannot be
    written is logged: the refusal it goes with must still reach the caller)."""
    key = ("incident", incident_id[:128])
    if node.value(key) is not None or not node.may_write(key):
        return False
    try:
        await node.commit([("record", key, record)])
    except TillmeshError as exc:
        log.warning("incident %s not written: %s", incident_id, exc)
        return False
    return True


def _digest(*parts: Any) -> str:
    return hashlib.blake2b(repr(parts).encode(), digest_size=8).hexdigest()


def incident_id_of(kind: str, *parts: Any) -> str:
    """An incident id derived from what it reports: the same report gives the same id."""
    return f"{kind}:{_digest(*parts)}"


def readable_incident_id(*parts: str) -> str:
    """``kind:part:...`` as it reads, while that fits a key part (128 characters); longer, its
    head and a digest of the whole, so that two long ids never share an incident."""
    text = ":".join(parts)
    return text if len(text) <= MAX_ID_CHARS else f"{text[:MAX_ID_CHARS - 17]}:{_digest(*parts)}"


async def report_alert(node: PosNode, alert: Any) -> bool:
    """Turn one engine alert (``gossip.Alert``) into an incident, once."""
    kind = ALERT_KINDS.get(alert.kind.value)
    if kind is None or (alert.key is not None and alert.key[0] in _LEDGER_KINDS):
        return False
    if kind == "conflicting_records" and alert.key is not None and alert.key[0] == "sale":
        kind = "sale_conflict"
    evidence: dict[str, Any] = {"alert": alert.kind.value}
    if alert.entry is not None:
        evidence["entry"] = list(alert.entry)
    if alert.key is not None:
        evidence["key"] = list(alert.key)
    if alert.skew_ms is not None:
        evidence["skew_ms"] = alert.skew_ms
    if alert.evidence:
        evidence["entries_blake2b"] = [hashlib.blake2b(e, digest_size=16).hexdigest() for e in alert.evidence]
    # Per reporter: each device says what it saw; a clock-skew episode is one incident per day.
    what = (alert.kind.value, alert.origin, alert.entry, alert.key,
            day_of(now_ms()) if kind == "clock_skew" else alert.detail)
    incident_id = f"{kind}:{node.device}:{_digest(*what)}"
    record = incident_record(node, kind, alert.detail, device=alert.origin if alert.origin is not None else -1,
                             evidence=evidence)
    return await report(node, incident_id, record)


def list_incidents(node: PosNode, *, open_only: bool = False, kind: str | None = None,
                   limit: int = 100) -> list[dict[str, Any]]:
    """Incidents, newest first, each with its acknowledgement (or None)."""
    out = []
    for key in node.keys("incident"):
        record = node.value(key)
        if not incident_ok(record) or (kind is not None and record.get("kind") != kind):
            continue
        ack = node.value(("incident_ack", key[1]))
        if open_only and isinstance(ack, dict) and ack.get("resolved", True):
            continue
        out.append({"id": key[1], **record, "ack": ack})
    out.sort(key=lambda r: (-r["at_ms"], r["id"]))
    return out[:max(1, min(limit, MAX_LISTED))]


async def acknowledge(node: PosNode, incident_id: str, body: Any) -> dict[str, Any]:
    """A manager's device acknowledges an incident (anyone else's: 403 from the policy)."""
    incident_id = ident("incident_id", incident_id)
    request = parse(IncidentAck, body if body is not None else {})
    record = node.value(("incident", incident_id))
    if record is None:
        raise NotFound(f"no incident {incident_id!r} on this node", code="unknown_incident", field="incident_id")
    require(incident_ok(record), f"incident {incident_id}", "incident_id")
    ack = {"by": node.device, "by_name": node.device_name, "at_ms": now_ms(), "note": request.note,
           "resolved": request.resolved}
    entry = await node.commit([("set", ("incident_ack", incident_id), ack)])
    return {"id": incident_id, **record, "ack": ack, "seq": entry["seq"]}
