"""Benchmark: simulator (fast mode) -> coinbase source -> file sink, beside a hand-written loop.

One simulator process serves pre-encoded tickers in large socket writes (fast mode), each
connection ``--count`` of them. Each run is its own child process, so CPU time and peak RSS are
per run:

- ``drain``: a picows client that only counts frames; its rate is the feed's own rate (what the
  simulator can serve), reported so that the results below can be seen to be the client's;
- ``validating``: a minimal hand-written websocket client -> file loop doing the same job by hand
  (picows, payloads collected in a callback, each decoded with the same msgspec spec, the
  tickers' received bytes appended with one ``os.write`` per wake-up);
- ``raw``: the same loop without looking at the JSON (an upper bound: receive and write only);
- ``pipeline``: the real thing, ``Pipeline.build`` + ``run()`` with the coinbase source (typed
  validation, trade-id tracking, records) and the file sink (batches, writes in a thread).

Rates are tickers written per second, from the first frame to the last write. Runs alternate
(raw, validating, pipeline) ``--runs`` times and the medians are compared, so noise from other work on
the machine falls on both. Usage::

    python benchmarks/coinbase.py [--count 1000000] [--runs 3] [--deflate] [--json]

``--level2``: level-2 book updates (the busiest channel) in one process, no socket: the same
``l2update`` frames (made by the simulator's book market, 2 products) go through the coinbase
source's frame step (``_parse``: decode, book update and crossed/negative checks, one ``level2``
record per change, metrics) and through a validating loop (the same msgspec spec, each price and
size checked to be a plain decimal, the change applied to a dict per side, one JSON row per change),
in batches of 5,000 frames, alternating ``--runs`` times; rates are book changes per second::

    python benchmarks/coinbase.py --level2 [--count 500000] [--runs 5] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import Any

PRODUCTS = ["BTC-USD", "ETH-USD"]
SUBSCRIBE = json.dumps(
    {"type": "subscribe", "channels": [{"name": "ticker", "product_ids": PRODUCTS}]}
).encode()


# -- children -------------------------------------------------------------------------------------


def _usage() -> tuple[float, int]:
    """CPU seconds of this process (all threads) and its peak RSS in KiB.

    Peak RSS is read from /proc (VmHWM, this process only): ``ru_maxrss`` would carry over the
    parent's peak across fork and exec."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak = usage.ru_maxrss
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                peak = int(line.split()[1])
    return usage.ru_utime + usage.ru_stime, peak


OFFER = [("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")]


async def child_drain(url: str, count: int, _: Path, deflate: bool) -> dict[str, Any]:
    from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

    done = asyncio.get_running_loop().create_future()
    state = {"frames": 0, "t0": 0.0}

    class Drain(WSListener):  # type: ignore[misc]
        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type is WSMsgType.TEXT:
                state["frames"] += 1
                if state["frames"] == 2:  # the first ticker (after the subscriptions reply)
                    state["t0"] = time.perf_counter()
                if state["frames"] >= count + 1 and not done.done():
                    done.set_result(time.perf_counter())

    transport, _listener = await ws_connect(
        Drain, url, read_buffer_init_size=256 * 1024, extra_headers=OFFER if deflate else None
    )
    transport.send(WSMsgType.TEXT, SUBSCRIBE)
    t1 = await done
    transport.disconnect()
    return {"records": count, "secs": t1 - state["t0"]}


