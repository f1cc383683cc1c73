"""Routing: which sink buffers each source batch goes to, by the sinks' ``inputs``.

A sink's input ``coinbase`` takes every record of source ``coinbase``; ``coinbase.ticker`` takes only
records of kind ``ticker``. Records that no sink takes are counted as ``unrouted``, per kind (not a
loss: nothing asked for them), and the inputs a source rejected go to the dead letters, as part of
the batch's acknowledgement.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from sluice.metrics import ComponentMetrics
from sluice.records import Record, SourceBatch
from sluice.runtime.buffers import Segment
from sluice.runtime.dead_letters import dead_letter
from sluice.runtime.ledger import Ledger
from sluice.runtime.sink_worker import SinkWorker

__all__ = ["Route", "Router"]


@dataclass(frozen=True)
class Route:
    sink: SinkWorker
    kinds: frozenset[str] | None
    """Kinds the sink takes from this source; None for all of them."""


class Router:
    """Fans source batches out to sink buffers."""

    def __init__(self, dead_letters: SinkWorker) -> None:
        self.dead_letters = dead_letters
        self.routes: dict[str, list[Route]] = defaultdict(list)

    def connect(self, sink: SinkWorker, inputs: list[str]) -> None:
        """Route what ``inputs`` names to ``sink``."""
        wanted: dict[str, set[str] | None] = {}
        for reference in inputs:
            source_id, _, kind = reference.partition(".")
            if not kind or kind == "*":
                wanted[source_id] = None
            elif source_id not in wanted:
                wanted[source_id] = {kind}
            elif (kinds := wanted[source_id]) is not None:
                kinds.add(kind)
        for source_id, kinds in wanted.items():
            self.routes[source_id].append(Route(sink, frozenset(kinds) if kinds else None))

    async def route(
        self, source_id: str, batch: SourceBatch, ledger: Ledger, metrics: ComponentMetrics
    ) -> None:
        """Hand ``batch`` to every sink that takes it; returns once every buffer accepted it.

        The source worker counts the batch (received, sent, rejected); the router counts only what
        no sink takes (``unrouted``), which only it knows."""
        ticket = ledger.open(batch.token)  # held until every piece is handed out
        records = batch.records
        if records:
            routes = self.routes.get(source_id, ())
            nbytes = batch.nbytes
            present: set[str] | None = None  # the batch's kinds, once a route filters by kind
            taken: set[str] | None = set()
            for route in routes:
                if route.kinds is None:
                    part = records
                    taken = None
                else:
                    kinds = route.kinds
                    if present is None:
                        present = {r.kind for r in records}
                    # the common case: the route takes the whole batch, no copy and no count
                    part = records if present <= kinds else [r for r in records if r.kind in kinds]
                    if taken is not None:
                        taken |= kinds
                if part is records:
                    if nbytes is None:
                        nbytes = sum([len(r.raw) for r in records])
                    part_bytes = nbytes
                else:
                    part_bytes = sum([len(r.raw) for r in part])
                if part:
                    await route.sink.offer(Segment(part, part_bytes, ticket.split()))
            if taken is not None and (present is None or not present <= taken):
                unrouted: dict[str, int] = {}
                for r in records:
                    if r.kind not in taken:
                        unrouted[r.kind] = unrouted.get(r.kind, 0) + 1
                for kind, count in unrouted.items():
                    metrics.unrouted(kind, count)
        if batch.rejected:
            letters: list[Record] = [
                dead_letter(item.raw, item.reason, source_id, "source") for item in batch.rejected
            ]
            await self.dead_letters.accept_dead_letters(letters, ticket.split())
        ticket.release()
