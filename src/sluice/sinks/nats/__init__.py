"""The ``nats`` sink (NATS JetStream); see :mod:`sluice.sinks.nats.sink`. nats-py is imported only
when the sink starts (the ``nats`` extra)."""

from __future__ import annotations

from sluice.sinks.nats.config import NatsSinkConfig
from sluice.sinks.nats.sink import NatsSink

__all__ = ["NatsSink", "NatsSinkConfig"]
