"""Two channel-bridge processes on one Telegram bot: exactly one polls; `kill -9` it and the other
takes over within the lease; across the failover every message becomes exactly one run and
exactly one reply."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest
import redis.asyncio as aioredis
from clawbus_core.config import Endpoints
from clawbus_fakes.models import FakeModelServer, RecordedRequest, Reply
from clawbus_fakes.telegram import FakeTelegramServer, FakeUser

from tests.integration.test_channel_telegram import bridge_env, create_channel, new_token
from tests.system import Process, processes, start_system, wait_for

LEASE_S = 2.0
PER_BATCH = 50


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegramServer]:
    async with FakeTelegramServer() as fake:
        yield fake


def slow_echo(request: RecordedRequest) -> Reply:
    # Slow enough that a burst of runs is still running when the holder is killed.
    return Reply(text=f"re: {request.last_user_text}", delay_s=1.5)


async def test_one_poller_and_a_failover_that_loses_and_repeats_nothing(
    endpoints: Endpoints,
    namespace: str,
    fake_models: FakeModelServer,
    tmp_path: Path,
    telegram: FakeTelegramServer,
    pool: asyncpg.Pool,
    agent: str,
) -> None:
    fake_models.set_default(agent, slow_echo)
    token = new_token()
    telegram.add_bot(token, "failover_bot")
    env = bridge_env(telegram) | {"CLAWBUS_BRIDGE_LEASE_S": str(LEASE_S)}
    redis = aioredis.Redis.from_url(endpoints.redis_url)
    try:
        async with (
            start_system(endpoints, namespace, fake_models, tmp_path, overrides=env) as system,
            aiohttp.ClientSession() as http,
        ):
            created = await create_channel(http, system, agent, token, dm_policy="open")
            lease_key = f"{namespace}:channel:{created['id']}:lease"
            with processes() as spawn:
                bridges: dict[str, Process] = {
                    name: spawn(
                        name,
                        ["channel-bridge"],
                        system.env | {"CLAWBUS_BRIDGE_ID": name},
                        tmp_path / f"{name}.log",
                    )
                    for name in ("bridge-a", "bridge-b")
                }
                await telegram.wait_polling(token, timeout_s=30)

                async def holder() -> str | None:
                    value = await redis.get(lease_key)
                    return value.decode() if value else None

                first = await wait_for(holder, timeout_s=10)
                standby = next(n for n in bridges if n != first)

                # Batch one, through the first holder; only one replica ever polls.
                users = [FakeUser(10_000 + i, f"User{i}") for i in range(2 * PER_BATCH)]
                for user in users[:PER_BATCH]:
                    telegram.private_message(token, f"message {user.id}", user=user)
                await telegram.wait_sent(token, PER_BATCH, timeout_s=60)
                assert telegram.conflicts(token) == 0
                assert telegram.active_pollers(token) <= 1

                # Batch two: once the holder has stored it (it confirms the updates to Telegram
                # only then) and while its runs still run, kill -9 the holder.
                for user in users[PER_BATCH:]:
                    telegram.private_message(token, f"message {user.id}", user=user)
                await telegram.wait_confirmed(token, timeout_s=30)
                bridges[first].kill9()

                # The standby takes over within the lease (and one poll), then delivers.
                await wait_for(lambda: _held_by(redis, lease_key, standby), timeout_s=LEASE_S * 3)
                await telegram.wait_sent(token, 2 * PER_BATCH, timeout_s=90)
                await asyncio.sleep(LEASE_S)  # anything sent twice would have arrived by now

                sent = telegram.sent(token)
                assert len(sent) == 2 * PER_BATCH
                replies = Counter((s.chat_id, s.text) for s in sent)
                assert replies == Counter(
                    (u.id, f"re: message {u.id}") for u in users
                )  # each user's reply, once
                runs = await pool.fetchval(
                    "SELECT count(*) FROM runs WHERE idempotency_key LIKE $1",
                    f"channel:{created['id']}:%",
                )
                assert runs == 2 * PER_BATCH
                assert len(fake_models.requests_for(agent)) == 2 * PER_BATCH
                assert telegram.conflicts(token) == 0
                assert bridges[standby].popen.poll() is None  # still serving
            # The bot token is part of every Telegram URL; no log line of either replica
            # may hold it (the standby's log was written up to its stop by now).
            for name in bridges:
                log = (tmp_path / f"{name}.log").read_text()
                assert "getUpdates" in log or "channel" in log
                assert token not in log and token.split(":")[1] not in log
    finally:
        await redis.aclose()


async def _held_by(redis: aioredis.Redis, key: str, owner: str) -> bool:
    value = await redis.get(key)
    return value is not None and value.decode() == owner
