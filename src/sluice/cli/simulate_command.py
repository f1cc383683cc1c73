"""``sluice simulate coinbase``: serve a local, protocol-faithful Coinbase feed."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Annotated

import structlog
import typer

from sluice.cli.common import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from sluice.logs import configure_logging

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
    fault_connections: Annotated[
        Count, typer.Option(help="Inject faults into the first N connections only.")
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error")] = "info",
) -> None:
    """Serve a local Coinbase Exchange feed on ws://HOST:PORT until interrupted.

    It enforces the 5 s subscribe rule, answers `subscriptions`, refuses unknown channels and
    products with an `error` frame, sends heartbeats once a second per product, and injects the
    faults asked for. Point a `coinbase` source at it with `url: ws://127.0.0.1:8765`.
    """
    from sluice.simulator import CoinbaseSimulator, Faults, RestOptions, SimulatorOptions
    from sluice.tape import TapeError

    if mode not in ("replay", "synthetic"):
        typer.echo("error: --mode must be replay or synthetic", err=True)
        raise typer.Exit(EXIT_USAGE)
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
            connections=fault_connections,
        ),
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
