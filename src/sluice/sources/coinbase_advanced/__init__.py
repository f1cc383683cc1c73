"""The ``coinbase_advanced`` source: the Coinbase Advanced Trade websocket feed (see
:mod:`.source`)."""

from sluice.sources.coinbase_advanced.config import CoinbaseAdvancedSourceConfig
from sluice.sources.coinbase_advanced.source import CoinbaseAdvancedSource

__all__ = ["CoinbaseAdvancedSource", "CoinbaseAdvancedSourceConfig"]
