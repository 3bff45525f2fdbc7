"""Guards in front of every route, in every auth mode, against cross-site requests and DNS rebinding.

- **Host**: only the configured names (loopback names by default, the bound address when it is
  not a wildcard, and ``--allowed-host`` names) are answered; a foreign ``Host`` gets a 400.
- **Origin**: a state-changing request (POST/PUT/PATCH/DELETE) whose ``Origin`` (or, without one,
  ``Referer``) is not this server's own origin (same scheme, host and port) or an origin the user
  allowed (``--allowed-origin``) gets a 403. Requests with neither header (curl, the openai SDK)
  pass: browsers always send ``Origin`` on cross-origin posts.
- **Content types**: JSON APIs (``/api/``, ``/v1/``) take ``application/json`` bodies only and the
  form pages take form bodies only (415 otherwise), so a cross-site "simple" request cannot reach
  a JSON route without a CORS preflight.
- **Preflights** (``OPTIONS`` with ``Access-Control-Request-Method``) are answered only for allowed
  origins; responses to those origins carry ``Access-Control-Allow-Origin`` (never credentials).
- **CSRF tokens** for the form pages: :func:`csrf_required` / :func:`csrf_unless_anonymous` check
  the ``csrf_token`` form field against a random per-browser cookie, signed with a per-process
  secret (so a cookie planted by another localhost port cannot be paired with a forged token).
  Requests that carry ``Authorization: Bearer`` need no token: a browser cannot add that header
  cross-site without a preflight.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from fastapi import HTTPException, Request
from markupsafe import Markup
from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from minetune.errors import ConfigError

# Liveness/readiness probes (minetune.server.health): answered whatever the Host header says.
HEALTH_PATHS = frozenset({"/healthz", "/readyz"})

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
WILDCARD_BINDS = ("0.0.0.0", "::", "")
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
JSON_PREFIXES = ("/api/", "/v1/")
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
DEFAULT_PORTS = {"http": 80, "https": 443}
CSRF_COOKIE = "minetune_csrf"
CSRF_FIELD = "csrf_token"
PREFLIGHT_MAX_AGE = "600"


def _hostname(value: str) -> str | None:
    """The lower-cased host name of a ``Host`` header or bare name (brackets and port removed), or
    None when it does not parse."""
    try:
        parts = urlsplit("//" + value.strip())
        _ = parts.port  # raises ValueError for a bad port
    except ValueError:
        return None
    if parts.username is not None or parts.path or parts.query or parts.fragment:
        return None
    return parts.hostname or None


def _loopback_address(hostname: str) -> bool:
    """Whether ``hostname`` is a loopback IP address literal (127.0.0.0/8, ::1); names are not."""
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def normalize_origin(value: str) -> str | None:
    """``scheme://host:port`` for an origin or URL (default ports filled in), or None for ``null``
    and anything that is not an http(s) URL with a host."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{scheme}://{host}:{port or DEFAULT_PORTS[scheme]}"


def _media_type(headers: Headers) -> str | None:
    value = headers.get("content-type")
    return None if value is None else value.split(";", 1)[0].strip().lower()


def _has_body(headers: Headers) -> bool:
    return headers.get("content-length", "0").strip() not in ("", "0") or "transfer-encoding" in headers


def _is_json(media: str) -> bool:
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


