"""What the ``kafka`` source and sink share: the connection options (brokers, TLS, SASL, librdkafka
passthrough), the librdkafka configuration made from them, the lazy import of confluent-kafka, and
the sorting of librdkafka errors into sluice's vocabulary (by error code, never by message text).

Secrets (the SASL password, a TLS key's password) are ``SecretStr`` options meant to come from the
environment (``${KAFKA_PASSWORD}``); they go into the librdkafka configuration only, never into a
log line or an error message.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from sluice.errors import PermanentError, RetriableError

if TYPE_CHECKING:
    import confluent_kafka

__all__ = [
    "KIND_HEADER",
    "TIME_HEADER",
    "KafkaConnection",
    "KafkaSasl",
    "KafkaTls",
    "LibrdkafkaLog",
    "client_config",
    "import_kafka",
    "kafka_error",
]

LibrdkafkaValue = str | int | float | bool

KIND_HEADER = "sluice-kind"
"""Message header holding a record's kind (set by the sink, read by the source)."""
TIME_HEADER = "sluice-time"
"""Message header holding a record's event time, unix seconds as text."""

SECRET_KEYS = frozenset(
    {
        "sasl.password",
        "sasl.username",
        "ssl.key.password",
        "ssl.keystore.password",
        "sasl.oauthbearer.client.secret",
    }
)
"""librdkafka settings that hold secrets: only through the typed options (``sasl``, ``tls``)."""


class KafkaTls(BaseModel):
    """TLS to the brokers (librdkafka ``ssl.*``)."""

    model_config = ConfigDict(extra="forbid")

    ca_file: Path | None = Field(None, description="CA bundle to verify the brokers with.")
    cert_file: Path | None = Field(None, description="Client certificate (mutual TLS).")
    key_file: Path | None = Field(None, description="Client key (mutual TLS).")
    key_password: SecretStr | None = Field(
        None,
        description="Password of `key_file`; from the environment.",
        examples=["${KAFKA_KEY_PASSWORD}"],
    )
    verify: bool = Field(True, description="Verify the brokers' certificates and host names.")


class KafkaSasl(BaseModel):
    """SASL authentication (librdkafka ``sasl.*``)."""

    model_config = ConfigDict(extra="forbid")

    mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "SCRAM-SHA-512", description="SASL mechanism."
    )
    username: str = Field(description="SASL user.", examples=["${KAFKA_USER}"])
    password: SecretStr = Field(
        description="SASL password; from the environment.", examples=["${KAFKA_PASSWORD}"]
    )


class KafkaConnection(BaseModel):
    """Connection options of the ``kafka`` source and sink (mixed into their config models)."""

    brokers: list[str] = Field(
        min_length=1,
        description="Bootstrap brokers, `host:port`.",
        examples=[["${KAFKA_BROKERS:-localhost:9092}"]],
    )
    tls: KafkaTls | None = Field(None, description="Use TLS to the brokers.")
    sasl: KafkaSasl | None = Field(None, description="Authenticate with SASL (PLAIN or SCRAM).")
    librdkafka: dict[str, LibrdkafkaValue] = Field(
        default_factory=dict,
        description=(
            "Further librdkafka settings, passed as they are (e.g. `linger.ms`, "
            "`socket.keepalive.enable`); the options above and the component's own (see its "
            "description) cannot be set here."
        ),
        examples=[{"linger.ms": 20}],
    )

    reserved_settings: ClassVar[dict[str, str]] = {}
    """librdkafka settings the component sets itself, with the option to use instead."""

    @field_validator("brokers")
    @classmethod
    def _host_port(cls, value: list[str]) -> list[str]:
        out: list[str] = []
        for item in value:
            for broker in item.split(","):  # `${KAFKA_BROKERS}` may hold a comma-separated list
                broker = broker.strip()
                host, sep, port = broker.rpartition(":")
                if not sep or not host or not port.isdigit():
                    raise ValueError(f"`{broker}` is not `host:port`")
                out.append(broker)
        return out

    @field_validator("librdkafka")
    @classmethod
    def _no_secrets_or_owned(cls, value: dict[str, LibrdkafkaValue]) -> dict[str, LibrdkafkaValue]:
        for key in value:
            if key in SECRET_KEYS or key.startswith(("sasl.", "ssl.", "security.")):
                raise ValueError(
                    f"`{key}` cannot be set in `librdkafka`: use the `tls` and `sasl` options "
                    "(secrets from the environment)"
                )
            if key == "bootstrap.servers":
                raise ValueError("`bootstrap.servers` cannot be set in `librdkafka`: use `brokers`")
            owner = cls.reserved_settings.get(key)
            if owner is not None:
                raise ValueError(f"`{key}` cannot be set in `librdkafka`: {owner}")
        return value