async def child_baseline(
    url: str, count: int, out: Path, validate: bool, deflate: bool
) -> dict[str, Any]:
    """The hand-written loop. ``validate``: decode each frame with the same typed msgspec spec as
    the source (the job done by hand); else only look at the frame's first bytes."""
    from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

    from sluice.sources.coinbase.protocol import Ticker, decode

    class Collect(WSListener):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.frames: list[bytes] = []
            self.waiter: asyncio.Future[None] | None = None
            self.inflater = zlib.decompressobj(-15)

        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type is WSMsgType.TEXT:
                payload = frame.get_payload_as_bytes()
                if frame.rsv1:
                    payload = self.inflater.decompress(payload + b"\x00\x00\xff\xff")
                self.frames.append(payload)
                if self.waiter is not None and not self.waiter.done():
                    self.waiter.set_result(None)

    transport, listener = await ws_connect(
        Collect, url, read_buffer_init_size=256 * 1024, extra_headers=OFFER if deflate else None
    )
    transport.send(WSMsgType.TEXT, SUBSCRIBE)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    written = 0
    t0 = 0.0
    cpu0 = 0.0
    loop = asyncio.get_running_loop()
    while written < count:
        if not listener.frames:
            listener.waiter = loop.create_future()
            await listener.waiter
            listener.waiter = None
        frames, listener.frames = listener.frames, []
        if validate:
            tickers = [f for f in frames if isinstance(decode(f), Ticker)]
        else:
            tickers = [f for f in frames if f.startswith(b'{"type":"ticker"')]
        if tickers and not t0:
            t0 = time.perf_counter()
            cpu0 = _usage()[0]
        if tickers:
            os.write(fd, b"\n".join(tickers) + b"\n")
            written += len(tickers)
    t1 = time.perf_counter()
    cpu1, rss = _usage()
    os.close(fd)
    transport.disconnect()
    return {"records": written, "secs": t1 - t0, "cpu_secs": cpu1 - cpu0, "peak_rss_kib": rss}


async def child_pipeline(
    url: str,
    count: int,
    out: Path,
    deflate: bool,
    gc_threshold: int | None,
    poll_secs: float = 0.002,
) -> dict[str, Any]:
    from sluice.config.loader import load_config_text
    from sluice.logs import configure_logging
    from sluice.registry import Registry
    from sluice.runtime.pipeline import Pipeline

    configure_logging("warning")
    if gc_threshold is not None:  # an experiment: the process's gen-0 GC threshold
        import gc

        gc.set_threshold(gc_threshold, 20, 20)
    config = f"""
data_dir: {out.parent / "data"}
admin: {{enabled: false}}
sources:
  cb:
    type: coinbase
    url: "{url}"
    products: {json.dumps(PRODUCTS)}
    channels: [ticker]
    compression: {"true" if deflate else "false"}
sinks:
  out:
    type: file
    path: {out}
    inputs: [cb.ticker]
"""
    registry = Registry.from_entry_points()
    pipeline = Pipeline.build(load_config_text(config, registry), registry)
    [source] = pipeline.sources
    sink = pipeline.sink("out")
    assert sink is not None
    # the two counters read directly (prometheus_client's child ``_value``), not through the
    # registry: get_sample_value collects the whole registry (the process collector reads
    # /proc), which every 2 ms cost the measured pipeline a share of its CPU (as in kafka.py)
    received, sent = source.metrics.received_events._value, sink.metrics.sent_events._value
    task = asyncio.create_task(pipeline.run())
    t0 = cpu0 = 0.0
    while True:
        if not t0 and received.get() > 0:
            t0 = time.perf_counter()
            cpu0 = _usage()[0]
        written = sent.get()
        if written >= count:
            break
        if task.done():
            raise RuntimeError(f"pipeline ended early: {task.result()}")
        await asyncio.sleep(poll_secs)
    t1 = time.perf_counter()
    cpu1, rss = _usage()
    pipeline.stop()
    result = await task
    assert result.ok, result
    return {"records": int(written), "secs": t1 - t0, "cpu_secs": cpu1 - cpu0, "peak_rss_kib": rss}


def run_child(
    kind: str,
    url: str,
    count: int,
    out: Path,
    deflate: bool,
    gc_threshold: int | None,
    poll_secs: float = 0.002,
) -> None:
    if kind == "drain":
        result = asyncio.run(child_drain(url, count, out, deflate))
    elif kind == "raw":
        result = asyncio.run(child_baseline(url, count, out, False, deflate))
    elif kind == "validating":
        result = asyncio.run(child_baseline(url, count, out, True, deflate))
    else:
        result = asyncio.run(child_pipeline(url, count, out, deflate, gc_threshold, poll_secs))
    print(json.dumps(result))


