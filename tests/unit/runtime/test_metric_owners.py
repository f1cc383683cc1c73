"""Each counter has one owner: the source worker counts what a source read and made, the sink
worker what a sink took and wrote; a batch with rejects and dead letters is counted once each."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

import orjson

from sluice.config import load_config_text
from sluice.runtime.pipeline import Pipeline
from sluice.runtime.sink_worker import SinkWorker
from sluice.runtime.source_worker import SourceWorker
from sluice.sdk import Record, Rejected, Source, SourceBatch, SourceConfig
from sluice.testing import registry_with_doubles, written
from tests.conftest import wait_until

REGISTRY = registry_with_doubles()


def _totals(pipeline: Pipeline, component_id: str) -> dict[str, int]:
    workers: list[SourceWorker | SinkWorker] = [*pipeline.sources, *pipeline.all_sinks()]
    worker = next(w for w in workers if w.component_id == component_id)
    totals: dict[str, int] = worker.metrics.totals()
    return totals


async def test_a_batch_with_rejects_is_counted_once_by_each_owner(workdir: Path) -> None:
    (workdir / "in.jsonl").write_text('{"a": 1}\nnot json\n{"a": 2, "bad": 1}\n{"a": 3}\n')
    config = (
        "sources:\n  f: {type: file, path: in.jsonl}\n"
        "sinks:\n  out: {type: list, inputs: [f], reject_field: bad,"
        " batch: {max_age_secs: 0.01}}\n"
        "admin: {enabled: false}\n"
    )
    pipeline = Pipeline.build(load_config_text(config, REGISTRY), REGISTRY)
    assert (await pipeline.run()).ok
    source = _totals(pipeline, "f")
    assert (source["received"], source["sent"], source["dead_letters"]) == (4, 3, 1)
    sink = _totals(pipeline, "out")
    assert (sink["received"], sink["sent"], sink["dead_letters"]) == (3, 2, 1)
    dead = _totals(pipeline, "dead_letters")
    assert (dead["received"], dead["sent"]) == (2, 2)  # the source's reject and the sink's
    letters = (workdir / ".sluice" / "dead_letters.jsonl").read_bytes().splitlines()
    assert sorted(orjson.loads(line)["component_kind"] for line in letters) == ["sink", "source"]


class ProbeConfig(SourceConfig):
    """A source whose batches report what it read and discarded, and that declares its link."""

    type: Literal["probe"] = "probe"


class ProbeSource(Source[ProbeConfig]):
    config_model = ProbeConfig
    description = "Scripted batches with read counts and a connection state (test)."

    def __init__(self, component_id: str, config: ProbeConfig) -> None:
        super().__init__(component_id, config)
        self.link: bool | None = False
        self.proceed = asyncio.Event()
        self.hold = asyncio.Event()

    def connected(self) -> bool | None:
        return self.link

    async def batches(self) -> AsyncIterator[SourceBatch]:
        self.link = True
        yield SourceBatch(
            [Record(b'{"a":1}'), Record(b'{"a":2}')],
            read_events=5,
            read_bytes=1000,
            discarded={"duplicate": 2, "unknown_type": 1},
        )
        yield SourceBatch([], read_events=4, read_bytes=300, discarded={"duplicate": 4})
        yield SourceBatch([Record(b'{"a":3}')], [Rejected(b"xx", "bad")])
        await self.proceed.wait()
        self.link = False  # the link went down, batches may still be in hand
        yield SourceBatch([Record(b'{"a":4}')], read_events=1, read_bytes=7)
        await self.hold.wait()


PROBE = registry_with_doubles()
PROBE.register("source", "probe", ProbeSource, origin="tests")
PROBE_LABELS = {"component_id": "p", "component_kind": "source", "component_type": "probe"}


async def test_the_source_worker_counts_what_batches_report_and_reads_the_declared_link(
    workdir: Path,
) -> None:
    config = (
        "sources:\n  p: {type: probe}\n"
        "sinks:\n  out: {type: list, inputs: [p], batch: {max_age_secs: 0.01}}\n"
        "admin: {enabled: false}\n"
    )
    pipeline = Pipeline.build(load_config_text(config, PROBE), PROBE)
    registry = pipeline.metrics.registry
    source = pipeline.sources[0].source
    assert isinstance(source, ProbeSource)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {**PROBE_LABELS, **labels})

    assert value("sluice_source_connected") == 0
    run = asyncio.create_task(pipeline.run())
    try:
        await wait_until(lambda: len(written(pipeline)["out"]) == 3)
        assert value("sluice_source_connected") == 1
        assert value("sluice_component_received_events_total") == 5 + 4 + 2
        assert value("sluice_component_received_bytes_total") == 1000 + 300 + 7 + 2
        assert value("sluice_component_sent_events_total") == 3
        assert value("sluice_component_sent_bytes_total") == 7 * 3
        assert value("sluice_component_dead_letters_total") == 1
        assert value("sluice_source_discarded_total", reason="duplicate") == 6
        assert value("sluice_source_discarded_total", reason="unknown_type") == 1
        totals = pipeline.sources[0].metrics.totals()
        assert (totals["discarded"], totals["dropped"]) == (7, 0)
        assert not [
            m for m in registry.collect() for s in m.samples if "dropped" in s.name and s.value
        ]

        source.proceed.set()
        await wait_until(lambda: len(written(pipeline)["out"]) == 4)
        assert value("sluice_source_connected") == 0  # the source's word, not "batches flow"
        assert value("sluice_component_received_events_total") == 12
        source.link = True
        assert value("sluice_source_connected") == 1
    finally:
        pipeline.stop()
        result = await run
    assert result.ok
    assert value("sluice_source_connected") == 0  # finished
