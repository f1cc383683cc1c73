"""Acknowledgements: telling a source which of its batches every sink has written.

Each batch a source yields becomes an :class:`AckGroup`, counting the pieces of it still in flight
(one per sink buffer it went to, one per dead-letter hand-off, one per split across two sink
batches). When the count reaches zero the batch is done. A :class:`CommitTracker` keeps a source's
groups in the order they were read and calls ``Source.commit`` with the token of the newest batch
whose predecessors are all done, so a source's checkpoint never skips an unwritten record.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["AckGroup", "CommitTracker"]


class AckGroup:
    """Pieces of one source batch still being written."""

    __slots__ = ("done", "pending", "token", "tracker")

    def __init__(self, tracker: CommitTracker, token: Any) -> None:
        self.tracker = tracker
        self.token = token
        self.pending = 1  # held by the router until it has handed out every piece
        self.done = False

    def add(self, count: int = 1) -> None:
        """Another piece of the batch is in flight."""
        self.pending += count

    def release(self, count: int = 1) -> None:
        """A piece is written (or deliberately dropped, or dead-lettered)."""
        self.pending -= count
        if self.pending == 0:
            self.done = True
            self.tracker.completed()


class CommitTracker:
    """Orders a source's batches and commits the contiguous prefix that is done."""

    def __init__(
        self, commit: Callable[[Any], Awaitable[None]], on_error: Callable[[BaseException], None]
    ) -> None:
        self._commit = commit
        self._on_error = on_error
        self._groups: deque[AckGroup] = deque()
        self._latest: Any = None
        self._has_new = asyncio.Event()
        self._committed: Any = None
        self.completed_batches = 0

    def open(self, token: Any) -> AckGroup:
        """Start tracking the next batch read from the source."""
        group = AckGroup(self, token)
        self._groups.append(group)
        return group

    @property
    def in_flight(self) -> int:
        """Batches read but not yet fully written."""
        return len(self._groups)

    def completed(self) -> None:
        groups = self._groups
        advanced = False
        while groups and groups[0].done:
            group = groups.popleft()
            self.completed_batches += 1
            if group.token is not None:
                self._latest = group.token
                advanced = True
        if advanced:
            self._has_new.set()

    async def run(self) -> None:
        """Commit tokens as they become final, newest first wins; runs until cancelled."""
        while True:
            await self._has_new.wait()
            self._has_new.clear()
            await self.flush()

    async def flush(self) -> None:
        """Commit the newest final token now, if it was not committed yet."""
        token = self._latest
        if token is None or token is self._committed:
            return
        try:
            await self._commit(token)
            self._committed = token
        except Exception as exc:  # a failed commit means a repeat after restart, not a loss
            self._on_error(exc)
