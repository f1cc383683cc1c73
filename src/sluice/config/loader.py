"""Turn a YAML file into a validated config, or a :class:`ConfigError` listing every problem.

Steps: safe YAML parse with line tracking and ``${VAR}`` expansion (:mod:`.source_map`), validation
against the config model assembled from the registered plugins (:func:`build_config_model`), then
checks across components (inputs that name no source, two sinks writing one file...). Every problem
carries the YAML path and line; unknown keys and types come with the nearest valid name.
"""

from __future__ import annotations

import difflib
import os
import re
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path as FsPath
from typing import TYPE_CHECKING, Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, Field, SecretStr, ValidationError, create_model

from sluice.config.alerts import ALERT_RULE_TYPES, check_references
from sluice.config.models import (
    ComponentConfig,
    ComponentId,
    PipelineConfigBase,
    SinkConfig,
    SourceConfig,
)
from sluice.config.paths import directory_problem, file_problem
from sluice.config.problems import ConfigError, Path, Problem, format_path
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

DEAD_LETTERS_ID = "dead_letters"
"""The component id of the dead-letter sink (reserved)."""

_SECRET_HINTS = ("password", "secret", "token", "credential")
_URL_CREDENTIALS = re.compile(r"//[^\s@]*@")


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


def _union(models: list[type[ComponentConfig]]) -> Any:
    if len(models) == 1:
        return models[0]
    return Annotated[Union[tuple(models)], Field(discriminator="type")]  # noqa: UP007


def build_config_model(registry: Registry) -> type[PipelineConfigBase]:
    """The model of a whole config for the plugins in ``registry``."""
    return _build_config_model(
        tuple(sorted((n, p.config_model) for n, p in registry.sources.items())),
        tuple(sorted((n, p.config_model) for n, p in registry.sinks.items())),
    )


@cache
def _build_config_model(
    sources: tuple[tuple[str, type[SourceConfig]], ...],
    sinks: tuple[tuple[str, type[SinkConfig]], ...],
) -> type[PipelineConfigBase]:
    source_union = _union([m for _, m in sources])
    sink_union = _union([m for _, m in sinks])
    model: type[PipelineConfigBase] = create_model(
        "SluiceConfig",
        __base__=PipelineConfigBase,
        __doc__="A sluice pipeline: sources, sinks and how the process runs.",
        sources=(
            dict[ComponentId, source_union],  # type: ignore[valid-type]
            Field(description="Components that read records, by id.", min_length=1),
        ),
        sinks=(
            dict[ComponentId, sink_union],  # type: ignore[valid-type]
            Field(description="Components that write records, by id.", min_length=1),
        ),
        dead_letters=(
            sink_union | None,
            Field(
                None,
                description=(
                    "Where records that can never be written go, with their reason. Any sink "
                    "type, without `inputs`; default: a file sink writing "
                    "`<data_dir>/dead_letters.jsonl`."
                ),
            ),
        ),
    )
    return model


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
            problem = _problem_from_error(error, model, registry, source_map, data)
            # a value whose variable was undefined is already reported; skip its knock-on errors
            if error["type"] == "extra_forbidden" or not any(
                problem.path[: len(bad)] == bad for bad in env_paths
            ):
                later.append(problem)
    later += _cross_checks(data, registry, source_map)
    if check_paths:
        later += _path_checks(data, registry, source_map)
    # a key that is not text is reported once; what follows from it (a bad id...) is not
    problems += [
        p for p in later if not any(p.path[: len(bad)] == bad for bad in source_map.bad_keys)
    ]
    if problems or validated is None:
        raise ConfigError(source, problems)
    return LoadedConfig(validated, source_map, source)


