"""What the web server lets through before a route runs (pure ASGI middleware, nothing is parsed first):

* ``HostOriginGuard``: the Host header must name this server (``allowed_hosts``: against DNS rebinding), and a
  request that changes state (POST, DELETE, ...) is refused when the browser says it comes from another site
  (``Origin`` / ``Sec-Fetch-Site``); clients that send neither (curl, scripts) are not affected;
* ``UploadLimitMiddleware``: request bodies are bounded in bytes while they stream in;
* ``security_headers``: Content-Security-Policy, nosniff, no referrer, no caching of the API.

``split_host`` parses a Host header value; ``serve-web`` uses it for ``--allowed-host`` too.
Used by :func:`needletrack.serve.web.create_app`; security notes: docs/security.md.
"""
from __future__ import annotations

import json


# --------------------------------------------------------------------------------------------------------------
# upload size bound (pure ASGI: works for Content-Length and chunked bodies, before anything is parsed)
# --------------------------------------------------------------------------------------------------------------
class _TooLarge(Exception):
    pass


class UploadLimitMiddleware:
    """Refuse request bodies over ``max_bytes`` with 413 and a one-line JSON message, counting bytes as they
    arrive (so an oversized upload is cut off early instead of being spooled to disk first)."""

    def __init__(self, app, max_bytes: int, limit_mb: float):
        self.app = app
        self.max_bytes = int(max_bytes)
        self.limit_mb = limit_mb

    async def _send_413(self, send) -> None:
        body = json.dumps({"detail": f"upload too large: the limit is {self.limit_mb:g} MB"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        for k, v in scope.get("headers") or []:
            if k == b"content-length":
                try:
                    if int(v) > self.max_bytes:
                        await self._send_413(send)
                        return
                except ValueError:
                    pass
        state = {"n": 0, "over": False}

        async def limited_receive():
            msg = await receive()
            if msg.get("type") == "http.request":
                state["n"] += len(msg.get("body", b""))
                if state["n"] > self.max_bytes:
                    state["over"] = True
                    raise _TooLarge()
            return msg

        async def guarded_send(msg):
            if not state["over"]:
                await send(msg)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not state["over"]:
                raise
        if state["over"]:
            await self._send_413(send)



# --------------------------------------------------------------------------------------------------------------
# Host header (DNS rebinding) and cross-site state changes (pure ASGI, outermost: before anything is read)
# --------------------------------------------------------------------------------------------------------------
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def split_host(value: str, default_port: int | None = None) -> tuple[str, int | None] | None:
    """'name[:port]' / '[v6]:port' / 'v6' -> (lower-case name without brackets, port or default_port);
    None when it is not a host."""
    v = value.strip().lower()
    if not v or any(c in v for c in " /\\@?#") or any(ord(c) < 33 or ord(c) > 126 for c in v):
        return None
    port: str | None = None
    if v.startswith("["):
        end = v.find("]")
        if end < 0:
            return None
        name, rest = v[1:end], v[end + 1:]
        if rest:
            if not rest.startswith(":"):
                return None
            port = rest[1:]
    elif v.count(":") == 1:
        name, port = v.split(":")
    else:
        name = v                        # a name, an IPv4 address or a bare IPv6 address
    if not name:
        return None
    if port is not None:
        if not port.isdigit() or not 0 < int(port) < 65536:
            return None
        return name, int(port)
    return name, default_port


class HostOriginGuard:
    """* Host: must be one of ``allowed_hosts`` (any port), else 400 - a page on another site that rebinds its
      name to this computer's address cannot talk to the server;
    * state-changing methods (anything but GET/HEAD/OPTIONS): refused with 403 when ``Sec-Fetch-Site`` says
      the request comes from another site, or ``Origin`` names another origin than the Host. Requests
      without those headers (curl, scripts, tests) pass: browsers always send them on cross-site posts."""

    def __init__(self, app, allowed_hosts):
        self.app = app
        names = set()
        for h in allowed_hosts:
            parsed = split_host(str(h))
            if parsed is None:
                raise ValueError(f"not a host name: {h!r}")
            names.add(parsed[0])
        self.allowed = frozenset(names)

    @staticmethod
    async def _refuse(send, status: int, detail: str) -> None:
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"cache-control", b"no-store"), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers: dict[bytes, bytes] = {}
        for k, v in scope.get("headers") or []:
            if k in headers and k == b"host":
                headers[k] = b""                  # two Host headers: refuse below
                continue
            headers.setdefault(k, v)
        scheme_port = 443 if scope.get("scheme") in ("https", "wss") else 80
        raw_host = headers.get(b"host", b"").decode("latin-1")
        host = split_host(raw_host, scheme_port)
        if host is None or host[0] not in self.allowed:
            shown = raw_host[:80] if raw_host else "(none)"
            await self._refuse(send, 400, f"Host {shown!r} is not served here; use "
                                          f"{', '.join(sorted(f'[{n}]' if ':' in n else n for n in self.allowed))} or start serve-web with "
                                          "--allowed-host NAME")
            return
        if scope["type"] == "http" and scope.get("method", "GET").upper() not in SAFE_METHODS:
            site = headers.get(b"sec-fetch-site", b"").decode("latin-1").strip().lower()
            if site and site not in ("same-origin", "none"):
                await self._refuse(send, 403, f"cross-site request refused (Sec-Fetch-Site: {site[:40]})")
                return
            origin = headers.get(b"origin")
            if origin is not None:
                o = origin.decode("latin-1").strip()
                scheme, sep, rest = o.partition("://")
                parsed = split_host(rest, 443 if scheme.lower() == "https" else 80) if sep else None
                if parsed is None or parsed != host:
                    await self._refuse(send, 403, f"cross-origin request refused (Origin: {o[:80]})")
                    return
        await self.app(scope, receive, send)


async def security_headers(request, call_next):
    """HTTP middleware (``app.middleware("http")``): the response headers every page and API answer carries."""
    response = await call_next(request)
    # nothing on the page may come from elsewhere (offline use, no CDN); FastAPI's /docs page is the
    # exception (it loads Swagger UI from a CDN), so it keeps its own policy
    if not request.url.path.startswith(("/docs", "/redoc")):
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; style-src 'self'; "
            "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    if request.url.path.startswith("/api/"):
        response.headers.setdefault("Cache-Control", "no-store")
    return response
