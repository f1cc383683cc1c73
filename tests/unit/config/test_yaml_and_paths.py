"""YAML anchors, merge keys and `x-` keys work; input that would hang or crash the loader, keys that
are not text and local paths that cannot be used exit 2 naming the key and the line (table-driven:
YAML and the files around it in, exit code, line and words out)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from sluice.cli import app
from sluice.config import ConfigError, load_config_text
from sluice.config.envsubst import MAX_EXPANDED_CHARS
from sluice.config.source_map import MAX_DEPTH, MAX_NODES, MAX_TEXT_CHARS
from sluice.registry import Registry

GEN = "sources:\n  gen: {type: generator}\n"
DEFAULTS = """\
x-file: &filedefaults
  type: file
  inputs: [gen]
  path: a.jsonl
"""
BIG_ENV = "x" * 100_000


def alias_bomb(levels: int = 9) -> str:
    """The "billion laughs": each anchor is a list of nine aliases of the one before."""
    lines = ['x-a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, levels):
        lines.append(f"x-a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 9) + "]")
    return (
        "\n".join(lines)
        + "\n"
        + GEN
        + f"sinks:\n  out: {{type: file, inputs: [gen], path: *a{levels - 1}}}\n"
    )


def nested(depth: int) -> str:
    body = "x-deep:\n"
    for level in range(depth):
        body += "  " * (level + 1) + f"k{level}:\n"
    return body + "  " * (depth + 1) + "end: 1\n"


Files = dict[str, str]
"""Paths to create before the check: "file" or "dir"."""

CASES = [
    pytest.param(
        DEFAULTS
        + GEN
        + "sinks: {one: {<<: *filedefaults}, two: {<<: *filedefaults, path: b.jsonl}}\n",
        {},
        0,
        None,
        ["ok", "2 sink(s): one, two"],
        id="merge-key-then-override",
    ),
    pytest.param(
        DEFAULTS
        + "x-fast: &fast {batch: {max_events: 10}, path: fast.jsonl}\n"
        + GEN
        + "sinks:\n  out:\n    <<: [*fast, *filedefaults]\n",
        {},
        0,
        None,
        ["ok"],
        id="merge-list-first-wins",
    ),
    pytest.param(
        "x-anything: {not: [a, config, key]}\nx-more: 5\n"
        + GEN
        + "sinks: {out: {type: file, inputs: [gen], path: o.jsonl}}\n",
        {},
        0,
        None,
        ["ok"],
        id="x-keys-ignored",
    ),
    pytest.param(
        DEFAULTS + GEN + "sinks:\n  out:\n    <<: *filedefaults\n    pth: b.jsonl\n",
        {},
        2,
        10,
        ["sinks.out.pth", "unknown key 'pth'"],
        id="merge-key-with-a-bad-own-key",
    ),
    pytest.param(
        "x-file: &filedefaults\n  type: file\n  inputs: [gen]\n  path: a.jsonl\n"
        "  batch: {max_events: lots}\n" + GEN + "sinks:\n  out: {<<: *filedefaults}\n",
        {},
        2,
        5,
        ["sinks.out.batch.max_events", "'lots'"],
        id="merged-key-error-at-the-anchor-line",
    ),
    pytest.param(
        GEN + "sinks:\n  out:\n    <<: 5\n    type: file\n    inputs: [gen]\n    path: o.jsonl\n",
        {},
        2,
        5,
        ["sinks.out.<<", "merge key '<<' takes a mapping or a list of mappings"],
        id="merge-key-not-a-mapping",
    ),
    pytest.param(
        DEFAULTS + GEN + "sinks:\n  out:\n    <<: *filedefaults\n    path: b\n    path: c\n",
        {},
        2,
        11,
        ["duplicate key 'path' (first at line 10)"],
        id="duplicate-own-key-beside-a-merge",
    ),
    pytest.param(
        "sources: &loop\n  gen: *loop\n",
        {},
        2,
        2,
        ["sources.gen", "recursive alias"],
        id="recursive-alias",
    ),
    pytest.param(
        GEN + "sinks:\n  out: &me\n    type: file\n    <<: *me\n",
        {},
        2,
        6,
        ["sinks.out.<<", "recursive alias"],
        id="recursive-merge",
    ),
    pytest.param(
        alias_bomb(),
        {},
        2,
        6,
        ["x-a5", f"more than {MAX_NODES} values", "alias bomb"],
        id="alias-bomb",
    ),
    pytest.param(
        nested(MAX_DEPTH + 1),
        {},
        2,
        MAX_DEPTH + 1,
        [f"nested more than {MAX_DEPTH} levels deep"],
        id="nested-too-deep",
    ),
    pytest.param(
        f'x-long: &long "{"y" * 1_000_000}"\n'
        + GEN
        + "sinks:\n  out: {type: file, inputs: [gen], path: o.jsonl}\n"
        + "  copies: ["
        + ", ".join(["*long"] * 20)
        + "]\n",
        {},
        2,
        1,
        [f"more than {MAX_TEXT_CHARS} characters"],
        id="text-bomb",
    ),
    pytest.param(
        GEN + "sinks:\n  out: {type: file, inputs: [gen], path: '" + "${BIG}" * 11 + "'}\n",
        {},
        2,
        4,
        ["sinks.out.path", f"expands to more than {MAX_EXPANDED_CHARS} characters"],
        id="env-expansion-bomb",
    ),
    pytest.param(
        "sources:\n  1: {type: generator}\nsinks:\n  out: {type: file, inputs: ['1'], path: o}\n",
        {},
        2,
        2,
        ["sources.1", "the key 1 is read as a number", "quote it ('1')", "1 problem"],
        id="number-as-source-id",
    ),
    pytest.param(
        GEN + "sinks:\n  true: {type: file, inputs: [gen], path: o}\n",
        {},
        2,
        4,
        ["sinks.true", "read as a boolean", "quote it ('true')", "1 problem"],
        id="boolean-as-sink-id",
    ),
    pytest.param(
        GEN + "sinks:\n  null: {type: file, inputs: [gen], path: o}\n",
        {},
        2,
        4,
        ["sinks.null", "read as null", "1 problem"],
        id="null-as-sink-id",
    ),
    pytest.param(
        GEN + "sinks:\n  ? [a, b]\n  : {type: file, inputs: [gen], path: o}\n",
        {},
        2,
        4,
        ["a key must be text, not a list"],
        id="list-as-sink-id",
    ),
    pytest.param(
        GEN + "sinks: {out: {type: file, inputs: [gen], path: o}}\n2024-01-01: x\n",
        {},
        2,
        4,
        ["2024-01-01", "read as a date"],
        id="date-as-top-level-key",
    ),
    pytest.param(
        GEN + "sinks: {out: {type: file, inputs: [gen], path: o}}\ndata_dir: state\n",
        {"state": "file"},
        2,
        4,
        ["data_dir", "state is a file, not a directory"],
        id="data-dir-is-a-file",
    ),
    pytest.param(
        GEN + "sinks: {out: {type: file, inputs: [gen], path: o}}\ndata_dir: state/sub\n",
        {"state": "file"},
        2,
        4,
        ["data_dir", "cannot create", "state is not a directory"],
        id="data-dir-under-a-file",
    ),
    pytest.param(
        GEN + "sinks: {out: {type: file, inputs: [gen], path: o}}\n",
        {".sluice/dead_letters.jsonl": "dir"},
        2,
        None,
        ["data_dir", "the default dead-letter file", "dead_letters.jsonl is a directory"],
        id="default-dead-letter-file-is-a-directory",
    ),
    pytest.param(
        GEN + "sinks:\n  out:\n    type: file\n    inputs: [gen]\n    path: out\n",
        {"out": "dir"},
        2,
        7,
        ["sinks.out.path", "out is a directory, not a file"],
        id="directory-as-file-path",
    ),
    pytest.param(
        GEN + "sinks:\n  out:\n    type: file\n    inputs: [gen]\n    path: taken/a/out.jsonl\n",
        {"taken": "file"},
        2,
        7,
        ["sinks.out.path", "cannot create", "taken is not a directory"],
        id="file-path-under-a-file",
    ),
    pytest.param(
        GEN
        + "sinks: {out: {type: file, inputs: [gen], path: o}}\n"
        + "dead_letters: {type: file, path: dl}\n",
        {"dl": "dir"},
        2,
        4,
        ["dead_letters.path", "is a directory"],
        id="dead-letter-path-is-a-directory",
    ),
]


@pytest.mark.parametrize(("text", "files", "code", "line", "words"), CASES)
def test_config_check(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    text: str,
    files: Files,
    code: int,
    line: int | None,
    words: list[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BIG", BIG_ENV)
    for name, kind in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir() if kind == "dir" else path.write_text("")
    config = tmp_path / "c.yaml"
    config.write_text(text)
    result = CliRunner().invoke(app, ["check", str(config)])
    output = result.stdout + result.stderr
    assert result.exit_code == code, output
    assert "Traceback" not in output
    if line is not None:
        assert f"line {line}:" in output, output
    elif code:
        assert "line " not in output, output
    for word in words:
        assert word in output, output


REGISTRY = Registry.from_entry_points()


def test_merge_keys_override_as_yaml_1_1_says_and_every_key_has_a_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    text = (
        DEFAULTS  # lines 1-4
        + "x-fast: &fast {batch: {max_events: 10}, path: fast.jsonl}\n"  # 5
        + GEN  # 6-7
        + "sinks:\n"  # 8
        + "  one: {<<: *filedefaults}\n"  # 9
        + "  two:\n    path: b.jsonl\n    <<: *filedefaults\n"  # 10-12
        + "  three:\n    <<: [*fast, *filedefaults]\n"  # 13-14
    )
    loaded = load_config_text(text, REGISTRY)
    sinks = loaded.model.sinks
    assert str(sinks["one"].path) == "a.jsonl"
    assert str(sinks["two"].path) == "b.jsonl"  # the own key wins wherever the merge is
    assert str(sinks["three"].path) == "fast.jsonl"  # the first merged mapping wins
    assert sinks["three"].batch.max_events == 10
    assert list(sinks) == ["one", "two", "three"]
    lines = loaded.source_map.lines
    assert lines[("sinks", "one", "path")] == 4  # a merged key: the anchor's line
    assert lines[("sinks", "two", "path")] == 11
    assert lines[("sinks", "three", "path")] == 5
    assert lines[("sinks", "three", "type")] == 2
    assert not any(path[:1] == ("x-file",) for path in lines)


def test_an_alias_bomb_is_refused_without_expanding_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nine levels of nine expand to 387 million values; measuring first takes one pass."""
    import tracemalloc

    monkeypatch.chdir(tmp_path)
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError) as caught:
            load_config_text(alias_bomb(), REGISTRY)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "line 6: x-a5: more than" in caught.value.render()
    assert peak < 5 * 1024 * 1024
