"""The default POS authorization table: who in a shop may write what.

Branch-scoped rules apply where a key's second element is a branch (stock, branch price
overrides, reservable stock); a cashier of one branch cannot move another branch's stock.
"""

from gossip import Policy, Rule

__all__ = ["POS_POLICY"]

_TILL = (Rule("stock", own_branch=True), Rule("sale"), Rule("member"), Rule("order"), Rule("rights"))

POS_POLICY = Policy({
    "cashier": _TILL,
    "manager": (*_TILL, Rule("price"), Rule("reserve", own_branch=True), Rule("setting")),
    "stock": (Rule("stock", own_branch=True), Rule("reserve", own_branch=True)),
    "hq": (Rule("stock"), Rule("sale"), Rule("member"), Rule("order"), Rule("rights"), Rule("price"),
           Rule("reserve"), Rule("setting")),
    "relay": (),
})
