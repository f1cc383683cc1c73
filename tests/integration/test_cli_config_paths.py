"""`sluice check` and `sluice run` as a user runs them, on local paths that cannot be used: both exit
2 naming the key and its line, before anything starts (no traceback, nothing written)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import SLUICE

CONFIG = (
    "sources:\n"  # 1
    "  gen: {type: generator, count: 10}\n"  # 2
    "sinks:\n"  # 3
    "  out:\n"  # 4
    "    type: file\n"  # 5
    "    inputs: [gen]\n"  # 6
    "    path: PATH\n"  # 7
    "data_dir: DATA_DIR\n"  # 8
    "admin: {enabled: false}\n"
)

CASES = [
    pytest.param(
        {"state": "file"},
        "out.jsonl",
        "state",
        "line 8: data_dir: ",
        "state is a file, not a directory",
        id="data-dir-is-a-file",
    ),
    pytest.param(
        {"out.jsonl": "dir"},
        "out.jsonl",
        "state",
        "line 7: sinks.out.path: ",
        "out.jsonl is a directory, not a file",
        id="directory-as-path",
    ),
    pytest.param(
        {"taken": "file"},
        "taken/out.jsonl",
        "state",
        "line 7: sinks.out.path: ",
        "taken is not a directory",
        id="path-under-a-file",
    ),
]


@pytest.mark.parametrize("command", ["check", "run"])
@pytest.mark.parametrize(("files", "path", "data_dir", "where", "words"), CASES)
def test_unusable_local_paths_exit_2_from_check_and_run(
    workdir: Path,
    command: str,
    files: dict[str, str],
    path: str,
    data_dir: str,
    where: str,
    words: str,
) -> None:
    for name, kind in files.items():
        (workdir / name).mkdir() if kind == "dir" else (workdir / name).write_text("")
    (workdir / "p.yaml").write_text(CONFIG.replace("DATA_DIR", data_dir).replace("PATH", path))
    before = sorted(p.name for p in workdir.iterdir())
    done = subprocess.run([*SLUICE, command, "p.yaml"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert where in done.stderr, done.stderr
    assert words in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in workdir.iterdir()) == before  # nothing started, nothing made
