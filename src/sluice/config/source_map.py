"""Safe YAML loading that remembers where each value came from, with environment expansion.

``load_yaml`` returns plain Python data (dicts, lists, scalars) plus a :class:`SourceMap` from each
value's path (``("sinks", "out", "path")``) to its 1-based line, so that every later error can name
the key and the line. String scalars are expanded with :func:`sluice.config.envsubst.expand` as they
are read, so an undefined variable is reported at its own line.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from sluice.config.envsubst import EnvError, expand
from sluice.config.problems import Problem

try:  # libyaml is several times faster; the pure-Python loader gives the same result
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - depends on the PyYAML build
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

Path = tuple[str | int, ...]

__all__ = ["Path", "SourceMap", "format_path", "load_yaml"]


@dataclass
class SourceMap:
    """Line numbers (1-based) of the values and keys of a YAML document."""

    lines: dict[Path, int] = field(default_factory=dict)

    def line_of(self, path: Path) -> int | None:
        """The line of ``path`` or of its nearest ancestor that has one."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return None


def format_path(path: Path) -> str:
    """``("sinks", "out", "inputs", 0)`` -> ``sinks.out.inputs[0]``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "(top level)"


def load_yaml(text: str, environ: Mapping[str, str]) -> tuple[Any, SourceMap, list[Problem]]:
    """Parse one YAML document safely; expand ``${VAR}`` in string values.

    Returns the data, its source map and the problems found (YAML syntax errors, duplicate keys,
    undefined variables). On a syntax error the data is ``None``.
    """
    source_map = SourceMap()
    problems: list[Problem] = []
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problems.append(Problem((), line, f"invalid YAML: {exc.problem or exc}"))
        return None, source_map, problems
    except yaml.YAMLError as exc:
        problems.append(Problem((), None, f"invalid YAML: {exc}"))
        return None, source_map, problems
    finally:
        loader.dispose()
    if node is None:
        return {}, source_map, problems

    def scalar(node: yaml.ScalarNode, path: Path) -> Any:
        value = loader.construct_object(node, deep=True)
        if isinstance(value, str) and "$" in value:
            try:
                return expand(value, environ)
            except EnvError as exc:
                problems.append(Problem(path, node.start_mark.line + 1, str(exc)))
                return None
        return value

    def walk(node: yaml.Node, path: Path) -> Any:
        source_map.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            loader.flatten_mapping(node)
            result: dict[Hashable, Any] = {}
            for key_node, value_node in node.value:
                key = walk_key(key_node)
                key_path = (*path, key) if isinstance(key, str | int) else (*path, str(key))
                if key in result:
                    problems.append(
                        Problem(
                            key_path,
                            key_node.start_mark.line + 1,
                            f"duplicate key '{key}' (first at line {source_map.lines[key_path]})",
                        )
                    )
                    continue
                source_map.lines[key_path] = key_node.start_mark.line + 1
                result[key] = walk(value_node, key_path)
            return result
        if isinstance(node, yaml.SequenceNode):
            return [walk(item, (*path, index)) for index, item in enumerate(node.value)]
        assert isinstance(node, yaml.ScalarNode)
        return scalar(node, path)

    def walk_key(node: yaml.Node) -> Any:
        if isinstance(node, yaml.ScalarNode):
            return loader.construct_object(node, deep=True)
        return str(loader.construct_object(node, deep=True))

    try:
        data = walk(node, ())
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        problems.append(Problem((), line, f"invalid YAML: {exc.problem}"))
        return None, source_map, problems
    return data, source_map, problems
