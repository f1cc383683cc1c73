# ruff: noqa: S108, S310, S603 - a test helper: a local server it starts itself (its own tmp dir)
"""Test helpers shipped for users' own tests: Coinbase-like ticker records, a private ClickHouse
server (generated config, free ports, a temporary data directory) and a chDB directory opened in
this process, both with the same small query interface.

The server binary is ``$SLUICE_CLICKHOUSE_SERVER``, else ``clickhouse-server`` on ``PATH``, else
``/usr/sbin/clickhouse-server`` (:func:`server_binary`). Each server gets its own generated password
for its ``sluice`` user (:attr:`LocalServer.password`). Nothing here is used by a running pipeline.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import orjson

from sluice.sinks.clickhouse.ddl import DEFAULT_DDL, LEGACY_DDL, render_statements, shipped_sql
from sluice.sinks.clickhouse.schema import ServerInfo, parse_version
from sluice.testing.doubles import free_port

__all__ = [
    "ClickHouseStore",
    "LocalChdb",
    "LocalCluster",
    "LocalServer",
    "LocalZooKeeper",
    "QueryError",
    "server_binary",
    "ticker",
    "ticker_bytes",
]

SERVER_ENV = "SLUICE_CLICKHOUSE_SERVER"
_SYSTEM_BINARY = Path("/usr/sbin/clickhouse-server")


def server_binary() -> str | None:
    """The ``clickhouse-server`` to start: ``$SLUICE_CLICKHOUSE_SERVER``, else the one on ``PATH``,
    else Debian's ``/usr/sbin/clickhouse-server``; None when there is none."""
    configured = os.environ.get(SERVER_ENV)
    if configured:
        return shutil.which(configured)
    found = shutil.which("clickhouse-server")
    if found is not None:
        return found
    return str(_SYSTEM_BINARY) if os.access(_SYSTEM_BINARY, os.X_OK) else None


PRODUCTS = ("BTC-USD", "ETH-USD", "SOL-USD")
BASE_TIME = 1_761_000_000.0


def ticker(n: int, **overrides: Any) -> dict[str, Any]:
    """The ``n``-th ticker message, shaped like Coinbase's (decimal strings, RFC 3339 time)."""
    product = PRODUCTS[n % len(PRODUCTS)]
    stamp = datetime.fromtimestamp(BASE_TIME + n * 0.001234, UTC)
    price = 60000 + (n % 1000) * 0.01
    message: dict[str, Any] = {
        "type": "ticker",
        "sequence": 100_000_000_000 + n,
        "product_id": product,
        "price": f"{price:.2f}",
        "open_24h": "59000.01",
        "volume_24h": "12345.67890123",
        "low_24h": "58000",
        "high_24h": "61000.5",
        "volume_30d": "456789.12345678",
        "best_bid": f"{price - 0.01:.2f}",
        "best_bid_size": "0.25000000",
        "best_ask": f"{price + 0.01:.2f}",
        "best_ask_size": "1.10000000",
        "side": "buy" if n % 2 else "sell",
        "time": stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "trade_id": 800_000_000 + n,
        "last_size": "0.00123400",
    }
    message.update(overrides)
    return {k: v for k, v in message.items() if v is not None}


def ticker_bytes(n: int, **overrides: Any) -> bytes:
    """The JSON of :func:`ticker`; a field given as None is left out."""
    # copied: orjson's result keeps a few kB of spare allocation, unlike bytes read from a socket
    return bytes(memoryview(orjson.dumps(ticker(n, **overrides))))


class QueryError(RuntimeError):
    """ClickHouse refused a statement; the message is its answer."""


class ClickHouseStore(ABC):
    """A ClickHouse to check a sink against: statements in, rows out, and the sink's target."""

    embedded: ClassVar[bool] = False

    @abstractmethod
    def query(self, sql: str, *, user: str = "default", password: str = "") -> str:
        """Run ``sql``; its answer as text (TabSeparated unless it says FORMAT). Raises
        QueryError."""

    def rows(self, sql: str, *, user: str = "default", password: str = "") -> list[list[Any]]:
        """The rows of a SELECT, typed as JSON gives them (64-bit integers as numbers)."""
        text = self.query(sql + "\nFORMAT JSONCompact", user=user, password=password)
        return [list(row) for row in orjson.loads(text)["data"]] if text.strip() else []

    @property
    @abstractmethod
    def target(self) -> dict[str, str]:
        """The clickhouse sink's config keys that point at this store (``url`` or ``path``)."""

    def info(self) -> ServerInfo:
        [[version]] = self.rows("SELECT version()")
        return ServerInfo(parse_version(str(version)), embedded=self.embedded)

    def create_ticker_table(
        self, database: str = "coinbase_demo", table: str = "coinbase_ticker"
    ) -> None:
        """Create the Coinbase ticker table from the shipped DDL, as the sink does with
        ``create: true``: ``sql/coinbase_ticker.sql``, or ``coinbase_ticker.legacy.sql`` where
        the engine has no DateTime64."""
        name = DEFAULT_DDL if self.info().has_datetime64 else LEGACY_DDL
        for statement in render_statements(shipped_sql(name).read_text(), database, table):
            self.query(statement)


