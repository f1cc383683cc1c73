"""A private NATS JetStream cluster to test against: ``nats-server`` nodes on loopback.

:class:`LocalNatsCluster` starts ``nodes`` (three by default) JetStream servers on free ports, each
with its own store directory, routed to each other (``--cluster_name``, ``--routes``), and waits
until the cluster answers JetStream requests (a stream with as many replicas as there are nodes can
be created). Each node is stopped by its PID: :meth:`kill_node` kills one (SIGKILL) and
:meth:`start_node` brings it back on the same ports and store. Needs the ``nats`` extra (nats-py) and
``nats-server`` (2.9 or later) on ``PATH`` or in ``SLUICE_NATS_SERVER``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sluice.testing.doubles import free_port

__all__ = ["LocalNatsCluster", "NatsNode", "server_binary"]

SERVER_ENV = "SLUICE_NATS_SERVER"


def server_binary() -> str | None:
    """The ``nats-server`` to start: ``$SLUICE_NATS_SERVER``, else the one on ``PATH`` (Debian
    puts it in ``/usr/sbin``, which is not on every user's path)."""
    configured = os.environ.get(SERVER_ENV)
    if configured:
        return configured
    return shutil.which("nats-server") or shutil.which("nats-server", path="/usr/sbin:/usr/bin")


@dataclass
class NatsNode:
    """One server of the cluster."""

    name: str
    port: int
    cluster_port: int
    store: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"


@dataclass
class LocalNatsCluster:
    """``nodes`` JetStream servers on loopback with their state under ``directory``."""

    directory: Path
    nodes: int = 3
    name: str = "sluice-test"
    token: str | None = None
    """When set, clients must authenticate with this token (``--auth``)."""
    server_args: list[str] = field(default_factory=list)
    """More ``nats-server`` arguments for every node (e.g. ``--tls`` and its files)."""
    client_options: dict[str, Any] = field(default_factory=dict)
    """More ``nats.connect`` options for :meth:`connect` (e.g. ``tls``: an SSL context)."""
    members: list[NatsNode] = field(default_factory=list)

    def __post_init__(self) -> None:
        for i in range(self.nodes):
            base = self.directory / f"n{i}"
            base.mkdir(parents=True, exist_ok=True)
            self.members.append(
                NatsNode(f"n{i}", free_port(), free_port(), base / "store", base / "server.log")
            )

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.members]

    def start(self, timeout: float = 30.0) -> None:
        """Start every node and wait until the cluster takes a replicated stream."""
        try:
            for node in self.members:
                self.start_node(node)
            asyncio.run(self.wait_ready(timeout))
        except BaseException:
            self.stop()
            raise

    def start_node(self, node: NatsNode) -> None:
        binary = server_binary()
        if binary is None:
            raise RuntimeError(f"no nats-server: set {SERVER_ENV} or install nats-server")
        routes = ",".join(
            f"nats://127.0.0.1:{other.cluster_port}" for other in self.members if other is not node
        )
        args = [
            binary,
            "--addr",
            "127.0.0.1",
            "--port",
            str(node.port),
            "--server_name",
            node.name,
            "-js",
            "--store_dir",
            str(node.store),
            "--log",
            str(node.log),
        ]
        if self.nodes > 1:
            args += [
                "--cluster_name",
                self.name,
                "--cluster",
                f"nats://127.0.0.1:{node.cluster_port}",
                "--routes",
                routes,
            ]
        if self.token is not None:
            args += ["--auth", self.token]
        args += self.server_args
        node.process = subprocess.Popen(args, stdin=subprocess.DEVNULL)  # noqa: S603

    def kill_node(self, node: NatsNode) -> None:
        """SIGKILL one node (by its PID) and wait for it to be gone."""
        if node.process is not None and node.process.poll() is None:
            node.process.kill()
            node.process.wait(10)
        node.process = None

    def stop(self) -> None:
        for node in self.members:
            self.kill_node(node)

    async def wait_ready(self, within_secs: float = 30.0) -> None:
        """Wait until the cluster takes a stream with a replica on every node."""
        from nats.js.api import StreamConfig

        deadline = time.monotonic() + within_secs
        last: BaseException | None = None
        while time.monotonic() < deadline:
            for node in self.members:
                if node.process is not None and node.process.poll() is not None:
                    raise RuntimeError(f"nats-server {node.name} exited: see {node.log}")
            try:
                nc = await self.connect(connect_timeout=1, allow_reconnect=False)
                try:
                    js = nc.jetstream(timeout=2)
                    await js.add_stream(
                        StreamConfig(
                            name="sluice_ready", subjects=["sluice.ready"], num_replicas=self.nodes
                        )
                    )
                    await js.delete_stream("sluice_ready")
                    return
                finally:
                    with contextlib.suppress(Exception):
                        await nc.close()
            except Exception as exc:  # not up yet, or no meta leader elected yet
                last = exc
            await asyncio.sleep(0.1)
        raise TimeoutError(f"the NATS cluster was not ready within {within_secs}s: {last!r}")

    async def connect(self, **options: Any) -> Any:
        """A nats-py client of the cluster (with its token, if it has one)."""
        import nats

        if self.token is not None:
            options["token"] = self.token
        return await nats.connect(self.urls, error_cb=_quiet, **self.client_options, **options)

    async def stream_leader(self, stream: str) -> NatsNode:
        """The node that leads ``stream`` now."""

        nc = await self.connect(connect_timeout=2)
        try:
            info = await nc.jetstream(timeout=5).stream_info(stream)
        finally:
            await nc.close()
        assert info.cluster is not None and info.cluster.leader is not None
        [leader] = [node for node in self.members if node.name == info.cluster.leader]
        return leader


async def _quiet(exc: Exception) -> None:
    """nats-py's default error callback logs a traceback per refused connection: not news here."""
