"""The token bucket's arithmetic, run by the real script in a real Redis, on a clock the test
drives (`now_ms`): capacity 5 per minute refills one token every 12 s."""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from clawbus_core.config import Endpoints
from clawbus_gateway.ratelimit import (
    DOCUMENTED_LIMITS,
    TokenBuckets,
    configured_limits,
    route_class,
)

T0 = 1_700_000_000_000  # ms
CAPACITY = 5
TOKEN_MS = 60_000 // CAPACITY


@pytest.fixture
async def redis(endpoints: Endpoints) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(endpoints.redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def buckets(redis: aioredis.Redis) -> TokenBuckets:
    return TokenBuckets(redis, f"t{secrets.token_hex(5)}")


async def test_a_fresh_bucket_is_full_and_drains_one_token_per_request(
    buckets: TokenBuckets,
) -> None:
    verdicts = [await buckets.take("alice", "chat", CAPACITY, now_ms=T0) for _ in range(6)]
    assert [v.allowed for v in verdicts] == [True] * 5 + [False]
    assert [v.remaining for v in verdicts] == [4, 3, 2, 1, 0, 0]
    assert all(v.limit == CAPACITY for v in verdicts)
    assert [v.retry_after_ms for v in verdicts] == [0] * 5 + [TOKEN_MS]
    # Reset: when the bucket is full again, in epoch seconds.
    assert verdicts[0].reset_at == math.ceil((T0 + TOKEN_MS) / 1000)
    assert verdicts[-1].reset_at == math.ceil((T0 + 60_000) / 1000)


async def test_refill_is_continuous(buckets: TokenBuckets) -> None:
    for _ in range(CAPACITY):
        await buckets.take("alice", "chat", CAPACITY, now_ms=T0)
    half = await buckets.take("alice", "chat", CAPACITY, now_ms=T0 + TOKEN_MS // 2)
    assert not half.allowed
    assert half.retry_after_ms == TOKEN_MS // 2  # half a token is there already
    whole = await buckets.take("alice", "chat", CAPACITY, now_ms=T0 + TOKEN_MS)
    assert whole.allowed and whole.remaining == 0
    assert not (await buckets.take("alice", "chat", CAPACITY, now_ms=T0 + TOKEN_MS)).allowed
    later = await buckets.take("alice", "chat", CAPACITY, now_ms=T0 + 3 * TOKEN_MS + 1)
    assert later.allowed and later.remaining == 1  # two whole tokens came, one taken


async def test_refill_stops_at_capacity(buckets: TokenBuckets) -> None:
    await buckets.take("alice", "chat", CAPACITY, now_ms=T0)
    hours_later = await buckets.take("alice", "chat", CAPACITY, now_ms=T0 + 3_600_000)
    assert hours_later.remaining == CAPACITY - 1


async def test_a_clock_behind_the_last_update_adds_nothing(buckets: TokenBuckets) -> None:
    for _ in range(CAPACITY):
        await buckets.take("alice", "chat", CAPACITY, now_ms=T0 + TOKEN_MS)
    behind = await buckets.take("alice", "chat", CAPACITY, now_ms=T0)
    assert not behind.allowed
    assert behind.retry_after_ms == TOKEN_MS
    # ...nor moves the bucket's time back: the refill still counts from the latest update.
    after = await buckets.take("alice", "chat", CAPACITY, now_ms=T0 + 2 * TOKEN_MS)
    assert after.allowed and after.remaining == 0


async def test_a_lowered_limit_caps_the_tokens_at_once(buckets: TokenBuckets) -> None:
    await buckets.take("alice", "chat", 100, now_ms=T0)
    lowered = await buckets.take("alice", "chat", 2, now_ms=T0)
    assert lowered.allowed and lowered.remaining == 1 and lowered.limit == 2


async def test_the_key_expires_when_the_bucket_would_be_full(
    buckets: TokenBuckets, redis: aioredis.Redis
) -> None:
    key = buckets.key("alice", "chat")
    await buckets.take("alice", "chat", CAPACITY, now_ms=T0)
    await buckets.take("alice", "chat", CAPACITY, now_ms=T0)
    assert 0 < await redis.pttl(key) <= 2 * TOKEN_MS
    # No key is a full bucket.
    await redis.delete(key)
    assert (await buckets.take("alice", "chat", CAPACITY, now_ms=T0)).remaining == CAPACITY - 1


async def test_identities_and_route_classes_have_their_own_buckets(
    buckets: TokenBuckets,
) -> None:
    for _ in range(CAPACITY):
        await buckets.take("alice", "chat", CAPACITY, now_ms=T0)
    assert not (await buckets.take("alice", "chat", CAPACITY, now_ms=T0)).allowed
    assert (await buckets.take("bob", "chat", CAPACITY, now_ms=T0)).remaining == CAPACITY - 1
    assert (await buckets.take("alice", "default", CAPACITY, now_ms=T0)).allowed


async def test_without_now_the_script_reads_the_redis_clock(buckets: TokenBuckets) -> None:
    before = time.time()
    verdict = await buckets.take("alice", "chat", CAPACITY)
    assert verdict.allowed and verdict.remaining == CAPACITY - 1
    # Redis runs on this machine: its clock is ours, give or take.
    assert before + TOKEN_MS / 1000 - 5 <= verdict.reset_at <= time.time() + TOKEN_MS / 1000 + 5


def test_route_classes() -> None:
    assert route_class("/v1/chat/completions") == "chat"
    assert route_class("/v1/agent/run/stream") == "chat"
    assert route_class("/api/v1/chat/stream") == "chat"
    assert route_class("/api/messages") == "chat"
    assert route_class("/api/tools/read/invoke") == "tools"
    assert route_class("/api/tools") == "default"
    assert route_class("/api/v1/sessions/abc/history") == "sessions"
    assert route_class("/v1/sessions") == "sessions"
    assert route_class("/v1/sessionsx") == "default"
    assert route_class("/api/config") == "config"
    assert route_class("/v1/models") == "default"


def test_configured_limits_override_the_documents_and_reject_unknown_classes() -> None:
    assert configured_limits({"default": 5, "chat": 3}) == DOCUMENTED_LIMITS | {
        "default": 5,
        "chat": 3,
    }
    with pytest.raises(ValueError, match="chta"):
        configured_limits({"chta": 3})
