"""The ``sluice`` command. Exit codes: 0 done or stopped cleanly, 1 runtime failure, 2 bad config
or usage."""

from __future__ import annotations

import typer

from sluice.cli import (
    config_commands,
    monitor_command,
    run_commands,
    simulate_command,
    sql_command,
)

app = typer.Typer(
    name="sluice",
    help="Stream records from live sources into storage and keep them flowing.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
run_commands.register(app)
config_commands.register(app)
sql_command.register(app)
monitor_command.register(app)
simulate_command.register(app)


def main() -> None:
    """Console entry point."""
    app()
