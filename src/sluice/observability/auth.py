"""Who may use the admin port: the token, the Host and Origin rules, the token file.

- Every route checks the ``Host`` header against the names this server answers to (loopback
  names, the listen address, ``admin.allowed_hosts``), with the port: a page on another site that
  re-points its own name at 127.0.0.1 (DNS rebinding) is refused with 403, whatever it asks for.
- ``POST /api/query`` (it reads records) also needs ``Authorization: Bearer <admin.token>``
  (401 otherwise, compared in constant time), refuses an ``Origin`` that is not this server's own
  (403: no cross-site request from a page the operator visits) and takes only
  ``Content-Type: application/json`` (415: a plain HTML form or a "simple" cross-site request
  cannot send it without a CORS preflight, which this server never grants).
- ``/metrics``, ``/healthz``, ``/readyz``, ``/api/status`` (counters and component ids, no
  records) and the dashboard's static files need no token, for probes and Prometheus.

With no ``admin.token`` configured a random one is made at each start and written to
``<data_dir>/admin.token`` (mode 0600); its path is logged, never the token. ``sluice sql`` and
``sluice monitor`` read it from there (or from ``admin.token``).
"""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Final

from aiohttp import web

from sluice.config.models import is_loopback

__all__ = [
    "TOKEN_FILE",
    "AdminGuard",
    "bearer",
    "is_loopback",
    "new_token",
    "read_token_file",
    "write_token_file",
]

TOKEN_FILE: Final[str] = "admin.token"  # noqa: S105 - a file name, not a secret
"""Name of the generated token's file in ``data_dir``."""

PROTECTED_ROUTES: Final[frozenset[str]] = frozenset({"/api/query"})
"""Paths that read records or change something: token, Origin and JSON body required."""

_LOOPBACK_NAMES: Final[tuple[str, ...]] = ("localhost", "127.0.0.1", "[::1]")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def new_token() -> str:
    """A random token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def write_token_file(path: Path, token: str) -> None:
    """Write ``token`` to ``path``, readable by this user only (0600), replacing what was there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an older file keeps its mode on open: make it private again
        os.write(fd, token.encode() + b"\n")
    finally:
        os.close(fd)


def read_token_file(path: Path) -> str | None:
    """The token written by a running pipeline; None when there is none (or it is unreadable)."""
    try:
        token = path.read_text().strip()
    except OSError:
        return None
    return token or None


def bearer(token: str) -> dict[str, str]:
    """The request header that carries ``token``."""
    return {"Authorization": f"Bearer {token}"}


def _host_name(host: str) -> str:
    host = host.strip().lower()
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # a bare IPv6 address, as it appears in a Host header
    return host


class AdminGuard:
    """The Host, Origin, content type and token rules, as aiohttp middleware."""

    def __init__(self, token: str, *, allowed_hosts: Iterable[str] = ()) -> None:
        self._token = token.encode()
        self._allowed_hosts = [h.strip().lower() for h in allowed_hosts]
        self._hosts: frozenset[str] = frozenset()

    def bind(self, listen_host: str, port: int) -> None:
        """The Host header values to accept once the port is known."""
        names = set(_LOOPBACK_NAMES)
        if listen_host not in ("", "0.0.0.0", "::"):  # noqa: S104 - a wildcard has no one name
            names.add(_host_name(listen_host))
        names.update(_host_name(h) for h in self._allowed_hosts if h != "*")
        self._hosts = frozenset(f"{name}:{port}" for name in names)

    def host_allowed(self, host: str | None) -> bool:
        if "*" in self._allowed_hosts:
            return True
        return host is not None and host.strip().lower() in self._hosts

    def token_matches(self, header: str | None) -> bool:
        scheme, _, given = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return False
        return hmac.compare_digest(given.strip().encode(), self._token)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not self.host_allowed(request.headers.get("Host")):
            return _refuse(403, "this admin server does not answer to that Host name")
        if request.path not in PROTECTED_ROUTES:
            return await handler(request)
        origin = request.headers.get("Origin")
        if origin is not None and origin.lower() != f"http://{request.host.lower()}":
            return _refuse(403, "cross-origin requests are refused")
        if not self.token_matches(request.headers.get("Authorization")):
            return _refuse(
                401,
                "a token is needed: Authorization: Bearer <admin.token, or the content of "
                f"<data_dir>/{TOKEN_FILE}>",
                {"WWW-Authenticate": 'Bearer realm="sluice"'},
            )
        if request.method == "POST" and request.content_type != "application/json":
            return _refuse(415, "the body must be JSON (Content-Type: application/json)")
        return await handler(request)


def _refuse(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)
