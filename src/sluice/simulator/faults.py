"""The faults one connection injects (:class:`~sluice.simulator.options.Faults`): what happens to
its trade frames, and what follows a data frame sent."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from sluice.simulator.markets import Event
from sluice.simulator.options import Faults

__all__ = ["GARBAGE", "TradeFaults", "fault_after_frame", "garbage_due"]

GARBAGE = b"#garbage: this frame is not JSON"

FrameFault = Literal["slow_consumer", "close_after", "stall_after"]


class TradeFaults:
    """The trade-frame faults of one connection, in the order they apply: skip, reorder,
    truncate, repeat. Counts every trade frame offered (:attr:`count`)."""

    def __init__(self, faults: Faults, record_skipped: bool) -> None:
        self.faults = faults
        self.count = 0
        """Trade frames offered so far (sent or not)."""
        self.skipped: list[bytes] | None = [] if record_skipped else None
        """Every trade frame left out by ``skip_every`` while live, when recording."""
        self._held: Event | None = None

    def send(self, event: Event, live: bool, send: Callable[[bytes], None]) -> None:
        """Pass ``event``'s frame to ``send`` as the faults make it: not at all, later, cut short
        or twice."""
        f = self.faults
        self.count += 1
        n = self.count
        if f.skip_every and n % f.skip_every == 0:
            if self.skipped is not None and live:
                self.skipped.append(event.frame)
            return
        if f.reorder_every:
            held = self._held
            if held is not None:
                self._held = None
                send(event.frame)
                send(held.frame)
                return
            if n % f.reorder_every == 0:
                self._held = event
                return
        frame = event.frame
        if f.truncate_every and n % f.truncate_every == 0:
            frame = frame[: len(frame) // 2]
        send(frame)
        if f.repeat_every and n % f.repeat_every == 0:
            send(frame)


def garbage_due(faults: Faults, sent_frames: int) -> bool:
    """Whether a frame that is not JSON follows the ``sent_frames``-th data frame."""
    every = faults.garbage_every
    return bool(every and sent_frames % every == 0)


def fault_after_frame(
    faults: Faults, sent_frames: int, unsent_bytes: Callable[[], int]
) -> FrameFault | None:
    """The fault the connection suffers once it has sent ``sent_frames`` data frames with
    ``unsent_bytes()`` waiting in its socket buffer, if any: the first that holds of a slow
    consumer, ``close_after`` and ``stall_after``."""
    if faults.slow_consumer_bytes is not None and unsent_bytes() > faults.slow_consumer_bytes:
        return "slow_consumer"
    if faults.close_after is not None and sent_frames >= faults.close_after:
        return "close_after"
    if faults.stall_after is not None and sent_frames >= faults.stall_after:
        return "stall_after"
    return None
