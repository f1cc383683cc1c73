"""JWT (ES256) authentication with a Coinbase Developer Platform API key, as Advanced Trade
documents it for websocket subscribes: claims ``iss: "cdp"``, ``sub`` the key's name, ``nbf`` now
and ``exp`` 120 s later; headers ``kid`` the key's name and a random ``nonce``. A token is made for
every subscribe message (it expires in two minutes, so one per connection would not outlive a
reconnect). Neither the key nor a token is ever logged.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from sluice.errors import SluiceError

__all__ = ["TOKEN_LIFETIME_SECS", "BadKey", "Signer"]

TOKEN_LIFETIME_SECS = 120


class BadKey(SluiceError):
    """The configured private key cannot sign ES256 tokens (not a P-256 EC key in PEM)."""


def _jwt() -> Any:
    try:
        import jwt
    except ImportError as exc:  # pragma: no cover - the test environment has the extra
        raise ImportError(
            "the coinbase_advanced source's `auth` needs PyJWT with cryptography: "
            "pip install 'sluice[auth]'"
        ) from exc
    return jwt


class Signer:
    """Makes subscribe JWTs for one key; the key is loaded (and judged) once, at start."""

    def __init__(self, key_name: str, private_key_pem: str) -> None:
        jwt = _jwt()
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        try:
            key = load_pem_private_key(private_key_pem.encode(), password=None)
        except (ValueError, TypeError):
            # the loader's message may quote the key's bytes: never pass it on
            raise BadKey(
                "auth.private_key is not a readable, unencrypted PEM private key"
            ) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise BadKey("auth.private_key must be an EC P-256 (secp256r1) key, as CDP keys are")
        self._jwt = jwt
        self._key = key
        self._name = key_name

    def token(self, now: float | None = None) -> str:
        issued = int(time.time() if now is None else now)
        claims = {
            "iss": "cdp",
            "sub": self._name,
            "nbf": issued,
            "exp": issued + TOKEN_LIFETIME_SECS,
        }
        headers = {"kid": self._name, "nonce": secrets.token_hex(16)}
        token: str = self._jwt.encode(claims, self._key, algorithm="ES256", headers=headers)
        return token
