"""The shape of a dead letter: the original input and why it could not be written.

Each dead letter is a JSON object: ``time`` (when it was rejected, RFC 3339 UTC), ``component_id``
and ``component_kind`` (who rejected it), ``reason``, and either ``record`` (the original JSON,
unchanged) or ``raw`` (the original bytes as text, when they were not valid JSON).
"""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from sluice.records import Record, compact_json, one_line

__all__ = ["DEAD_LETTER_KIND", "dead_letter"]

DEAD_LETTER_KIND = "dead_letter"


def dead_letter(raw: bytes, reason: str, component_id: str, component_kind: str) -> Record:
    """A record for the dead-letter sink wrapping ``raw``."""
    now = datetime.now(UTC)
    envelope: dict[str, object] = {
        "time": now.isoformat(timespec="microseconds").replace("+00:00", "Z"),
        "component_id": component_id,
        "component_kind": component_kind,
        "reason": reason,
    }
    try:
        orjson.loads(raw)
        if len(raw) > 2000 and raw.count(b"[") + raw.count(b"{") > 1000:
            # it may be nested so deep that inside the envelope it would pass orjson's limit
            # (1024 levels) and the dead letter could not be read back: then it is kept as text
            orjson.loads(b'{"record":' + raw + b"}")
    except orjson.JSONDecodeError:
        envelope["raw"] = raw.decode("utf-8", errors="replace")
    else:
        # the JSON as it came, on one line: a line break in it would split the dead letter's line
        envelope["record"] = orjson.Fragment(one_line(raw))
    return Record(compact_json(envelope), DEAD_LETTER_KIND, now.timestamp())
