"""Can sluice create and write the local paths a config names? Asked by ``sluice check`` and before
a run, so that a directory where a file should be (or a file where a directory should be) is a
config problem with its key and line, not a run that retries for ever.

The answers look at the filesystem as it is now; what changes after the check is met at run time
(see :func:`sluice.errors.classify_os_error`).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["directory_problem", "file_problem"]


def directory_problem(path: Path) -> str | None:
    """Why ``path`` cannot be a directory that sluice creates (with its parents) and writes in."""
    try:
        if path.exists():
            if not path.is_dir():
                return f"{path.absolute()} is a file, not a directory"
            if not os.access(path, os.W_OK | os.X_OK):
                return f"no permission to write in {path.absolute()}"
            return None
        return _creatable(path)
    except OSError as exc:
        return f"cannot use {path.absolute()}: {exc.strerror or exc}"


def file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be a file that sluice creates (with its parents) or appends to."""
    try:
        if path.is_dir():
            return f"{path.absolute()} is a directory, not a file"
        if path.exists():
            if not os.access(path, os.W_OK):
                return f"no permission to write {path.absolute()}"
            return None
        return _creatable(path)
    except OSError as exc:
        return f"cannot use {path.absolute()}: {exc.strerror or exc}"


def _creatable(path: Path) -> str | None:
    """Whether the nearest existing ancestor of ``path`` lets the rest of it be created."""
    ancestor = path.absolute().parent
    while not ancestor.exists() and not ancestor.is_symlink() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"cannot create {path.absolute()}: {ancestor} is not a directory"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"cannot create {path.absolute()}: no permission to write in {ancestor}"
    return None