@dataclass(eq=False)
class LocalServer(ClickHouseStore):
    """A clickhouse-server of its own: generated config, free ports, a temporary data dir.

    ``users_d`` files (name -> XML) go to the ``users.d`` directory beside the generated users,
    e.g. a read-only user. Besides ``default`` (no password) there is a user ``sluice`` with
    :attr:`password`, generated per server. ``binary``: see :func:`server_binary`.
    """

    root: Path
    users_d: dict[str, str] = field(default_factory=dict)
    password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    """The ``sluice`` user's password."""
    binary: str | None = field(default_factory=server_binary)
    http_port: int = field(default_factory=free_port)
    tcp_port: int = field(default_factory=free_port)
    interserver_port: int = field(default_factory=free_port)
    cluster_xml: str = ""
    """``<remote_servers>``, ``<macros>`` and ``<zookeeper>`` sections for a cluster member
    (:class:`LocalCluster` writes them)."""
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def target(self) -> dict[str, str]:
        return {"url": self.url}

    def write_config(self) -> Path:
        for name in ("data", "tmp", "user_files", "format_schemas", "log", "users.d"):
            (self.root / name).mkdir(parents=True, exist_ok=True)
        for name, text in self.users_d.items():
            (self.root / "users.d" / name).write_text(text)
        (self.root / "users.xml").write_text(
            f"""<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>4000000000</max_memory_usage></default></profiles>
  <users>
    <default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
      <profile>default</profile><quota>default</quota></default>
    <sluice><password>{self.password}</password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
      <profile>default</profile><quota>default</quota></sluice>
  </users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
    <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time>
  </interval></default></quotas>
</yandex>
"""
        )
        config = self.root / "config.xml"
        config.write_text(
            f"""<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>{self.root}/log/server.log</log>
    <errorlog>{self.root}/log/error.log</errorlog><console>0</console></logger>
  <http_port>{self.http_port}</http_port>
  <tcp_port>{self.tcp_port}</tcp_port>
  <interserver_http_port>{self.interserver_port}</interserver_http_port>
  <listen_host>127.0.0.1</listen_host>
  <path>{self.root}/data/</path>
  <tmp_path>{self.root}/tmp/</tmp_path>
  <user_files_path>{self.root}/user_files/</user_files_path>
  <format_schema_path>{self.root}/format_schemas/</format_schema_path>
  <users_config>{self.root}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <mark_cache_size>536870912</mark_cache_size>
  <uncompressed_cache_size>536870912</uncompressed_cache_size>
  <mlock_executable>false</mlock_executable>
  <interserver_http_host>127.0.0.1</interserver_http_host>
{self.cluster_xml}
</yandex>
"""
        )
        return config

    def start(self, timeout: float = 60.0) -> None:
        if self.binary is None:
            raise RuntimeError(
                f"no clickhouse-server: set {SERVER_ENV} or put clickhouse-server on PATH"
            )
        config = self.write_config()
        with (self.root / "log" / "stderr.log").open("ab") as stderr:
            self.process = subprocess.Popen(
                [self.binary, f"--config-file={config}"],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                cwd=self.root,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = (self.root / "log" / "error.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"clickhouse-server exited ({self.process.returncode}): {log}")
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(f"{self.url}/ping", timeout=1) as answer,
            ):
                if answer.status == 200:
                    return
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"clickhouse-server did not answer on {self.url} in {timeout}s")

    def kill(self) -> None:
        """SIGKILL, as a crash would (no flush, no goodbye)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        self.process = None

    def query(self, sql: str, *, user: str = "default", password: str = "") -> str:
        params = {"user": user, "password": password, "output_format_json_quote_64bit_integers": 0}
        request = urllib.request.Request(
            f"{self.url}/?{urllib.parse.urlencode(params)}", data=sql.encode(), method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return str(answer.read().decode())
        except urllib.error.HTTPError as exc:
            raise QueryError(exc.read().decode(errors="replace").strip()) from exc


class LocalChdb(ClickHouseStore):
    """A chDB data directory opened in this process, for a test to set up and read back what a
    clickhouse sink with the same ``path`` wrote. chDB runs one engine per process: while this is
    open, sinks of this process can open this directory only. ``user`` is ignored."""

    embedded = True

    def __init__(self, path: Path) -> None:
        from sluice.sinks.clickhouse import embedded

        self.path = path.resolve()
        embedded.claim_engine(self.path)
        try:
            from chdb import state

            self._connection: Any = state.connect(
                f"{self.path}?output_format_json_quote_64bit_integers=0"
            )
        except BaseException:
            embedded.release_engine()
            raise

    @property
    def target(self) -> dict[str, str]:
        return {"path": str(self.path)}

    def query(self, sql: str, *, user: str = "default", password: str = "") -> str:
        if self._connection is None:
            raise QueryError(f"chdb:{self.path} is closed")
        try:
            return str(self._connection.query(sql, "TabSeparated").bytes().decode())
        except RuntimeError as exc:  # chDB's errors carry the engine's message
            raise QueryError(str(exc)) from exc

    def close(self) -> None:
        from sluice.sinks.clickhouse import embedded

        if self._connection is not None:
            self._connection.close()
            self._connection = None
            embedded.release_engine()


@dataclass(eq=False)
class LocalZooKeeper:
    """A ZooKeeper of its own (Debian's ``zookeeper`` package and Java): standalone, on a free
    port, with its data in ``root``. What replicated ClickHouse tables and ``ON CLUSTER`` DDL
    need."""

    root: Path
    port: int = field(default_factory=free_port)
    classpath: str = "/etc/zookeeper/conf:/usr/share/java/*"
    process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        java = shutil.which("java")
        if java is None:
            raise RuntimeError("no java on PATH: install Debian's zookeeper package")
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        config = self.root / "zoo.cfg"
        config.write_text(
            f"tickTime=500\ninitLimit=10\nsyncLimit=5\ndataDir={self.root}/data\n"
            f"clientPort={self.port}\nclientPortAddress=127.0.0.1\n"
            "admin.enableServer=false\n4lw.commands.whitelist=srvr\n"
        )
        with (self.root / "zookeeper.log").open("ab") as out:
            self.process = subprocess.Popen(
                [
                    java,
                    "-Xmx256m",
                    f"-Dzookeeper.log.dir={self.root}",
                    "-cp",
                    self.classpath,
                    "org.apache.zookeeper.server.quorum.QuorumPeerMain",
                    str(config),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = (self.root / "zookeeper.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"zookeeper exited ({self.process.returncode}): {log}")
            if self._serving():
                return
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"zookeeper did not answer on 127.0.0.1:{self.port} in {timeout}s")

    def _serving(self) -> bool:
        """ZooKeeper serves sessions (``srvr`` answers with its version; a server that runs but
        does not serve yet says so instead, and a session opened then fails its handshake)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"srvr")
                return sock.recv(64).startswith(b"Zookeeper version")
        except OSError:
            return False

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        self.process = None


