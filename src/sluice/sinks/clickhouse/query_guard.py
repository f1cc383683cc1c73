"""Queries from outside (``POST /api/query``, ``sluice sql``, ``sluice monitor``), judged by
ClickHouse's own parser before they run.

A query is accepted when it is exactly one read-only SELECT:

1. ``SELECT formatQuery({sql:String})`` on chDB (a current ClickHouse engine, the query passed as
   a parameter, never spliced): the engine parses the text as one statement (``SELECT 1; DROP
   ...`` is a syntax error, "Multi-statements are not allowed") and gives it back in its own
   canonical form;
2. ``EXPLAIN AST`` of that canonical form, whose tree is walked here:

   - the root is a ``SelectWithUnionQuery`` with one child (its list of SELECTs): ``INTO OUTFILE``,
     ``FORMAT`` and ``SETTINGS`` are further children of that node, so they are refused, also
     behind a ``WITH``;
   - no ``SETTINGS`` anywhere (a ``Set`` node: limits are not the query's to change);
   - every table function is on :data:`ALLOWED_TABLE_FUNCTIONS` (numbers, zeros, one, ...):
     ``file``, ``url``, ``remote``, ``s3``, ``mysql``, ``executable``, ... and any added in a later
     release are refused; and a name on the engine's list of table functions that is not allowed
     is refused anywhere else too (``1 IN url(...)``, the ordinary function ``file(path)``).

This is the first wall. The second is the engine's own: chDB queries run on a connection with
``readonly=1`` and a time limit; a server runs them with ``readonly=1`` and a time limit, as the
sink's read-only query user when one is configured (``query_user``). On an old server (18.16 has
no ``EXPLAIN``) the judgement is chDB's grammar, which is a superset of the old one; what the old
parser reads differently still meets the server's ``readonly=1`` (no writes, no settings changes,
no table functions at all, no ``INTO OUTFILE``).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import Final

from sluice.errors import QueryRefused

__all__ = [
    "ALLOWED_TABLE_FUNCTIONS",
    "FORMAT_QUERY",
    "TABLE_FUNCTIONS_QUERY",
    "ParsedQuery",
    "QueryRefused",
    "escape_parameter",
    "judge",
]

ALLOWED_TABLE_FUNCTIONS: Final[frozenset[str]] = frozenset(
    {
        "numbers",
        "numbers_mt",
        "zeros",
        "zeros_mt",
        "one",
        "generate_series",
        "generateseries",
        "values",
    }
)
"""Table functions that only make rows in memory (names compared in lower case)."""

_SCALAR_NAMES_OK: Final[frozenset[str]] = frozenset({"format"})
"""Table function names that are also harmless ordinary functions (``format('{}', x)``)."""

TABLE_FUNCTIONS_QUERY: Final[str] = "SELECT lower(name) FROM system.table_functions"
"""The engine's own list of table functions: a name on it that is not allowed is refused wherever
it appears (``1 IN url(...)``, ``file(path)`` as an ordinary function), not only after FROM."""

FORMAT_QUERY: Final[str] = "SELECT {sql:String} AS received, formatQuery({sql:String}) AS canonical"
"""How the engine parses one statement and gives back its canonical text (``sql`` a parameter,
in the escaped format of :func:`escape_parameter`; ``received`` is compared with what was sent)."""

_ESCAPES: Final[dict[int, str]] = {
    ord("\\"): "\\\\",
    ord("\n"): "\\n",
    ord("\t"): "\\t",
    ord("\r"): "\\r",
    ord("\0"): "\\0",
    ord("\b"): "\\b",
    ord("\f"): "\\f",
}


def escape_parameter(value: str) -> str:
    """``value`` in the escaped (TSV) format in which ClickHouse reads a query parameter."""
    return value.translate(_ESCAPES)


READ_ONLY_HINT: Final[str] = (
    "only read-only statements are allowed: one SELECT (WITH and UNION allowed), without INTO "
    "OUTFILE, FORMAT or SETTINGS, reading tables or the table functions "
    + ", ".join(sorted(ALLOWED_TABLE_FUNCTIONS - {"generateseries"}))
)


@dataclass(frozen=True)
class ParsedQuery:
    """What the engine's parser made of a query."""

    canonical: str
    """The statement as the engine formats it (one statement, no trailing ``;``)."""
    ast: str
    """The output of ``EXPLAIN AST`` of :attr:`canonical`: one node a line, indented by depth."""
    table_functions: frozenset[str]
    """The engine's table functions, lower case (:data:`TABLE_FUNCTIONS_QUERY`)."""


@dataclass(frozen=True)
class _Node:
    depth: int
    kind: str
    name: str
    children: int


def _nodes(ast: str) -> list[_Node]:
    nodes = []
    for line in ast.splitlines():
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip(" "))
        words = line.split()
        children = 0
        if len(words) >= 3 and words[-2] == "(children" and words[-1].endswith(")"):
            count = words[-1][:-1]
            children = int(count) if count.isdigit() else 0
        name = words[1] if len(words) > 1 and not words[1].startswith("(") else ""
        nodes.append(_Node(depth, words[0], name, children))
    return nodes


def judge(parsed: ParsedQuery) -> None:
    """Raise QueryRefused unless ``parsed`` is one read-only SELECT (see the module's rules).

    The walk only refuses: a line it does not understand cannot make a query pass, and the root
    line (which no identifier or literal of the query can forge) must be a SELECT with exactly one
    child.
    """
    nodes = _nodes(parsed.ast)
    if not nodes:
        raise QueryRefused(f"the engine gave no syntax tree for this query; {READ_ONLY_HINT}")
    root = nodes[0]
    if root.kind != "SelectWithUnionQuery":
        raise QueryRefused(f"this is a {root.kind}, not a SELECT; {READ_ONLY_HINT}")
    if root.children != 1:
        raise QueryRefused(
            f"INTO OUTFILE, FORMAT and SETTINGS clauses are refused (sluice sets the output "
            f"format itself); {READ_ONLY_HINT}"
        )
    for previous, node in pairwise(nodes):
        if node.kind == "Set":
            raise QueryRefused(f"SETTINGS clauses are refused; {READ_ONLY_HINT}")
        if node.kind == "SelectWithUnionQuery" and node.children != 1:
            raise QueryRefused(
                f"INTO OUTFILE and FORMAT are refused in a subquery too; {READ_ONLY_HINT}"
            )
        if node.kind != "Function":
            continue
        name = node.name.lower()
        # a table function is the first child of its TableExpression, so its line follows that
        # node's line directly, one level deeper
        in_from = previous.kind == "TableExpression" and node.depth == previous.depth + 1
        if in_from and name not in ALLOWED_TABLE_FUNCTIONS:
            raise QueryRefused(
                f"the table function {node.name}() is refused (it can reach files, URLs or other "
                f"servers); {READ_ONLY_HINT}"
            )
        reaching = name in parsed.table_functions and name not in _SCALAR_NAMES_OK
        if not in_from and reaching and name not in ALLOWED_TABLE_FUNCTIONS:
            raise QueryRefused(
                f"{node.name}() is a table function that can reach files, URLs or other servers, "
                f"refused wherever it appears; {READ_ONLY_HINT}"
            )
