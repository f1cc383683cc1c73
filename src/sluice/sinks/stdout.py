"""The ``stdout`` sink: JSON Lines on standard output.

Delivery: at-least-once to the pipe; a closed pipe (the reader went away) is retried, so pipe into
something that keeps reading.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from typing import Literal

from sluice.config.models import SinkConfig
from sluice.errors import RetriableError
from sluice.plugin import Sink
from sluice.records import Record, join_lines

__all__ = ["StdoutSink", "StdoutSinkConfig"]


class StdoutSinkConfig(SinkConfig):
    """Write records as JSON Lines to standard output."""

    type: Literal["stdout"] = "stdout"


class StdoutSink(Sink[StdoutSinkConfig]):
    """Standard output, one JSON object a line (at-least-once)."""

    config_model = StdoutSinkConfig
    description = "Write records as JSON Lines to standard output."

    async def write_batch(self, records: Sequence[Record]) -> None:
        data = join_lines(records)
        try:
            await asyncio.to_thread(_write_stdout, data)
        except OSError as exc:
            raise RetriableError(f"stdout: {exc}") from exc


def _write_stdout(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