def client_config(connection: KafkaConnection, own: dict[str, Any]) -> dict[str, Any]:
    """The librdkafka configuration: the connection, ``own`` (the component's), then the
    passthrough settings (which cannot override either; the config model refuses that)."""
    conf: dict[str, Any] = {"bootstrap.servers": ",".join(connection.brokers)}
    tls, sasl = connection.tls, connection.sasl
    if sasl is not None:
        conf["security.protocol"] = "SASL_SSL" if tls is not None else "SASL_PLAINTEXT"
        conf["sasl.mechanism"] = sasl.mechanism
        conf["sasl.username"] = sasl.username
        conf["sasl.password"] = sasl.password.get_secret_value()
    elif tls is not None:
        conf["security.protocol"] = "SSL"
    if tls is not None:
        if tls.ca_file is not None:
            conf["ssl.ca.location"] = str(tls.ca_file)
        if tls.cert_file is not None:
            conf["ssl.certificate.location"] = str(tls.cert_file)
        if tls.key_file is not None:
            conf["ssl.key.location"] = str(tls.key_file)
        if tls.key_password is not None:
            conf["ssl.key.password"] = tls.key_password.get_secret_value()
        if not tls.verify:
            conf["enable.ssl.certificate.verification"] = False
            conf["ssl.endpoint.identification.algorithm"] = "none"
    conf.update(own)
    conf.update(connection.librdkafka)
    return conf


class LibrdkafkaLog:
    """librdkafka's own log lines (config ``logger``) as debug lines of the component's log:
    what matters (brokers out of reach, delivery failures) is reported once, structured, by the
    plugins; librdkafka would otherwise print every reconnect attempt to stderr."""

    def __init__(self, log: Any) -> None:
        self._log = log

    def log(self, level: int, fmt: str, *args: Any) -> None:
        self._log.debug("librdkafka", level=level, message=fmt % args if args else fmt)


def import_kafka() -> Any:
    """The ``confluent_kafka`` module, or an ImportError naming the extra to install."""
    try:
        import confluent_kafka
        import confluent_kafka.admin  # makes ``confluent_kafka.admin`` available to the sink
    except ImportError as exc:
        raise ImportError(
            "the kafka source and sink need confluent-kafka: pip install 'sluice[kafka]'"
        ) from exc
    return confluent_kafka


def kafka_error(error: confluent_kafka.KafkaError, doing: str) -> RetriableError | PermanentError:
    """``error`` as the runner should see it, sorted by librdkafka's own flags and codes: a
    fatal error or one librdkafka calls retriable (a broker down, a timeout, a leader moving) is
    a :class:`RetriableError`; an error about the data (a message too large, an invalid record)
    is a :class:`PermanentError`."""
    ck = import_kafka()
    code = error.code()
    message = f"{doing}: {error.name()}: {error.str()}"
    permanent = {
        ck.KafkaError.MSG_SIZE_TOO_LARGE,  # the broker's and librdkafka's own limit
        ck.KafkaError.INVALID_MSG_SIZE,
        ck.KafkaError.INVALID_RECORD,
        ck.KafkaError._INVALID_ARG,
    }
    if code in permanent and not error.retriable():
        return PermanentError(message)
    return RetriableError(message)
