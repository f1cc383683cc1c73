"""The ``nats`` source (NATS JetStream durable pull consumer); see
:mod:`sluice.sources.nats.source`. nats-py is imported only when the source starts (the ``nats``
extra)."""

from __future__ import annotations

from sluice.sources.nats.config import NatsSourceConfig
from sluice.sources.nats.source import NatsSource

__all__ = ["NatsSource", "NatsSourceConfig"]
