"""The coinbase source's config: what loads, and the words of what does not."""

from __future__ import annotations

import pytest

from sluice.config import ConfigError
from sluice.config.loader import load_config_text
from sluice.registry import Registry

BASE = """
sources:
  cb:
    type: coinbase
{source}
sinks:
  out: {{type: file, path: /tmp/never-written.jsonl, inputs: [cb]}}
"""


def _load(source: str) -> object:
    return load_config_text(BASE.format(source=source), Registry.from_entry_points())


def test_defaults_subscribe_to_ticker_and_heartbeat_with_full_jitter_reconnects() -> None:
    loaded = _load("    products: [BTC-USD, ETH-USD]")
    config = loaded.model.sources["cb"]  # type: ignore[attr-defined]
    assert config.url == "wss://ws-feed.exchange.coinbase.com"
    assert config.subscription() == {
        "ticker": ["BTC-USD", "ETH-USD"],
        "heartbeat": ["BTC-USD", "ETH-USD"],
    }
    assert config.reconnect.jitter == "full"
    assert config.reconnect.initial_backoff_secs >= 1.0


def test_channel_objects_carry_their_own_products_and_status_none() -> None:
    loaded = _load(
        "    products: [BTC-USD]\n"
        "    channels: [heartbeat, {name: matches, product_ids: [ETH-USD]}, status]"
    )
    config = loaded.model.sources["cb"]  # type: ignore[attr-defined]
    assert config.subscription() == {
        "heartbeat": ["BTC-USD"],
        "matches": ["ETH-USD"],
        "status": [],
    }


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("    products: [BTC-USD]\n    channels: [level2]", ["level2", "authenticat"]),
        ("    products: [BTC-USD]\n    channels: [full]", ["full", "authenticat"]),
        ("    products: []", ["products"]),
        ("    products: [btcusd]", ["btcusd", "product id"]),
        ("    products: [BTC-USD]\n    url: http://x", ["ws://"]),
        ("    products: [BTC-USD]\n    stale_after: 3", ["stale_after_secs"]),
        ("    channels: [ticker]", ["products"]),
    ],
)
def test_bad_configs_are_refused_with_words_that_say_why(source: str, words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        _load(source)
    text = info.value.render()
    for word in words:
        assert word in text
