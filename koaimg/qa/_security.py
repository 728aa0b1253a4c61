"""Request guards that run before any route: access token, Host/Origin checks and a request-size ceiling.

* With a token (required whenever the server listens beyond loopback) every request must carry it: an
  ``Authorization: Bearer`` header or the ``koaimg_qa`` cookie, which the server sets when the printed URL with
  ``?token=`` is opened. Comparison is constant-time (``hmac.compare_digest``).
* Without a token the server is loopback-only, and the Host header must name loopback: a web page elsewhere cannot
  reach the server through DNS rebinding. A cross-site Origin on a state-changing request is refused either way.
* A declared body larger than the upload limit is refused before it is read (the upload route also counts what
  actually arrives, for chunked bodies).
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable, Iterable
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl, urlencode, urlsplit

COOKIE = "koaimg_qa"
#: sent with every response: same-origin scripts and data only (no CDN, no inline script), no framing, no referrer
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: "
                                 b"blob:; connect-src 'self' blob: data:; worker-src 'self' blob:; "
                                 b"frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")

Scope = dict
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


def new_token() -> str:
    """A fresh URL-safe access token (256 bits)."""
    return secrets.token_urlsafe(32)


def _host_only(value: str) -> str:
    value = value.strip().lower()
    if value.startswith("["):  # [::1]:8000
        return value[1:value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


class GuardMiddleware:
    """ASGI middleware applying the token, Host, Origin and size rules to every HTTP request."""

    def __init__(self, app: Callable, *, token: str | None, allowed_hosts: Iterable[str] | None,
                 max_body_bytes: int) -> None:
        self.app = app
        self.token = token
        self.allowed_hosts = None if allowed_hosts is None else {h.lower() for h in allowed_hosts}
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send_raw: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send_raw)
            return

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send_raw(message)

        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = _host_only(headers.get("host", ""))
        if self.allowed_hosts is not None and host not in self.allowed_hosts:
            await _plain(send, 403, "forbidden host header: open the server through 127.0.0.1 or localhost")
            return
        origin = headers.get("origin")
        if origin and scope["method"] not in ("GET", "HEAD", "OPTIONS"):
            o = urlsplit(origin)
            if o.netloc.lower() != headers.get("host", "").lower():
                await _plain(send, 403, "cross-origin request refused")
                return
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            await _plain(send, 413, f"request body larger than the {self.max_body_bytes}-byte limit")
            return
        if self.token is not None:
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
            offered = query.get("token")
            if offered is not None:
                if not _same(offered, self.token):
                    await _plain(send, 401, "wrong access token")
                    return
                rest = urlencode({k: v for k, v in query.items() if k != "token"})
                location = scope.get("root_path", "") + scope["path"] + (f"?{rest}" if rest else "")
                await _redirect_with_cookie(send, location, self.token)
                return
            if not self._authorised(headers):
                await _plain(send, 401, "access token required: open the URL printed by `koaimg qa serve`")
                return
        await self.app(scope, receive, send)

    def _authorised(self, headers: dict[str, str]) -> bool:
        token = self.token or ""
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer " and _same(auth[7:].strip(), token):
            return True
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # a malformed cookie header is simply "no token"
            return False
        morsel = cookie.get(COOKIE)
        return morsel is not None and _same(morsel.value, token)


async def _plain(send: Send, status: int, text: str) -> None:
    body = (text + "\n").encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()), (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": body})


async def _redirect_with_cookie(send: Send, location: str, token: str) -> None:
    cookie = f"{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"
    await send({"type": "http.response.start", "status": 303,
                "headers": [(b"location", location.encode("latin-1")), (b"set-cookie", cookie.encode("latin-1")),
                            (b"content-length", b"0"), (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": b""})
