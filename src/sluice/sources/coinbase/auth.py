"""Signing a Coinbase Exchange websocket subscribe request (the ``level2``, ``full`` and ``user``
channels need it).

As the Exchange documents it: the signature is the base64 of an HMAC-SHA256, keyed with the
base64-decoded API secret, over ``timestamp + "GET" + "/users/self/verify"`` (``timestamp`` in unix
seconds, as text); the subscribe message carries ``signature``, ``key``, ``passphrase`` and
``timestamp``. A fresh timestamp is signed for every request (the Exchange refuses one more than
30 seconds off its clock).

The credentials are :class:`~pydantic.SecretStr` in the config (from the environment through
``${VAR}``): their values never appear in a repr, a log line or a config error.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time

import msgspec
from pydantic import Field, SecretStr, field_validator

from sluice.config.models import StrictModel

__all__ = ["SIGNED_PATH", "ExchangeCredentials", "sign", "signed_request"]

SIGNED_PATH = "/users/self/verify"
"""The request path the websocket signature is computed over."""


class ExchangeCredentials(StrictModel):
    """An Exchange API key: all three values from the environment (``${VAR}``), never in the
    file."""

    key: SecretStr = Field(
        description="API key (from the environment).", examples=["${COINBASE_KEY}"]
    )
    secret: SecretStr = Field(
        description="API secret, base64 as the Exchange gives it (from the environment).",
        examples=["${COINBASE_SECRET}"],
    )
    passphrase: SecretStr = Field(
        description="The key's passphrase (from the environment).",
        examples=["${COINBASE_PASSPHRASE}"],
    )

    @field_validator("key", "passphrase")
    @classmethod
    def _not_empty(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value():
            raise ValueError("is empty (is its environment variable set?)")
        return value

    @field_validator("secret")
    @classmethod
    def _base64_secret(cls, value: SecretStr) -> SecretStr:
        text = value.get_secret_value()
        if not text:
            raise ValueError("is empty (is its environment variable set?)")
        try:
            base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(
                "is not base64 (the Exchange gives API secrets in base64); the value is not shown"
            ) from None
        return value


def sign(secret_b64: str, timestamp: str, method: str = "GET", path: str = SIGNED_PATH) -> str:
    """The Exchange's signature of ``timestamp + method + path`` (empty body) with the API
    secret (base64, as issued): base64 of the HMAC-SHA256."""
    key = base64.b64decode(secret_b64)
    digest = hmac.new(key, (timestamp + method + path).encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def signed_request(
    request: dict[str, object], credentials: ExchangeCredentials, now: float | None = None
) -> bytes:
    """``request`` (a subscribe or unsubscribe message) with the signature fields added."""
    timestamp = str(int(time.time() if now is None else now))
    return msgspec.json.encode(
        {
            **request,
            "signature": sign(credentials.secret.get_secret_value(), timestamp),
            "key": credentials.key.get_secret_value(),
            "passphrase": credentials.passphrase.get_secret_value(),
            "timestamp": timestamp,
        }
    )
