"""Everything a plugin author needs, in one import: ``from sluice.sdk import Sink, SinkConfig, ...``.

A plugin package imports only this module (and :mod:`sluice.testing` in its tests); the modules
behind it may move. The contract these names make is written out in ``docs/plugins.md``:

- the base classes :class:`Source` and :class:`Sink` and their config bases :class:`SourceConfig`
  and :class:`SinkConfig`, with the shared blocks (:class:`BatchPolicy`, :class:`BufferPolicy`,
  :class:`RetryPolicy`, :class:`RateLimit`) a plugin may use in its own config, pydantic's :func:`Field` for its own keys, and what a config
  declares about the machine (:class:`Claim`, :class:`LocalPath`);
- what flows: :class:`Record`, :class:`SourceBatch`, :class:`Rejected`, :class:`Origin`
  (:func:`origin_key`);
- what the runner gives and asks: :class:`ComponentContext`, :class:`Readiness`,
  :class:`QueryResult`, :class:`BatchInfo`;
- the capability types: :data:`Delivery` (and :data:`DELIVERIES`), :data:`EventTimes`;
- the error vocabulary: :class:`RetriableError`, :class:`PermanentError`, :class:`BrokenError`,
  :class:`RejectedRecords`, :class:`QueryRefused`, :func:`classify_os_error`.
"""

from __future__ import annotations

from pydantic import Field

from sluice.config.models import (
    BatchPolicy,
    BufferPolicy,
    Claim,
    LocalPath,
    RateLimit,
    RetryPolicy,
    SinkConfig,
    SourceConfig,
)
from sluice.errors import (
    BrokenError,
    PermanentError,
    QueryRefused,
    RejectedRecords,
    RetriableError,
    SluiceError,
    classify_os_error,
)
from sluice.plugin import (
    DELIVERIES,
    BatchInfo,
    ComponentContext,
    Delivery,
    EventTimes,
    QueryResult,
    Readiness,
    Sink,
    Source,
)
from sluice.records import Origin, Record, Rejected, SourceBatch, join_lines, origin_key

__all__ = [
    "DELIVERIES",
    "BatchInfo",
    "BatchPolicy",
    "BrokenError",
    "BufferPolicy",
    "Claim",
    "ComponentContext",
    "Delivery",
    "EventTimes",
    "Field",
    "LocalPath",
    "Origin",
    "PermanentError",
    "QueryRefused",
    "QueryResult",
    "RateLimit",
    "Readiness",
    "Record",
    "Rejected",
    "RejectedRecords",
    "RetriableError",
    "RetryPolicy",
    "Sink",
    "SinkConfig",
    "SluiceError",
    "Source",
    "SourceBatch",
    "SourceConfig",
    "classify_os_error",
    "join_lines",
    "origin_key",
]
