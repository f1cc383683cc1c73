"""`backfill:` and `record:` on the coinbase source: defaults, and the words of what does not
load (table-driven)."""

from __future__ import annotations

import pytest

from sluice.config import ConfigError
from sluice.config.loader import load_config_text
from sluice.registry import Registry

BASE = """
sources:
  cb:
    type: coinbase
    products: [BTC-USD]
{source}
sinks:
  out: {{type: file, path: /tmp/never-written.jsonl, inputs: [cb]}}
"""


def _load(source: str) -> object:
    return load_config_text(BASE.format(source=source), Registry.from_entry_points())


def test_backfill_is_off_by_default_and_points_at_the_public_rest_api() -> None:
    config = _load("    channels: [matches]").model.sources["cb"]  # type: ignore[attr-defined]
    assert config.backfill.enabled is False
    assert config.backfill.rest_url == "https://api.exchange.coinbase.com"
    assert 0 < config.backfill.requests_per_sec <= 10
    assert config.record is None


@pytest.mark.parametrize(
    ("source", "words"),
    [
        (
            "    channels: [ticker, heartbeat]\n    backfill: {enabled: true}",
            ["line 3: sources.cb", "backfill heals gaps of the `matches` channel", "tickers"],
        ),
        (
            "    channels: [matches]\n    gap_detection: ticker\n    backfill: {enabled: true}",
            ["set gap_detection to `matches` or `auto`"],
        ),
        (
            "    channels: [matches]\n    backfill: {enabled: true, requests_per_sec: 50}",
            ["sources.cb.backfill.requests_per_sec", "less than or equal to 10"],
        ),
        (
            "    channels: [matches]\n    backfill: {enabled: true, rest_url: ftp://x}",
            ["sources.cb.backfill.rest_url", "http:// or https://"],
        ),
        (
            "    channels: [matches]\n    backfill: {enabled: true, max_trades_per_gapp: 5}",
            ["max_trades_per_gapp", "max_trades_per_gap"],
        ),
        (
            "    record: {path: /tmp/tape, prefix: 'a/b'}",
            ["sources.cb.record.prefix"],
        ),
    ],
)
def test_bad_backfill_and_record_settings_name_the_key(source: str, words: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(source)
    message = caught.value.render()
    for word in words:
        assert word in message, message