@dataclass(eq=False)
class LocalCluster:
    """Several :class:`LocalServer` processes forming one ClickHouse cluster named ``name``:
    ``shards`` lists how many replicas each shard has (``[2]``: one shard of two replicas,
    ``[1, 1]``: two shards), with ``{shard}``/``{replica}`` macros, a ``remote_servers`` entry
    (``internal_replication``: the replicated tables copy the data) and ZooKeeper for
    replication and ``ON CLUSTER`` DDL."""

    root: Path
    shards: list[int]
    name: str = "sluice"
    binary: str | None = field(default_factory=server_binary)
    zookeeper: LocalZooKeeper | None = None
    servers: list[LocalServer] = field(default_factory=list)
    layout: list[tuple[int, int]] = field(default_factory=list)
    """(shard, replica), numbered from 1, of each server."""

    def __post_init__(self) -> None:
        self.zookeeper = LocalZooKeeper(self.root / "zookeeper")
        for shard, replicas in enumerate(self.shards, 1):
            for replica in range(1, replicas + 1):
                self.layout.append((shard, replica))
                self.servers.append(
                    LocalServer(self.root / f"s{shard}r{replica}", binary=self.binary)
                )
        shard_xml = []
        index = 0
        for replicas in self.shards:
            nodes = []
            for _ in range(replicas):
                server = self.servers[index]
                nodes.append(
                    f"<replica><host>127.0.0.1</host><port>{server.tcp_port}</port>"
                    "<user>default</user></replica>"
                )
                index += 1
            shard_xml.append(
                "<shard><internal_replication>true</internal_replication>"
                + "".join(nodes)
                + "</shard>"
            )
        assert self.zookeeper is not None
        for server, (shard, replica) in zip(self.servers, self.layout, strict=True):
            server.cluster_xml = f"""\
  <remote_servers><{self.name}>{"".join(shard_xml)}</{self.name}></remote_servers>
  <macros><shard>{shard}</shard><replica>r{replica}</replica></macros>
  <zookeeper><node><host>127.0.0.1</host><port>{self.zookeeper.port}</port></node>
    <session_timeout_ms>6000</session_timeout_ms></zookeeper>
  <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>"""

    @property
    def urls(self) -> list[str]:
        return [server.url for server in self.servers]

    def start(self, timeout: float = 60.0) -> None:
        assert self.zookeeper is not None
        try:
            self.zookeeper.start(timeout)
            for server in self.servers:
                server.start(timeout)
        except BaseException:
            self.kill()
            raise

    def kill(self) -> None:
        """Stop every server, then ZooKeeper (each by its PID)."""
        for server in self.servers:
            server.kill()
        if self.zookeeper is not None:
            self.zookeeper.kill()
