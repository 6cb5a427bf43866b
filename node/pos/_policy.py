"""The default POS authorization table: who in a shop may write what.

Branch-scoped rules apply where a key's second element is a branch (stock, branch price
overrides, reservable stock); a cashier of one branch cannot move another branch's stock.
A manager may write the stock of every branch: a transfer takes stock out of one branch and
into another in one entry, and transfers are a manager's job. Approval grants and incident
acknowledgements are the managers' (and HQ's) alone, so a grant present on any replica was
signed by a manager's device: every replica skips one written by anyone else. Whoever may
do a stock or balance operation may record its operation id.
"""

from gossip import Policy, Rule

__all__ = ["POS_POLICY"]

_TILL = (Rule("stock", own_branch=True), Rule("sale"), Rule("member"), Rule("order"), Rule("rights"),
         Rule("refund"), Rule("approval"), Rule("incident"), Rule("operation"))
_MANAGING = (Rule("stock"), Rule("price"), Rule("reserve", own_branch=True), Rule("setting"), Rule("grant"),
             Rule("incident_ack"))

POS_POLICY = Policy({
    "cashier": _TILL,
    "manager": (*_TILL, *_MANAGING),
    "stock": (Rule("stock", own_branch=True), Rule("reserve", own_branch=True), Rule("incident"),
              Rule("operation")),
    "hq": (Rule("stock"), Rule("sale"), Rule("member"), Rule("order"), Rule("rights"), Rule("price"),
           Rule("reserve"), Rule("setting"), Rule("refund"), Rule("approval"), Rule("grant"), Rule("incident"),
           Rule("incident_ack"), Rule("operation")),
    "relay": (),
})
