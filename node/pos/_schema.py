"""The POS key table: the core kinds of ``crdt_types`` plus the domain's own records.

The core table (stock, prices, member balances and fields, sales, orders, reservable stock,
settings, rights requests) lives with the CRDT types because the engine's tests use it. The
POS domain adds the records only it reads: refunds, approval requests and grants, and the
incident ledger with its acknowledgements, and the ids of retry-safe operations. Each new kind has its own wire code after the
core ones, so a node of an older version holds entries that carry them (``UnknownOps``)
instead of refusing them, and applies them after an upgrade.
"""

from crdt_types import DEFAULT_SCHEMA, LWWRegister, Record
from crdt_types import KeyRule, Schema

__all__ = ["POS_SCHEMA", "DOMAIN_RULES"]

DOMAIN_RULES = (
    KeyRule("refund", 9, 2, Record, description="(refund, refund_id): a refund of (part of) a known sale"),
    KeyRule("approval", 10, 2, Record, description="(approval, sale_id): a till asks a manager to approve a sale"),
    KeyRule("grant", 11, 2, Record, description="(grant, sale_id): a manager's device approved that sale"),
    KeyRule("incident", 12, 2, Record, description="(incident, incident_id): the incident ledger"),
    KeyRule("incident_ack", 13, 2, LWWRegister, description="(incident_ack, incident_id): a manager saw it"),
    KeyRule("operation", 14, 2, Record,
            description="(operation, operation_id): a retry-safe stock or balance operation, written with it"),
)

POS_SCHEMA = Schema([*DEFAULT_SCHEMA.rules, *DOMAIN_RULES])
