"""The conformance suites every sink and every source passes, for sluice's own plugins and yours.

Each behaviour is a test that runs a real pipeline in this process (no mocks but for the one
failure it injects). Subclass a suite in a test module, under a name pytest collects (``Test...``),
fill its hooks, and pytest runs every behaviour that applies to your plugin::

    from sluice.testing.conformance import SinkConformance

    class TestMySink(SinkConformance):
        def sink_config(self):
            return {"type": "my_sink", "path": str(self.workdir / "out.jsonl")}

        def stored(self):
            return read_my_store(self.workdir / "out.jsonl")  # the records, as mappings

The hooks see ``self.workdir`` (a fresh directory per test), ``self.request`` (pytest's, for your
own fixtures: ``self.request.getfixturevalue("my_server")``) and ``self.pipeline`` (the last run).
The plugin must be installed (its entry point) or registered in :meth:`Conformance.registry`.
Needs pytest (``pip install sluice[testing]``); the tests are plain functions that run their own
event loop, so no asyncio plugin is needed.

Sinks (:class:`SinkConformance`, after Redpanda Connect's StreamTests): it starts and closes with
nothing to write; it stores every record of many batches once; a transient failure of a write is
retried with nothing lost and nothing stored twice; a restart appends to what was stored
(``persistent``); a record it can never store goes to the dead letters with a reason while its
batch-mates are stored (``bad_record``).

Sources (:class:`SourceConformance`): it delivers every record it should, once, in order, and is
committed up to its last batch; after a retriable error ``batches()`` is called again on the same
instance and nothing is lost (unless it is at-most-once); run again after a stop with the same
state directory it delivers again, and one declared at-least-once has lost nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest

from sluice.config import load_config_text
from sluice.errors import RetriableError
from sluice.plugin import Source
from sluice.registry import Registry
from sluice.runtime.pipeline import Pipeline, RunResult
from sluice.testing.doubles import registry_with_doubles, written

__all__ = ["Conformance", "SinkConformance", "SourceConformance", "read_jsonl"]

UNDER_TEST = "under_test"
"""The component id of the plugin under test in every pipeline the suites run."""


def read_jsonl(path: Path) -> list[Any]:
    """The JSON values of a JSON Lines file; none when it does not exist."""
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


def records(start: int, count: int) -> list[dict[str, Any]]:
    """``count`` small records numbered from ``start`` (fields ``n`` and ``text``)."""
    return [{"n": i, "text": f"record {i}"} for i in range(start, start + count)]


class Conformance:
    """What both suites share: the per-test state the hooks see, and running a pipeline."""

    workdir: Path
    request: pytest.FixtureRequest
    pipeline: Pipeline | None
    run_timeout: ClassVar[float] = 120.0
    """Seconds a single pipeline run may take."""

    @pytest.fixture(autouse=True)
    def _conformance_state(self, request: pytest.FixtureRequest, tmp_path: Path) -> None:
        self.request = request
        self.workdir = tmp_path
        self.pipeline = None

    def registry(self) -> Registry:
        """The plugins the pipelines are built from: the installed ones and the test doubles.
        Override to register a plugin that is not installed."""
        return registry_with_doubles()

    @property
    def state_dir(self) -> Path:
        """The pipelines' ``data_dir`` (dead letters go to ``dead_letters.jsonl`` in it)."""
        return self.workdir / "state"

    def build(self, config: dict[str, Any]) -> Pipeline:
        registry = self.registry()
        config = {"admin": {"enabled": False}, "data_dir": str(self.state_dir), **config}
        pipeline = Pipeline.build(
            load_config_text(orjson.dumps(config).decode(), registry), registry
        )
        self.pipeline = pipeline
        return pipeline

    def run(self, pipeline: Pipeline, *, until: int | None = None) -> RunResult:
        """Run ``pipeline`` to its end, or until its ``list`` sinks hold ``until`` records (then
        stop it as SIGTERM would)."""
        return asyncio.run(self._run(pipeline, until))

    async def _run(self, pipeline: Pipeline, until: int | None) -> RunResult:
        task = asyncio.create_task(pipeline.run())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.run_timeout
        try:
            while until is not None and not task.done():
                if sum(len(r) for r in written(pipeline).values()) >= until:
                    pipeline.stop("conformance test: enough records")
                    break
                assert loop.time() < deadline, f"not {until} records within {self.run_timeout} s"
                await asyncio.sleep(0.02)
            return await asyncio.wait_for(asyncio.shield(task), self.run_timeout)
        finally:
            if not task.done():
                pipeline.stop("conformance test failed")
                await asyncio.wait_for(task, 60)


