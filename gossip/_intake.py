"""Taking in a batch of entries from a peer, and deciding who is to blame for each refusal.

``Feeds.ingest`` verifies and stores one entry or raises. What a refusal means for the
session is decided here, once, by where the error sits in the tree of ``_errors``:

- ``NotYet`` (a gap, an unknown origin, an epoch key not yet granted): nobody's fault; the
  entry comes again after the next full have.
- ``ForkDetected``: the origin signed two entries at one seq; it is quarantined, and the two
  entries are the evidence every peer should see.
- other ``OriginFault`` (revoked past its cutoff, a broken chain, sealed garbage): the
  origin's doing, reported, and the forwarding peer's session stays up (a relay cannot
  look inside what it forwards).
- anything else (a bad signature, bytes that are not an entry): the peer's protocol error.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from crdt_types import TillmeshError

from ._errors import ChainBroken, ForkDetected, NotYet, OriginFault
from ._events import Alert, AlertKind
from ._feeds import Feeds, Ingested

__all__ = ["Batch", "take_in"]


@dataclass
class Batch:
    """What became of one ``entries`` frame."""

    taken: list[Ingested] = field(default_factory=list)  # in order, new or already held
    refused: int = 0  # entries deferred or refused as the origin's fault (forks aside)
    deferred: list[bytes] = field(default_factory=list)  # the NotYet ones, to offer again
    alerts: list[Alert] = field(default_factory=list)
    evidence: list[tuple[bytes, bytes]] = field(default_factory=list)  # forks found
    forks: list[tuple[int, int]] = field(default_factory=list)  # (origin, seq) of each
    fault: str | None = None  # the peer broke the protocol: end its session

    @property
    def origins(self) -> set[int]:
        return {result.entry.origin for result in self.taken}

    def fresh(self) -> list[Ingested]:
        return [result for result in self.taken if result.new]


def take_in(feeds: Feeds, batch: tuple[bytes, ...]) -> Batch:
    """Ingest every entry of ``batch`` in order; stops at the first the peer is to blame for."""
    out = Batch()
    for data in batch:
        try:
            out.taken.append(feeds.ingest(data))
        except NotYet:
            out.refused += 1
            out.deferred.append(data)
        except ForkDetected as exc:
            out.evidence.append(exc.evidence)
            out.forks.append((exc.origin, exc.seq))
            out.alerts.append(Alert(AlertKind.FORK, exc.origin, str(exc), entry=(exc.origin, exc.seq),
                                    evidence=exc.evidence))
        except OriginFault as exc:
            out.refused += 1
            kind = AlertKind.FORK_SUSPECTED if isinstance(exc, ChainBroken) else AlertKind.ENTRY_REFUSED
            out.alerts.append(Alert(kind, None, f"{type(exc).__name__}: {exc}"))
        except TillmeshError as exc:
            out.fault = f"entry refused: {type(exc).__name__}: {exc}"
            break
    return out
