"""``sluice check``, ``sluice schema`` and ``sluice plugins``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Literal

import orjson
import typer
from rich.console import Console
from rich.table import Table

from sluice.cli.common import load_or_exit, load_registry
from sluice.config.reference import (
    builtin_registry,
    config_json_schema,
    config_reference_markdown,
)


def register(app: typer.Typer) -> None:
    app.command()(check)
    app.command()(schema)
    app.command()(plugins)


def check(config: Annotated[Path, typer.Argument(help="The pipeline's YAML file.")]) -> None:
    """Validate CONFIG without starting anything: exit 0, or 2 listing every problem."""
    loaded = load_or_exit(config, load_registry())
    model = loaded.model
    print(
        f"{config}: ok ({len(model.sources)} source(s): {', '.join(model.sources)}; "
        f"{len(model.sinks)} sink(s): {', '.join(model.sinks)})"
    )


def schema(
    format: Annotated[
        str, typer.Option("--format", help="json (JSON Schema) or markdown (the reference)")
    ] = "json",
    builtin_only: Annotated[
        bool, typer.Option("--builtin-only", help="Leave out plugins from other packages.")
    ] = False,
) -> None:
    """Print the JSON Schema of a config (for editors), built from the installed plugins."""
    registry = load_registry()
    if builtin_only:
        registry = builtin_registry(registry)
    fmt: Literal["json", "markdown"]
    if format == "json":
        fmt = "json"
    elif format == "markdown":
        fmt = "markdown"
    else:
        print("error: --format must be json or markdown", file=sys.stderr)
        raise typer.Exit(2)
    if fmt == "json":
        sys.stdout.write(
            orjson.dumps(config_json_schema(registry), option=orjson.OPT_INDENT_2).decode() + "\n"
        )
    else:
        sys.stdout.write(config_reference_markdown(registry))


def plugins() -> None:
    """List every registered source and sink with its delivery guarantee and description."""
    registry = load_registry()
    table = Table(box=None, pad_edge=False)
    for column in ("kind", "type", "delivery", "description", "package"):
        table.add_column(column)
    for kind, entries in (("source", registry.sources), ("sink", registry.sinks)):
        for name in sorted(entries):
            origin = registry.origins.get((kind, name), "?")  # type: ignore[arg-type]
            plugin = entries[name]
            table.add_row(kind, name, plugin.delivery, plugin.description, origin)
    Console(width=160).print(table)
