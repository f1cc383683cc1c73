"""The ``coinbase`` source: the Coinbase Exchange websocket feed (see :mod:`.source`)."""

from sluice.sources.coinbase.config import CoinbaseSourceConfig
from sluice.sources.coinbase.source import CoinbaseSource

__all__ = ["CoinbaseSource", "CoinbaseSourceConfig"]
