"""The example plugin packages (examples/custom_source, examples/custom_sink) import only the SDK
surface and pass sluice's shipped conformance suites, exactly as their authors would run them."""

from __future__ import annotations

import ast
import sys
from typing import Any

import orjson
import pytest

from sluice.testing.conformance import SinkConformance, SourceConformance, read_jsonl
from tests.conftest import REPO

pytestmark = pytest.mark.timeout(120)

EXAMPLES = REPO / "examples"


@pytest.mark.parametrize("package", ["custom_source", "custom_sink"])
def test_an_example_plugin_imports_only_the_sdk_and_the_standard_library(package: str) -> None:
    imported: set[str] = set()
    for path in (EXAMPLES / package / "src").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module)
    outside = {
        name
        for name in imported
        if name.split(".")[0] not in sys.stdlib_module_names and name != "__future__"
    }
    assert outside == {"sluice.sdk"}


class TestCommandSource(SourceConformance):
    def source_config(self) -> dict[str, Any]:
        return {"type": "command", "command": ["seq", "1", "300"], "batch_lines": 40}

    def expected(self) -> list[dict[str, Any]]:
        return [{"line": str(n)} for n in range(1, 301)]


class TestKindCounterSink(SinkConformance):
    def sink_config(self) -> dict[str, Any]:
        return {"type": "kind_counter", "path": str(self.workdir / "counts.json")}

    def stored(self) -> Any:
        path = self.workdir / "counts.json"
        return orjson.loads(path.read_bytes()) if path.exists() else {}

    def expected_store(self, written: list[dict[str, Any]]) -> Any:
        return {"record": len(written)} if written else {}


class TestCommandSourceLines(SourceConformance):
    """The example source's own rules: a JSON object line is kept as it is, another line is
    wrapped, a line that is not UTF-8 goes to the dead letters; a failing command fails the run."""

    def source_config(self) -> dict[str, Any]:
        script = "printf '{\"a\": 1}\\nplain text\\n\\377\\n[1, 2]\\n'"
        return {"type": "command", "command": ["sh", "-c", script]}

    def expected(self) -> list[dict[str, Any]]:
        return [{"a": 1}, {"line": "plain text"}, {"line": "[1, 2]"}]

    def test_a_line_that_is_not_utf8_goes_to_the_dead_letters(self) -> None:
        self.run_source()
        dead = read_jsonl(self.state_dir / "dead_letters.jsonl")
        assert [d["reason"] for d in dead] == ["line is not UTF-8"]

    def test_a_command_that_fails_fails_the_run_with_its_status_and_stderr(self) -> None:
        script = "echo partial; echo boom >&2; exit 3"
        pipeline = self.build(
            {
                "sources": {"cmd": {"type": "command", "command": ["sh", "-c", script]}},
                "sinks": {"out": {"type": "list", "inputs": ["cmd"]}},
            }
        )
        result = self.run(pipeline)
        assert not result.ok
        assert "exited with status 3: boom" in str(result.error)
