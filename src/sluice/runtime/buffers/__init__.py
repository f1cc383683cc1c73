"""Sink buffers: memory and disk behind one :class:`Buffer` protocol, and :func:`build_buffer`,
the one place that picks a kind from the policy (the sink worker never names one)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sluice.config.models import BatchPolicy, BufferPolicy
from sluice.runtime.buffers.base import Backlog, Batch, Buffer, BufferClosed, Segment
from sluice.runtime.buffers.disk import DiskBuffer
from sluice.runtime.buffers.memory import MemoryBuffer

__all__ = [
    "Backlog",
    "Batch",
    "Buffer",
    "BufferClosed",
    "DiskBuffer",
    "MemoryBuffer",
    "Segment",
    "build_buffer",
]


def build_buffer(
    policy: BufferPolicy,
    batch: BatchPolicy,
    directory: Path,
    *,
    on_error: Callable[[BaseException], None] | None = None,
    log: Any = None,
    metrics: Any = None,
) -> Buffer:
    """The buffer ``policy`` asks for; a disk buffer keeps its files in ``directory``."""
    if policy.type == "disk":
        return DiskBuffer(directory, policy, batch, on_error, log=log, metrics=metrics)
    return MemoryBuffer(policy, batch)
