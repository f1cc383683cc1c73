"""The runner end to end, in process, with the test doubles of sluice.testing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson

from sluice.config import load_config_text
from sluice.runtime.pacing import TokenBucket
from sluice.runtime.pipeline import Pipeline, RunResult
from sluice.runtime.sink_worker import SinkWorker
from sluice.runtime.source_worker import SourceWorker
from sluice.testing import registry_with_doubles, written
from tests.conftest import wait_until
from tests.unit.runtime.virtual_clock import VirtualClock

REGISTRY = registry_with_doubles()


def build(yaml_text: str) -> Pipeline:
    return Pipeline.build(load_config_text(yaml_text, REGISTRY), REGISTRY)


def lines(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def seqs(path: Path) -> list[int]:
    return [int(r["seq"]) for r in lines(path)]  # type: ignore[call-overload]


def totals(pipeline: Pipeline, component_id: str) -> dict[str, int]:
    workers: list[SourceWorker | SinkWorker] = [*pipeline.sources, *pipeline.all_sinks()]
    worker = next(w for w in workers if w.component_id == component_id)
    return worker.metrics.totals()


FAST_BATCH = "    batch: {max_events: 100, max_age_secs: 0.01}\n    retry: {initial_backoff_secs: 0.01, max_backoff_secs: 0.05}\n"


async def test_retriable_failures_are_retried_until_every_record_is_written_once(
    workdir: Path,
) -> None:
    pipeline = build(
        "sources:\n  gen: {type: generator, count: 1000, batch_size: 64}\n"
        "sinks:\n  out:\n    type: flaky\n    inputs: [gen]\n    path: out.jsonl\n"
        "    fail_first_writes: 5\n" + FAST_BATCH + "admin: {enabled: false}\n"
    )
    result = await pipeline.run()
    assert result == RunResult(ok=True)
    assert seqs(workdir / "out.jsonl") == list(range(1000))
    assert totals(pipeline, "out")["retries"] == 5


async def test_os_errors_are_retried_too(workdir: Path) -> None:
    pipeline = build(
        "sources:\n  gen: {type: generator, count: 300}\n"
        "sinks:\n  out:\n    type: flaky\n    inputs: [gen]\n    path: out.jsonl\n"
        "    fail_first_writes: 2\n    failure: oserror\n"
        + FAST_BATCH
        + "admin: {enabled: false}\n"
    )
    assert (await pipeline.run()).ok
    assert seqs(workdir / "out.jsonl") == list(range(300))


async def test_permanent_failure_sends_the_batch_to_dead_letters_with_reason(workdir: Path) -> None:
    pipeline = build(
        "sources:\n  gen: {type: generator, count: 250, batch_size: 250}\n"
        "sinks:\n  out:\n    type: flaky\n    inputs: [gen]\n    path: out.jsonl\n"
        "    fail_first_writes: 1\n    failure: permanent\n"
        + FAST_BATCH
        + "admin: {enabled: false}\n"
    )
    assert (await pipeline.run()).ok
    dead = lines(workdir / ".sluice" / "dead_letters.jsonl")
    written = seqs(workdir / "out.jsonl")
    assert len(dead) == 100  # the first batch
    assert dead[0]["reason"] == "injected failure 1 of 1"
    assert dead[0]["component_id"] == "out"
    assert sorted([d["record"]["seq"] for d in dead] + written) == list(range(250))  # type: ignore[index]


async def test_max_attempts_gives_up_to_dead_letters(workdir: Path) -> None:
    pipeline = build(
        "sources:\n  gen: {type: generator, count: 50}\n"
        "sinks:\n  out:\n    type: flaky\n    inputs: [gen]\n    path: out.jsonl\n"
        "    fail_first_writes: 100\n    batch: {max_events: 50, max_age_secs: 0.01}\n"
        "    retry: {initial_backoff_secs: 0.001, max_backoff_secs: 0.002, max_attempts: 3}\n"
        "admin: {enabled: false}\n"
    )
    assert (await pipeline.run()).ok
    dead = lines(workdir / ".sluice" / "dead_letters.jsonl")
    assert len(dead) == 50
    assert str(dead[0]["reason"]).startswith("gave up after 3 attempts")


async def test_rejected_records_go_to_dead_letters_and_the_rest_is_written(workdir: Path) -> None:
    records = [{"n": i, **({"bad": True} if i % 3 == 0 else {})} for i in range(30)]
    pipeline = build(
        f"sources:\n  src: {{type: list, records: {orjson.dumps(records).decode()}, batch_size: 7}}\n"
        "sinks:\n  out: {type: list, inputs: [src], reject_field: bad, batch: {max_age_secs: 0.01}}\n"
        "admin: {enabled: false}\n"
    )
    assert (await pipeline.run()).ok
    stored = written(pipeline)
    assert [r.data["n"] for r in stored["out"]] == [i for i in range(30) if i % 3]
    dead = lines(workdir / ".sluice" / "dead_letters.jsonl")
    assert [d["record"]["n"] for d in dead] == list(range(0, 30, 3))  # type: ignore[index]
    assert {d["reason"] for d in dead} == {"has field 'bad'"}
    source = pipeline.sources[0].source
    assert source.committed[-1] == 30  # type: ignore[attr-defined]


async def test_inputs_route_by_kind(workdir: Path) -> None:
    pipeline = build(
        "sources:\n  a: {type: generator, count: 20, kind: ticker}\n"
        "  b: {type: generator, count: 10, kind: heartbeat}\n"
        "sinks:\n  tickers: {type: list, inputs: [a.ticker, b.ticker]}\n"
        "  everything: {type: list, inputs: [a]}\n"
        "admin: {enabled: false}\n"
    )
    assert (await pipeline.run()).ok
    stored = written(pipeline)
    assert len(stored["tickers"]) == 20
    assert {r.kind for r in stored["tickers"]} == {"ticker"}
    assert len(stored["everything"]) == 20
    # no sink takes b's heartbeats: counted as unrouted, which is not a loss
    assert totals(pipeline, "b")["unrouted"] == 10
    assert totals(pipeline, "b")["dropped"] == 0


async def test_a_source_rejected_input_goes_to_dead_letters(workdir: Path) -> None:
    (workdir / "in.jsonl").write_text('{"a": 1}\nnot json\n[1, 2]\n{"a": 2}\n')
    pipeline = build(
        "sources:\n  f: {type: file, path: in.jsonl}\n"
        "sinks:\n  out: {type: file, inputs: [f], path: out.jsonl}\n"
        "admin: {enabled: false}\n"
    )
    assert (await pipeline.run()).ok
    assert lines(workdir / "out.jsonl") == [{"a": 1}, {"a": 2}]
    dead = lines(workdir / ".sluice" / "dead_letters.jsonl")
    assert [d.get("raw", d.get("record")) for d in dead] == ["not json", [1, 2]]
    assert str(dead[0]["reason"]).startswith("invalid JSON")
    assert dead[1]["reason"] == "not a JSON object (a list)"


async def test_drop_newest_counts_every_record_it_drops(workdir: Path) -> None:
    pipeline = build(
        "sources:\n  gen: {type: generator, count: 20000, batch_size: 100}\n"
        "sinks:\n  out:\n    type: flaky\n    inputs: [gen]\n    path: out.jsonl\n    delay_secs: 0.01\n"
        "    buffer: {max_events: 500, when_full: drop_newest}\n    batch: {max_events: 100}\n"
        "admin: {enabled: false}\n"
    )
    assert (await pipeline.run()).ok
    written = seqs(workdir / "out.jsonl")
    dropped = totals(pipeline, "out")["dropped"]
    assert dropped > 0
    assert dropped == 20000 - len(written)
    assert len(set(written)) == len(written)


async def test_stop_flushes_everything_read(workdir: Path) -> None:
    pipeline = build(
        "sources:\n  gen: {type: generator, events_per_sec: 20000}\n"
        "sinks:\n  out: {type: file, inputs: [gen], path: out.jsonl}\n"
        "admin: {enabled: false}\n"
    )
    run = asyncio.create_task(pipeline.run())
    source = pipeline.sources[0].source
    await wait_until(lambda: source.produced > 1000)  # type: ignore[attr-defined]
    pipeline.stop()
    result = await asyncio.wait_for(run, 30)
    assert result.ok
    produced = source.produced  # type: ignore[attr-defined]
    assert seqs(workdir / "out.jsonl") == list(range(produced))


async def test_drain_timeout_reports_unwritten_records(workdir: Path) -> None:
    pipeline = build(
        "sources:\n  gen: {type: generator, count: 500}\n"
        "sinks:\n  out:\n    type: flaky\n    inputs: [gen]\n    path: out.jsonl\n"
        "    fail_first_writes: 1000000\n" + FAST_BATCH + "shutdown: {drain_timeout_secs: 0.5}\n"
        "admin: {enabled: false}\n"
    )
    run = asyncio.create_task(pipeline.run())
    source = pipeline.sources[0].source
    # every record read and the sink failing: the drain then cannot finish in time
    await wait_until(
        lambda: source.produced == 500 and totals(pipeline, "out")["retries"] >= 1  # type: ignore[attr-defined]
    )
    pipeline.stop()
    result = await asyncio.wait_for(run, 30)
    assert not result.ok
    assert result.unwritten == 500
    assert "500 records not written" in str(result.error)


async def test_source_rate_limit_holds(workdir: Path) -> None:
    pipeline = build(
        "sources:\n  gen: {type: generator, count: 1000, batch_size: 100, "
        "rate_limit: {events_per_sec: 1600, burst: 100}}\n"
        "sinks:\n  out: {type: list, inputs: [gen]}\n"
        "admin: {enabled: false}\n"
    )
    # the source's bucket on a virtual clock: its waits are counted exactly, not timed
    clock = VirtualClock()
    worker = pipeline.sources[0]
    assert worker._limiter is not None
    worker._limiter = TokenBucket(worker.source.config.rate_limit, clock, clock.sleep)
    assert (await pipeline.run()).ok
    # a batch of 100 takes the burst; each of the other nine waits for 100 tokens at 1600/s
    assert clock.sleeps == [100 / 1600] * 9
    assert clock.now == (1000 - 100) / 1600
    labels = {"component_id": "gen", "component_kind": "source", "component_type": "generator"}
    sample = pipeline.metrics.registry.get_sample_value
    assert sample("sluice_component_rate_limit_waits_total", labels) == 9
    assert sample("sluice_component_rate_limit_wait_seconds_total", labels) == clock.now
    assert [r.data["seq"] for r in written(pipeline)["out"]] == list(range(1000))
