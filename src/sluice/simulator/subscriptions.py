"""What one connection is subscribed to, as the feed keeps it across (un)subscribe requests."""

from __future__ import annotations

__all__ = ["Subscriptions"]


class Subscriptions:
    """Channels and their products; ``tickers`` and ``matches`` are the products whose market
    events go out (``ticker_batch`` is served as ``ticker``)."""

    def __init__(self) -> None:
        self.channels: dict[str, list[str]] = {}
        self.tickers: frozenset[str] = frozenset()
        self.matches: frozenset[str] = frozenset()

    def subscribe(self, wanted: dict[str, list[str]]) -> None:
        """Add ``wanted`` (channel -> products), keeping each product once, in order."""
        for name, products in wanted.items():
            merged = self.channels.setdefault(name, [])
            merged += [p for p in products if p not in merged]
        self._update()

    def unsubscribe(self, wanted: dict[str, list[str]]) -> None:
        """Remove ``wanted``'s products; a channel left with none (``status`` has none) is
        dropped."""
        for name, products in wanted.items():
            left = [p for p in self.channels.get(name, []) if p not in products]
            if left:
                self.channels[name] = left
            else:
                self.channels.pop(name, None)
        self._update()

    def _update(self) -> None:
        channels = self.channels
        self.tickers = frozenset(channels.get("ticker", ())) | frozenset(
            channels.get("ticker_batch", ())
        )
        self.matches = frozenset(channels.get("matches", ()))
