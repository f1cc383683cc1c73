"""Environment variable expansion in config values, shell style.

``${VAR}`` is the variable (an error if undefined), ``${VAR:-default}`` the default when the variable
is undefined or empty, ``${VAR:?message}`` an error with that message when it is undefined or empty,
and ``$$`` a literal ``$``. A ``$`` followed by anything else is kept as it is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["MAX_EXPANDED_CHARS", "EnvError", "expand"]

_PATTERN = re.compile(
    r"""\$(?:
        (?P<escaped>\$)
      | \{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|:\?)(?P<arg>[^}]*))?\}
      | (?P<bad>\{[^}]*\}?)
    )""",
    re.VERBOSE,
)


class EnvError(ValueError):
    """A variable reference that cannot be expanded; the message names the variable."""


MAX_EXPANDED_CHARS = 1024 * 1024
"""The longest a value may grow to once its variables are expanded."""


def expand(text: str, environ: Mapping[str, str], max_chars: int = MAX_EXPANDED_CHARS) -> str:
    """Expand every reference in ``text``; raise :class:`EnvError` on the first one that fails,
    or when the result would be longer than ``max_chars`` (many references to a long variable)."""
    growth = 0

    def replace(match: re.Match[str]) -> str:
        nonlocal growth
        value = value_of(match)
        growth += len(value) - len(match.group(0))
        if growth > 0 and len(text) + growth > max_chars:
            raise EnvError(f"the value expands to more than {max_chars} characters")
        return value

    def value_of(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        if match.group("bad") is not None:
            raise EnvError(f"malformed variable reference '${match.group('bad')}'")
        name = match.group("name")
        op = match.group("op")
        value = environ.get(name)
        if op == ":-":
            return value if value else match.group("arg")
        if op == ":?":
            if not value:
                message = match.group("arg") or "must be set"
                raise EnvError(f"environment variable {name}: {message}")
            return value
        if value is None:
            raise EnvError(
                f"environment variable {name} is not set "
                f"(use ${{{name}:-default}} to give a default)"
            )
        return value

    return _PATTERN.sub(replace, text)
