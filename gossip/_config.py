"""The engine's settings: timers and forwarding, each with a default that serves a shop."""

from __future__ import annotations

from dataclasses import dataclass, fields

from ._session import SessionConfig

__all__ = ["EngineConfig"]


@dataclass(frozen=True)
class EngineConfig:
    """Timers of the engine, in milliseconds of monotonic time.

    The session timers are those of ``SessionConfig`` (see there); ``forward_eagerly``
    decides whether other devices' entries are pushed on arrival, not only in answer to a
    have. None: relays do (they are the hubs between branches), members do not (on a LAN
    every device hears the origin itself, and forwarding there mostly sends duplicates).
    ``snapshot_every``: a member saves its replica to the store after that many applied
    entries, so that a restart replays only what came after (0: never).
    """

    have_interval_ms: int = 5_000
    full_have_every: int = 6
    ping_interval_ms: int = 40_000
    ping_timeout_ms: int = 60_000
    greeting_timeout_ms: int = 10_000
    prompt_acks: bool = True
    push_delay_ms: int = 0
    have_jitter: bool = True
    forward_eagerly: bool | None = None
    snapshot_every: int = 1000  # save a replica snapshot after this many applied entries (0: never)

    @property
    def session(self) -> SessionConfig:
        return SessionConfig(**{f.name: getattr(self, f.name) for f in fields(SessionConfig)})
