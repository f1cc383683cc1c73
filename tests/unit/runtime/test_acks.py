from typing import Any

from sluice.runtime.acks import CommitTracker


async def test_commits_only_the_done_prefix_in_order() -> None:
    committed: list[Any] = []

    async def commit(token: Any) -> None:
        committed.append(token)

    tracker = CommitTracker(commit, lambda e: None)
    first, second, third = tracker.open(1), tracker.open(2), tracker.open(3)
    second.release()  # done out of order: nothing can be committed yet
    await tracker.flush()
    assert committed == []
    first.release()
    await tracker.flush()
    assert committed == [2]
    third.add()
    third.release()
    await tracker.flush()
    assert committed == [2]  # one piece of the third batch still in flight
    third.release()
    await tracker.flush()
    assert committed == [2, 3]
    assert tracker.in_flight == 0


async def test_failed_commit_is_reported_not_raised() -> None:
    errors: list[BaseException] = []

    async def commit(token: Any) -> None:
        raise OSError("disk full")

    tracker = CommitTracker(commit, errors.append)
    tracker.open("t").release()
    await tracker.flush()
    assert len(errors) == 1
