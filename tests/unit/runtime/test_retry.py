from __future__ import annotations

import random
from typing import Any

import pytest

from sluice.config.models import RetryPolicy
from sluice.errors import (
    BrokenError,
    ErrorKind,
    PermanentError,
    RejectedRecords,
    RetriableError,
    classify,
    is_retriable,
    is_transient,
)
from sluice.runtime.retry import Cadence, Retrying


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.lines.append(("warning", event, fields))

    def debug(self, event: str, **fields: Any) -> None:
        self.lines.append(("debug", event, fields))

    def info(self, event: str, **fields: Any) -> None:
        self.lines.append(("info", event, fields))

    def levels(self) -> list[str]:
        return [level for level, _, _ in self.lines]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


POLICY = RetryPolicy(initial_backoff_secs=1.0, max_backoff_secs=8.0, multiplier=2.0)


def test_delays_grow_to_the_cap_with_jitter_and_honour_retry_after() -> None:
    retry = Retrying(POLICY, Log(), "x", rng=random.Random(1))
    delays = [retry.failed(OSError("down")) for _ in range(6)]
    caps = [1, 2, 4, 8, 8, 8]
    assert all(cap / 2 <= delay <= cap for delay, cap in zip(delays, caps, strict=True))
    assert retry.attempt == 6
    assert retry.failed(RetriableError("slow down", retry_after_secs=30.0)) == 30.0


def test_attempt_limit_is_reached_on_the_last_allowed_attempt() -> None:
    retry = Retrying(POLICY.model_copy(update={"max_attempts": 3}), Log(), "x")
    seen = []
    for _ in range(3):
        seen.append(retry.exhausted())
        if not seen[-1]:
            retry.failed(OSError())
    assert seen == [False, False, True]
    assert not Retrying(POLICY, Log(), "x").exhausted()  # no limit


def test_log_cadence_by_attempts() -> None:
    log = Log()
    retry = Retrying(POLICY, log, "sink.write.retrying", cadence=Cadence(first=3, every=10))
    for _ in range(20):
        retry.failed(OSError("refused"), records=5)
    loud = [i + 1 for i, level in enumerate(log.levels()) if level == "warning"]
    assert loud == [1, 2, 3, 10, 20]
    _, event, fields = log.lines[0]
    assert event == "sink.write.retrying"
    assert fields["error"] == "refused" and fields["error_type"] == "OSError"
    assert (fields["attempt"], fields["records"]) == (1, 5)
    assert "retry_in_secs" in fields


def test_log_cadence_by_time_and_recovery_line() -> None:
    log, clock = Log(), Clock()
    retry = Retrying(POLICY, log, "failing", cadence=Cadence(first=1, every_secs=30.0), clock=clock)
    for second in (0, 10, 29, 31, 40, 62):
        clock.now = second
        retry.failed(OSError())
    assert log.levels() == ["warning", "debug", "debug", "warning", "debug", "warning"]
    clock.now = 70
    assert retry.recovered("recovered", path="p") == 70
    assert log.lines[-1] == ("info", "recovered", {"failed_for_secs": 70, "path": "p"})
    assert retry.attempt == 0 and retry.since is None
    assert retry.recovered("recovered") is None  # nothing failed since: no line
    assert len(log.lines) == 7


def test_every_attempt_is_a_warning_by_default() -> None:
    log = Log()
    retry = Retrying(POLICY, log, "source.restarting")
    for _ in range(12):
        retry.failed(TimeoutError())
    assert set(log.levels()) == {"warning"}
    assert log.lines[0][2]["error"] == "TimeoutError"  # an empty message names the type


@pytest.mark.parametrize(
    ("exc", "kind", "transient", "retriable"),
    [
        (RetriableError("x"), ErrorKind.TRANSIENT, True, True),
        (ConnectionRefusedError(), ErrorKind.TRANSIENT, True, True),
        (TimeoutError(), ErrorKind.TRANSIENT, True, True),
        (BrokenError("x"), ErrorKind.BROKEN, False, False),
        (PermanentError("x"), ErrorKind.PERMANENT, False, False),
        (RejectedRecords({0: "bad"}), ErrorKind.REJECTED, False, False),
        (ValueError("bug"), ErrorKind.UNKNOWN, False, True),
    ],
)
def test_one_classifier(
    exc: BaseException, kind: ErrorKind, transient: bool, retriable: bool
) -> None:
    assert classify(exc) is kind
    assert is_transient(exc) is transient
    assert is_retriable(exc) is retriable
