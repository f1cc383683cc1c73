"""A real small volume for "disk full" tests: a tmpfs mounted on a temporary directory.

The tests run as root (CI and this machine do), so a full disk is the real thing, not a patched
``os.write``. A test that cannot mount fails: it does not skip.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def small_tmpfs(path: Path, size_bytes: int) -> Iterator[Path]:
    """Mount a tmpfs of ``size_bytes`` on ``path`` (created) and unmount it afterwards."""
    if os.geteuid() != 0:
        pytest.fail("mounting a tmpfs needs root (the test suite runs as root in CI)")
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_bytes},mode=0755", "tmpfs", str(path)],
        check=True,
        capture_output=True,
    )
    try:
        yield path
    finally:
        done = subprocess.run(["umount", str(path)], check=False, capture_output=True)
        if done.returncode != 0:  # a process of the test still holds a file: detach it anyway
            subprocess.run(["umount", "-l", str(path)], check=True, capture_output=True)


def fill(volume: Path, leave_bytes: int) -> Path:
    """Write a filler file that leaves about ``leave_bytes`` free on ``volume``; returns it."""
    stat = os.statvfs(volume)
    free = stat.f_bavail * stat.f_frsize
    filler = volume / "filler"
    with filler.open("wb") as file:
        file.write(b"\0" * max(0, free - leave_bytes))
    return filler


def free_bytes(volume: Path) -> int:
    stat = os.statvfs(volume)
    return stat.f_bavail * stat.f_frsize
