"""Trade-id bookkeeping: duplicates, out-of-order frames, gaps from trades and heartbeats."""

from __future__ import annotations

from sluice.sources.coinbase.gaps import ACCEPT, DUPLICATE, OUT_OF_ORDER, Gap, TradeIds


def test_consecutive_ids_are_accepted_without_gaps() -> None:
    ids = TradeIds(frozenset({"A"}))
    assert [ids.observe("A", n) for n in (5, 6, 7)] == [ACCEPT] * 3
    assert ids.take_gaps() == []


def test_a_jump_is_a_gap_of_the_ids_in_between() -> None:
    ids = TradeIds(frozenset({"A"}))
    ids.observe("A", 5)
    assert ids.observe("A", 9) == ACCEPT
    assert ids.take_gaps() == [Gap("A", 6, 8)]
    assert Gap("A", 6, 8).missed == 3


def test_repeated_and_smaller_ids_are_duplicates_and_out_of_order() -> None:
    ids = TradeIds(frozenset({"A"}))
    ids.observe("A", 5)
    ids.observe("A", 7)
    assert ids.observe("A", 7) == DUPLICATE
    assert ids.observe("A", 6) == OUT_OF_ORDER
    assert ids.last("A") == 7


def test_products_are_followed_separately_and_untracked_ones_only_deduplicated() -> None:
    ids = TradeIds(frozenset({"A"}))
    ids.observe("A", 1)
    ids.observe("B", 100)
    ids.observe("B", 200)
    assert ids.observe("B", 150) == OUT_OF_ORDER
    assert ids.take_gaps() == []


def test_a_heartbeat_ahead_reports_a_gap_only_when_the_next_one_still_is() -> None:
    ids = TradeIds(frozenset({"A"}))
    ids.observe("A", 10)
    ids.heartbeat("A", 12)
    assert ids.take_gaps() == []  # the trades may still be on their way
    ids.observe("A", 11)
    ids.observe("A", 12)
    ids.heartbeat("A", 12)
    assert ids.take_gaps() == []
    ids.heartbeat("A", 15)
    ids.heartbeat("A", 15)
    assert ids.take_gaps() == [Gap("A", 13, 15)]
    assert ids.observe("A", 15) == DUPLICATE
    assert ids.observe("A", 16) == ACCEPT


def test_a_heartbeat_before_any_trade_sets_no_baseline() -> None:
    ids = TradeIds(frozenset({"A"}))
    ids.heartbeat("A", 50)
    ids.heartbeat("A", 50)
    assert ids.observe("A", 50) == ACCEPT
    assert ids.take_gaps() == []
