"""The POS domain: the shop's schema, who may write what, and where rights requests live.

The schema is the key table of ``crdt_types`` (stock, prices, member balances and fields,
sales, orders, reservable stock, settings, rights requests); the policy and the escrow keys
are injected into every engine a node runs, so gossip itself knows no POS key names.
"""

from crdt_types import DEFAULT_SCHEMA as POS_SCHEMA

from ._escrow import POS_ESCROW
from ._policy import POS_POLICY

__all__ = ["POS_SCHEMA", "POS_POLICY", "POS_ESCROW"]
