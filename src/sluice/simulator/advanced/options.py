"""How a simulator speaking Coinbase Advanced Trade behaves, and its own faults."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AdvancedOptions"]


@dataclass(frozen=True)
class AdvancedOptions:
    """Advanced Trade options of :class:`sluice.simulator.SimulatorOptions` (``advanced``).

    The Exchange faults of ``SimulatorOptions.faults`` that act on sent frames apply too
    (``close_after``, ``stall_after``, ``garbage_every``, ``slow_consumer_bytes``, and
    ``connections``, which also scopes the faults below); the trade-frame faults do not.
    """

    jwt_public_key: str | None = None
    """PEM of the EC P-256 public key of the CDP key clients sign with. Set: every subscribe must
    carry a JWT it verifies (ES256, ``iss`` ``cdp``, ``sub`` and ``kid`` the key's name, ``nbf``
    and ``exp``), else it is refused with ``authentication failure``."""
    skip_sequence_every: int | None = None
    """Leave out every Nth data message, its ``sequence_num`` used (a missed message)."""
    skip_heartbeat_every: int | None = None
    """Skip a ``heartbeat_counter`` value every Nth heartbeat."""
    bad_every: int | None = None
    """Make every Nth ``ticker`` message carry a price of ``NaN`` (a message to refuse)."""
    ticker_batch_every: int = 5
    """Heartbeat intervals between two ``ticker_batch`` messages (Coinbase: 5 s)."""