class SinkConformance(Conformance):
    """The sink suite: fill :meth:`sink_config` and :meth:`stored`, set the class attributes."""

    persistent: ClassVar[bool] = True
    """Whether what the sink stored outlives the process (so a restart appends)."""
    bad_record: ClassVar[dict[str, Any] | None] = None
    """A record this sink can never store (it must reach the dead letters), if there is one.
    The good records have an integer ``n`` and a string ``text``."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A behaviour that does not apply to the sink is not collected (rather than skipped)."""
        super().__init_subclass__(**kwargs)
        hidden = []
        if not cls.persistent:
            hidden.append("test_appends_across_a_restart")
        if cls.bad_record is None:
            hidden.append(
                "test_sends_a_record_it_cannot_store_to_the_dead_letters_and_stores_its_batch_mates"
            )
        for name in hidden:
            setattr(cls, name, None)

    def sink_config(self) -> dict[str, Any]:
        """The sink's config for this test, without ``inputs`` and the batch and retry policies."""
        raise NotImplementedError

    def stored(self) -> Any:
        """What the sink stored: by default the records, as mappings, in write order (or by ``n``
        where the store has no order of its own, a table); see :meth:`expected_store`."""
        raise NotImplementedError

    def expected_store(self, written: list[dict[str, Any]]) -> Any:
        """What :meth:`stored` must equal once exactly ``written`` (in order) is stored: the records
        themselves by default; a sink that keeps something derived (counts, an aggregate)
        computes it here, so that a record stored twice or lost still shows."""
        return written

    # -- helpers -----------------------------------------------------------------------------------

    @property
    def sink_type(self) -> str:
        return str(self.sink_config()["type"])

    def run_sink(self, items: list[dict[str, Any]]) -> Pipeline:
        """One pipeline run: a list source with ``items`` into this sink, to its end."""
        pipeline = self.build(
            {
                "sources": {"src": {"type": "list", "records": items, "batch_size": 40}},
                "sinks": {
                    UNDER_TEST: {
                        **self.sink_config(),
                        "inputs": ["src"],
                        "batch": {"max_events": 64, "max_age_secs": 0.02},
                        "retry": {"initial_backoff_secs": 0.01, "max_backoff_secs": 0.05},
                    }
                },
            }
        )
        result = self.run(pipeline)
        assert result.ok, result.error
        return pipeline

    def totals(self, pipeline: Pipeline) -> dict[str, int]:
        worker = pipeline.sink(UNDER_TEST)
        assert worker is not None
        return worker.metrics.totals()

    # -- the behaviours ----------------------------------------------------------------------------

    def test_starts_and_closes_with_nothing_to_write(self) -> None:
        pipeline = self.run_sink([])
        assert self.stored() == self.expected_store([])
        assert self.totals(pipeline)["sent"] == 0

    def test_stores_every_record_of_many_batches_once(self) -> None:
        pipeline = self.run_sink(records(0, 300))
        assert self.stored() == self.expected_store(records(0, 300))
        flushes = pipeline.metrics.registry.get_sample_value(
            "sluice_sink_flush_duration_seconds_count",
            {
                "component_id": UNDER_TEST,
                "component_kind": "sink",
                "component_type": self.sink_type,
            },
        )
        assert flushes is not None and flushes >= 300 / 64

    def test_retries_a_transient_failure_with_nothing_lost_or_stored_twice(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        plugin = self.registry().sinks[self.sink_type]
        real_write = plugin.write_batch
        failures = {"left": 2}

        async def flaky_write(self: Any, records: Any, *args: Any, **kwargs: Any) -> None:
            if failures["left"]:
                failures["left"] -= 1
                raise RetriableError("injected: connection reset")
            await real_write(self, records, *args, **kwargs)

        monkeypatch.setattr(plugin, "write_batch", flaky_write)
        pipeline = self.run_sink(records(0, 200))
        assert self.stored() == self.expected_store(records(0, 200))
        assert self.totals(pipeline)["retries"] == 2

    def test_appends_across_a_restart(self) -> None:
        self.run_sink(records(0, 100))
        self.run_sink(records(100, 100))
        assert self.stored() == self.expected_store(records(0, 200))

    def test_sends_a_record_it_cannot_store_to_the_dead_letters_and_stores_its_batch_mates(
        self,
    ) -> None:
        bad = self.bad_record
        assert bad is not None
        self.run_sink([*records(0, 50), bad, *records(50, 50)])
        assert self.stored() == self.expected_store(records(0, 100))
        dead = read_jsonl(self.state_dir / "dead_letters.jsonl")
        assert [d["record"] for d in dead] == [bad]
        assert dead[0]["component_id"] == UNDER_TEST
        assert dead[0]["reason"]


class SourceConformance(Conformance):
    """The source suite: fill :meth:`source_config` and :meth:`expected`.

    The source's records go to a ``list`` sink. A finite source (the default) is run to its end;
    an endless one (``finite = False``) until the sink holds ``len(expected())`` records.
    """

    finite: ClassVar[bool] = True
    """Whether the source ends by itself once its input is read."""

    def source_config(self) -> dict[str, Any]:
        """The source's config for this test (``type`` and its own keys)."""
        raise NotImplementedError

    def expected(self) -> list[dict[str, Any]]:
        """The records (as mappings, in order) a run of the source configured so delivers; at
        least one."""
        raise NotImplementedError

    def comparable(self, record: dict[str, Any]) -> Any:
        """What of a record the suite compares (all of it by default; e.g. only a sequence
        number for a source that stamps records with the time they were made)."""
        return record

    # -- helpers -----------------------------------------------------------------------------------

    @property
    def source_type(self) -> str:
        return str(self.source_config()["type"])

    def run_source(self) -> Pipeline:
        pipeline = self.build(
            {
                "sources": {UNDER_TEST: self.source_config()},
                "sinks": {"out": {"type": "list", "inputs": [UNDER_TEST]}},
            }
        )
        result = self.run(pipeline, until=None if self.finite else len(self.expected()))
        assert result.ok, result.error
        return pipeline

    def delivered(self, pipeline: Pipeline) -> list[Any]:
        """What the ``list`` sink got, each record as :meth:`comparable` makes it."""
        return [self.comparable(dict(r.data)) for r in written(pipeline)["out"]]

    def wanted(self) -> list[Any]:
        return [self.comparable(r) for r in self.expected()]

    # -- the behaviours ----------------------------------------------------------------------------

    def test_delivers_every_record_once_in_order_and_commits_its_last_batch(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        plugin = self.registry().sources[self.source_type]
        real_commit = plugin.commit
        wants_commits = real_commit is not Source.commit
        commits: list[Any] = []

        async def recording_commit(self: Any, token: Any) -> None:
            commits.append(token)
            await real_commit(self, token)

        monkeypatch.setattr(plugin, "commit", recording_commit)
        pipeline = self.run_source()
        expected = self.wanted()
        delivered = self.delivered(pipeline)
        assert delivered[: len(expected)] == expected
        if self.finite:
            assert delivered == expected
        if wants_commits:
            assert commits, "the source was never told a batch was written"

    def test_is_iterated_again_after_a_retriable_error_and_loses_nothing(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        plugin = self.registry().sources[self.source_type]
        real_batches = plugin.batches
        calls = {"n": 0}

        async def failing_once(self: Any) -> Any:
            calls["n"] += 1
            first = calls["n"] == 1
            batches: Any = real_batches(self)  # an async generator, closed here
            async with contextlib.aclosing(batches) as real:
                async for batch in real:
                    yield batch
                    if first:
                        raise RetriableError("injected: connection reset")

        monkeypatch.setattr(plugin, "batches", failing_once)
        monkeypatch.setattr(plugin, "restart_policy", _fast_restart)
        pipeline = self.run_source()
        delivered = self.delivered(pipeline)
        missing = [r for r in self.wanted() if r not in delivered]
        if plugin.delivery != "at-most-once":
            assert missing == []
        assert calls["n"] >= 2, "batches() was not called again after the error"
        reconnects = pipeline.metrics.registry.get_sample_value(
            "sluice_source_reconnects_total",
            {
                "component_id": UNDER_TEST,
                "component_kind": "source",
                "component_type": self.source_type,
            },
        )
        assert reconnects == 1

    def test_runs_again_after_a_stop_and_loses_nothing_if_at_least_once(self) -> None:
        plugin = self.registry().sources[self.source_type]
        expected = self.wanted()
        first = self.run_source_until(max(1, len(expected) // 2))
        second = self.delivered(self.run_source())
        if plugin.delivery == "at-most-once":
            assert second, "the source delivered nothing when run again with its state"
        else:
            assert [r for r in expected if r not in first + second] == []

    def run_source_until(self, count: int) -> list[Any]:
        """Run until the sink holds ``count`` records, then stop as SIGTERM would."""
        pipeline = self.build(
            {
                "sources": {UNDER_TEST: self.source_config()},
                "sinks": {"out": {"type": "list", "inputs": [UNDER_TEST]}},
            }
        )
        self.run(pipeline, until=count)
        return self.delivered(pipeline)


def _fast_restart(self: Any) -> Any:
    from sluice.config.models import RetryPolicy

    return RetryPolicy(initial_backoff_secs=0.01, max_backoff_secs=0.05)
