"""Config models shared by every component, and the top level of a pipeline's config.

A plugin's config model subclasses :class:`SourceConfig` or :class:`SinkConfig`, declares
``type: Literal["name"]`` and its own fields, and may override the defaults of the shared blocks
(``batch``, ``buffer``, ``retry``). The whole config model is assembled from the registered plugins
by :func:`sluice.config.assembly.build_config_model`, so the JSON Schema and the reference docs are
generated from the same models that validate.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from sluice.config.alerts import AlertsConfig

__all__ = [
    "AdminConfig",
    "BatchPolicy",
    "BufferPolicy",
    "Claim",
    "ComponentConfig",
    "ComponentId",
    "LocalPath",
    "LogConfig",
    "PipelineConfigBase",
    "RateLimit",
    "RetryPolicy",
    "ShutdownConfig",
    "SinkConfig",
    "SourceConfig",
    "StrictModel",
    "is_loopback",
]

ComponentId = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$"),
]

KiB = 1024
MiB = 1024 * KiB


class StrictModel(BaseModel):
    """A config block: unknown keys are errors, values are validated once, at load."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class BatchPolicy(StrictModel):
    """When a sink's batcher hands a batch to the sink: whichever limit is reached first."""

    max_events: int = Field(1000, gt=0, description="Records per batch at most.")
    max_bytes: int = Field(
        1 * MiB, gt=0, description="Bytes (of the records' JSON) per batch at most."
    )
    max_age_secs: float = Field(
        0.5, gt=0, description="Longest a record waits in the buffer before its batch is written."
    )


class BufferPolicy(StrictModel):
    """The bounded queue in front of a sink."""

    type: Literal["memory", "disk"] = Field(
        "memory",
        description=(
            "`memory` is fastest, but a crash of the process (kill -9, out of memory) loses what "
            "it holds: per sink at most `max_events` + the sink's `batch.max_events` + two source "
            "batches (one admitted over the limit, one waiting for room), fewer if `max_bytes` "
            "binds first; a source with a checkpoint (`file`) reads them again. `disk` keeps the "
            "buffer in `<data_dir>/sinks/<id>/buffer/`, so records a source cannot replay survive "
            "a crash or restart (raise `max_bytes` for it)."
        ),
    )
    max_events: int = Field(
        20_000, gt=0, description="Records held at most; one source batch may overshoot it."
    )
    max_bytes: int = Field(32 * MiB, gt=0, description="Bytes held at most (as above).")
    when_full: Literal["block", "drop_newest"] = Field(
        "block",
        description=(
            "`block` makes the sources wait (backpressure, nothing lost); `drop_newest` discards "
            "incoming records while the buffer is full, counting and logging them."
        ),
    )
    fsync_interval_secs: float | None = Field(
        1.0,
        gt=0,
        description=(
            "With `type: disk`, fsync the buffer at most this often (what a power cut can lose); "
            "unset leaves it to the OS. A crash of the process loses nothing either way."
        ),
    )


class RetryPolicy(StrictModel):
    """How a failed batch is retried: exponential backoff with jitter."""

    initial_backoff_secs: float = Field(0.1, gt=0, description="First delay before a retry.")
    max_backoff_secs: float = Field(30.0, gt=0, description="Longest delay between retries.")
    multiplier: float = Field(2.0, ge=1, description="Growth of the delay per attempt.")
    jitter: Literal["equal", "full"] = Field(
        "equal",
        description=(
            "`equal`: each delay is between half and all of the current backoff; `full`: between "
            "`initial_backoff_secs` and all of it (spreads many clients more)."
        ),
    )
    max_attempts: int | None = Field(
        None,
        gt=0,
        description=(
            "Attempts before the batch goes to the dead letters; unset retries until it succeeds "
            "or the process stops (the records are then counted as not written)."
        ),
    )


class RateLimit(StrictModel):
    """A token bucket: at most `events_per_sec` on average, bursts of up to `burst`."""

    events_per_sec: float = Field(gt=0, description="Sustained rate.")
    burst: int | None = Field(
        None, gt=0, description="Bucket size; defaults to one second's worth of events."
    )


@dataclass(frozen=True)
class Claim:
    """A resource a component uses, so that two components cannot write one file.

    Two claims on the same ``resource`` conflict unless both are reads.
    """

    resource: str
    field: str
    mode: Literal["read", "write"]


@dataclass(frozen=True)
class LocalPath:
    """A path on this machine that a component creates and writes (``kind`` says which it is), so
    that ``sluice check`` and ``sluice run`` can refuse, with the key's line, a path that cannot be."""

    field: str
    path: Path
    kind: Literal["file", "directory"]


