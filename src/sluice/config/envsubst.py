"""Environment variable expansion in config values, shell style.

``${VAR}`` is the variable (an error if undefined), ``${VAR:-default}`` the default when the variable
is undefined or empty, ``${VAR:?message}`` an error with that message when it is undefined or empty,
and ``$$`` a literal ``$``. A ``$`` followed by anything else is kept as it is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["EnvError", "expand"]

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


def expand(text: str, environ: Mapping[str, str]) -> str:
    """Expand every reference in ``text``; raise :class:`EnvError` on the first one that fails."""

    def replace(match: re.Match[str]) -> str:
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
