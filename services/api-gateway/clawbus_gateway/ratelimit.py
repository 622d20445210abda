"""Rate limits (a token bucket per credential and route class, in Redis) and a cap on
concurrent requests per client address.

Every gateway replica shares the buckets: one Redis hash per (credential, route class),
updated by one atomic script that refills continuously (capacity = the per-minute limit,
`capacity / 60 s` tokens per second) and takes a token if there is one. The script reads
Redis's clock, so replicas with skewed clocks still agree. A bucket's key expires when the
bucket would be full again, so idle credentials leave nothing behind.

The identity is the principal (kind, tenant and name: every replica resolves the same
credential to the same one); without a principal, or with the shared `public` one, it is
the client address. The route class comes from one table, `ROUTE_CLASSES`; limits are the
documents' figures (`DOCUMENTED_LIMITS`) overridden by `gateway_rate_limits`. A limit of 0
turns a class's limit off (as GoClaw's `rate_limit_rpm: 0` does). `/health` is never limited.

Admitted and refused responses carry `X-RateLimit-Limit`, `X-RateLimit-Remaining` and
`X-RateLimit-Reset` (epoch seconds at which the bucket is full again, as 002 shows them);
a refusal is `RateLimited` (429 with `Retry-After`). If Redis cannot answer, requests are
admitted (fail open, with one warning per outage): a Redis outage should not take every
route down with it, and the concurrency cap still holds.

The concurrency cap (`gateway_max_connections_per_client`) counts requests in flight per
client address on this replica, streams and WebSockets included for as long as they last;
one over it is refused with 429 at once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Literal, get_args

import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.typedefs import Handler
from clawbus_protocol.errors import RateLimited
from redis.exceptions import RedisError

from clawbus_gateway.keys import RUNS
from clawbus_gateway.principal import PRINCIPAL
from clawbus_gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

RouteClass = Literal["chat", "tools", "sessions", "config", "default"]
ROUTE_CLASS_NAMES: frozenset[str] = frozenset(get_args(RouteClass))

# First match wins; anything else is "default".
_PATHS: tuple[tuple[str, RouteClass], ...] = (
    (r"^/v1/chat/completions$", "chat"),
    (r"^/v1/responses$", "chat"),
    (r"^/v1/agent/run(/stream)?$", "chat"),
    (r"^/v1/agents/[^/]+/wake$", "chat"),
    (r"^/api/messages$", "chat"),
    (r"^/api/v1/chat(/stream)?$", "chat"),
    (r"^/api/chat(/live)?$", "chat"),
    (r"^/api/tools/[^/]+/invoke$", "tools"),
    (r"^/v1/tools/invoke$", "tools"),
    (r"^/(v1|api|api/v1)/sessions(/|$)", "sessions"),
    (r"^/api/chat/history$", "sessions"),
    (r"^/(v1|api)/config(/|$)", "config"),
)
ROUTE_CLASSES = tuple((re.compile(pattern), cls) for pattern, cls in _PATHS)

# Requests per minute, where the documents give one. 000: 100/min by default; 001:
# /api/messages 100, /api/tools/:name/invoke 50 (its "other endpoints 200" loses to 000's
# 100, which is also the setting's default); 002: /chat 100, read endpoints 1000.
# Classes without a figure (config) take "default".
DOCUMENTED_LIMITS: dict[str, int] = {"default": 100, "chat": 100, "tools": 50, "sessions": 1000}

UNLIMITED_PATHS = frozenset({"/health"})

PERIOD_MS = 60_000
# Longer than Redis ever takes when healthy; past it the request is admitted (fail open).
REDIS_BUDGET_S = 1.0
# Retry-After for a refusal by the concurrency cap: a slot frees when any request ends.
CONCURRENCY_RETRY_MS = 1000

# KEYS[1]: the bucket, a hash {tokens, ts (ms)}; no key means a full bucket.
# ARGV: capacity, period_ms (time to refill from empty), now_ms ('' = Redis's clock).
# Returns {allowed (0/1), whole tokens left, ms until a token, ms until full, now_ms}.
_TAKE = """
local capacity = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or capacity
local ts = tonumber(state[2]) or now
if now > ts then
  tokens = tokens + (now - ts) * capacity / period
else
  -- a clock behind the last update adds nothing and does not move time back
  now = ts
end
tokens = math.min(capacity, tokens)
local allowed = 0
local retry_ms = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  retry_ms = math.ceil((1 - tokens) * period / capacity)
end
local full_ms = math.ceil((capacity - tokens) * period / capacity)
redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', now)
redis.call('PEXPIRE', KEYS[1], full_ms)
return {allowed, math.floor(tokens), retry_ms, full_ms, now}
"""


@dataclass(frozen=True)
class Verdict:
    """One bucket's answer to one request."""

    allowed: bool
    limit: int
    remaining: int
    retry_after_ms: int
    # Epoch seconds at which the bucket is full again (002's X-RateLimit-Reset).
    reset_at: int

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_at),
        }


RATE_LIMIT: web.RequestKey[Verdict] = web.RequestKey("rate_limit", Verdict)


