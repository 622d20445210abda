"""Rate limits and connection limits across gateway replicas: two gateways on the same NATS,
Postgres, Redis and namespace share every token bucket; the concurrency cap is per replica."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from clawbus_core.config import Endpoints
from clawbus_core.infra import free_port
from clawbus_fakes.models import FakeModelServer
from clawbus_gateway.ratelimit import RateLimits, TokenBuckets
from clawbus_gateway.settings import GatewaySettings

from tests.system import System, start_system, wait_for

APP_TOKEN = secrets.token_urlsafe(24)


@contextlib.asynccontextmanager
async def replicas(
    endpoints: Endpoints,
    namespace: str,
    fake: FakeModelServer,
    tmp_path: Path,
    overrides: dict[str, str],
    *,
    runners: int = 0,
) -> AsyncIterator[tuple[System, System]]:
    """Two gateways (`runners` on the first) with the same gateway token and an API token."""
    api_tokens = [{"name": "app", "token": APP_TOKEN, "permissions": ["chat"]}]
    overrides = overrides | {"CLAWBUS_GATEWAY_API_TOKENS": json.dumps(api_tokens)}
    async with start_system(
        endpoints, namespace, fake, tmp_path / "a", runners=runners, overrides=overrides
    ) as a:
        same_token = overrides | {"CLAWBUS_GATEWAY_TOKEN": a.token}
        async with start_system(
            endpoints, namespace, fake, tmp_path / "b", runners=0, overrides=same_token
        ) as b:
            yield a, b


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def rate_headers(response: aiohttp.ClientResponse) -> tuple[int, int, int]:
    h = response.headers
    return (
        int(h["X-RateLimit-Limit"]),
        int(h["X-RateLimit-Remaining"]),
        int(h["X-RateLimit-Reset"]),
    )


async def test_replicas_share_one_bucket_per_credential(
    endpoints: Endpoints, namespace: str, fake_models: FakeModelServer, tmp_path: Path
) -> None:
    limits = {"CLAWBUS_GATEWAY_RATE_LIMITS": '{"default": 5, "chat": 3}'}
    async with (
        replicas(endpoints, namespace, fake_models, tmp_path, limits) as (a, b),
        aiohttp.ClientSession() as http,
    ):
        capacity, requests = 5, 14
        started = time.monotonic()
        seen: list[tuple[str, int, tuple[int, int, int], dict[str, Any]]] = []
        for i in range(requests):
            replica = (a, b)[i % 2]
            async with http.get(f"{replica.url}/v1/models", headers=bearer(a.token)) as r:
                seen.append((replica.url, r.status, rate_headers(r), await r.json()))
                if r.status == 429:
                    assert int(r.headers["Retry-After"]) >= 1
        elapsed = time.monotonic() - started
        now = time.time()

        admitted = [s for s in seen if s[1] == 200]
        refused = [s for s in seen if s[1] == 429]
        assert len(admitted) + len(refused) == requests
        # The bucket starts full and refills 5 tokens a minute while the test runs.
        assert capacity <= len(admitted) <= capacity + math.floor(elapsed * capacity / 60)
        assert {url for url, *_ in refused} == {a.url, b.url}  # both replicas refuse
        assert [s[1] for s in seen[:capacity]] == [200] * capacity
        remaining = [headers[1] for _, _, headers, _ in seen]
        assert remaining[:capacity] == [4, 3, 2, 1, 0]
        assert remaining == sorted(remaining, reverse=True)
        for _, _, (limit, _, reset), _ in seen:
            assert limit == capacity
            assert now - 1 <= reset <= now + 61  # epoch seconds at which the bucket is full
        body = refused[0][3]["error"]
        assert body["code"] == "rate_limited"
        assert body["retryable"] is True
        assert body["retryAfterMs"] > 0
        assert body["details"] == {"limit": capacity, "scope": "default"}

        # Another credential has its own bucket; so has another route class.
        async with http.get(f"{b.url}/v1/models", headers=bearer(APP_TOKEN)) as r:
            assert r.status == 200
            assert rate_headers(r)[:2] == (capacity, capacity - 1)
        async with http.post(f"{a.url}/v1/chat/completions", headers=bearer(a.token)) as r:
            assert r.status == 400  # admitted (empty body), and counted
            assert rate_headers(r)[:2] == (3, 2)

        # /health is never limited, and says nothing about limits.
        for replica in (a, b) * 10:
            async with http.get(f"{replica.url}/health") as r:
                assert r.status == 200
                assert "X-RateLimit-Limit" not in r.headers


async def test_chat_class_streams_and_errors_carry_the_headers(
    endpoints: Endpoints, namespace: str, fake_models: FakeModelServer, tmp_path: Path
) -> None:
    limits = {"CLAWBUS_GATEWAY_RATE_LIMITS": '{"default": 5, "chat": 3}'}
    async with (
        replicas(endpoints, namespace, fake_models, tmp_path, limits, runners=1) as (a, b),
        aiohttp.ClientSession() as http,
    ):
        stream = {
            "model": "clawbus/echo",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
        }
        # A stream's headers leave before its body: the limit headers are on them.
        async with http.post(
            f"{b.url}/v1/chat/completions", json=stream, headers=bearer(a.token)
        ) as r:
            assert r.status == 200
            assert r.content_type == "text/event-stream"
            assert rate_headers(r)[:2] == (3, 2)
            assert (await r.text()).rstrip().endswith("data: [DONE]")
        async with http.post(
            f"{a.url}/v1/chat/completions", json={"model": 1}, headers=bearer(a.token)
        ) as r:
            assert r.status == 400
            assert rate_headers(r)[:2] == (3, 1)
        async with http.post(
            f"{b.url}/v1/chat/completions", json=stream, headers=bearer(a.token)
        ) as r:
            assert r.status == 200
            assert rate_headers(r)[:2] == (3, 0)
            await r.read()
        async with http.post(
            f"{a.url}/v1/chat/completions", json=stream, headers=bearer(a.token)
        ) as r:
            assert r.status == 429
            assert rate_headers(r)[:2] == (3, 0)
            retry_after = int(r.headers["Retry-After"])
            assert 1 <= retry_after <= 20  # one token comes every 20 s
            error = (await r.json())["error"]
            assert error["code"] == "rate_limited"
            assert error["details"] == {"limit": 3, "scope": "chat"}
        # The default class is untouched by chat traffic.
        async with http.get(f"{a.url}/v1/models", headers=bearer(a.token)) as r:
            assert r.status == 200
            assert rate_headers(r)[:2] == (5, 4)


async def test_concurrent_requests_per_address_are_capped_per_replica(
    endpoints: Endpoints, namespace: str, fake_models: FakeModelServer, tmp_path: Path
) -> None:
    cap = 2
    overrides = {"CLAWBUS_GATEWAY_MAX_CONNECTIONS_PER_CLIENT": str(cap)}
    async with (
        replicas(endpoints, namespace, fake_models, tmp_path, overrides) as (a, b),
        aiohttp.ClientSession() as http,
    ):
        release = asyncio.Event()

        async def slow_body() -> AsyncIterator[bytes]:
            yield b"{"  # the headers and a first byte leave; the rest waits for `release`
            await release.wait()
            yield b"}"

        async def held() -> int:
            async with http.post(
                f"{a.url}/v1/chat/completions", data=slow_body(), headers=bearer(a.token)
            ) as r:
                await r.read()
                return r.status

        async def probe(replica: System) -> int:
            async with http.get(f"{replica.url}/v1/models", headers=bearer(a.token)) as r:
                await r.read()
                return r.status

        holds: list[asyncio.Task[int]] = []

        async def full() -> bool:
            # A hold that met a probe in flight was refused; replace it and look again.
            while sum(not h.done() for h in holds) < cap:
                holds.append(asyncio.create_task(held()))
            return await probe(a) == 429

        try:
            await wait_for(full, timeout_s=30)
            async with http.get(f"{a.url}/v1/models", headers=bearer(a.token)) as r:
                assert r.status == 429
                error = (await r.json())["error"]
                assert error["details"] == {"limit": cap, "scope": "connections"}
                assert r.headers["Retry-After"] == "1"
            async with http.get(f"{a.url}/health") as r:
                assert r.status == 200  # health is never limited
            assert await probe(b) == 200  # the cap is per replica
        finally:
            release.set()
        in_flight = [h for h in holds if not h.done()]
        assert len(in_flight) == cap
        assert await asyncio.gather(*in_flight) == [400] * cap  # `{}` is admitted, then invalid
        await wait_for(lambda: probe(a), timeout_s=10)  # slots are given back
        assert await probe(a) == 200


async def test_an_unreachable_redis_fails_open(
    endpoints: Endpoints, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    limits = RateLimits(GatewaySettings())
    dead = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")
    live = aioredis.Redis.from_url(endpoints.redis_url)
    try:
        with caplog.at_level(logging.INFO, logger="clawbus_gateway.ratelimit"):
            down = TokenBuckets(dead, namespace)
            assert await limits.check(down, "alice", "chat", 1) is None
            assert await limits.check(down, "alice", "chat", 1) is None
            warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
            assert len(warnings) == 1  # once per outage, not once per request
            assert "fail open" in warnings[0].getMessage()
            verdict = await limits.check(TokenBuckets(live, namespace), "alice", "chat", 1)
            assert verdict is not None and verdict.allowed
            assert any("back on" in r.getMessage() for r in caplog.records)
    finally:
        await dead.aclose()
        await live.aclose()
