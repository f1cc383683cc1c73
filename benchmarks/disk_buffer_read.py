"""Micro-benchmark: CPU time for a disk buffer to read back 200,000 records (400 frames of 500).

Compare two versions of the code in the same minute (the figure is CPU seconds, not a rate):
``PYTHONPATH=/tmp/old/src python benchmarks/disk_buffer_read.py`` beside
``python benchmarks/disk_buffer_read.py``.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from sluice.config.models import BatchPolicy, BufferPolicy
from sluice.records import Record
from sluice.runtime.buffers import Segment
from sluice.runtime.buffers.disk import DiskBuffer
from sluice.runtime.ledger import Ledger


async def _committed(_: object) -> None:
    return None


async def main() -> None:
    directory = Path(tempfile.mkdtemp())
    buffer = DiskBuffer(
        directory,
        BufferPolicy(type="disk", max_events=10_000_000, max_bytes=2_000_000_000),
        BatchPolicy(max_events=5000, max_age_secs=0.01),
    )
    template = b'{"seq":%d,"payload":"' + b"x" * 350 + b'"}'
    for frame in range(400):
        records = [Record(template % (frame * 500 + i), "k", 1.0) for i in range(500)]
        ticket = Ledger(_committed, lambda exc: None).open(None)
        await buffer.put(Segment(records, sum(len(r.raw) for r in records), ticket))
    buffer.close(drain=True)
    started, count = time.process_time(), 0
    while (batch := await buffer.next_batch()) is not None:
        count += len(batch.records)
        for segment in batch.segments:
            segment.ticket.release()
    print(f"{count} records read in {time.process_time() - started:.3f} CPU-s")


if __name__ == "__main__":
    asyncio.run(main())
