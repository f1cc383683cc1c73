"""Safe YAML loading that remembers where each value came from, with environment expansion.

``load_yaml`` returns plain Python data (dicts, lists, scalars) plus a :class:`SourceMap` from each
value's path (``("sinks", "out", "path")``) to its 1-based line, so that every later error can name
the key and the line. String scalars are expanded with :func:`sluice.config.envsubst.expand` as they
are read, so an undefined variable is reported at its own line.

Anchors, aliases and merge keys work as YAML 1.1 defines them: ``<<: *defaults`` (or
``<<: [*a, *b]``) brings in the keys of the mappings named, the mapping's own keys win over merged
ones, and among several merged mappings the first one that has a key wins. A merged key's line is
the line where it is written (in the anchored mapping). Since aliases let a small file stand for a
huge document, the document is measured before it is expanded: a recursive alias, nesting deeper
than :data:`MAX_DEPTH` or more than :data:`MAX_NODES` values once aliases are expanded (an "alias
bomb") are refused with the line, as is more than :data:`MAX_TEXT_CHARS` characters of strings.

Top-level keys starting with ``x-`` are not read (as in Docker Compose): a home for anchors.
"""

from __future__ import annotations

import datetime
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from sluice.config.envsubst import EnvError, expand
from sluice.config.problems import Path, Problem

try:  # libyaml is several times faster; the pure-Python loader gives the same result
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - depends on the PyYAML build
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

__all__ = [
    "IGNORED_PREFIX",
    "MAX_DEPTH",
    "MAX_NODES",
    "MAX_TEXT_CHARS",
    "SourceMap",
    "load_yaml",
]

MAX_NODES = 100_000
"""Values (mappings, lists, keys, scalars) a document may hold once its aliases are expanded."""
MAX_DEPTH = 64
"""Levels of nesting a document may have."""
MAX_TEXT_CHARS = 16 * 1024 * 1024
"""Characters of string values a document may hold once aliases and ``${VAR}`` are expanded."""

_MERGE_TAG = "tag:yaml.org,2002:merge"
IGNORED_PREFIX = "x-"
"""Top-level keys starting with this are skipped: a place for anchors shared by components."""


@dataclass
class SourceMap:
    """Line numbers (1-based) of the values and keys of a YAML document."""

    lines: dict[Path, int] = field(default_factory=dict)
    bad_keys: set[Path] = field(default_factory=set)
    """Paths whose key is not text (``1:``, ``true:``): reported once; what follows from it is not."""

    def line_of(self, path: Path) -> int | None:
        """The line of ``path`` or of its nearest ancestor that has one."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return None


def load_yaml(text: str, environ: Mapping[str, str]) -> tuple[Any, SourceMap, list[Problem]]:
    """Parse one YAML document safely; expand ``${VAR}`` in string values.

    Returns the data, its source map and the problems found (YAML syntax errors, duplicate keys,
    keys that are not strings, undefined variables). On a syntax error, a recursive alias or a
    document over the limits the data is ``None``.
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
    reader = _Reader(loader, environ, source_map, problems)
    try:
        _measure(node)
        data = reader.walk(node, ())
    except _Refused as exc:
        problems.append(Problem(exc.path, exc.line, exc.message))
        return None, source_map, problems
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        problems.append(Problem((), line, f"invalid YAML: {exc.problem}"))
        return None, source_map, problems
    return data, source_map, problems


