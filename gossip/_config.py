"""The engine's settings: timers and forwarding, each with a default that serves a shop."""

from __future__ import annotations

from dataclasses import dataclass, fields

from crdt_types import InvalidInput

from ._session import SessionConfig

__all__ = ["EngineConfig", "ping_interval_for"]

PING_INTERVAL_MS = SessionConfig.ping_interval_ms
PING_TIMEOUT_MS = SessionConfig.ping_timeout_ms


def ping_interval_for(ping_timeout_ms: int) -> int:
    """The ping interval for a configuration that sets only the timeout: the default, or two
    thirds of a timeout set below it (a pong then has a third of the timeout to come back)."""
    return min(PING_INTERVAL_MS, ping_timeout_ms * 2 // 3)


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
    ping_interval_ms: int = PING_INTERVAL_MS
    ping_timeout_ms: int = PING_TIMEOUT_MS
    greeting_timeout_ms: int = 10_000
    prompt_acks: bool = True
    push_delay_ms: int = 0
    have_jitter: bool = True
    forward_eagerly: bool | None = None
    snapshot_every: int = 1000  # save a replica snapshot after this many applied entries (0: never)

    def __post_init__(self) -> None:
        if self.ping_timeout_ms <= self.ping_interval_ms:
            raise InvalidInput(f"ping_timeout_ms ({self.ping_timeout_ms}) must be above ping_interval_ms "
                               f"({self.ping_interval_ms}), or every quiet link would be closed before its ping; "
                               f"for this timeout, ping_interval_for() gives {ping_interval_for(self.ping_timeout_ms)}")

    @property
    def session(self) -> SessionConfig:
        return SessionConfig(**{f.name: getattr(self, f.name) for f in fields(SessionConfig)})