@dataclass(frozen=True)
class Guards:
    """What the guards allow: host names (``*`` for any), extra origins, and the CSRF secret."""

    hosts: frozenset[str]
    origins: frozenset[str] = frozenset()
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)

    @classmethod
    def for_bind(
        cls, bind_host: str, allowed_hosts: Iterable[str] = (), allowed_origins: Iterable[str] = ()
    ) -> Guards:
        """Guards for a server bound to ``bind_host``: loopback names, that address (unless it is a
        wildcard such as 0.0.0.0) and ``allowed_hosts``; ``allowed_origins`` besides its own."""
        hosts = set(LOOPBACK_NAMES)
        bound = _hostname(bind_host) if bind_host.strip() not in WILDCARD_BINDS else None
        if bound is not None:
            hosts.add(bound)
        for name in allowed_hosts:
            parsed = "*" if name.strip() == "*" else _hostname(name)
            if parsed is None:
                raise ConfigError(f"Not a host name: {name!r} (give a name or address, e.g. minetune.lan).")
            hosts.add(parsed)
        origins = set()
        for origin in allowed_origins:
            normal = normalize_origin(origin)
            if normal is None:
                raise ConfigError(f"Not an origin: {origin!r} (give scheme://host[:port], e.g. https://app.lan).")
            origins.add(normal)
        return cls(frozenset(hosts), frozenset(origins))

    def host_allowed(self, hostname: str) -> bool:
        """Whether a request for ``hostname`` (already lower-cased) is answered."""
        return "*" in self.hosts or hostname in self.hosts or _loopback_address(hostname)

    def describe_hosts(self) -> str:
        """The accepted host names, for messages."""
        return ", ".join(f"[{h}]" if ":" in h else h for h in sorted(self.hosts))

    def csrf_token(self, cookie: str) -> str:
        """The form token that goes with the CSRF ``cookie`` value."""
        return hmac.new(self.secret, cookie.encode(), hashlib.sha256).hexdigest()

    def csrf_valid(self, cookie: str, token: str) -> bool:
        """Whether ``token`` was issued for ``cookie`` by this process."""
        return bool(cookie) and bool(token) and hmac.compare_digest(self.csrf_token(cookie), token)

    def check(self, method: str, path: str, scheme: str, headers: Headers) -> Response | None:
        """The refusal for a request, or None when it may go on (preflights are answered here)."""
        if method == "GET" and path in HEALTH_PATHS:
            return None  # probes from a load balancer name the backend's address; they reveal nothing
        host_header = headers.get("host")
        hostname = _hostname(host_header) if host_header else None
        if hostname is None or not self.host_allowed(hostname):
            shown = (host_header or "")[:100]
            return refusal(
                400,
                f"Host {shown!r} is not allowed: this server answers to {self.describe_hosts()} "
                "(add names with `minetune serve --allowed-host NAME`).",
            )
        own = normalize_origin(f"{scheme}://{host_header}")
        origin_header = headers.get("origin")
        if method == "OPTIONS" and origin_header and "access-control-request-method" in headers:
            return self._preflight(origin_header, own)
        if method not in STATE_CHANGING:
            return None
        source = origin_header if origin_header is not None else headers.get("referer")
        if source is not None:
            origin = normalize_origin(source) if source != "null" else None
            if origin is None or (origin != own and origin not in self.origins):
                return refusal(
                    403,
                    f"Cross-origin request refused: {source[:100]!r} is not this server's origin "
                    "(allow another with `minetune serve --allowed-origin ORIGIN`).",
                )
        elif headers.get("sec-fetch-site") in ("cross-site", "same-site"):
            return refusal(403, "Cross-site request refused (the browser sent no Origin).")
        return self._content_type(path, headers)

    def _preflight(self, origin_header: str, own: str | None) -> Response:
        origin = normalize_origin(origin_header)
        if origin is None or (origin not in self.origins and origin != own):
            return refusal(403, f"Cross-origin requests from {origin_header[:100]!r} are not allowed.")
        return Response(
            status_code=204,
            headers={
                "Access-Control-Allow-Origin": origin_header,
                "Access-Control-Allow-Methods": "GET, POST, PUT, PATCH, DELETE",
                "Access-Control-Allow-Headers": "Authorization, Content-Type, Accept",
                "Access-Control-Max-Age": PREFLIGHT_MAX_AGE,
                "Vary": "Origin",
            },
        )

    @staticmethod
    def _content_type(path: str, headers: Headers) -> Response | None:
        media = _media_type(headers)
        if media is None and not _has_body(headers):
            return None
        if path.startswith(JSON_PREFIXES):
            if media is None or not _is_json(media):
                shown = media or "no Content-Type"
                return refusal(415, f"Send the body as JSON (Content-Type: application/json), not {shown}.")
        elif media is not None and media not in FORM_TYPES and _has_body(headers):
            return refusal(415, f"Send the body as a form (application/x-www-form-urlencoded), not {media}.")
        return None

    def cors_origin(self, headers: Headers) -> str | None:
        """The ``Origin`` to echo in ``Access-Control-Allow-Origin``: only an allowed foreign one."""
        origin_header = headers.get("origin")
        if origin_header and normalize_origin(origin_header) in self.origins:
            return origin_header
        return None


def refusal(status: int, message: str) -> JSONResponse:
    """The app's one-line JSON error (the OpenAI error shape)."""
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error"}}, status_code=status)


class GuardMiddleware:
    """ASGI middleware applying :meth:`Guards.check` before the app sees a request (nothing of a
    refused request's body is read)."""

    def __init__(self, app: ASGIApp, guards: Guards) -> None:
        self.app = app
        self.guards = guards

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        response = self.guards.check(scope["method"], scope["path"], scope.get("scheme", "http"), headers)
        if response is not None:
            await response(scope, receive, send)
            return
        allow = self.guards.cors_origin(headers)
        if allow is None:
            await self.app(scope, receive, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                response_headers = MutableHeaders(scope=message)
                response_headers["Access-Control-Allow-Origin"] = allow
                response_headers.add_vary_header("Origin")
            await send(message)

        await self.app(scope, receive, send_with_cors)


def guards_of(request: Request) -> Guards:
    """The :class:`Guards` of the app serving ``request``."""
    guards: Guards = request.app.state.guards
    return guards


def csrf_for(request: Request) -> tuple[str, str | None]:
    """The form token for this browser, and the new cookie value to set when it had none."""
    cookie = request.cookies.get(CSRF_COOKIE, "")
    new = None
    if len(cookie) < 32 or len(cookie) > 128 or not cookie.replace("-", "").replace("_", "").isalnum():
        cookie = new = secrets.token_urlsafe(32)
    return guards_of(request).csrf_token(cookie), new


def csrf_hidden_field(token: str) -> Markup:
    """The hidden form input carrying ``token``."""
    return Markup('<input type="hidden" name="{}" value="{}">').format(CSRF_FIELD, token)


def set_csrf_cookie(response: Response, cookie: str) -> None:
    """Set the CSRF cookie (HTTP-only, SameSite=Strict, whole site)."""
    response.set_cookie(CSRF_COOKIE, cookie, httponly=True, samesite="strict", path="/")


async def _check_csrf(request: Request) -> None:
    if request.method not in STATE_CHANGING:
        return
    if request.headers.get("authorization", "").lower().startswith("bearer "):
        return
    form: Any = await request.form()
    token = form.get(CSRF_FIELD)
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not isinstance(token, str) or not guards_of(request).csrf_valid(cookie, token):
        raise HTTPException(
            status_code=403,
            detail="The form's CSRF token is missing or out of date: reload the page and try again.",
        )


async def csrf_required(request: Request) -> None:
    """Router dependency: form posts without a bearer token need a valid CSRF token (the login form)."""
    await _check_csrf(request)


async def csrf_unless_anonymous(request: Request) -> None:
    """Router dependency: like :func:`csrf_required`, except that when tokens are required a request
    with no login cookie is left to the auth check (it has no ambient authority to abuse: a 401)."""
    from minetune.server.auth import COOKIE, tokens_required

    if tokens_required(request) and not request.cookies.get(COOKIE):
        return
    await _check_csrf(request)
