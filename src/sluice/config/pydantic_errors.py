r"""Pydantic's validation errors as :class:`~sluice.config.problems.Problem`\ s: each on the key
and line of the document it is about, unknown keys and types with the nearest valid name, and no
secret echoed back."""

from __future__ import annotations

import re
import types
from typing import TYPE_CHECKING, Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr

from sluice.config.alerts import ALERT_RULE_TYPES
from sluice.config.problems import Path, Problem, did_you_mean
from sluice.config.source_map import SourceMap

if TYPE_CHECKING:
    from sluice.registry import Registry

__all__ = ["problem_from_error"]

_SECRET_HINTS = ("password", "secret", "token", "credential")
_URL_CREDENTIALS = re.compile(r"//[^\s@]*@")


def problem_from_error(
    error: Any,
    model: type[BaseModel],
    registry: Registry,
    source_map: SourceMap,
    data: Any,
) -> Problem:
    """The problem one error of ``model.model_validate(data)`` describes."""
    kind: str = error["type"]
    path, holder, annotation = _resolve(model, tuple(error["loc"]), data)
    line = source_map.line_of(path)
    if kind == "extra_forbidden":
        key = str(path[-1])
        valid = list(holder.model_fields) if holder is not None else []
        return Problem(path, line, f"unknown key '{key}'{did_you_mean(key, valid)}")
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
            f"unknown alert rule type '{tag}'{did_you_mean(tag, ALERT_RULE_TYPES)}; "
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
            f"unknown {what} type '{tag}'{did_you_mean(tag, plugins)}; installed: {installed}",
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