# -- the parent -----------------------------------------------------------------------------------


def spawn(
    kind: str, url: str, count: int, out: Path, deflate: bool, gc_threshold: int | None = None
) -> dict[str, Any]:
    args = [sys.executable, __file__, "--child", kind, "--url", url, "--count", str(count)]
    args += ["--out", str(out)] + (["--deflate"] if deflate else [])
    if gc_threshold is not None:
        args += ["--gc-threshold", str(gc_threshold)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} run failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["rate"] = result["records"] / result["secs"]
    if out.exists():
        lines = 0
        with out.open("rb") as written:
            while block := written.read(1 << 20):
                lines += block.count(b"\n")
        assert lines >= count, f"{kind} wrote {lines} lines, expected {count}"
        out.unlink()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--count", type=int, default=1_000_000, help="tickers per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--deflate", action="store_true", help="negotiate permessage-deflate")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--gc-threshold",
        type=int,
        help="experiment: gen-0 GC threshold in the pipeline run (Python's default is 700)",
    )
    parser.add_argument(
        "--level2", action="store_true", help="level-2 updates: source vs validating loop"
    )
    parser.add_argument(
        "--child", choices=["drain", "raw", "validating", "pipeline"], help=argparse.SUPPRESS
    )
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument(
        "--poll-secs",
        type=float,
        default=0.002,
        help=argparse.SUPPRESS,  # the pipeline child's metric polling (0.5 under callgrind)
    )
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.level2:
        level2_main(args.count, args.runs, args.json)
        return
    if args.child:
        run_child(
            args.child,
            args.url,
            args.count,
            args.out,
            args.deflate,
            args.gc_threshold,
            args.poll_secs,
        )
        return

    sim_args = [sys.executable, "-m", "sluice", "simulate", "coinbase", "--mode", "synthetic"]
    sim_args += ["--fast", "--fast-count", str(args.count), "--port", "0"]
    sim_args += ["--products", ",".join(PRODUCTS)] + ([] if args.deflate else ["--no-deflate"])
    simulator = subprocess.Popen(sim_args, stderr=subprocess.PIPE, text=True)
    assert simulator.stderr is not None
    url = ""
    for line in simulator.stderr:
        found = re.search(r"url=(ws://\S+)", line)
        if found:
            url = found.group(1)
            break
    if not url:
        raise SystemExit("the simulator did not start")
    fast_done: list[dict[str, float]] = []

    def read_simulator_log() -> None:
        assert simulator.stderr is not None
        for line in simulator.stderr:
            if "simulator.fast_done" in line:
                fields = dict(re.findall(r"(\w+)=(\S+)", line))
                fast_done.append(
                    {k: float(v) for k, v in fields.items() if k in ("frames", "frames_per_sec")}
                )

    threading.Thread(target=read_simulator_log, daemon=True).start()
    kinds = ("raw", "validating", "pipeline")
    results: dict[str, list[dict[str, Any]]] = {"drain": [], **{k: [] for k in kinds}}
    try:
        with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
            out = Path(tmp) / "out.jsonl"
            results["drain"].append(spawn("drain", url, args.count, out, args.deflate))
            for _ in range(args.runs):
                for kind in kinds:
                    threshold = args.gc_threshold if kind == "pipeline" else None
                    results[kind].append(spawn(kind, url, args.count, out, args.deflate, threshold))
    finally:
        simulator.terminate()
        simulator.wait(10)

    def median(kind: str, key: str) -> float:
        return statistics.median(r[key] for r in results[kind])

    summary: dict[str, Any] = {
        "count": args.count,
        "runs": args.runs,
        "deflate": args.deflate,
        "gc_threshold": args.gc_threshold,
        "feed_rate": median("drain", "rate"),
    }
    for kind in kinds:
        summary[kind] = {
            "rate": median(kind, "rate"),
            "cpu_pct": 100 * median(kind, "cpu_secs") / median(kind, "secs"),
            "peak_rss_mib": median(kind, "peak_rss_kib") / 1024,
        }
    pipeline_rate = summary["pipeline"]["rate"]
    summary["ratio_to_validating"] = pipeline_rate / summary["validating"]["rate"]
    summary["ratio_to_raw"] = pipeline_rate / summary["raw"]["rate"]
    summary["simulator_write_rates"] = [d["frames_per_sec"] for d in fast_done]
    summary["runs_detail"] = results
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    labels = {
        "raw": "raw loop (picows -> file, no JSON)",
        "validating": "validating loop (picows + msgspec spec -> file)",
        "pipeline": "sluice (coinbase source -> file sink)",
    }
    print(
        f"coinbase benchmark: {args.count:,} tickers a run, median of {args.runs} runs, "
        f"deflate={args.deflate}"
    )
    print(
        f"  {'feed (simulator fast mode, counting client)':<50} {summary['feed_rate']:>11,.0f} msg/s"
    )
    for kind in kinds:
        r = summary[kind]
        print(
            f"  {labels[kind]:<50} {r['rate']:>11,.0f} rec/s  cpu {r['cpu_pct']:>3.0f}%"
            f"  peak RSS {r['peak_rss_mib']:>4.0f} MiB"
        )
    print(
        f"  sluice / validating loop: {summary['ratio_to_validating']:.0%} (target >= 50%);"
        f"  sluice / raw loop: {summary['ratio_to_raw']:.0%}"
    )


