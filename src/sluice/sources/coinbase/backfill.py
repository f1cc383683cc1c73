"""Healing trade-id gaps of the ``matches`` channel over Coinbase's REST API (``backfill:``).

When the source reports a gap of match trade ids (first and last missing id of a product), the
:class:`Backfiller` fetches exactly the missing trades with ``GET /products/{id}/trades``: Coinbase
returns a product's trades newest first, at most 1,000 a page, older than the ``after`` trade-id
cursor; the next page's cursor comes in the ``CB-AFTER`` header. The fetch runs in its own task,
paced at ``requests_per_sec`` and retried with backoff on 429, 5xx and network errors
(:func:`sluice.runtime.retry.retrying`), so a slow or refused REST call never holds the websocket.

Merging by trade id: each open gap keeps the set of ids still missing. A match that arrives late
on the websocket (out of order, inside an open gap) takes its id out of the set and is recorded
as usual; a fetched trade is emitted only if its id is still missing when its batch is built, so
no trade is ever emitted twice, and a gap the websocket closed on its own is not fetched at all
(the fetch waits ``delay_secs`` first, and skips a gap with nothing missing any more). Gaps of one
product due together are fetched in one go (their span within ``max_trades_per_gap``).

What the source emits (:meth:`Backfiller.take`), on the loop, between websocket batches:

- each fetched trade as a ``match`` record, ``{"type": "match", "backfilled": true, "product_id",
  "trade_id", "side", "size", "price", "time"}`` (REST gives no ``sequence`` and no order ids);
- a ``gap_healed`` record once every missing id is filled (``backfilled``: fetched over REST,
  ``websocket``: arrived late on the feed);
- a ``gap_unhealable`` record with its ``reason`` for a gap larger than ``max_trades_per_gap``, or
  whose trades REST no longer (or never) returns (older than its history);
- a ``gap_backfill_failed`` record with the last error when REST kept failing for the retry
  policy's attempts: the gap stays open (nothing more is tried for it).

Counted (per source, labels as every component metric): ``sluice_source_gaps_healed``,
``sluice_source_trades_backfilled``, ``sluice_source_gaps_unhealable``,
``sluice_source_backfill_rest_errors`` (every failed REST call, retried or not).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Literal

import msgspec
from pydantic import Field, field_validator

from sluice.config.models import RetryPolicy, StrictModel
from sluice.errors import RetriableError
from sluice.metrics import ComponentMetrics
from sluice.records import Record, Rejected, SourceBatch
from sluice.runtime.retry import retrying
from sluice.sources.coinbase.backfill_metrics import BackfillMetrics
from sluice.sources.coinbase.gaps import Gap
from sluice.sources.coinbase.protocol import Id

if TYPE_CHECKING:
    import aiohttp  # imported when a Backfiller is made: aiohttp costs ~0.5 s to import

__all__ = [
    "DEFAULT_REST_URL",
    "MAX_PAGE",
    "BackfillConfig",
    "Backfiller",
    "RestTrade",
    "backfilled_json",
]

DEFAULT_REST_URL = "https://api.exchange.coinbase.com"
MAX_PAGE = 1000
"""Most trades Coinbase returns in one page."""


class BackfillConfig(StrictModel):
    """Fetch the trades of a ``matches`` gap over Coinbase's public REST API."""

    enabled: bool = Field(False, description="Heal gaps of the `matches` channel over REST.")
    rest_url: str = Field(
        DEFAULT_REST_URL,
        description="The Exchange's REST API (or a local simulator's, `http://127.0.0.1:PORT`).",
        examples=[DEFAULT_REST_URL],
    )
    max_trades_per_gap: int = Field(
        10_000,
        gt=0,
        description=(
            "A gap of more trades is not fetched (reported `gap_unhealable`): at most 1,000 "
            "trades a request, so this bounds the requests one gap costs."
        ),
    )
    requests_per_sec: float = Field(
        3.0,
        gt=0,
        le=10,
        description=(
            "REST requests per second at most (Coinbase's public limit is 10 per second per IP, "
            "shared with whatever else runs there)."
        ),
    )
    delay_secs: float = Field(
        1.0,
        ge=0,
        description=(
            "Wait this long after a gap is found before fetching it: a trade that arrives late "
            "on the websocket fills its id and is not fetched."
        ),
    )
    timeout_secs: float = Field(10.0, gt=0, description="Longest wait for one REST answer.")
    retry: RetryPolicy = Field(
        default_factory=lambda: RetryPolicy(
            initial_backoff_secs=1.0, max_backoff_secs=30.0, max_attempts=8
        ),
        description=(
            "Retries of a REST request answered 429 or 5xx, or that failed on the network; once "
            "`max_attempts` is spent the gap is reported `gap_backfill_failed` and stays open."
        ),
    )

    @field_validator("rest_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("expected an http:// or https:// URL")
        return value.rstrip("/")


class RestTrade(msgspec.Struct):
    """One trade of ``GET /products/{id}/trades``."""

    trade_id: Id
    price: str
    size: str
    side: Literal["buy", "sell"]
    time: str
    """Kept as REST wrote it (the record carries the same text as the trade's ``match``)."""


_page_decoder = msgspec.json.Decoder(list[msgspec.Raw])
_trade_decoder = msgspec.json.Decoder(RestTrade)


class RestRefused(Exception):
    """REST answered a status that retrying will not change (404, 400...)."""


def backfilled_json(product_id: str, trade: RestTrade) -> bytes:
    """The record of a fetched trade: a ``match`` as the trades table takes it."""
    return msgspec.json.encode(
        {
            "type": "match",
            "backfilled": True,
            "product_id": product_id,
            "trade_id": trade.trade_id,
            "side": trade.side,
            "size": trade.size,
            "price": trade.price,
            "time": trade.time,
        }
    )


def _timestamp(text: str) -> float | None:
    """Unix seconds of an RFC 3339 time with a zone, or None."""
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when.timestamp() if when.tzinfo is not None else None


def _problem(trade: RestTrade) -> str | None:
    if _timestamp(trade.time) is None:
        return f"time is not an RFC 3339 time with a zone: {trade.time[:40]!r}"
    for name in ("price", "size"):
        value = getattr(trade, name)
        try:
            number = Decimal(value)
        except (InvalidOperation, ValueError):
            return f"{name} is not a decimal number: {value[:40]!r}"
        if not number.is_finite():
            return f"{name} is not a finite number: {value[:40]!r}"
    return None


# -- the backfiller ------------------------------------------------------------------------------


@dataclass
class _OpenGap:
    gap: Gap
    detected_at: str
    missing: set[int]
    websocket: int = 0
    """Ids filled by matches that arrived late on the feed."""
    found: float = field(default_factory=time.monotonic)
    """When the gap was reported (monotonic), for ``delay_secs``."""


@dataclass
class _Outcome:
    """What a fetch of one gap gave: trades by id, and why it stopped short (if it did)."""

    open_gap: _OpenGap
    trades: list[tuple[int, bytes, float]] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    unhealable: str | None = None
    failed: str | None = None


class Backfiller:
    """Fetches the trades of each reported gap; see the module docstring.

    The source calls :meth:`gap` for each gap it reports, :meth:`claim` for a late match, and
    :meth:`take` between batches to get what is ready. Everything but the fetch runs on the
    caller's loop without awaiting, so the open gaps need no lock."""

    def __init__(
        self, config: BackfillConfig, log: Any, metrics: ComponentMetrics, user_agent: str
    ) -> None:
        import aiohttp

        self._aiohttp = aiohttp
        self.config = config
        self.log = log
        self.metrics = BackfillMetrics(metrics)
        self._user_agent = user_agent
        self._open: dict[str, list[_OpenGap]] = {}
        self._ready: deque[_Outcome] = deque()
        self._notes: list[Record] = []
        """Records due now (unhealable gaps found on arrival)."""
        self._queue: asyncio.Queue[_OpenGap] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._interval = 1.0 / config.requests_per_sec
        self._next_request = 0.0
        self.in_flight = 0
        """Gaps queued or being fetched."""

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="coinbase-backfill")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- on the source's loop ----------------------------------------------------------------------

    def gap(self, gap: Gap, detected_at: str) -> None:
        """A gap of the matches stream was reported: fetch it (or report it unhealable)."""
        if gap.missed > self.config.max_trades_per_gap:
            self._unhealable(
                _OpenGap(gap, detected_at, set()),
                f"{gap.missed} trades missed, more than max_trades_per_gap "
                f"({self.config.max_trades_per_gap})",
                into=self._notes,
            )
            return
        open_gap = _OpenGap(gap, detected_at, set(range(gap.first, gap.last + 1)))
        self._open.setdefault(gap.product_id, []).append(open_gap)
        self.in_flight += 1
        self._queue.put_nowait(open_gap)

    def claim(self, product_id: str, trade_id: int) -> bool:
        """A match with ``trade_id`` arrived late on the feed: True (it is to be recorded) when
        it fills a missing id of an open gap."""
        for open_gap in self._open.get(product_id, ()):
            if trade_id in open_gap.missing:
                open_gap.missing.discard(trade_id)
                open_gap.websocket += 1
                return True
        return False

    @property
    def ready(self) -> bool:
        return bool(self._ready or self._notes)

    def take(self) -> SourceBatch:
        """The records of the fetches done since the last call (trades still missing only, and
        the gaps' outcomes)."""
        records, self._notes = self._notes, []
        rejected: list[Rejected] = []
        while self._ready:
            outcome = self._ready.popleft()
            open_gap = outcome.open_gap
            rejected += outcome.rejected
            emitted = 0
            for trade_id, raw, timestamp in outcome.trades:
                if trade_id in open_gap.missing:
                    open_gap.missing.discard(trade_id)
                    records.append(Record(raw, "match", timestamp))
                    emitted += 1
            self.metrics.backfilled.inc(emitted)
            self._forget(open_gap)
            self.in_flight -= 1
            if not open_gap.missing:
                self._healed(open_gap, emitted, records)
            elif outcome.failed is not None:
                self._failed(open_gap, outcome.failed, emitted, records)
            else:
                reason = outcome.unhealable or "REST did not return every missing trade"
                self._unhealable(open_gap, reason, into=records, backfilled=emitted)
        return SourceBatch(records, rejected)

    def _forget(self, open_gap: _OpenGap) -> None:
        gaps = self._open.get(open_gap.gap.product_id, [])
        if open_gap in gaps:
            gaps.remove(open_gap)
        if not gaps:
            self._open.pop(open_gap.gap.product_id, None)

    def _fields(self, open_gap: _OpenGap, backfilled: int) -> dict[str, Any]:
        gap = open_gap.gap
        return {
            "product_id": gap.product_id,
            "stream": "matches",
            "first_missing_trade_id": gap.first,
            "last_missing_trade_id": gap.last,
            "missed": gap.missed,
            "backfilled": backfilled,
            "websocket": open_gap.websocket,
            "still_missing": len(open_gap.missing),
            "detected_at": open_gap.detected_at,
        }

    def _healed(self, open_gap: _OpenGap, backfilled: int, records: list[Record]) -> None:
        self.metrics.healed.inc()
        fields = self._fields(open_gap, backfilled)
        self.log.info("coinbase.gap_healed", **fields)
        now = time.time()
        body = {"type": "gap_healed", **fields, "healed_at": _rfc3339(now)}
        records.append(Record(msgspec.json.encode(body), "gap_healed", now))

    def _unhealable(
        self, open_gap: _OpenGap, reason: str, *, into: list[Record], backfilled: int = 0
    ) -> None:
        self.metrics.unhealable.inc()
        fields = self._fields(open_gap, backfilled)
        if not open_gap.missing and backfilled == 0 and open_gap.websocket == 0:
            fields["still_missing"] = open_gap.gap.missed
        self.log.warning("coinbase.gap_unhealable", reason=reason, **fields)
        now = time.time()
        body = {"type": "gap_unhealable", **fields, "reason": reason, "reported_at": _rfc3339(now)}
        into.append(Record(msgspec.json.encode(body), "gap_unhealable", now))

    def _failed(
        self, open_gap: _OpenGap, error: str, backfilled: int, records: list[Record]
    ) -> None:
        fields = self._fields(open_gap, backfilled)
        self.log.warning("coinbase.gap_backfill_failed", error=error, **fields)
        now = time.time()
        body = {
            "type": "gap_backfill_failed",
            **fields,
            "reason": error,
            "reported_at": _rfc3339(now),
        }
        records.append(Record(msgspec.json.encode(body), "gap_backfill_failed", now))

    # -- the fetch task ----------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            wait = first.found + self.config.delay_secs - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            group = [first, *self._due_with(first)]
            shared = _Outcome(first)
            try:
                await self._fetch(shared, group)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a fetch never stops the task (nor the source)
                self.log.exception("coinbase.backfill_error", product_id=first.gap.product_id)
                shared.failed = f"{type(exc).__name__}: {exc}"
            self._ready.extend(_split(shared, group))

    def _due_with(self, first: _OpenGap) -> list[_OpenGap]:
        """The queued gaps of ``first``'s product, due now, that one fetch can take with it
        (their span and first's within ``max_trades_per_gap``): many small gaps cost one
        request, not one each. The others stay queued, in order."""
        taken: list[_OpenGap] = []
        rest: list[_OpenGap] = []
        now = time.monotonic()
        low, high = first.gap.first, first.gap.last
        while not self._queue.empty():
            other = self._queue.get_nowait()
            span = max(high, other.gap.last) - min(low, other.gap.first) + 1
            if (
                other.gap.product_id == first.gap.product_id
                and other.found + self.config.delay_secs <= now
                and span <= self.config.max_trades_per_gap
            ):
                taken.append(other)
                low, high = min(low, other.gap.first), max(high, other.gap.last)
            else:
                rest.append(other)
        for other in rest:
            self._queue.put_nowait(other)
        return taken

    async def _fetch(self, outcome: _Outcome, group: list[_OpenGap]) -> None:
        """Fetch the ids still missing in ``group`` (gaps of one product) into ``outcome``."""
        missing = set().union(*(g.missing for g in group))
        if not missing:
            return  # the websocket closed them meanwhile
        product = group[0].gap.product_id
        low, high = min(missing), max(missing)
        cursor = high + 1
        while cursor > low:
            page = await self._page(product, cursor, min(MAX_PAGE, cursor - low), outcome)
            if page is None:
                return
            trades, next_cursor = page
            if not trades:
                outcome.unhealable = (
                    f"REST returned no trade below id {cursor} (older than its history, or "
                    "not on the exchange)"
                )
                return
            for trade in trades:
                if trade.trade_id in missing:
                    raw = backfilled_json(product, trade)
                    outcome.trades.append((trade.trade_id, raw, _timestamp(trade.time) or 0.0))
            lowest = min(t.trade_id for t in trades)
            following = next_cursor if next_cursor is not None else lowest
            if following >= cursor:  # a cursor that does not move on would loop for ever
                outcome.unhealable = f"REST's CB-AFTER cursor did not move below {cursor}"
                return
            cursor = following

    async def _page(
        self, product: str, after: int, limit: int, outcome: _Outcome
    ) -> tuple[list[RestTrade], int | None] | None:
        """One page older than ``after``, retried; None when the fetch must stop (recorded in
        ``outcome``)."""
        retry = retrying(self.config.retry, self.log, "coinbase.backfill_rest_failed")
        while True:
            await self._pace()
            try:
                return await self._get(product, after, limit, outcome)
            except RestRefused as exc:
                self.metrics.rest_errors.inc()
                outcome.unhealable = str(exc)
                return None
            except (RetriableError, self._aiohttp.ClientError, OSError, TimeoutError) as exc:
                self.metrics.rest_errors.inc()
                if retry.exhausted():
                    outcome.failed = (
                        f"REST failed {retry.attempt + 1} times, last: {exc or type(exc).__name__}"
                    )
                    return None
                delay = retry.failed(exc, product_id=product, after=after)
                await asyncio.sleep(delay)

    async def _pace(self) -> None:
        now = time.monotonic()
        wait = self._next_request - now
        self._next_request = max(now, self._next_request) + self._interval
        if wait > 0:
            await asyncio.sleep(wait)

    async def _get(
        self, product: str, after: int, limit: int, outcome: _Outcome
    ) -> tuple[list[RestTrade], int | None]:
        if self._session is None:
            aiohttp = self._aiohttp
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.config.timeout_secs),
                headers={"User-Agent": self._user_agent, "Accept": "application/json"},
            )
        url = f"{self.config.rest_url}/products/{product}/trades"
        params = {"after": str(after), "limit": str(limit)}
        async with self._session.get(url, params=params) as response:
            body = await response.read()
            status = response.status
            if status == 429 or status >= 500:
                retry_after = response.headers.get("Retry-After")
                hint = float(retry_after) if retry_after and retry_after.isdigit() else None
                raise RetriableError(
                    f"REST {url} answered {status}: {body[:200]!r}", retry_after_secs=hint
                )
            if status != 200:
                raise RestRefused(f"REST {url} answered {status}: {body[:200]!r}")
            cursor_text = response.headers.get("CB-AFTER")
        try:
            items = _page_decoder.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise RetriableError(f"REST {url}: not a JSON list of trades: {exc}") from None
        trades: list[RestTrade] = []
        for item in items:
            try:
                trade = _trade_decoder.decode(item)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                outcome.rejected.append(
                    Rejected(bytes(item), f"REST trade does not match its spec: {exc}")
                )
                continue
            problem = _problem(trade)
            if problem is not None:
                outcome.rejected.append(Rejected(bytes(item), f"REST trade: {problem}"))
                continue
            trades.append(trade)
        cursor = int(cursor_text) if cursor_text and cursor_text.isdigit() else None
        return trades, cursor


def _split(shared: _Outcome, group: list[_OpenGap]) -> list[_Outcome]:
    """One outcome per gap of a fetch: its trades (oldest first), the fetch's stop reason, and
    why it is short when REST simply did not return some of its ids."""
    outcomes: list[_Outcome] = []
    for index, open_gap in enumerate(group):
        gap = open_gap.gap
        trades = sorted(t for t in shared.trades if gap.first <= t[0] <= gap.last)
        outcome = _Outcome(
            open_gap,
            trades,
            shared.rejected if index == 0 else [],
            shared.unhealable,
            shared.failed,
        )
        lacking = open_gap.missing - {t[0] for t in trades}
        if lacking and outcome.unhealable is None and outcome.failed is None:
            outcome.unhealable = (
                f"REST did not return {len(lacking)} of the missing trade ids (first "
                f"{min(lacking)}): trades it does not have"
            )
        outcomes.append(outcome)
    return outcomes


def _rfc3339(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
