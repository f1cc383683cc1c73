"""The acknowledgement ledger: which batches are done, and the commit that follows from it.

This is the one place that counts. Everything else holds :class:`Ticket`s and releases them:

- a :class:`Ledger` is opened per source (its commit is ``Source.commit``) and per disk buffer (its
  commit writes the reader cursor);
- :meth:`Ledger.open` starts an *entry* for one batch (a source batch, or a batch a disk buffer
  hands to its sink) and returns its first ticket, held by whoever opened it;
- :meth:`Ticket.split` makes a child ticket of the same entry: one per sink segment the router hands
  out, one per split of a segment across two sink batches, one per dead-letter hand-off;
- :meth:`Ticket.release` says that piece is finished: written, dead-lettered, dropped by policy,
  durable in a disk buffer, or abandoned at a forced stop. Each ticket is released exactly once;
  a second release raises :class:`TicketReleasedTwice` (a bug: it would commit past an unwritten
  record).

An entry is done when every ticket of it is released; the ledger then commits the token of the
newest entry whose predecessors are all done, in the order they were opened, so a checkpoint never
skips an unwritten record. Counting is per batch, never per record.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["Ledger", "Ticket", "TicketReleasedTwice"]


class TicketReleasedTwice(RuntimeError):
    """A ticket was released a second time: a bug in whoever holds it."""


class _Entry:
    """One batch: its commit token and how many of its tickets are still held."""

    __slots__ = ("done", "ledger", "pending", "token")

    def __init__(self, ledger: Ledger, token: Any) -> None:
        self.ledger = ledger
        self.token = token
        self.pending = 1
        self.done = False


class Ticket:
    """One piece of a batch in flight; released exactly once."""

    __slots__ = ("_entry", "released")

    def __init__(self, entry: _Entry) -> None:
        self._entry = entry
        self.released = False

    @property
    def done(self) -> bool:
        """The whole batch this ticket belongs to is finished (every ticket of it released)."""
        return self._entry.done

    @property
    def pending(self) -> int:
        """Tickets of this batch still held (for tests and introspection)."""
        return self._entry.pending

    @property
    def token(self) -> Any:
        """The commit token of the batch this ticket belongs to."""
        return self._entry.token

    def split(self) -> Ticket:
        """A child ticket for another piece of the same batch (this one stays held)."""
        if self.released:
            raise TicketReleasedTwice("split of a released ticket")
        entry = self._entry
        entry.pending += 1
        return Ticket(entry)

    def release(self) -> None:
        """This piece is finished (written, dead-lettered, dropped or abandoned)."""
        if self.released:
            raise TicketReleasedTwice("ticket released twice")
        self.released = True
        entry = self._entry
        entry.pending -= 1
        if entry.pending == 0:
            entry.done = True
            entry.ledger._completed()


class Ledger:
    """Orders batches and commits the contiguous prefix that is done."""

    def __init__(
        self, commit: Callable[[Any], Awaitable[None]], on_error: Callable[[BaseException], None]
    ) -> None:
        self._commit = commit
        self._on_error = on_error
        self._entries: deque[_Entry] = deque()
        self._latest: Any = None
        self._has_new = asyncio.Event()
        self._committed: Any = None
        self.completed_batches = 0

    def open(self, token: Any) -> Ticket:
        """Start tracking the next batch; the returned ticket is held by the caller."""
        entry = _Entry(self, token)
        self._entries.append(entry)
        return Ticket(entry)

    @property
    def in_flight(self) -> int:
        """Batches opened but not yet finished."""
        return len(self._entries)

    def _completed(self) -> None:
        entries = self._entries
        advanced = False
        while entries and entries[0].done:
            entry = entries.popleft()
            self.completed_batches += 1
            if entry.token is not None:
                self._latest = entry.token
                advanced = True
        if advanced:
            self._has_new.set()

    async def run(self) -> None:
        """Commit tokens as they become final, the newest wins; runs until cancelled."""
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