# -- level 2 --------------------------------------------------------------------------------------


def level2_frames(count: int) -> list[bytes]:
    from sluice.simulator.books import BookMarket

    market = BookMarket(tuple(PRODUCTS), updates_per_sec=1.0)
    snapshots = [market.snapshot_frame(p, time.time()) for p in PRODUCTS]
    frames: list[bytes] = []
    start = time.time()
    while len(frames) < count:
        frames += [e.frame for e in market.step(start) if e.channel == "level2"]
    return snapshots + frames


def _level2_parser() -> Any:
    """The frame step (``_parse``) of a coinbase source subscribed to level 2, outside a run."""
    import structlog

    from sluice.metrics import Metrics
    from sluice.plugin import ComponentContext
    from sluice.sources.coinbase import CoinbaseSource, CoinbaseSourceConfig

    config = CoinbaseSourceConfig.model_validate(
        {
            "products": PRODUCTS,
            "channels": ["level2"],
            "auth": {"key": "k", "secret": "c2VjcmV0", "passphrase": "p"},
        }
    )
    source = CoinbaseSource("cb", config)
    metrics = Metrics()
    source._ctx = ComponentContext(
        "cb",
        "source",
        "coinbase",
        Path(tempfile.gettempdir()),
        structlog.get_logger(),
        metrics.component("cb", "source", "coinbase"),
    )
    source._log = source._ctx.log
    source._books.reconnected()
    return source


def level2_source(frames: list[bytes]) -> tuple[Any, float]:
    """The coinbase source's frame step over ``frames``; (records made, seconds)."""
    from sluice.sources.coinbase.protocol import MAX_DEPTH

    source = _level2_parser()
    parse = source._parse
    made = 0
    # what the connection hands the source with each take (Connection.taken_bytes, taken_short),
    # counted as each frame arrives: made here before the clock starts
    takes = [frames[i : i + 5000] for i in range(0, len(frames), 5000)]
    sizes = [(sum(map(len, take)), max(map(len, take)) <= 2 * MAX_DEPTH) for take in takes]
    t0 = time.perf_counter()
    for take, (nbytes, short) in zip(takes, sizes, strict=True):
        batch = parse(take, nbytes, short)
        made += len(batch.records)
    secs = time.perf_counter() - t0
    assert not source._books.pending, "the benchmark's book must stay consistent"
    return made, secs


