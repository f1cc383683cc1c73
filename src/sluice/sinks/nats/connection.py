"""What the ``nats`` sink and source share: the connection options, connecting, and the
classification of nats-py's errors into sluice's vocabulary.

nats-py is an optional dependency (``pip install 'sluice[nats]'``); it is imported when a NATS
component starts, never when sluice loads its plugins, and a missing install is an error that names
the extra. Credentials (a password, a token, a ``.creds`` file's path) come from the config, which
takes them from the environment (``${NATS_PASSWORD}``); they are never logged, and a server URL
may not carry them.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

from sluice.config.models import StrictModel
from sluice.errors import PermanentError, RetriableError

__all__ = [
    "NatsConnectionConfig",
    "NatsTls",
    "connect",
    "import_nats",
    "is_transient_nats_error",
    "retriable",
    "valid_token",
]


def import_nats() -> Any:
    """The ``nats`` package, or an ImportError that says which extra installs it."""
    try:
        import nats
        import nats.js.api
    except ImportError as exc:  # pragma: no cover - the test environment has the extra
        raise ImportError(
            "the nats source and sink need nats-py: pip install 'sluice[nats]'"
        ) from exc
    return nats


class NatsTls(StrictModel):
    """TLS to the NATS servers (`tls://` URLs, or a server that requires it)."""

    ca_file: Path | None = Field(
        None, description="CA bundle to verify the servers with, instead of the system's."
    )
    cert_file: Path | None = Field(None, description="Client certificate (mutual TLS).")
    key_file: Path | None = Field(None, description="Private key of `cert_file`.")
    verify: bool = Field(True, description="Verify the servers' certificates and names.")
    server_name: str | None = Field(
        None, description="The name to verify the servers' certificates against, if not the host."
    )

    @model_validator(mode="after")
    def _pair(self) -> NatsTls:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("give both cert_file and key_file, or neither")
        return self

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(
            cafile=str(self.ca_file) if self.ca_file is not None else None
        )
        if self.cert_file is not None and self.key_file is not None:
            context.load_cert_chain(str(self.cert_file), str(self.key_file))
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


class NatsConnectionConfig(BaseModel):
    """The keys every NATS component has (mixed into the sink's and the source's config)."""

    servers: list[str] = Field(
        min_length=1,
        description=(
            "NATS server URLs (`nats://host:4222`, `tls://host:4222`); the client picks one and "
            "moves to another when it fails. Credentials do not go here: use `user`/`password`, "
            "`token` or `credentials_file`."
        ),
        examples=[["nats://127.0.0.1:4222", "nats://127.0.0.1:4223", "nats://127.0.0.1:4224"]],
    )
    stream: str = Field(description="The JetStream stream.", examples=["COINBASE"])
    user: str | None = Field(None, description="User name, with `password`.")
    password: SecretStr | None = Field(
        None,
        description="Password of `user`; from the environment: `${NATS_PASSWORD}`.",
        examples=["${NATS_PASSWORD}"],
    )
    token: SecretStr | None = Field(
        None,
        description="Authentication token; from the environment: `${NATS_TOKEN}`.",
        examples=["${NATS_TOKEN}"],
    )
    credentials_file: Path | None = Field(
        None,
        description="A `.creds` file (user JWT and NKey seed), for decentralized auth.",
        examples=["${NATS_CREDENTIALS_FILE}"],
    )
    tls: NatsTls | None = Field(None, description="TLS options; unset: TLS only for `tls://`.")
    connect_timeout_secs: float = Field(5.0, gt=0, description="Longest wait to connect.")
    reconnect_attempts: int = Field(
        5,
        ge=0,
        description=(
            "Reconnections the client tries per server after a connection drops before it gives "
            "up; then the runner reconnects with its own backoff, so nothing is lost either way."
        ),
    )

    @field_validator("servers")
    @classmethod
    def _server_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            parts = urlsplit(url if "://" in url else f"nats://{url}")
            if parts.scheme not in ("nats", "tls"):
                raise ValueError(f"{url!r}: the scheme must be nats:// or tls://")
            if parts.username or parts.password:
                raise ValueError(
                    "put no credentials in a server URL; use user/password, token or "
                    "credentials_file"
                )
            if not parts.hostname:
                raise ValueError(f"{url!r}: no host")
        return value

    @field_validator("stream")
    @classmethod
    def _stream_name(cls, value: str) -> str:
        if not value or any(c in value for c in " \t\r\n.*>/\\"):
            raise ValueError(
                "a stream name may not be empty or contain whitespace, '.', '*', '>', '/' or '\\'"
            )
        return value

    @model_validator(mode="after")
    def _auth(self) -> NatsConnectionConfig:
        if (self.user is None) != (self.password is None):
            raise ValueError("give both user and password, or neither")
        given = [self.user is not None, self.token is not None, self.credentials_file is not None]
        if sum(given) > 1:
            raise ValueError("use one of user/password, token and credentials_file")
        return self


async def connect(config: NatsConnectionConfig, log: Any, name: str) -> Any:
    """A connected nats-py client; a :class:`RetriableError` naming the servers when none can be
    reached (the runner tries again with backoff)."""
    nats = import_nats()

    async def error_cb(exc: Exception) -> None:
        log.warning("nats.client_error", error=str(exc), error_type=type(exc).__name__)

    client: list[Any] = []

    async def disconnected_cb() -> None:
        if client and (client[0].is_closed or client[0].is_draining):
            return  # closed by us
        log.warning("nats.disconnected")

    async def reconnected_cb() -> None:
        log.info("nats.reconnected")

    options: dict[str, Any] = {
        "servers": config.servers,
        "name": name,
        "connect_timeout": config.connect_timeout_secs,
        "max_reconnect_attempts": config.reconnect_attempts,
        "reconnect_time_wait": 0.5,
        "error_cb": error_cb,
        "disconnected_cb": disconnected_cb,
        "reconnected_cb": reconnected_cb,
    }
    if config.user is not None and config.password is not None:
        options["user"] = config.user
        options["password"] = config.password.get_secret_value()
    if config.token is not None:
        options["token"] = config.token.get_secret_value()
    if config.credentials_file is not None:
        options["user_credentials"] = str(config.credentials_file)
    if config.tls is not None:
        options["tls"] = config.tls.context()
        if config.tls.server_name is not None:
            options["tls_hostname"] = config.tls.server_name
    try:
        nc = await nats.connect(**options)
    except (OSError, TimeoutError, nats.errors.Error) as exc:
        raise RetriableError(
            f"cannot connect to the NATS servers {', '.join(config.servers)}: {_describe(exc)}"
        ) from exc
    client.append(nc)
    return nc


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if text.startswith("nats:") else f"{type(exc).__name__}: {text}"


def is_transient_nats_error(exc: BaseException) -> bool:
    """True for what passes with time: timeouts, no responders (a stream or consumer with no
    leader yet), a connection closed or being re-established, a server that is unavailable
    (HTTP-like code 503 or 500 in a JetStream API answer)."""
    import nats.errors
    import nats.js.errors

    if isinstance(exc, (OSError, TimeoutError)):
        return True
    if isinstance(exc, nats.js.errors.APIError):
        return exc.code in (None, 408, 500, 503)
    return isinstance(
        exc,
        (
            nats.errors.TimeoutError,
            nats.errors.NoRespondersError,
            nats.js.errors.NoStreamResponseError,
            nats.errors.ConnectionClosedError,
            nats.errors.ConnectionReconnectingError,
            nats.errors.ConnectionDrainingError,
            nats.errors.StaleConnectionError,
            nats.errors.OutboundBufferLimitError,
            nats.errors.NoServersError,
            nats.errors.FlushTimeoutError,
        ),
    )


def retriable(exc: BaseException, doing: str) -> RetriableError | PermanentError:
    """``exc`` in sluice's vocabulary: retried when it passes with time, else permanent."""
    message = f"{doing}: {_describe(exc)}"
    if is_transient_nats_error(exc):
        return RetriableError(message)
    return PermanentError(message)


_NOT_IN_TOKEN = frozenset(" \t\r\n\f\v.*>")


def valid_token(token: str) -> bool:
    """A subject token: not empty, no whitespace, no '.', no wildcard."""
    return bool(token) and not any(c in _NOT_IN_TOKEN for c in token)
