"""The shared error vocabulary between plugins and the runner.

A sink's ``write_batch`` signals what happened by what it raises:

- nothing: every record of the batch is durably written;
- :class:`RetriableError` (or ``OSError``/``TimeoutError``): nothing can be assumed written; the
  runner retries the whole batch with backoff, so a sink must tolerate a repeat (idempotent insert,
  or at-least-once documented);
- :class:`RejectedRecords`: every record was written except those named, which can never be
  written; they go to the dead letters with their reasons;
- :class:`PermanentError`: the batch as a whole can never be written; all its records go to the
  dead letters with the error as reason;
- :class:`BrokenError` (a :class:`PermanentError`): the sink can write nothing until someone acts
  (a directory where its file should be, no permission to create it). The runner logs it once,
  marks the sink not ready and sends this batch and every later one to the dead letters without
  trying the sink again; when the dead-letter sink itself is broken the run fails (exit 1).
  :func:`classify_os_error` tells such an ``OSError`` from one that may heal (a full disk).

Any other exception is treated as retriable and logged with its type, so a bug in a sink stalls the
sink visibly (errors metric, logs) rather than losing data.

:func:`classify` is the one place that sorts an exception into these kinds; every retry loop of the
runner asks it.
"""

from __future__ import annotations

import enum
import errno
from collections.abc import Mapping

__all__ = [
    "CANNOT_HEAL",
    "BrokenError",
    "ErrorKind",
    "PermanentError",
    "QueryRefused",
    "RejectedRecords",
    "RetriableError",
    "SluiceError",
    "classify",
    "classify_os_error",
    "is_retriable",
    "is_transient",
]


class SluiceError(Exception):
    """Base class of sluice's own errors."""


class RetriableError(SluiceError):
    """A transient failure: try the same batch again later.

    ``retry_after_secs`` is a hint from the remote side (e.g. a Retry-After header); the runner waits
    at least that long before the next attempt.
    """

    def __init__(self, message: str, *, retry_after_secs: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_secs = retry_after_secs


class PermanentError(SluiceError):
    """The batch can never be written as it is; its records go to the dead letters."""


class BrokenError(PermanentError):
    """The sink cannot write anything until an operator acts; retrying cannot help."""


class RejectedRecords(SluiceError):
    """Some records can never be written; all the others of the batch were written.

    ``rejected`` maps the index of each bad record in the batch to the reason.
    """

    def __init__(self, rejected: Mapping[int, str]) -> None:
        super().__init__(f"{len(rejected)} record(s) rejected")
        self.rejected = dict(rejected)


class ErrorKind(enum.Enum):
    """What an exception means for the runner; see :func:`classify`."""

    TRANSIENT = "transient"
    """A passing condition (:class:`RetriableError`, ``OSError``, ``TimeoutError``): try again."""
    REJECTED = "rejected"
    """:class:`RejectedRecords`: the named records go to the dead letters, the rest was written."""
    PERMANENT = "permanent"
    """:class:`PermanentError`: the batch goes to the dead letters."""
    BROKEN = "broken"
    """:class:`BrokenError`: the component can do nothing until an operator acts."""
    UNKNOWN = "unknown"
    """Anything else (a bug): a sink write retries it; a source or a sink start fails the run."""


_TRANSIENT = (RetriableError, OSError, TimeoutError)


def classify(exc: BaseException) -> ErrorKind:
    """The kind of ``exc``, the one classification every retry loop uses."""
    if isinstance(exc, _TRANSIENT):
        return ErrorKind.TRANSIENT
    if isinstance(exc, BrokenError):
        return ErrorKind.BROKEN
    if isinstance(exc, PermanentError):
        return ErrorKind.PERMANENT
    if isinstance(exc, RejectedRecords):
        return ErrorKind.REJECTED
    return ErrorKind.UNKNOWN


def is_transient(exc: BaseException) -> bool:
    """True for a passing condition: a source is restarted, a sink start is tried again."""
    return classify(exc) is ErrorKind.TRANSIENT


def is_retriable(exc: BaseException) -> bool:
    """True unless the error says the data itself is bad: a sink write is tried again."""
    return classify(exc) in (ErrorKind.TRANSIENT, ErrorKind.UNKNOWN)


CANNOT_HEAL = frozenset(
    {
        errno.EISDIR,  # a directory where a file should be
        errno.ENOTDIR,  # a file where a directory should be
        errno.EACCES,  # no permission to create or open
        errno.EPERM,
        errno.EROFS,  # a read-only filesystem
        errno.ELOOP,
        errno.ENAMETOOLONG,
    }
)
"""``errno`` values that waiting does not cure: an operator has to act."""


def classify_os_error(exc: OSError, doing: str) -> BrokenError | RetriableError:
    """``exc`` as the runner should see it: a :class:`BrokenError` when its errno is one of
    :data:`CANNOT_HEAL`, else a :class:`RetriableError` (a full disk, an I/O error: the same batch
    is tried again later). The message is ``doing``, the error and its errno name."""
    name = errno.errorcode.get(exc.errno, "") if exc.errno is not None else ""
    message = f"{doing}: {exc.strerror or exc}" + (f" ({name})" if name else "")
    if exc.errno in CANNOT_HEAL:
        return BrokenError(message)
    return RetriableError(message)


class QueryRefused(SluiceError, ValueError):
    """A query from outside (``sluice sql``, the admin port) is not one a sink's store may run:
    not read-only, or reaching outside the store. The message says why; not retried."""
