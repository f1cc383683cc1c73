"""Event times of Coinbase frames, read from their text without a ``datetime``.

Coinbase writes every ``time`` in one form, ``2026-11-29T22:15:23.123456Z`` (UTC, six digits of
microseconds). :func:`epoch_seconds` reads that form from fixed offsets, with the minute it
starts with looked up in a small cache, and gives exactly what msgspec's ``datetime`` and its
``timestamp()`` give (the same integer of microseconds divided by 10**6). Any other text, valid
RFC 3339 or not, gives ``None``: the caller then reads the frame with the full spec, whose parser
accepts it or refuses it with the reason every other message gets.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

__all__ = ["epoch_seconds"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_MINUTE_TEXT = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):", re.ASCII)
_minutes: dict[str, int] = {}
"""``YYYY-MM-DDTHH:MM:`` -> microseconds from the epoch to that minute (UTC)."""
_MINUTES_KEPT = 4096
"""The cache is emptied when it holds this many minutes (a live feed needs one or two)."""


def _minute(head: str) -> int | None:
    """Microseconds from the epoch to the minute ``head`` names, or None if it names none."""
    found = _MINUTE_TEXT.fullmatch(head)
    if found is None:
        return None
    year, month, day, hour, minute = map(int, found.groups())
    try:
        when = datetime(year, month, day, hour, minute, tzinfo=UTC)
    except ValueError:  # no such day (2026-02-29), hour or minute; year 0
        return None
    if len(_minutes) >= _MINUTES_KEPT:
        _minutes.clear()
    micros = _minutes[head] = (when - _EPOCH) // _MICROSECOND
    return micros


def epoch_seconds(text: str) -> float | None:
    """Seconds since the epoch (a float, as ``datetime.timestamp()``) of a time written in
    Coinbase's form, ``YYYY-MM-DDTHH:MM:SS.ffffffZ``; None for any other text, including that
    form with a fraction of ``000000`` (msgspec writes such a time back without its fraction,
    so the caller's full path keeps its rows as before)."""
    if len(text) != 27 or text[26] != "Z" or text[19] != ".":
        return None
    head = text[:17]
    base = _minutes.get(head)
    if base is None:
        base = _minute(head)
        if base is None:
            return None
    digits = text[17:19] + text[20:26]  # seconds and microseconds
    if not (digits.isascii() and digits.isdecimal()):
        return None
    micros = int(digits)
    if micros >= 60_000_000 or not micros % 1_000_000:  # a leap second; no fraction
        return None
    return (base + micros) / 1_000_000
