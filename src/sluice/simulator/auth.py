"""The simulated Exchange's check of a signed subscribe request.

A request is signed when it has a ``signature``; the simulator accepts it when the key and
passphrase are the configured test credentials, the timestamp is within 30 seconds of its clock
and the signature is the HMAC-SHA256 (keyed with the base64-decoded secret) of ``timestamp +
"GET" + "/users/self/verify"``, base64, as the Exchange documents. A refused one is answered as the
Exchange answers it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from typing import Any

__all__ = ["AUTH_FAILED", "SimulatedKey", "check_signed"]

AUTH_FAILED = "Sorry, you could not be authenticated: Bad Request"
"""The ``message`` of the Exchange's ``error`` frame for a refused signature."""
_SKEW_SECS = 30.0


class SimulatedKey:
    """The API key the simulator accepts (tests and offline demos only)."""

    __slots__ = ("key", "passphrase", "secret")

    def __init__(self, key: str, secret: str, passphrase: str) -> None:
        self.key = key
        self.secret = secret
        """Base64, as the Exchange issues it."""
        self.passphrase = passphrase

    def __repr__(self) -> str:
        return "SimulatedKey(...)"


def check_signed(
    request: dict[str, Any], credentials: SimulatedKey | None, now: float | None = None
) -> str | None:
    """The reason a signed ``request`` is refused, or None when it is accepted."""
    if credentials is None:
        return "invalid signature"  # no key is known to this feed
    signature = request.get("signature")
    timestamp = request.get("timestamp")
    if not isinstance(signature, str) or not isinstance(timestamp, str):
        return "invalid signature"
    if request.get("key") != credentials.key:
        return "invalid key"
    if request.get("passphrase") != credentials.passphrase:
        return "invalid passphrase"
    try:
        when = float(timestamp)
    except ValueError:
        return "invalid timestamp"
    if abs((time.time() if now is None else now) - when) > _SKEW_SECS:
        return "request timestamp expired"
    try:
        key = base64.b64decode(credentials.secret)
    except (binascii.Error, ValueError):
        return "invalid signature"
    expected = base64.b64encode(
        hmac.new(key, (timestamp + "GET/users/self/verify").encode(), hashlib.sha256).digest()
    ).decode()
    if not hmac.compare_digest(expected, signature):
        return "invalid signature"
    return None
