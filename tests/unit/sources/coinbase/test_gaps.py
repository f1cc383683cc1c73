"""Trade-id bookkeeping: duplicates, out-of-order frames, gaps from trades and heartbeats."""

from __future__ import annotations

from sluice.sources.coinbase.gaps import ACCEPT, DUPLICATE, OUT_OF_ORDER, Gap, Rebaseline, TradeIds


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


def test_a_run_of_increasing_ids_below_the_highest_re_baselines_the_product() -> None:
    ids = TradeIds(frozenset({"A"}), rebaseline_after=3)
    ids.observe("A", 1000)
    assert [ids.observe("A", n) for n in (11, 12)] == [OUT_OF_ORDER, OUT_OF_ORDER]
    assert ids.take_rebaselines() == []
    assert ids.observe("A", 13) == ACCEPT
    assert ids.take_rebaselines() == [Rebaseline("A", 1000, 13, "below", dropped=2)]
    assert [ids.observe("A", n) for n in (14, 15)] == [ACCEPT, ACCEPT]
    assert ids.last("A") == 15
    assert ids.take_gaps() == []


def test_a_run_below_is_broken_by_an_accepted_id_or_a_non_increasing_one() -> None:
    ids = TradeIds(frozenset({"A"}), rebaseline_after=3)
    ids.observe("A", 100)
    assert [ids.observe("A", n) for n in (11, 12)] == [OUT_OF_ORDER] * 2
    assert ids.observe("A", 101) == ACCEPT  # the product moved on: the run was not consecutive
    assert ids.observe("A", 13) == OUT_OF_ORDER
    assert [ids.observe("A", n) for n in (14, 9, 10)] == [OUT_OF_ORDER] * 3  # 9 starts over
    assert ids.take_rebaselines() == []
    assert ids.last("A") == 101


def test_an_id_far_above_the_highest_re_baselines_instead_of_a_huge_gap_and_back() -> None:
    ids = TradeIds(frozenset({"A"}), rebaseline_after=2, max_jump=1000)
    ids.observe("A", 5)
    assert ids.observe("A", 5 + 1000) == ACCEPT  # within the limit: a gap
    assert ids.take_gaps() == [Gap("A", 6, 1004)]
    assert ids.observe("A", 10**18) == ACCEPT
    assert ids.take_gaps() == []
    assert ids.take_rebaselines() == [Rebaseline("A", 1005, 10**18, "jump")]
    # the outlier does not silence the product: the real ids take it back
    assert [ids.observe("A", n) for n in (1006, 1007, 1008)] == [OUT_OF_ORDER, ACCEPT, ACCEPT]
    assert ids.take_rebaselines() == [Rebaseline("A", 10**18, 1007, "below", dropped=1)]
    assert ids.take_gaps() == []


def test_after_a_reconnect_a_first_id_below_the_highest_re_baselines_at_once() -> None:
    ids = TradeIds(frozenset({"A", "B"}))
    ids.observe("A", 500)
    ids.observe("B", 500)
    ids.reconnected()
    assert ids.observe("A", 7) == ACCEPT
    assert ids.take_rebaselines() == [Rebaseline("A", 500, 7, "reconnect")]
    assert ids.observe("B", 500) == DUPLICATE  # Coinbase's latest ticker: nothing missed
    assert ids.observe("B", 499) == OUT_OF_ORDER  # no longer the first on this connection
    assert ids.take_rebaselines() == []


def test_a_first_id_after_a_reconnect_still_reveals_the_gap_across_it() -> None:
    ids = TradeIds(frozenset({"A"}))
    ids.observe("A", 10)
    ids.reconnected()
    assert ids.observe("A", 20) == ACCEPT
    assert ids.take_gaps() == [Gap("A", 11, 19)]
    assert ids.take_rebaselines() == []


def test_a_heartbeat_far_ahead_reports_no_gap() -> None:
    ids = TradeIds(frozenset({"A"}), max_jump=1000)
    ids.observe("A", 10)
    ids.heartbeat("A", 10**15)
    ids.heartbeat("A", 10**15)
    assert ids.take_gaps() == []
    assert ids.last("A") == 10
