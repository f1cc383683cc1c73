"""``command``: the lines a command prints, as records (an example third-party source).

The command runs without a shell (``command: [program, arg, ...]``). Each line of its standard
output is a record: a line that is a JSON object as it is, any other line as ``{"line": "..."}``;
a line that is not UTF-8 is rejected (it goes to the dead letters with the reason). With
``every_secs`` the command runs again that long after each run ends (a poller); without it the
source ends when the command does.

Errors: a command that cannot be started or exits with a non-zero status fails the run (a
:class:`PermanentError`: running it again would not help). Delivery: at-most-once: there is nothing
to replay, so lines read but not yet written when the process dies are gone.

It imports only :mod:`sluice.sdk`, the surface a plugin is written against.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Literal

from sluice.sdk import (
    ComponentContext,
    Field,
    PermanentError,
    Readiness,
    Record,
    Rejected,
    Source,
    SourceBatch,
    SourceConfig,
)

__all__ = ["CommandSource", "CommandSourceConfig"]


class CommandSourceConfig(SourceConfig):
    """Run a command and read the lines it prints."""

    type: Literal["command"] = "command"
    command: list[str] = Field(
        min_length=1, description="The program and its arguments (no shell)."
    )
    every_secs: float | None = Field(
        None, gt=0, description="Run the command again this long after each run; unset: once."
    )
    kind: str = Field("line", description="The records' kind, for routing.")
    batch_lines: int = Field(500, gt=0, description="Lines per batch at most.")
    max_wait_secs: float = Field(
        0.2, gt=0, description="Hand over the lines read so far after this long without a new one."
    )


class CommandSource(Source[CommandSourceConfig]):
    """Yields the lines of one run of the command (or of a run every ``every_secs``)."""

    config_model = CommandSourceConfig
    description = "The lines a command prints, once or every N seconds (example plugin)."
    delivery = "at-most-once"
    delivery_note = (
        "Nothing to replay: lines read but not yet written when the process dies are gone."
    )

    def __init__(self, component_id: str, config: CommandSourceConfig) -> None:
        super().__init__(component_id, config)
        self.runs = 0
        """Runs of the command started so far."""
        self._process: asyncio.subprocess.Process | None = None
        self._log: object = None

    async def start(self, ctx: ComponentContext) -> None:
        self._log = ctx.log

    async def readiness(self) -> Readiness:
        if self._process is None and self.runs == 0:
            return Readiness(False, "command not started yet")
        return Readiness(True)

    async def batches(self) -> AsyncIterator[SourceBatch]:
        # Called again on this same instance if it raises a retriable error; this one raises
        # none of its own, and a run that was cut off starts over with a new process.
        while True:
            async for batch in self._run_once():
                yield batch
            if self.config.every_secs is None:
                return
            await asyncio.sleep(self.config.every_secs)

    async def _run_once(self) -> AsyncIterator[SourceBatch]:
        config = self.config
        try:
            process = await asyncio.create_subprocess_exec(
                *config.command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:  # not found, not executable: waiting will not help
            raise PermanentError(f"cannot run {config.command[0]!r}: {exc}") from exc
        self._process = process
        self.runs += 1
        assert process.stdout is not None and process.stderr is not None
        stderr = asyncio.ensure_future(process.stderr.read())
        records: list[Record] = []
        rejected: list[Rejected] = []
        try:
            while True:
                try:
                    line = await asyncio.wait_for(process.stdout.readline(), config.max_wait_secs)
                except TimeoutError:
                    line = None  # nothing new for a while: hand over what there is
                if line:
                    self._add(line.rstrip(b"\r\n"), records, rejected)
                if (line is None or len(records) + len(rejected) >= config.batch_lines) and (
                    records or rejected
                ):
                    yield SourceBatch(records, rejected)
                    records, rejected = [], []
                if line == b"":  # end of output
                    break
            if records or rejected:
                yield SourceBatch(records, rejected)
            status = await process.wait()
            if status != 0:
                tail = (await stderr).decode(errors="replace").strip()[-500:]
                raise PermanentError(f"{config.command[0]} exited with status {status}: {tail}")
        finally:
            stderr.cancel()
            if process.returncode is None:
                process.kill()
                await process.wait()
            self._process = None

    def _add(self, line: bytes, records: list[Record], rejected: list[Rejected]) -> None:
        if not line.strip():
            return
        try:
            text = line.decode()
        except UnicodeDecodeError:
            rejected.append(Rejected(line, "line is not UTF-8"))
            return
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if isinstance(value, dict):
            records.append(Record(line, self.config.kind))
        else:
            records.append(Record.from_data({"line": text}, self.config.kind))

    async def close(self) -> None:
        process = self._process
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()
