"""A config problem: what is wrong, at which key, on which line."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["ConfigError", "Problem"]


@dataclass(frozen=True)
class Problem:
    path: tuple[str | int, ...]
    line: int | None
    message: str

    def render(self) -> str:
        from sluice.config.source_map import format_path

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
