"""The source worker's word on /readyz and the dashboard between a source's failure and its
restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from sluice.config import load_config_text
from sluice.errors import RetriableError
from sluice.plugin import Readiness
from sluice.records import SourceBatch
from sluice.runtime.pipeline import Pipeline
from sluice.testing import registry_with_doubles

REGISTRY = registry_with_doubles()
STALE = "127.0.0.1:1: no frame for 1 s (stale feed), reconnecting"


async def test_readiness_names_the_error_as_soon_as_the_read_fails(workdir: Path) -> None:
    """The turn of the loop between the source's read failing (its generator closed, its
    connection gone) and the worker taking the error: /readyz already gives the error, not the
    source's "not connected". The look is made in exactly that turn: a callback the source's
    ``finally`` schedules runs before the worker's wake-up, which the read's end schedules."""
    pipeline = Pipeline.build(
        load_config_text(
            "sources:\n  src: {type: list, records: [{a: 1}]}\n"
            "sinks:\n  out: {type: list, inputs: [src]}\n"
            "admin: {enabled: false}\n",
            REGISTRY,
        ),
        REGISTRY,
    )
    [worker] = pipeline.sources
    connected = True
    seen: list[tuple[Readiness, str]] = []

    async def readiness() -> Readiness:
        return Readiness(True) if connected else Readiness(False, "not connected")

    def look() -> None:
        coroutine = worker.readiness()
        try:
            coroutine.send(None)  # no await inside on this path: it finishes here
        except StopIteration as finished:
            seen.append((finished.value, worker.state))
        pipeline.stop("looked")

    async def batches() -> AsyncIterator[SourceBatch]:
        nonlocal connected
        try:
            raise RetriableError(STALE)
            yield SourceBatch([])  # a generator, as a source's batches() is
        finally:
            connected = False
            asyncio.get_running_loop().call_soon(look)

    worker.source.batches = batches  # type: ignore[method-assign]
    worker.source.readiness = readiness  # type: ignore[method-assign]
    result = await pipeline.run()

    assert result.ok
    assert seen == [(Readiness(False, f"restarting after RetriableError: {STALE}"), "restarting")]
    # the worker then took the error as ever: counted once, with its attempt number
    assert worker.metrics.totals()["errors"] == 1
    assert worker.restarting == f"restarting after RetriableError: {STALE} (attempt 1)"