class ComponentConfig(StrictModel):
    """Fields every source and sink has."""

    type: str = Field(description="The plugin's name, as `sluice plugins` lists it.")
    rate_limit: RateLimit | None = Field(
        None, description="Cap on the records per second this component handles."
    )

    def claims(self) -> Iterable[Claim]:
        """Resources this component uses exclusively (files, directories); none by default."""
        return ()

    def local_paths(self) -> Iterable[LocalPath]:
        """Local files and directories this component creates or writes; none by default."""
        return ()


class SourceConfig(ComponentConfig):
    """Base of every source's config."""


class SinkConfig(ComponentConfig):
    """Base of every sink's config."""

    inputs: list[str] = Field(
        default_factory=list,
        description=(
            "What feeds this sink: a source id (all its records) or `source.kind` (only records "
            "of that kind, e.g. `coinbase.ticker`)."
        ),
        examples=[["coinbase.ticker"]],
    )
    batch: BatchPolicy = Field(default_factory=BatchPolicy)
    buffer: BufferPolicy = Field(default_factory=BufferPolicy)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)


class LogConfig(StrictModel):
    """Process logs (on stderr)."""

    level: Literal["debug", "info", "warning", "error"] = Field("info")
    format: Literal["text", "json"] = Field(
        "text", description="`text`: key=value lines for people; `json`: one JSON object a line."
    )


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (``127.0.0.0/8``, ``::1``, bracketed or not)."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AdminConfig(StrictModel):
    """The admin HTTP server: /metrics, /healthz, /readyz, the dashboard and queries."""

    enabled: bool = Field(True)
    token: SecretStr | None = Field(
        None,
        description=(
            "What `POST /api/query` requires as `Authorization: Bearer <token>`; take it from the "
            "environment. Unset: a random one is made at each start and written to "
            "`<data_dir>/admin.token` (mode 0600), where `sluice sql` and `sluice monitor` find "
            "it. Required when `listen` is not a loopback address."
        ),
        examples=["${SLUICE_ADMIN_TOKEN}"],
    )
    listen: str = Field(
        "127.0.0.1:8686",
        description=(
            "host:port. Loopback by default. Another address (e.g. `0.0.0.0:8686` for a "
            "Prometheus on another machine) puts the dashboard, /api/status and, with the token, "
            "queries on the network: it needs `token`, and `allowed_hosts` for the names clients "
            "use (see docs/observability.md)."
        ),
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description=(
            "Host names or addresses (without port) accepted in the Host header besides "
            "localhost, 127.0.0.1, [::1] and the `listen` address; `*` accepts any (then only the "
            "token protects queries against DNS rebinding)."
        ),
        examples=[["metrics.internal", "10.0.0.5"]],
    )
    metrics: bool = Field(
        True,
        description=(
            "Collect metrics. `false` makes the runner's counting a no-op: /metrics then shows "
            "only process metrics, the dashboard has no rates and `alerts` cannot be used."
        ),
    )
    loop_stall_secs: float = Field(
        5.0,
        gt=0,
        description=(
            "/healthz fails when the event loop has not run for this long (and a stall this long "
            "is logged with the stack of the code that blocked it)."
        ),
    )

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str, info: ValidationInfo) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or " " in host:
            raise ValueError("expected host:port, e.g. 127.0.0.1:8686")
        exposed = host and not is_loopback(host) and info.data.get("enabled", True)
        if exposed and info.data.get("token") is None:
            raise ValueError(
                f"{host} is not a loopback address: set `admin.token` (from the environment, "
                "e.g. token: ${SLUICE_ADMIN_TOKEN}) before putting the admin port on the network"
            )
        return value


class ShutdownConfig(StrictModel):
    """What happens on SIGINT/SIGTERM."""

    drain_timeout_secs: float = Field(
        30.0,
        gt=0,
        description="Time allowed to write what is buffered before giving up (exit 1).",
    )


class PipelineConfigBase(StrictModel):
    """Top level of a config, apart from the plugin sections."""

    data_dir: Path = Field(
        Path(".sluice"),
        description="Where checkpoints and the default dead-letter file are kept.",
    )
    log: LogConfig = Field(default_factory=LogConfig, description="Process logs (`log` below).")
    admin: AdminConfig = Field(
        default_factory=AdminConfig, description="The admin HTTP server (`admin` below)."
    )
    shutdown: ShutdownConfig = Field(
        default_factory=ShutdownConfig, description="Stopping on a signal (`shutdown` below)."
    )
    alerts: AlertsConfig = Field(
        default_factory=AlertsConfig,
        description="Alert rules evaluated in process (`alerts` below).",
    )
