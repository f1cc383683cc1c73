"""Checks the component models cannot make on their own: across components (inputs naming no
source, a reserved id, two components claiming one file) and against the filesystem (``data_dir``
and the local paths components declare).

They run on the raw data, so they are reported together with the models' own errors.
"""

from __future__ import annotations

import os
from pathlib import Path as FsPath
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from sluice.config.alerts import check_references
from sluice.config.assembly import DEAD_LETTERS_ID
from sluice.config.models import ComponentConfig, PipelineConfigBase
from sluice.config.paths import directory_problem, file_problem
from sluice.config.problems import Path, Problem, did_you_mean, format_path
from sluice.config.source_map import SourceMap

if TYPE_CHECKING:
    from sluice.registry import Registry

__all__ = ["cross_checks", "path_checks"]


def cross_checks(data: dict[str, Any], registry: Registry, source_map: SourceMap) -> list[Problem]:
    """Checks across components, on the raw data so they run even when a component is invalid."""
    problems: list[Problem] = []
    sources = data.get("sources") if isinstance(data.get("sources"), dict) else {}
    sinks = data.get("sinks") if isinstance(data.get("sinks"), dict) else {}
    assert isinstance(sources, dict)
    assert isinstance(sinks, dict)
    taken: set[str] = set()
    if DEAD_LETTERS_ID in sinks:
        path: Path = ("sinks", DEAD_LETTERS_ID)
        problems.append(
            Problem(path, source_map.line_of(path), f"'{DEAD_LETTERS_ID}' is a reserved id")
        )
    for sink_id, sink in sinks.items():
        if not isinstance(sink, dict):
            continue
        inputs_path: Path = ("sinks", sink_id, "inputs")
        inputs = sink.get("inputs")
        if not inputs:
            problems.append(
                Problem(
                    inputs_path,
                    source_map.line_of(("sinks", sink_id)),
                    "a sink needs 'inputs': the source ids (or source.kind) that feed it",
                )
            )
            continue
        if not isinstance(inputs, list):
            continue  # reported by validation
        for index, reference in enumerate(inputs):
            source_id = str(reference).split(".", 1)[0]
            if source_id not in sources:
                problems.append(
                    Problem(
                        (*inputs_path, index),
                        source_map.line_of((*inputs_path, index)),
                        f"no source named '{source_id}'{did_you_mean(source_id, sources)}",
                    )
                )
            taken.add(source_id)
    for source_id in sources:
        if source_id not in taken:
            path = ("sources", source_id)
            problems.append(
                Problem(path, source_map.line_of(path), "no sink takes this source's records")
            )
    dead_letters = data.get("dead_letters")
    if isinstance(dead_letters, dict) and dead_letters.get("inputs"):
        path = ("dead_letters", "inputs")
        problems.append(
            Problem(path, source_map.line_of(path), "the dead-letter sink takes no inputs")
        )
    problems += _claim_conflicts(data, registry, source_map)
    problems += [Problem(p, source_map.line_of(p), m) for p, m in check_references(data)]
    return problems


def path_checks(data: dict[str, Any], registry: Registry, source_map: SourceMap) -> list[Problem]:
    """Local paths that cannot be what they are used as: a file as ``data_dir``, a directory as a
    file sink's ``path``, a parent that cannot be created."""
    problems: list[Problem] = []
    raw_dir = data.get("data_dir", PipelineConfigBase.model_fields["data_dir"].default)
    if isinstance(raw_dir, str | os.PathLike):
        data_dir = FsPath(raw_dir)
        path: Path = ("data_dir",)
        line = source_map.lines.get(path)
        where = "" if line is not None else f" (default {data_dir})"
        message = directory_problem(data_dir)
        if message is None and not isinstance(data.get("dead_letters"), dict):
            dead_letters = data_dir / "dead_letters.jsonl"
            message = file_problem(dead_letters)
            if message is not None:
                message = f"the default dead-letter file: {message}"
        if message is not None:
            problems.append(Problem(path, line, f"{message}{where}"))
    for component_path, component in _valid_components(data, registry):
        for local in component.local_paths():
            check = file_problem if local.kind == "file" else directory_problem
            message = check(local.path)
            if message is not None:
                key_path = (*component_path, local.field)
                problems.append(Problem(key_path, source_map.line_of(key_path), message))
    return problems


def _valid_components(
    data: dict[str, Any], registry: Registry
) -> list[tuple[Path, ComponentConfig]]:
    """Each component that validates on its own, with its path."""
    found: list[tuple[Path, Any, Any]] = []
    for section, plugins in (("sources", registry.sources), ("sinks", registry.sinks)):
        entries = data.get(section)
        if isinstance(entries, dict):
            found += [((section, i), c, plugins) for i, c in entries.items()]
    if isinstance(data.get("dead_letters"), dict):
        found.append((("dead_letters",), data["dead_letters"], registry.sinks))
    valid: list[tuple[Path, ComponentConfig]] = []
    for path, raw, plugins in found:
        plugin = plugins.get(raw.get("type")) if isinstance(raw, dict) else None
        if plugin is None:
            continue
        try:
            valid.append((path, plugin.config_model.model_validate(raw)))
        except ValidationError:
            continue
    return valid


def _claim_conflicts(
    data: dict[str, Any], registry: Registry, source_map: SourceMap
) -> list[Problem]:
    seen: dict[str, tuple[Path, str]] = {}
    problems: list[Problem] = []
    for path, component in _valid_components(data, registry):
        for claim in component.claims():
            key_path = (*path, claim.field)
            earlier = seen.get(claim.resource)
            if earlier is None or earlier[1] == "read":
                seen[claim.resource] = (key_path, claim.mode)
            if earlier is None or (claim.mode == "read" and earlier[1] == "read"):
                continue
            earlier_path = earlier[0]
            problems.append(
                Problem(
                    key_path,
                    source_map.line_of(key_path),
                    f"{claim.resource} is also used by {format_path(earlier_path)} "
                    f"(line {source_map.line_of(earlier_path)}): one component may write it, "
                    "and none may read what another writes",
                )
            )
    return problems
