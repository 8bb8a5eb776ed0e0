"""Who may read and who may act (CONTRACT §7 "Web board").

- Actions (POST) exist only with `--allow-actions` and need `Authorization: Bearer <token>`: a header a page
  sets from the token its operator typed in, never something a browser sends by itself (no cookies, no cached
  Basic credentials), so another site cannot make a visitor's browser act.
- On a loopback host reads are open. On any other host every request needs the token: `Bearer` from
  programs, or HTTP Basic with the token as password from a browser (it asks once, then sends it on every page
  load and poll).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import secrets
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flowledger.tasks.core.errors import InvalidInputError

TOKEN_ENV = "FLOWLEDGER_WEB_TOKEN"
REALM = 'Basic realm="flowledger", charset="UTF-8"'


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and `localhost`; anything else (0.0.0.0, a LAN address, a name) is exposed."""
    name = host.strip().strip("[]")
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class Access:
    token: str
    token_from_env: bool
    allow_actions: bool
    guard_reads: bool  # a non-loopback host: every request needs the token


def decide_access(host: str, env_token: str | None, *, allow_actions: bool) -> Access:
    """The server's access rules, or InvalidInputError (exit 2) for an exposed host without a configured token."""
    token = (env_token or "").strip()
    exposed = not is_loopback(host)
    if exposed and not token:
        raise InvalidInputError(f"Refusing to serve on non-loopback host {host!r} without {TOKEN_ENV} set: "
                           "every request there must carry a token.")
    return Access(token=token or secrets.token_urlsafe(24), token_from_env=bool(token),
                  allow_actions=allow_actions, guard_reads=exposed)


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return ""


def bearer_ok(scope: Scope, token: str) -> bool:
    scheme, _, value = _header(scope, b"authorization").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())


def basic_ok(scope: Scope, token: str) -> bool:
    scheme, _, value = _header(scope, b"authorization").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return False
    _, _, password = decoded.partition(":")
    return hmac.compare_digest(password.encode(), token.encode())


class ReadGuard:
    """ASGI middleware for exposed hosts: nothing is served without the token."""

    def __init__(self, app: ASGIApp, access: Access) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.access.guard_reads:
            await self.app(scope, receive, send)
            return
        if bearer_ok(scope, self.access.token) or basic_ok(scope, self.access.token):
            await self.app(scope, receive, send)
            return
        body = b'{"error": "This board needs its token: Authorization: Bearer <token>."}'
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"www-authenticate", REALM.encode()),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


# No inline script or style may run: the board's own files only, so escaped text stays text even if a
# template ever slipped.
_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                 b"object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)
