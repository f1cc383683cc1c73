"""Shared by the CLI commands: loading the registry and a config, reporting problems."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from sluice.config import ConfigError, LoadedConfig, load_config
from sluice.registry import PluginLoadError, Registry

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def load_registry() -> Registry:
    try:
        return Registry.from_entry_points()
    except PluginLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(EXIT_FAILURE) from exc


def load_or_exit(path: Path, registry: Registry, *, check_paths: bool = True) -> LoadedConfig:
    """The validated config, or exit 2 with every problem on stderr. ``check_paths=False`` for a
    command that only reads (it may run as a user who cannot write the pipeline's files)."""
    try:
        return load_config(path, registry, check_paths=check_paths)
    except ConfigError as exc:
        print(f"error: {exc.render()}", file=sys.stderr)
        raise typer.Exit(EXIT_USAGE) from exc
