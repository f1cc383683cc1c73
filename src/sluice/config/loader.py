"""Turn a YAML file into a validated config, or a :class:`ConfigError` listing every problem.

Steps: safe YAML parse with line tracking and ``${VAR}`` expansion (:mod:`.source_map`), validation
against the config model assembled from the registered plugins (:mod:`.assembly`), its errors
translated into problems on the document's keys and lines (:mod:`.pydantic_errors`), then the
checks across components and of local paths (:mod:`.cross_checks`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from sluice.config.assembly import DEAD_LETTERS_ID, build_config_model
from sluice.config.cross_checks import cross_checks, path_checks
from sluice.config.models import SinkConfig, SourceConfig
from sluice.config.problems import ConfigError, Problem
from sluice.config.pydantic_errors import problem_from_error
from sluice.config.source_map import SourceMap, load_yaml

if TYPE_CHECKING:
    from sluice.registry import Registry

__all__ = [
    "DEAD_LETTERS_ID",
    "LoadedConfig",
    "build_config_model",
    "load_config",
    "load_config_text",
]


@dataclass
class LoadedConfig:
    """A validated config and where its values came from."""

    model: Any
    """An instance of the model from :func:`build_config_model` (a ``PipelineConfigBase``)."""
    source_map: SourceMap
    source: str

    @property
    def sources(self) -> dict[str, SourceConfig]:
        return dict(self.model.sources)

    @property
    def sinks(self) -> dict[str, SinkConfig]:
        return dict(self.model.sinks)


def load_config(
    path: str | os.PathLike[str],
    registry: Registry,
    environ: Mapping[str, str] | None = None,
    *,
    check_paths: bool = True,
) -> LoadedConfig:
    """Read and validate the config file at ``path``; raise :class:`ConfigError`
    (``check_paths``: see :func:`load_config_text`)."""
    name = os.fspath(path)
    try:
        text = FsPath(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(name, [Problem((), None, f"cannot read the file: {exc}")]) from exc
    return load_config_text(text, registry, environ, source=name, check_paths=check_paths)


def load_config_text(
    text: str,
    registry: Registry,
    environ: Mapping[str, str] | None = None,
    source: str = "<config>",
    *,
    check_paths: bool = True,
) -> LoadedConfig:
    """Validate config ``text``; raise :class:`ConfigError` with every problem found.

    With ``check_paths`` the local paths the config names (``data_dir``, a file sink's ``path``)
    are also checked against the filesystem as it is now: they must be (or be creatable as) what
    they are used as.
    """
    env = os.environ if environ is None else environ
    data, source_map, problems = load_yaml(text, env)
    if data is None:
        raise ConfigError(source, problems)
    if not isinstance(data, dict):
        raise ConfigError(source, [Problem((), 1, "the config must be a mapping of keys")])
    env_paths = [p.path for p in problems]
    model = build_config_model(registry)
    later: list[Problem] = []
    try:
        validated = model.model_validate(data)
    except ValidationError as exc:
        validated = None
        for error in exc.errors(include_url=False):
            problem = problem_from_error(error, model, registry, source_map, data)
            # a value whose variable was undefined is already reported; skip its knock-on errors
            if error["type"] == "extra_forbidden" or not any(
                problem.path[: len(bad)] == bad for bad in env_paths
            ):
                later.append(problem)
    later += cross_checks(data, registry, source_map)
    if check_paths:
        later += path_checks(data, registry, source_map)
    # a key that is not text is reported once; what follows from it (a bad id...) is not
    problems += [
        p for p in later if not any(p.path[: len(bad)] == bad for bad in source_map.bad_keys)
    ]
    if problems or validated is None:
        raise ConfigError(source, problems)
    return LoadedConfig(validated, source_map, source)
