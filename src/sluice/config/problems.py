"""A config problem: what is wrong, at which key, on which line."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["ConfigError", "Path", "Problem", "did_you_mean", "format_path"]

Path = tuple[str | int, ...]
"""Where a value is in the document: keys and list indexes from the top."""


def format_path(path: Path) -> str:
    """``("sinks", "out", "inputs", 0)`` -> ``sinks.out.inputs[0]``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "(top level)"


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the nearest of ``choices`` to ``word``, or nothing."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


@dataclass(frozen=True)
class Problem:
    path: Path
    line: int | None
    message: str

    def render(self) -> str:
        where = f"line {self.line}: " if self.line is not None else ""
        key = format_path(self.path)
        return f"{where}{key}: {self.message}" if self.path else f"{where}{self.message}"


class ConfigError(Exception):
    """Raised when a config cannot be used; carries every problem found, in file order."""

    def __init__(self, source: str, problems: Sequence[Problem]) -> None:
        self.source = source
        self.problems = sorted(problems, key=lambda p: (p.line or 0, p.path.__repr__()))
        count = len(self.problems)
        super().__init__(f"{source}: {count} problem{'s' if count != 1 else ''}")

    def render(self) -> str:
        """Every problem on its own line, under a header naming the file."""
        lines = [f"{self}:"]
        lines += [f"  {source_line}" for source_line in (p.render() for p in self.problems)]
        return "\n".join(lines)
