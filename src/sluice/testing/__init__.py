"""The test kit that ships with sluice, for sluice's own tests and for plugin authors' tests.

- :mod:`sluice.testing.doubles` (re-exported here): the ``list`` source and sink and the ``flaky``
  sink, :func:`registry_with_doubles`, :func:`written`, :func:`free_port`;
- :mod:`sluice.testing.conformance`: the sink and source conformance suites
  (``SinkConformance``, ``SourceConformance``): subclass one in a test module, fill its hooks, and
  pytest runs every behaviour against your plugin. Needs pytest: ``pip install sluice[testing]``;
- :mod:`sluice.testing.clickhouse`: ClickHouse stores to check a sink against (a private
  ``clickhouse-server``, a chDB directory) and Coinbase-like ticker records.
- :mod:`sluice.testing.nats`: a private NATS JetStream cluster (``nats-server`` nodes on loopback,
  routed, stopped by PID); needs the ``nats`` extra.

``python -m sluice.testing run CONFIG`` is ``sluice run`` with the doubles registered.
Nothing here is used by a running pipeline, and nothing here holds state between tests.
"""

from __future__ import annotations

from sluice.testing.doubles import (
    FlakySink,
    FlakySinkConfig,
    ListSink,
    ListSinkConfig,
    ListSource,
    ListSourceConfig,
    free_port,
    registry_with_doubles,
    written,
)

__all__ = [
    "FlakySink",
    "FlakySinkConfig",
    "ListSink",
    "ListSinkConfig",
    "ListSource",
    "ListSourceConfig",
    "free_port",
    "registry_with_doubles",
    "written",
]
