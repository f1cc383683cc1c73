"""``sluice simulate coinbase``: serve a local, protocol-faithful Coinbase feed."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import structlog
import typer

from sluice.cli.common import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from sluice.logs import configure_logging

if TYPE_CHECKING:
    from sluice.simulator.advanced.options import AdvancedOptions
    from sluice.simulator.auth import SimulatedKey

simulate_app = typer.Typer(
    name="simulate",
    help="Serve simulated feeds for offline runs, demos and tests.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(simulate_app)


Count = int | None


@simulate_app.command("coinbase")
def coinbase(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 8765,
    mode: Annotated[
        str,
        typer.Option(
            help="replay: frames recorded from the real feed (10 products); "
            "synthetic: an endless generated feed."
        ),
    ] = "replay",
    replay: Annotated[
        Path | None,
        typer.Option(
            help="Replay a tape recorded by a coinbase source's `record:` (a segment file or "
            "its directory) instead of the shipped recording.",
        ),
    ] = None,
    rest: Annotated[
        bool,
        typer.Option(
            help="Also serve the REST trades endpoint (GET /products/ID/trades) on --rest-port.",
        ),
    ] = False,
    rest_port: Annotated[int, typer.Option(help="Port of the REST API (0: any free port).")] = 0,
    rest_requests_per_sec: Annotated[
        float | None, typer.Option(help="REST fault: answer 429 beyond this request rate.")
    ] = None,
    rest_fail_first: Annotated[
        Count, typer.Option(help="REST fault: answer the first N requests with 500.")
    ] = None,
    rest_down: Annotated[
        bool, typer.Option(help="REST fault: answer every request with 503.")
    ] = False,
    speed: Annotated[
        float, typer.Option(help="Replay speed: 1 is the recorded timing, 10 ten times faster.")
    ] = 1.0,
    loop: Annotated[
        bool, typer.Option(help="Replay: start again at the end, with trade ids moved on.")
    ] = True,
    retime: Annotated[
        bool,
        typer.Option(
            help="Replay: move the frames' times to the present (--no-retime: the recorded "
            "frames exactly)."
        ),
    ] = True,
    trades_per_sec: Annotated[
        float, typer.Option(help="Synthetic: trades per second, all products together.")
    ] = 20.0,
    products: Annotated[
        str | None,
        typer.Option(help="Synthetic: comma-separated products (default BTC-USD,ETH-USD,...)."),
    ] = None,
    fast: Annotated[
        bool,
        typer.Option(
            help="Serve pre-encoded tickers in large writes, as fast as the client reads "
            "(benchmarks)."
        ),
    ] = False,
    fast_count: Annotated[
        Count, typer.Option(help="Fast mode: tickers per connection (default endless).")
    ] = None,
    deflate: Annotated[
        bool, typer.Option(help="Accept permessage-deflate when a client offers it.")
    ] = True,
    close_after: Annotated[
        Count, typer.Option(help="Fault: drop the connection (no close frame) after N frames.")
    ] = None,
    stall_after: Annotated[
        Count, typer.Option(help="Fault: after N frames send nothing, keeping the socket open.")
    ] = None,
    garbage_every: Annotated[
        Count, typer.Option(help="Fault: send a non-JSON frame after every Nth frame.")
    ] = None,
    truncate_every: Annotated[
        Count, typer.Option(help="Fault: cut every Nth trade frame short.")
    ] = None,
    skip_every: Annotated[
        Count, typer.Option(help="Fault: leave out every Nth trade frame (a trade-id gap).")
    ] = None,
    repeat_every: Annotated[
        Count, typer.Option(help="Fault: send every Nth trade frame twice.")
    ] = None,
    reorder_every: Annotated[
        Count, typer.Option(help="Fault: send every Nth trade frame after the next one.")
    ] = None,
    slow_consumer_bytes: Annotated[
        Count,
        typer.Option(
            help="Fault: disconnect a client with ErrSlowConsume once N bytes wait unsent."
        ),
    ] = None,
    book_updates_per_sec: Annotated[
        float,
        typer.Option(help="Level-2 updates (and full messages) per second, all products."),
    ] = 20.0,
    skip_sequence_every: Annotated[
        Count,
        typer.Option(
            help="Fault: leave out every Nth sequenced message (Exchange: a full-channel "
            "sequence gap; Advanced Trade: a sequence_num gap)."
        ),
    ] = None,
    cross_book_every: Annotated[
        Count, typer.Option(help="Fault: make every Nth l2update cross the book.")
    ] = None,
    fault_connections: Annotated[
        Count, typer.Option(help="Inject faults into the first N connections only.")
    ] = None,
    api: Annotated[
        str,
        typer.Option(
            help="exchange: the Exchange feed (ws-feed); advanced_trade: the Advanced Trade feed "
            "(advanced-trade-ws)."
        ),
    ] = "exchange",
    jwt_public_key_file: Annotated[
        Path | None,
        typer.Option(
            help="Advanced Trade: PEM public key (EC P-256) that every subscribe's JWT must "
            "verify with."
        ),
    ] = None,
    skip_heartbeat_every: Annotated[
        Count,
        typer.Option(help="Advanced Trade fault: skip a heartbeat_counter value every Nth time."),
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error")] = "info",
) -> None:
    """Serve a local Coinbase Exchange feed on ws://HOST:PORT until interrupted.

    It enforces the 5 s subscribe rule, answers `subscriptions`, refuses unknown channels and
    products with an `error` frame, sends heartbeats once a second per product, and injects the
    faults asked for. Point a `coinbase` source at it with `url: ws://127.0.0.1:8765`.
    With `--api advanced_trade` it speaks Coinbase Advanced Trade instead (one subscribe per
    channel, sequence_num, heartbeat counters, optional JWT check) for a `coinbase_advanced`
    source.
    """
    from sluice.simulator import CoinbaseSimulator, Faults, RestOptions, SimulatorOptions
    from sluice.tape import TapeError

    if mode not in ("replay", "synthetic"):
        typer.echo("error: --mode must be replay or synthetic", err=True)
        raise typer.Exit(EXIT_USAGE)
    if api not in ("exchange", "advanced_trade"):
        typer.echo("error: --api must be exchange or advanced_trade", err=True)
        raise typer.Exit(EXIT_USAGE)
    advanced = _advanced_options(
        api, jwt_public_key_file, skip_sequence_every, skip_heartbeat_every, fast
    )
    if log_level not in ("debug", "info", "warning", "error"):
        typer.echo("error: --log-level must be debug, info, warning or error", err=True)
        raise typer.Exit(EXIT_USAGE)
    counts = {
        "--fast-count": fast_count,
        "--close-after": close_after,
        "--stall-after": stall_after,
        "--garbage-every": garbage_every,
        "--truncate-every": truncate_every,
        "--skip-every": skip_every,
        "--repeat-every": repeat_every,
        "--reorder-every": reorder_every,
        "--slow-consumer-bytes": slow_consumer_bytes,
        "--fault-connections": fault_connections,
        "--skip-sequence-every": skip_sequence_every,
        "--skip-heartbeat-every": skip_heartbeat_every,
        "--cross-book-every": cross_book_every,
        "--rest-fail-first": rest_fail_first,
    }
    for name, value in counts.items():
        if value is not None and value <= 0:
            typer.echo(f"error: {name} must be a positive number", err=True)
            raise typer.Exit(EXIT_USAGE)
    if replay is not None and mode != "replay":
        typer.echo("error: --replay serves a tape: it needs --mode replay", err=True)
        raise typer.Exit(EXIT_USAGE)
    if rest_requests_per_sec is not None and rest_requests_per_sec <= 0:
        typer.echo("error: --rest-requests-per-sec must be positive", err=True)
        raise typer.Exit(EXIT_USAGE)
    if speed <= 0 or trades_per_sec <= 0:
        typer.echo("error: --speed and --trades-per-sec must be positive", err=True)
        raise typer.Exit(EXIT_USAGE)
    configure_logging(log_level)
    options = SimulatorOptions(
        book_updates_per_sec=max(book_updates_per_sec, 0.0),
        credentials=_simulated_key(),
        mode="replay" if mode == "replay" else "synthetic",
        speed=speed,
        loop=loop,
        retime=retime,
        trades_per_sec=trades_per_sec,
        products=tuple(p.strip() for p in products.split(",") if p.strip()) if products else None,
        fast=fast,
        fast_count=fast_count,
        deflate=deflate,
        faults=Faults(
            close_after=close_after,
            stall_after=stall_after,
            garbage_every=garbage_every,
            truncate_every=truncate_every,
            skip_every=skip_every,
            repeat_every=repeat_every,
            reorder_every=reorder_every,
            slow_consumer_bytes=slow_consumer_bytes,
            skip_sequence_every=skip_sequence_every,
            cross_book_every=cross_book_every,
            connections=fault_connections,
        ),
        advanced=advanced,
        rest=RestOptions(
            requests_per_sec=rest_requests_per_sec, fail_first=rest_fail_first or 0, down=rest_down
        )
        if rest
        else None,
        tape=replay,
    )
    try:
        simulator = CoinbaseSimulator(options)
    except TapeError as exc:
        typer.echo(f"error: cannot replay the tape: {exc}", err=True)
        raise typer.Exit(EXIT_FAILURE) from None
    raise typer.Exit(asyncio.run(_serve(simulator, host, port, rest_port)))


def _advanced_options(
    api: str,
    jwt_public_key_file: Path | None,
    skip_sequence_every: Count,
    skip_heartbeat_every: Count,
    fast: bool,
) -> AdvancedOptions | None:
    """The AdvancedOptions of ``--api advanced_trade`` (None for the Exchange feed); exits 2 on
    options that do not fit the API."""
    from sluice.simulator.advanced.options import AdvancedOptions

    given = jwt_public_key_file or skip_heartbeat_every
    if api == "exchange":
        if given:
            typer.echo(
                "error: --jwt-public-key-file and --skip-heartbeat-every need --api advanced_trade",
                err=True,
            )
            raise typer.Exit(EXIT_USAGE)
        return None
    if fast:
        typer.echo("error: --fast serves the Exchange feed only", err=True)
        raise typer.Exit(EXIT_USAGE)
    key = None
    if jwt_public_key_file is not None:
        try:
            key = jwt_public_key_file.read_text()
        except OSError as exc:
            typer.echo(f"error: --jwt-public-key-file: {exc.strerror}", err=True)
            raise typer.Exit(EXIT_USAGE) from None
    return AdvancedOptions(
        jwt_public_key=key,
        skip_sequence_every=skip_sequence_every,
        skip_heartbeat_every=skip_heartbeat_every,
    )


def _simulated_key() -> SimulatedKey | None:
    """The API key signed subscriptions must use: SLUICE_SIMULATOR_KEY, _SECRET (base64) and
    _PASSPHRASE from the environment, when all three are set."""
    import os

    from sluice.simulator.auth import SimulatedKey

    values = [os.environ.get(f"SLUICE_SIMULATOR_{n}") for n in ("KEY", "SECRET", "PASSPHRASE")]
    if not all(values):
        return None
    key, secret, passphrase = values
    assert key and secret and passphrase
    return SimulatedKey(key, secret, passphrase)


async def _serve(simulator: object, host: str, port: int, rest_port: int = 0) -> int:
    from sluice.simulator import CoinbaseSimulator

    assert isinstance(simulator, CoinbaseSimulator)
    log = structlog.get_logger("sluice.simulator")
    try:
        await simulator.start(host, port, rest_port=rest_port)
    except OSError as exc:
        log.error("simulator.listen_failed", host=host, port=port, error=str(exc))
        return EXIT_FAILURE
    options = simulator.options
    log.info(
        "simulator.serving",
        url=simulator.url,
        mode=options.mode,
        api="exchange" if options.advanced is None else "advanced_trade",
        tape=str(options.tape) if options.tape is not None else None,
        rest_url=simulator.rest_url or None,
        fast=options.fast,
        products=list(simulator.market.products),
        faults={k: v for k, v in vars(options.faults).items() if v is not None},
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await simulator.close()
    log.info("simulator.stopped", connections=len(simulator.sessions))
    return EXIT_OK
