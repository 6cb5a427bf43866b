"""The POS domain: the shop's schema, who may write what, where rights requests live, and
the shop's operations (sales, refunds, stock, prices, members, orders, approvals, roll-ups,
the incident ledger) written as one transaction each.

The schema is the key table of ``crdt_types`` plus the domain's own record kinds
(``_schema.py``); the policy and the escrow keys are injected into every engine a node runs,
so gossip itself knows no POS key names. ``Shop`` binds the operations to a running node
(``node.runtime.Node.pos``); the HTTP API in ``node/api`` calls it.
"""

from ._errors import InvalidRequest, NotFound, PosError, Refused, RightsShort
from ._escrow import POS_ESCROW
from ._incidents import ALERT_KINDS, DOMAIN_KINDS
from ._policy import POS_POLICY
from ._prices import effective_price
from ._requests import (
    ApprovalRequest,
    ChargeRequest,
    IncidentAck,
    OrderClose,
    OrderCreate,
    OrderLine,
    OrderLineChange,
    PriceRequest,
    ReceiptRequest,
    RefundRequest,
    SaleRequest,
    StocktakeRequest,
    TopupRequest,
    TransferRequest,
)
from ._schema import POS_SCHEMA
from ._shop import Shop

__all__ = [
    "POS_SCHEMA", "POS_POLICY", "POS_ESCROW", "Shop", "effective_price", "ALERT_KINDS", "DOMAIN_KINDS",
    "PosError", "InvalidRequest", "NotFound", "Refused", "RightsShort",
    "SaleRequest", "RefundRequest", "ReceiptRequest", "StocktakeRequest", "TransferRequest", "PriceRequest",
    "TopupRequest", "ChargeRequest", "OrderCreate", "OrderLine", "OrderLineChange", "OrderClose",
    "ApprovalRequest", "IncidentAck",
]
