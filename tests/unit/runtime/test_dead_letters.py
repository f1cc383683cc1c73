"""The dead-letter envelope: the original input kept, and always one readable line of JSON."""

from __future__ import annotations

import orjson

from sluice.runtime.dead_letters import dead_letter


def _envelope(raw: bytes) -> dict[str, object]:
    record = dead_letter(raw, "why", "cb", "source")
    assert b"\n" not in record.raw
    assert b"\r" not in record.raw
    value: dict[str, object] = orjson.loads(record.raw)
    assert value["reason"] == "why"
    return value


def test_json_input_is_kept_as_it_came() -> None:
    assert _envelope(b'{"a": 1.50}')["record"] == {"a": 1.5}
    assert b'"record":{"a": 1.50}' in dead_letter(b'{"a": 1.50}', "r", "c", "source").raw


def test_line_breaks_between_tokens_become_spaces() -> None:
    raw = b'{\r\n "a": 12345678901234567890\n}'
    assert _envelope(raw)["record"] == {"a": 12345678901234567890}


def test_input_that_is_not_json_is_kept_as_text() -> None:
    assert _envelope(b"not json\n\xff")["raw"] == "not json\n\ufffd"


def test_json_nested_to_the_readers_limit_is_kept_as_text_not_as_an_unreadable_line() -> None:
    deep = b"[" * 1024 + b"]" * 1024  # orjson reads it, but not one level deeper
    assert _envelope(deep)["raw"] == deep.decode()
    wide = b"[" + b",".join([b"{}"] * 1500) + b"]"  # many brackets, shallow: a record
    assert _envelope(wide)["record"] == [{}] * 1500