def _nearest(word: str, choices: Iterable[str]) -> str:
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def _problem_from_error(
    error: Any,
    model: type[BaseModel],
    registry: Registry,
    source_map: SourceMap,
    data: Any,
) -> Problem:
    kind: str = error["type"]
    path, holder, annotation = _resolve(model, tuple(error["loc"]), data)
    line = source_map.line_of(path)
    if kind == "extra_forbidden":
        key = str(path[-1])
        valid = list(holder.model_fields) if holder is not None else []
        return Problem(path, line, f"unknown key '{key}'{_nearest(key, valid)}")
    if kind == "missing":
        return Problem(path, source_map.line_of(path[:-1]), f"missing required key '{path[-1]}'")
    if kind in ("union_tag_invalid", "union_tag_not_found") and path[:1] == ("alerts",):
        rule_types = ", ".join(ALERT_RULE_TYPES)
        if kind == "union_tag_not_found":
            return Problem(path, line, f"missing required key 'type' (one of: {rule_types})")
        tag = str(error.get("ctx", {}).get("tag", ""))
        type_path = (*path, "type")
        return Problem(
            type_path,
            source_map.line_of(type_path),
            f"unknown alert rule type '{tag}'{_nearest(tag, ALERT_RULE_TYPES)}; "
            f"one of: {rule_types}",
        )
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        is_source = bool(path) and path[0] == "sources"
        plugins = registry.sources if is_source else registry.sinks
        what = "source" if is_source else "sink"
        installed = ", ".join(sorted(plugins))
        if kind == "union_tag_not_found":
            return Problem(path, line, f"missing required key 'type' (one of: {installed})")
        tag = str(error.get("ctx", {}).get("tag", ""))
        type_path = (*path, "type")
        return Problem(
            type_path,
            source_map.line_of(type_path),
            f"unknown {what} type '{tag}'{_nearest(tag, plugins)}; installed: {installed}",
        )
    message = str(error["msg"]).removeprefix("Value error, ")
    secret = annotation is SecretStr or any(h in str(path[-1:]).lower() for h in _SECRET_HINTS)
    value = error.get("input")
    if isinstance(value, str) and _URL_CREDENTIALS.search(value):
        value = _URL_CREDENTIALS.sub("//***@", value)  # never echo a password given in a URL
    if not secret and isinstance(value, str | int | float | bool):
        message += f" (got {value!r})"
    elif not secret and value is not None and kind.endswith("_type"):
        message += f" (got a {type(value).__name__})"
    return Problem(path, line, message)


def _resolve(
    model: type[BaseModel], loc: tuple[Any, ...], data: Any
) -> tuple[Path, type[BaseModel] | None, Any]:
    """Map a pydantic error location onto the document's path.

    Inside a union pydantic adds the discriminator's tag (``sources.gen.generator.rate``) or a
    member's type name (``int``, ``list[str]``) to the location; those are not keys of the document
    and are dropped. Also returns the model that holds the last key (for suggestions) and that key's
    annotation (to keep secrets out of messages).
    """
    path: list[str | int] = []
    annotation: Any = model
    holder: type[BaseModel] | None = None
    field_annotation: Any = None
    node: Any = data
    for part in loc:
        annotation = _strip(annotation)
        members = _union_members(annotation)
        if members:
            tagged = {_type_tag(m): m for m in members if _type_tag(m) is not None}
            if part in tagged and isinstance(node, dict) and node.get("type") == part:
                annotation = tagged[part]
                continue
            non_none = [m for m in members if m is not type(None)]
            if isinstance(part, str) and not (isinstance(node, dict) and part in node):
                annotation = next((m for m in non_none if _type_name(m) == part), None)
                continue  # a member's type name, not a key
            annotation = non_none[0] if len(non_none) == 1 else None
            annotation = _strip(annotation)
        path.append(part)
        child = None
        if isinstance(node, dict):
            child = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            child = node[part]
        node = child
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            holder = annotation
            info = annotation.model_fields.get(str(part))
            field_annotation = info.annotation if info is not None else None
            annotation = field_annotation
        elif get_origin(annotation) is dict:
            annotation = get_args(annotation)[1]
        elif get_origin(annotation) is list:
            annotation = get_args(annotation)[0]
        else:
            annotation = None
    return tuple(path), holder, field_annotation


def _strip(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _union_members(annotation: Any) -> list[Any]:
    if get_origin(annotation) is Union or isinstance(annotation, types.UnionType):
        return [_strip(a) for a in get_args(annotation)]
    return []


def _type_tag(member: Any) -> Any:
    if isinstance(member, type) and issubclass(member, BaseModel):
        info = member.model_fields.get("type")
        args = get_args(info.annotation) if info is not None else ()
        return args[0] if args else None
    return None


def _type_name(member: Any) -> str:
    return getattr(member, "__name__", str(member))


def _cross_checks(data: dict[str, Any], registry: Registry, source_map: SourceMap) -> list[Problem]:
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
                        f"no source named '{source_id}'{_nearest(source_id, sources)}",
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


def _path_checks(data: dict[str, Any], registry: Registry, source_map: SourceMap) -> list[Problem]:
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
