"""``kind_counter``: count records by kind into a JSON file (an example third-party sink).

Delivery: at-least-once, like every sluice sink; a batch retried after a failure may be counted
twice. The file is rewritten atomically after each batch. It imports only :mod:`sluice.sdk`.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from sluice.sdk import ComponentContext, Field, Record, Sink, SinkConfig


class KindCounterConfig(SinkConfig):
    """Count records by kind."""

    type: Literal["kind_counter"] = "kind_counter"
    path: Path = Field(description="JSON file holding the counts.")


class KindCounterSink(Sink[KindCounterConfig]):
    """Keeps per-kind counts in a JSON file."""

    config_model = KindCounterConfig
    description = "Count records by kind into a JSON file (example plugin)."
    delivery = "at-least-once"
    delivery_note = "A batch retried after a failed save may be counted twice."

    def __init__(self, component_id: str, config: KindCounterConfig) -> None:
        super().__init__(component_id, config)
        self.counts: Counter[str] = Counter()

    async def start(self, ctx: ComponentContext) -> None:
        if self.config.path.exists():
            self.counts.update(json.loads(self.config.path.read_text()))

    async def write_batch(self, records: Sequence[Record]) -> None:
        self.counts.update(r.kind for r in records)
        await asyncio.to_thread(self._save)

    def _save(self) -> None:
        tmp = self.config.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(dict(self.counts), sort_keys=True))
        os.replace(tmp, self.config.path)