class _Refused(Exception):
    """The document cannot be read at all (recursive alias, over a limit)."""

    def __init__(self, path: Path, line: int, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.line = line
        self.message = message


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _measure(root: yaml.Node) -> None:
    """Refuse a document with a cycle of aliases, nesting past MAX_DEPTH, or more than MAX_NODES
    values once expanded. Each node is measured once (aliases share their node), so this takes
    time in proportion to the text, whatever its aliases expand to."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def measure(node: yaml.Node, path: Path, line: int, depth: int) -> int:
        key = id(node)
        known = sizes.get(key)
        if known is not None:
            return known
        if key in open_nodes:
            raise _Refused(path, line, "recursive alias: this value contains itself")
        if depth > MAX_DEPTH:
            raise _Refused(path, line, f"nested more than {MAX_DEPTH} levels deep")
        open_nodes.add(key)
        size = 1
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                label = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
                key_path = (*path, str(label))
                key_line = _line(key_node)
                size += measure(key_node, key_path, key_line, depth + 1)
                size += measure(value_node, key_path, key_line, depth + 1)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                size += measure(item, (*path, index), line, depth + 1)
        open_nodes.discard(key)
        if size > MAX_NODES:
            raise _Refused(
                path,
                line,
                f"more than {MAX_NODES} values once aliases are expanded "
                "(aliases of aliases: an 'alias bomb'?)",
            )
        sizes[key] = size
        return size

    measure(root, (), _line(root), 0)


_KEY_KINDS: list[tuple[type, str]] = [
    (bool, "a boolean"),
    (int, "a number"),
    (float, "a number"),
    (type(None), "null"),
    (datetime.date, "a date"),
    (bytes, "binary data"),
]


@dataclass
class _Reader:
    """Builds the data of a measured document, keeping lines and problems."""

    loader: Any
    environ: Mapping[str, str]
    source_map: SourceMap
    problems: list[Problem]
    text_chars: int = 0
    _entries: dict[int, dict[str, tuple[yaml.Node, yaml.Node]]] = field(default_factory=dict)

    def walk(self, node: yaml.Node, path: Path) -> Any:
        self.source_map.lines.setdefault(path, _line(node))
        if isinstance(node, yaml.MappingNode):
            result: dict[Hashable, Any] = {}
            for key, (key_node, value_node) in self.entries(node, path).items():
                if not path and key.startswith(IGNORED_PREFIX):
                    continue
                key_path = (*path, key)
                self.source_map.lines[key_path] = _line(key_node)
                result[key] = self.walk(value_node, key_path)
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self.walk(item, (*path, index)) for index, item in enumerate(node.value)]
        assert isinstance(node, yaml.ScalarNode)
        return self.scalar(node, path)

    def entries(self, node: yaml.MappingNode, path: Path) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        """The mapping's keys with their key and value nodes, merge keys resolved (YAML 1.1): its
        own keys win, then the merged mappings in the order given, the first one winning.

        Worked out once per node (an anchored mapping merged in many places reports its problems
        once, at its first use)."""
        known = self._entries.get(id(node))
        if known is None:
            known = self._entries[id(node)] = self._entries_of(node, path)
        return known

    def _entries_of(
        self, node: yaml.MappingNode, path: Path
    ) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        own: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        merged: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        order: list[str | None] = []  # None marks where merged keys go
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                for source in self.merge_sources(value_node, path, key_node):
                    for key, entry in self.entries(source, path).items():
                        merged.setdefault(key, entry)
                order.append(None)
                continue
            key = self.key(key_node, path)
            if key in own:
                first = _line(own[key][0])
                self.problems.append(
                    Problem(
                        (*path, key),
                        _line(key_node),
                        f"duplicate key '{key}' (first at line {first})",
                    )
                )
                continue
            own[key] = (key_node, value_node)
            order.append(key)
        if not merged:
            return own
        result: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for place in order:
            if place is not None:
                result[place] = own[place]
                continue
            for merged_key, entry in merged.items():
                if merged_key not in own:
                    result.setdefault(merged_key, entry)
        return result

    def merge_sources(
        self, value: yaml.Node, path: Path, key_node: yaml.Node
    ) -> list[yaml.MappingNode]:
        """The mappings a merge key names: one mapping, or a list of them."""
        items = value.value if isinstance(value, yaml.SequenceNode) else [value]
        sources = [item for item in items if isinstance(item, yaml.MappingNode)]
        if len(sources) != len(items):
            self.problems.append(
                Problem(
                    (*path, "<<"),
                    _line(key_node),
                    "a merge key '<<' takes a mapping or a list of mappings "
                    "(e.g. '<<: *defaults' or '<<: [*a, *b]')",
                )
            )
        return sources

    def key(self, node: yaml.Node, path: Path) -> str:
        """A mapping key as a string; any other key (``1:``, ``true:``, ``null:``) is a problem,
        reported with its text, which stands in for it so that later checks still run."""
        if isinstance(node, yaml.ScalarNode):
            value = self.loader.construct_object(node, deep=True)
            if isinstance(value, str):
                return value
            text = str(node.value) or "null"
            kind = next((k for t, k in _KEY_KINDS if isinstance(value, t)), type(value).__name__)
            message = f"the key {text} is read as {kind}; keys must be text: quote it ('{text}')"
        else:
            kind = "a mapping" if isinstance(node, yaml.MappingNode) else "a list"
            text = f"({kind} at line {_line(node)})"
            message = f"a key must be text, not {kind}"
        self.problems.append(Problem((*path, text), _line(node), message))
        self.source_map.bad_keys.add((*path, text))
        return text

    def scalar(self, node: yaml.ScalarNode, path: Path) -> Any:
        value = self.loader.construct_object(node, deep=True)
        if not isinstance(value, str):
            return value
        if "$" in value:
            try:
                value = expand(value, self.environ)
            except EnvError as exc:
                self.problems.append(Problem(path, _line(node), str(exc)))
                return None
        self.text_chars += len(value)
        if self.text_chars > MAX_TEXT_CHARS:
            raise _Refused(
                path,
                _line(node),
                f"more than {MAX_TEXT_CHARS} characters of text once aliases and variables are "
                "expanded",
            )
        return value
