"""Structured logs on stderr: key=value lines for people, or one JSON object a line.

Every notable event is one line with an event name (``sink.write.retrying``) and fields. Secrets are
never passed to a logger; as a second line of defence, values of keys that look secret are masked.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, Literal

import orjson
import structlog

__all__ = ["configure_logging"]

_SECRET_KEYS = ("password", "secret", "token", "authorization", "credential")


def _mask_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if any(s in key.lower() for s in _SECRET_KEYS):
            event[key] = "***"
    return event


def _value_text(value: Any) -> str:
    if isinstance(value, list | tuple | set):
        return _value_text(",".join(str(v) for v in value))
    text = str(value)
    if not text or any(c in text for c in ' ="\n'):
        return orjson.dumps(text).decode()
    return text


def _render_text(_: Any, __: str, event: MutableMapping[str, Any]) -> str:
    """``2026-11-27T22:44:42.586Z info  sink.started component_id=out …``"""
    timestamp = str(event.pop("timestamp", ""))
    level = str(event.pop("level", ""))
    name = str(event.pop("event", ""))
    exc = event.pop("exception", None)
    fields = " ".join(f"{key}={_value_text(value)}" for key, value in event.items())
    line = f"{timestamp} {level:<7} {name} {fields}".rstrip()
    return f"{line}\n{exc}" if exc else line


class _SafeWriter:
    """Writes log lines; a closed or broken stream drops them instead of raising into the
    pipeline (a log reader going away must not stop the data)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def msg(self, message: str) -> None:
        try:
            self._stream.write(message + "\n")
            self._stream.flush()
        except (OSError, ValueError):
            pass

    log = debug = info = warning = warn = error = critical = exception = failure = msg


def _json_dumps(data: Any, **_: Any) -> str:
    return orjson.dumps(data, default=str).decode()


def configure_logging(
    level: str = "info", fmt: Literal["text", "json"] = "text", stream: Any = None
) -> None:
    """Set up structlog for the process (idempotent)."""
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(serializer=_json_dumps)
    else:
        renderer = _render_text
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="%Y-%m-%dT%H:%M:%S.%fZ", utc=True),
            _mask_secrets,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=lambda *_: _SafeWriter(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
