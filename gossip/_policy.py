"""Authorization at apply time: which ops an origin's certificate allows.

The policy is data, a table from role to rules, injected by node/ (the POS table lives
there). Every replica evaluates the same table against the same certificate and the same
op, so an op outside the origin's roles or branch is skipped identically everywhere and
reported, while the rest of its delta group still applies.

Besides roles, one rule is structural and not up to the table: a delta may only *write*
the slots of its own origin (a counter slot, a register's stamp, a bounded counter's
D and outgoing T rows, every Yrs client id that owns structs in a document update).
Anything else is a forgery and is skipped the same way. A document update under another
device's client id is the subtle case: Yrs would take the forged item as that device's,
and drop the device's own first edit as a duplicate wherever the forgery arrived first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from crdt_types import BoundedCounter, Document, LWWRegister, PNCounter, client_id_for

from ._identity import Certificate

__all__ = ["Rule", "Policy", "ALLOW_ALL", "writes_only_own_slots", "income_is_known"]


@dataclass(frozen=True, slots=True)
class Rule:
    """A role may write keys of ``kind``; with ``own_branch`` only where key[1] is its branch."""

    kind: str
    own_branch: bool = False


@dataclass(frozen=True)
class Policy:
    """role -> rules. A certificate is allowed an op when any of its roles has a matching rule."""

    rules: dict[str, tuple[Rule, ...]] = field(default_factory=dict)
    allow_all: bool = False

    def allows(self, cert: Certificate, key: tuple) -> bool:
        if self.allow_all:
            return True
        for role in cert.roles:
            for rule in self.rules.get(role, ()):
                if rule.kind == key[0] and (not rule.own_branch or (len(key) > 2 and key[1] == cert.branch)):
                    return True
        return False


ALLOW_ALL = Policy(allow_all=True)


def writes_only_own_slots(delta: Any, writer: Any) -> bool:
    """True when ``delta`` writes no slot that belongs to another replica."""
    if isinstance(delta, PNCounter):
        return all(r == writer for r in delta.rows())
    if isinstance(delta, LWWRegister):
        return delta.stamp is None or delta.stamp[1] == writer
    if isinstance(delta, BoundedCounter):
        _, d, t = delta.rows()
        # Rows P[j] and T[j, writer] are copies of what justifies a spend, not writes;
        # ``income_is_known`` checks them against the receiver's state.
        return all(r == writer for r in d) and all(writer in pair for pair in t)
    if isinstance(delta, Document):
        return delta.writers() <= {client_id_for(writer)}
    return True


def income_is_known(delta: BoundedCounter, state: BoundedCounter, writer: Any) -> bool:
    """True when every increment of another replica and every transfer *to* ``writer`` that
    ``delta`` cites is no larger than what ``state`` already holds: with causal delivery the
    receiver has applied everything the writer saw, so a larger figure is made up."""
    cited_p, _, cited_t = delta.rows()
    known_p, _, known_t = state.rows()
    return (all(v <= known_p.get(r, 0) for r, v in cited_p.items() if r != writer)
            and all(v <= known_t.get(pair, 0) for pair, v in cited_t.items() if pair[0] != writer))
