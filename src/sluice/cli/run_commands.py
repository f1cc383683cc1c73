"""``sluice run CONFIG`` and its original name, ``sluice listen --config CONFIG``."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import structlog
import typer

from sluice.cli.common import EXIT_FAILURE, EXIT_OK, load_or_exit, load_registry
from sluice.config import LoadedConfig
from sluice.logs import configure_logging
from sluice.metrics import Metrics
from sluice.observability.service import Observability
from sluice.registry import Registry
from sluice.runtime.pipeline import Pipeline

LogFormat = Annotated[
    str | None, typer.Option("--log-format", help="text or json (overrides log.format)")
]
LogLevel = Annotated[str | None, typer.Option("--log-level", help="debug, info, warning or error")]


def register(app: typer.Typer) -> None:
    app.command()(run)
    app.command(help="Run a pipeline (the original demo's command; same as `sluice run`).")(listen)


def run(
    config: Annotated[Path, typer.Argument(help="The pipeline's YAML file.")],
    log_format: LogFormat = None,
    log_level: LogLevel = None,
) -> None:
    """Run the pipeline in CONFIG until its sources end or it is stopped (SIGINT/SIGTERM)."""
    registry = load_registry()
    loaded = load_or_exit(config, registry)
    raise typer.Exit(run_pipeline(loaded, registry, log_format, log_level))


def listen(
    config: Annotated[Path, typer.Option("--config", "-c", help="The pipeline's YAML file.")],
    log_format: LogFormat = None,
    log_level: LogLevel = None,
) -> None:
    run(config, log_format, log_level)


def run_pipeline(
    loaded: LoadedConfig,
    registry: Registry,
    log_format: str | None = None,
    log_level: str | None = None,
) -> int:
    """Run to the end; returns the exit code."""
    log_config = loaded.model.log
    fmt = log_format or log_config.format
    if fmt not in ("text", "json"):
        print("error: --log-format must be text or json", file=sys.stderr)
        return 2
    configure_logging(log_level or log_config.level, "json" if fmt == "json" else "text")
    metrics = Metrics(enabled=loaded.model.admin.metrics)
    pipeline = Pipeline.build(loaded, registry, metrics)
    return asyncio.run(_run(pipeline, loaded))


async def _run(pipeline: Pipeline, loaded: LoadedConfig) -> int:
    log = structlog.get_logger("sluice")
    loop = asyncio.get_running_loop()
    signals_seen = 0

    def on_signal(signum: int) -> None:
        nonlocal signals_seen
        signals_seen += 1
        name = signal.Signals(signum).name
        if signals_seen == 1:
            pipeline.stop(f"{name} received")
            return
        unwritten = pipeline.unwritten()
        log.error("pipeline.forced_exit", signal=name, unwritten_records=unwritten)
        sys.stderr.flush()
        os._exit(EXIT_FAILURE)

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)

    admin_config: Any = loaded.model.admin
    observability = Observability(pipeline, loaded.model)
    try:
        await observability.start()
    except OSError as exc:
        log.error("admin.bind_failed", listen=admin_config.listen, error=str(exc))
        return EXIT_FAILURE
    try:
        result = await pipeline.run()
    finally:
        await observability.close()
    if not result.ok:
        log.error("pipeline.failed", error=result.error)
        return EXIT_FAILURE
    return EXIT_OK
