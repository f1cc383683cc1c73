"""Each counter has one owner: the source worker counts what a source read and made, the sink
worker what a sink took and wrote; a batch with rejects and dead letters is counted once each."""

from __future__ import annotations

from pathlib import Path

import orjson

from sluice.config import load_config_text
from sluice.runtime.pipeline import Pipeline
from sluice.runtime.sink_worker import SinkWorker
from sluice.runtime.source_worker import SourceWorker
from sluice.testing import registry_with_doubles

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
