"""Bad configs exit 2 with a message naming the key and the line (table-driven)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from sluice.cli import app

GOOD_SINK = """\
sinks:
  out:
    type: file
    inputs: [gen]
    path: out.jsonl
"""
GEN = """\
sources:
  gen:
    type: generator
"""

CH_SINK = """\
sinks:
  ch:
    type: clickhouse
    inputs: [gen]
    table: t
"""

CASES = [
    pytest.param("sources: [\n  gen\n", 3, ["invalid YAML"], id="bad-yaml"),
    pytest.param(
        GEN + GOOD_SINK + "sink: {}\n",
        9,
        ["unknown key 'sink'", "did you mean 'sinks'"],
        id="unknown-top-level-key",
    ),
    pytest.param(
        GEN + GOOD_SINK.replace("path:", "pth:"),
        8,
        ["sinks.out.pth", "unknown key 'pth'", "did you mean 'path'"],
        id="unknown-sink-key",
    ),
    pytest.param(
        GEN + GOOD_SINK + "    batch:\n      max_events: lots\n",
        10,
        ["sinks.out.batch.max_events", "valid integer", "'lots'"],
        id="wrong-type",
    ),
    pytest.param(
        GEN + GOOD_SINK.replace("    path: out.jsonl\n", ""),
        5,
        ["sinks.out.path", "missing required key 'path'"],
        id="missing-required",
    ),
    pytest.param(
        GEN + GOOD_SINK.replace("out.jsonl", "${SLUICE_TEST_UNSET}"),
        8,
        ["SLUICE_TEST_UNSET is not set"],
        id="undefined-env-var",
    ),
    pytest.param(
        GEN + GOOD_SINK.replace("out.jsonl", "${SLUICE_TEST_UNSET:?set the output path}"),
        8,
        ["SLUICE_TEST_UNSET: set the output path"],
        id="required-env-var-message",
    ),
    pytest.param(
        GEN.replace("generator", "generatr") + GOOD_SINK,
        3,
        ["sources.gen.type", "unknown source type 'generatr'", "did you mean 'generator'"],
        id="unknown-plugin",
    ),
    pytest.param(
        GEN + GOOD_SINK + "  copy:\n    type: file\n    inputs: [gen]\n    path: ./out.jsonl\n",
        12,
        ["sinks.copy.path", "also used by sinks.out.path (line 8)"],
        id="two-sinks-one-file",
    ),
    pytest.param(
        GEN + GOOD_SINK.replace("[gen]", "[gne]"),
        7,
        ["sinks.out.inputs[0]", "no source named 'gne'", "did you mean 'gen'"],
        id="unknown-input",
    ),
    pytest.param(
        GEN + "  idle:\n    type: generator\n" + GOOD_SINK,
        4,
        ["sources.idle", "no sink takes"],
        id="source-without-sink",
    ),
    pytest.param(
        GEN + "    count: 1\n    count: 2\n" + GOOD_SINK,
        5,
        ["duplicate key 'count'"],
        id="duplicate-key",
    ),
    pytest.param(
        GEN + GOOD_SINK.replace("  out:", "  my out!:"),
        5,
        ["sinks.my out!", "pattern"],
        id="bad-component-id",
    ),
    pytest.param(
        GEN + GOOD_SINK + "    batch:\n      max_age_secs: -1\n",
        10,
        ["sinks.out.batch.max_age_secs", "greater than 0"],
        id="negative-duration",
    ),
    pytest.param(
        GEN + GOOD_SINK + "    buffer:\n      when_full: drop_oldest\n",
        10,
        ["sinks.out.buffer.when_full", "'block' or 'drop_newest'"],
        id="bad-choice",
    ),
    pytest.param(
        GEN + GOOD_SINK.replace("    inputs: [gen]\n", ""),
        5,
        ["sinks.out.inputs", "a sink needs 'inputs'"],
        id="sink-without-inputs",
    ),
    pytest.param(
        GEN + GOOD_SINK.replace("  out:", "  dead_letters:"),
        5,
        ["'dead_letters' is a reserved id"],
        id="reserved-id",
    ),
    pytest.param(
        "sources:\n  f:\n    type: file\n    path: out.jsonl\n" + GOOD_SINK.replace("[gen]", "[f]"),
        9,
        ["sinks.out.path", "also used by sources.f.path (line 4)"],
        id="read-what-is-written",
    ),
    pytest.param("- just\n- a list\n", 1, ["must be a mapping"], id="not-a-mapping"),
    pytest.param(
        GEN + GOOD_SINK + "admin:\n  listen: everywhere\n",
        10,
        ["admin.listen", "host:port"],
        id="bad-listen-address",
    ),
    pytest.param(
        GEN + CH_SINK + "    url: http://a:8123\n    urls: [http://b:8123]\n",
        10,
        ["sinks.ch.urls", "either `url` (one server) or `urls` (several), not both"],
        id="clickhouse-url-and-urls",
    ),
    pytest.param(
        GEN + CH_SINK + "    urls:\n      - http://a:8123\n      - ftp://b\n",
        11,
        ["sinks.ch.urls[1]", "expected http://host:port"],
        id="clickhouse-bad-url-in-urls",
    ),
]


@pytest.mark.parametrize(("text", "line", "words"), CASES)
def test_bad_config_exits_2_naming_key_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, line: int, words: list[str]
) -> None:
    monkeypatch.delenv("SLUICE_TEST_UNSET", raising=False)
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    result = CliRunner().invoke(app, ["check", str(config)])
    assert result.exit_code == 2, result.output
    message = result.stderr
    assert f"line {line}:" in message, message
    for word in words:
        assert word in message, message


def test_every_problem_is_listed_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "bad.yaml"
    config.write_text(
        GEN.replace("generator", "generatr")
        + GOOD_SINK.replace("path:", "pth:")
        + "    batch: {max_events: 0}\n"
    )
    result = CliRunner().invoke(app, ["check", str(config)])
    assert result.exit_code == 2
    # unknown type, missing path, unknown key pth, max_events 0: all at once, in file order
    assert "4 problems" in result.stderr
    positions = [result.stderr.index(f"line {n}:") for n in (3, 5, 8, 9)]
    assert positions == sorted(positions)


def test_good_config_exits_0(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "good.yaml"
    config.write_text(GEN + GOOD_SINK)
    result = CliRunner().invoke(app, ["check", str(config)])
    assert result.exit_code == 0, result.stderr
    assert "ok" in result.stdout


def test_secret_values_are_not_echoed_in_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SLUICE_TEST_PASSWORD", "hunter2-very-secret")
    config = tmp_path / "bad.yaml"
    config.write_text(GEN + GOOD_SINK + "    password: ${SLUICE_TEST_PASSWORD}\n")
    result = CliRunner().invoke(app, ["check", str(config)])
    assert result.exit_code == 2
    assert "unknown key 'password'" in result.stderr
    assert "hunter2" not in result.stderr


def test_missing_file_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["check", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "cannot read the file" in result.stderr
