"""Replaying a tape (``sluice simulate coinbase --replay TAPE``): the frames a ``coinbase`` source
recorded (:mod:`sluice.tape`), served the way the built-in replay serves the shipped recording.

The tape's trade frames (tickers, matches) become the replay's events at their recorded arrival
times (``speed`` times faster); each product's ``last_match`` and first ticker are what a
subscriber is sent first; heartbeats, ``subscriptions`` replies and status frames are the
simulator's own, as in the built-in replay. With ``retime`` off and no loop the trade frames are
sent byte for byte as they were received.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sluice.simulator.markets import Recording, build_recording
from sluice.tape import KIND_FRAME, TapeError, read_tape

__all__ = ["load_tape"]


def load_tape(path: Path, log: Any = None) -> Recording:
    """The recording of the tape at ``path`` (a segment file or a directory of segments).
    Raises :class:`~sluice.tape.TapeError` (naming the file and offset) for a damaged tape and
    for one with no trade frame."""
    frames = (
        (entry.time, entry.payload) for _, entry in read_tape(path, log) if entry.kind == KIND_FRAME
    )
    try:
        recording = build_recording(frames)
    except ValueError:
        raise TapeError(f"{path}: the tape holds no frame") from None
    if not recording.events and not recording.initial_tickers and not recording.initial_matches:
        raise TapeError(f"{path}: the tape holds no ticker or match frame to replay")
    return recording