def level2_validating(frames: list[bytes], keep: list[bytes] | None = None) -> tuple[int, float]:
    """A hand-written loop doing the same job: decode (same specs), the same checks of each price
    and size (ASCII, a plain decimal), apply to a dict per side, one JSON row per change, the
    same bytes as the source's record (:func:`level2_rows_agree`); ``keep`` gets every row."""
    import msgspec

    from sluice.sources.coinbase.book_protocol import L2Snapshot, L2Update

    decode = msgspec.json.Decoder(L2Snapshot | L2Update).decode
    encode = msgspec.json.encode
    books: dict[str, tuple[dict[float, str], dict[float, str]]] = {}
    rows: list[bytes] = []
    made = 0
    t0 = time.perf_counter()
    for i in range(0, len(frames), 5000):
        rows = []
        for raw in frames[i : i + 5000]:
            message = decode(raw)
            if isinstance(message, L2Snapshot):
                bids, asks = books[message.product_id] = ({}, {})
                for levels, side, book in (
                    (message.bids, "buy", bids),
                    (message.asks, "sell", asks),
                ):
                    for price, size in levels:
                        book[float(price)] = size
                        rows.append(encode((message.product_id, side, price, size, 1)))
                continue
            product = message.product_id
            bids, asks = books[product]
            stamp = encode(message.time).decode()
            for side, price, size in message.changes:
                if not (
                    price.isascii()
                    and size.isascii()
                    and price.replace(".", "", 1).isdigit()
                    and size.replace(".", "", 1).isdigit()
                ):
                    raise ValueError(raw)
                book = bids if side == "buy" else asks
                if float(size) == 0:
                    book.pop(float(price), None)
                else:
                    book[float(price)] = size
                rows.append(
                    f'{{"type":"level2","product_id":"{product}","time":{stamp},"side":"{side}",'
                    f'"price":"{price}","size":"{size}","snapshot":0}}'.encode()
                )
        made += len(rows)
        if keep is not None:
            keep.extend(rows)
    return made, time.perf_counter() - t0


def level2_rows_agree(frames: list[bytes]) -> None:
    """Check, outside the clock, that the loop writes the rows the source's records hold for
    every update (snapshot rows are the loop's own short form: two frames in a run)."""
    rows: list[bytes] = []
    level2_validating(frames, keep=rows)
    records = _level2_parser()._parse(frames).records
    made = [r.raw for r in records if not r.raw.endswith(b'"snapshot":1}')]
    assert [row for row in rows if row[:1] == b"{"] == made, "the loop's rows differ"


def level2_main(count: int, runs: int, as_json: bool) -> None:
    import gc

    frames = level2_frames(count)
    level2_rows_agree(frames[:2000])
    results: dict[str, list[float]] = {"validating": [], "source": []}
    made: dict[str, int] = {}
    for _ in range(runs):
        for kind, run in (("validating", level2_validating), ("source", level2_source)):
            gc.collect()
            records, secs = run(frames)
            made[kind] = records
            results[kind].append(records / secs)
    assert made["source"] == made["validating"], made
    summary = {
        "frames": len(frames),
        "changes": made["source"],
        "runs": runs,
        "validating_rate": statistics.median(results["validating"]),
        "source_rate": statistics.median(results["source"]),
        "rates": results,
    }
    summary["ratio"] = summary["source_rate"] / summary["validating_rate"]
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    print(
        f"level2 benchmark: {len(frames):,} frames ({made['source']:,} book changes), "
        f"median of {runs} runs"
    )
    print(
        f"  {'validating loop (msgspec spec, checks, dict book, rows)':<58} "
        f"{summary['validating_rate']:>11,.0f} changes/s"
    )
    print(
        f"  {'coinbase source frame step (books, checks, records)':<58} "
        f"{summary['source_rate']:>11,.0f} changes/s"
    )
    print(f"  source / validating loop: {summary['ratio']:.0%} (target >= 70%)")


if __name__ == "__main__":
    main()
