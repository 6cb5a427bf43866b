"""Baseline synchronization protocols with the engine's surface, driven by ``Device``.

``classic_delta`` and ``bp_rr`` are the delta-based GSet synchronization of Almeida et al.
and its BP+RR improvement from Enes et al. (ICDE 2019); ``simulations._experiment`` runs
them side by side with tillmesh's gossip engine.
"""

from ._delta import BaselineStatus, DeltaSync, Element, bp_rr, classic_delta, element_size

__all__ = ["DeltaSync", "classic_delta", "bp_rr", "Element", "element_size", "BaselineStatus"]
