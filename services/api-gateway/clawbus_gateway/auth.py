"""Authentication: every credential the documents name, checked on every request.

    Authorization: Bearer <gateway token>        operator (000, 004)
    Authorization: Bearer <config API token>     that token's permissions (002)
    Authorization: Bearer goclaw_<32 hex>        API key: its tenant and scopes (004)
    Authorization: Basic base64(user:password)   operator, any user name (000)
    X-OpenClaw-Password: <password>              operator (000)
    ?token=... / ?password=...                   WebSocket upgrades only (000)

The first credential present decides, in that order; a wrong one is not retried as
another kind. Secrets are compared as SHA-256 digests with `hmac.compare_digest`, so
neither content nor length leaks through timing. Nothing is cached: a revoked API key
fails on its next request.

Failed attempts (a credential presented and wrong) are counted per client address per
minute in Redis, shared by every replica; an address over
`gateway_auth_failures_per_minute` gets 429 before its credential is even looked at, so a
correct guess inside the lockout is not confirmed. The address is `request.remote`:
behind a reverse proxy that is the proxy's, and X-Forwarded-For is not trusted.

Config API tokens naming an unknown permission are refused at startup (a typo must not
silently grant less, or more, than meant).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import asyncpg
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Handler
from aiohttp.web_request import BaseRequest
from clawbus_core.store import api_keys
from clawbus_protocol.errors import RateLimited, ServiceUnavailable, Unauthorized
from redis.exceptions import RedisError
from yarl import URL

from clawbus_gateway.keys import RUNS, SETTINGS
from clawbus_gateway.principal import ALL_PERMISSIONS, OPERATOR, PRINCIPAL, Permission, Principal
from clawbus_gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

PUBLIC_PATHS = frozenset({"/health", "/docs", "/docs/openapi.json"})
# Swagger UI's files; inbound webhooks, which carry their own signature (checked by the
# channel-bridge: see routes/channels.py).
PUBLIC_PREFIXES = ("/docs/static/", "/v1/webhooks/")
PASSWORD_HEADER = "X-OpenClaw-Password"  # noqa: S105 (a header name, not a secret)
# Query parameters that carry secrets: accepted on WebSocket upgrades, never logged.
SECRET_QUERY_PARAMS = frozenset({"token", "password"})

PASSWORD = Principal(kind="password", name="gateway-password")

_WINDOW_S = 60
_MISSING = (
    "missing credentials: send Authorization: Bearer <token or API key>, "
    f"Authorization: Basic <base64(user:password)> or {PASSWORD_HEADER}"
)


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def permissions(names: Iterable[str]) -> frozenset[Permission]:
    """The known permissions among `names` (unknown ones grant nothing)."""
    return frozenset(n for n in names if n in ALL_PERMISSIONS)


@dataclass(frozen=True)
class _Token:
    digest: bytes
    principal: Principal


@dataclass(frozen=True)
class Keyring:
    """The configured secrets, as digests, with the principal each one stands for."""

    tokens: tuple[_Token, ...]
    password: bytes | None

    @classmethod
    def from_settings(cls, settings: GatewaySettings, gateway_token: str) -> Keyring:
        tokens = [_Token(_digest(gateway_token), OPERATOR)]
        for i, config in enumerate(settings.gateway_api_tokens):
            where = f"gateway_api_tokens[{i}] ({config.name!r})"
            secret = config.token.get_secret_value()
            if not secret.strip():
                raise ValueError(f"{where}: the token is empty")
            unknown = sorted(set(config.permissions) - ALL_PERMISSIONS)
            if unknown:
                raise ValueError(
                    f"{where}: unknown permission(s) {', '.join(unknown)}; "
                    f"known: {', '.join(sorted(ALL_PERMISSIONS))}"
                )
            token = _Token(
                _digest(secret),
                Principal(
                    kind="api_token", permissions=permissions(config.permissions), name=config.name
                ),
            )
            if any(t.digest == token.digest for t in tokens):
                raise ValueError(f"{where}: the same token is configured twice")
            tokens.append(token)
        password = settings.gateway_password
        return cls(
            tokens=tuple(tokens),
            password=_digest(password.get_secret_value()) if password is not None else None,
        )

    def bearer(self, presented: str) -> Principal | None:
        digest = _digest(presented)
        found = None
        for token in self.tokens:  # every one compared: the time does not tell which matched
            if hmac.compare_digest(digest, token.digest) and found is None:
                found = token.principal
        return found

    def password_matches(self, presented: str) -> bool:
        if self.password is None:
            return False
        return hmac.compare_digest(_digest(presented), self.password)


# Set by create_app from the settings, so a bad token configuration stops the gateway before
# it opens any connection.
KEYRING: web.AppKey[Keyring] = web.AppKey("auth_keyring", Keyring)


# --- reading the credential -----------------------------------------------------------------

CredentialKind = Literal["bearer", "password"]


@dataclass(frozen=True)
class Credential:
    kind: CredentialKind
    secret: str
    source: str  # where it came from, for messages: never the secret


def _is_websocket_upgrade(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


def _basic_password(value: str) -> str:
    try:
        decoded = base64.b64decode(value, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise Unauthorized("malformed Basic credentials: expected base64(user:password)") from None
    _, sep, password = decoded.partition(":")
    if not sep:
        raise Unauthorized("malformed Basic credentials: expected base64(user:password)")
    return password


def credential(request: web.Request) -> Credential:
    """The credential the request presents; Unauthorized if none, or one in the wrong place."""
    in_query = SECRET_QUERY_PARAMS & request.query.keys()
    if in_query and not _is_websocket_upgrade(request):
        # A secret in a URL ends up in proxy logs and browser history: refuse it loudly.
        raise Unauthorized(
            f"?{sorted(in_query)[0]}= is accepted only on WebSocket upgrade requests; "
            "send the credential in the Authorization header instead"
        )
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, value = header.strip().partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer" and value:
            return Credential("bearer", value, "bearer token")
        if scheme.lower() == "basic" and value:
            return Credential("password", _basic_password(value), "Basic password")
        raise Unauthorized("unsupported Authorization header: use Bearer <token> or Basic")
    password = request.headers.get(PASSWORD_HEADER)
    if password:
        return Credential("password", password, PASSWORD_HEADER)
    if token := request.query.get("token"):
        return Credential("bearer", token, "?token=")
    if password := request.query.get("password"):
        return Credential("password", password, "?password=")
    raise Unauthorized(_MISSING)


async def verify(request: web.Request, presented: Credential) -> Principal | None:
    """The principal `presented` stands for, or None if it is wrong."""
    keyring = request.app[KEYRING]
    if presented.kind == "password":
        return PASSWORD if keyring.password_matches(presented.secret) else None
    found = keyring.bearer(presented.secret)
    if found is not None or not api_keys.looks_like_key(presented.secret):
        return found
    try:
        key = await api_keys.verify(request.app[RUNS].pool, presented.secret)
    except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError) as exc:
        raise ServiceUnavailable(
            "API keys cannot be checked: the database is unreachable; retry shortly",
            retry_after_ms=1000,
        ) from exc
    if key is None:
        return None
    return Principal(
        kind="api_key",
        tenant_id=key.tenant_id,
        permissions=permissions(key.scopes),
        name=str(key.id),
    )


# --- failed-attempt limiter -------------------------------------------------------------------


def _client_address(request: web.Request) -> str:
    return request.remote or "unknown"


def _failures_key(request: web.Request, window: int) -> str:
    names = request.app[RUNS].names
    return f"{names.namespace}:authfail:{_client_address(request)}:{window}"


async def _refuse_if_locked_out(request: web.Request, now: float) -> None:
    window = int(now // _WINDOW_S)
    limit = request.app[SETTINGS].gateway_auth_failures_per_minute
    try:
        failures = await request.app[RUNS].relay.redis.get(_failures_key(request, window))
    except RedisError as exc:
        # Failing open would hand unlimited guesses to whoever can disturb Redis.
        raise ServiceUnavailable(
            "the authentication limiter is unavailable; retry shortly", retry_after_ms=1000
        ) from exc
    if failures is not None and int(failures) >= limit:
        retry_after_ms = math.ceil(((window + 1) * _WINDOW_S - now) * 1000)
        raise RateLimited(
            f"too many failed authentication attempts from this address "
            f"(limit {limit} per minute); retry later",
            retry_after_ms=max(1, retry_after_ms),
        )


async def _record_failure(request: web.Request, now: float, presented: Credential) -> None:
    key = _failures_key(request, int(now // _WINDOW_S))
    try:
        async with request.app[RUNS].relay.redis.pipeline(transaction=False) as pipe:
            pipe.incr(key)
            pipe.expire(key, 2 * _WINDOW_S)
            failures, _ = await pipe.execute()
    except RedisError:
        log.warning("could not count a failed authentication attempt", exc_info=True)
        return
    limit = request.app[SETTINGS].gateway_auth_failures_per_minute
    log.info("authentication failed: %s from %s", presented.source, _client_address(request))
    if failures == limit:
        log.warning(
            "%s reached %d failed authentication attempts this minute; refusing it until the "
            "minute ends",
            _client_address(request),
            limit,
        )


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in PUBLIC_PATHS or request.path.startswith(PUBLIC_PREFIXES):
        return await handler(request)
    now = time.time()
    await _refuse_if_locked_out(request, now)
    presented = credential(request)
    who = await verify(request, presented)
    if who is None:
        await _record_failure(request, now, presented)
        raise Unauthorized(f"invalid credentials ({presented.source})")
    request[PRINCIPAL] = who
    return await handler(request)


# --- access log -------------------------------------------------------------------------------


def redact(url: URL) -> str:
    """`url` as text, with the values of secret query parameters replaced."""
    if not SECRET_QUERY_PARAMS & url.query.keys():
        return str(url)
    query = [(k, "REDACTED" if k in SECRET_QUERY_PARAMS else v) for k, v in url.query.items()]
    return str(url.with_query(query))


def _redacted_referer(referer: str | None) -> str:
    if not referer:
        return "-"
    try:
        return redact(URL(referer))
    except ValueError:
        return "(unparsable)"


class RedactingAccessLogger(AbstractAccessLogger):
    """aiohttp's default access line (`%a %t "%r" %s %b "%{Referer}i" "%{User-Agent}i"`),
    with `token` and `password` query values (in the URL and the Referer) redacted.

    aiohttp's own AccessLogger formats `request.path_qs` with no hook to change it, so the
    line is written here; `log_format` is not interpreted.
    """

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: BaseRequest, response: web.StreamResponse, time: float) -> None:
        started = datetime.now(UTC) - timedelta(seconds=time)
        version = f"HTTP/{request.version.major}.{request.version.minor}"
        referer = request.headers.get("Referer")
        self.logger.info(
            '%s [%s] "%s %s %s" %d %d "%s" "%s"',
            request.remote or "-",
            started.strftime("%d/%b/%Y:%H:%M:%S %z"),
            request.method,
            redact(request.rel_url),
            version,
            response.status,
            response.body_length,
            _redacted_referer(referer),
            request.headers.get("User-Agent", "-"),
        )