def route_class(path: str) -> RouteClass:
    return next((cls for pattern, cls in ROUTE_CLASSES if pattern.match(path)), "default")


def configured_limits(configured: dict[str, int]) -> dict[str, int]:
    """The documents' limits overridden by the setting; unknown class names fail fast."""
    unknown = set(configured) - ROUTE_CLASS_NAMES
    if unknown:
        raise ValueError(
            f"gateway_rate_limits names unknown route classes {sorted(unknown)}; "
            f"known: {sorted(ROUTE_CLASS_NAMES)}"
        )
    return DOCUMENTED_LIMITS | configured


class TokenBuckets:
    """The buckets every replica shares, one Redis key per (identity, route class)."""

    def __init__(self, redis: aioredis.Redis, namespace: str) -> None:
        self.redis = redis
        self.namespace = namespace
        self._take = redis.register_script(_TAKE)

    def key(self, identity: str, route_class: str) -> str:
        return f"{self.namespace}:ratelimit:{route_class}:{identity}"

    async def take(
        self,
        identity: str,
        route_class: str,
        capacity: int,
        *,
        period_ms: int = PERIOD_MS,
        now_ms: int | None = None,
    ) -> Verdict:
        """Take one token if there is one. `now_ms` replaces Redis's clock (for tests)."""
        args = [capacity, period_ms, "" if now_ms is None else now_ms]
        reply = await self._take(keys=[self.key(identity, route_class)], args=args)
        allowed, remaining, retry_ms, full_ms, now = (int(v) for v in reply)
        return Verdict(
            allowed=bool(allowed),
            limit=capacity,
            remaining=remaining,
            retry_after_ms=retry_ms,
            reset_at=math.ceil((now + full_ms) / 1000),
        )


def identity_of(request: web.Request) -> str:
    who = request.get(PRINCIPAL)
    if who is None or who.kind == "public":
        return f"addr:{request.remote or 'unknown'}"
    return f"{who.kind}:{who.tenant_id}:{who.name}"


class RateLimits:
    """The middleware: the concurrency cap, then the route class's bucket, then the handler.

    Goes after the auth middleware, so the principal is known. One per application: it
    holds this replica's in-flight counts.
    """

    __middleware_version__ = 1  # a new-style aiohttp middleware, as `@web.middleware` marks

    def __init__(self, settings: GatewaySettings) -> None:
        self.limits = configured_limits(settings.gateway_rate_limits)
        self.max_in_flight = settings.gateway_max_connections_per_client
        self.namespace = settings.names.namespace
        self.in_flight: Counter[str] = Counter()
        self._buckets: TokenBuckets | None = None
        self._redis_failing = False

    def limit_for(self, route_class: str) -> int:
        return self.limits.get(route_class, self.limits["default"])

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in UNLIMITED_PATHS:
            return await handler(request)
        address = request.remote or "unknown"
        if self.in_flight[address] >= self.max_in_flight:
            raise RateLimited(
                f"more than {self.max_in_flight} concurrent requests from this address",
                retry_after_ms=CONCURRENCY_RETRY_MS,
                limit=self.max_in_flight,
                scope="connections",
            )
        self.in_flight[address] += 1
        try:
            await self._take(request)
            return await handler(request)
        finally:
            self.in_flight[address] -= 1
            if not self.in_flight[address]:
                del self.in_flight[address]

    async def _take(self, request: web.Request) -> None:
        cls = route_class(request.path)
        capacity = self.limit_for(cls)
        if capacity <= 0:
            return
        verdict = await self.check(self._buckets_of(request), identity_of(request), cls, capacity)
        if verdict is None:
            return
        request[RATE_LIMIT] = verdict
        if not verdict.allowed:
            raise RateLimited(
                f"rate limit of {capacity} requests per minute for {cls} routes exceeded; "
                f"retry in {math.ceil(verdict.retry_after_ms / 1000)} s",
                retry_after_ms=verdict.retry_after_ms,
                limit=capacity,
                scope=cls,
            )

    def _buckets_of(self, request: web.Request) -> TokenBuckets:
        redis = request.app[RUNS].relay.redis
        if self._buckets is None or self._buckets.redis is not redis:
            self._buckets = TokenBuckets(redis, self.namespace)
        return self._buckets

    async def check(
        self, buckets: TokenBuckets, identity: str, route_class: str, capacity: int
    ) -> Verdict | None:
        """The bucket's verdict; None (admit: fail open) when Redis does not answer."""
        try:
            async with asyncio.timeout(REDIS_BUDGET_S):
                verdict = await buckets.take(identity, route_class, capacity)
        except (RedisError, OSError, TimeoutError) as exc:
            if not self._redis_failing:
                self._redis_failing = True
                log.warning("rate limits are off until Redis answers again (fail open): %r", exc)
            return None
        if self._redis_failing:
            self._redis_failing = False
            log.info("Redis answers again; rate limits are back on")
        return verdict


async def stamp_headers(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare`: the X-RateLimit-* headers on every response with a verdict,
    streams and errors included (a middleware cannot add headers to a prepared stream)."""
    verdict = request.get(RATE_LIMIT)
    if verdict is not None:
        response.headers.update(verdict.headers())
