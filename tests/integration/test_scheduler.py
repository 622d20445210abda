"""The scheduler end to end: cron jobs and heartbeats through the gateway's API, fired by
scheduler replicas (OS processes, or in this test's event loop), runs through the real bus,
runner and database, replies delivered through a channel-bridge to the fake Telegram."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from clawbus_core.config import Endpoints
from clawbus_core.cron import Schedule
from clawbus_core.db import Pool, create_pool
from clawbus_core.store import agents as agents_store
from clawbus_core.store import cron as cron_store
from clawbus_core.store import workspace
from clawbus_core.store.runs import DEFAULT_TENANT
from clawbus_fakes.models import FakeModelServer, Reply, ToolCall
from clawbus_fakes.telegram import ALICE, FakeTelegramServer
from clawbus_scheduler.service import Scheduler
from clawbus_scheduler.settings import SchedulerSettings

from tests.integration.test_channel_telegram import bridge_env, create_channel, new_token, visible
from tests.system import System, patched_env, processes, start_system, wait_for

# Schedulers that react in tenths of a second: a standby retries the lock every 0.3 s.
SCHEDULER_ENV = {"CLAWBUS_SCHEDULER_TICK_S": "0.2", "CLAWBUS_SCHEDULER_STANDBY_RETRY_S": "0.3"}
EVERY_MS = 2000


@pytest.fixture
async def pool(endpoints: Endpoints) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(endpoints.database_url, min_size=1, max_size=4) as p:
        yield p


@pytest.fixture
async def agent(pool: asyncpg.Pool) -> AsyncIterator[str]:
    """An agent of its own whose model is the fake's `cron-<key>` (echo unless scripted)."""
    key = f"cron-{uuid.uuid4().hex[:10]}"
    await agents_store.create_agent(pool, DEFAULT_TENANT, key, "Cron agent", model=f"openai/{key}")
    try:
        yield key
    finally:
        await pool.execute(
            "DELETE FROM agents WHERE tenant_id = $1 AND key = $2", DEFAULT_TENANT, key
        )


@pytest.fixture
async def system(
    endpoints: Endpoints,
    namespace: str,
    fake_models: FakeModelServer,
    tmp_path: Path,
    agent: str,
) -> AsyncIterator[System]:
    del agent  # made first, so it is deleted only after the system has stopped
    async with start_system(
        endpoints, namespace, fake_models, tmp_path, overrides=SCHEDULER_ENV
    ) as running:
        yield running


@contextlib.asynccontextmanager
async def scheduler(system: System, name: str = "in-test") -> AsyncIterator[Scheduler]:
    """A scheduler replica in this test's event loop."""
    with patched_env(system.env | SCHEDULER_ENV):
        settings = SchedulerSettings(scheduler_id=f"{system.namespace}-{name}")
    stop = asyncio.Event()
    async with Scheduler(settings) as replica:
        serving = asyncio.create_task(replica.serve(stop))
        try:
            yield replica
        finally:
            stop.set()
            await serving


async def api(
    http: aiohttp.ClientSession, system: System, method: str, path: str, body: Any = None
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {system.token}"}
    async with http.request(method, f"{system.url}{path}", headers=headers, json=body) as r:
        return r.status, await r.json(content_type=None)


async def cron(http: aiohttp.ClientSession, system: System, **body: Any) -> tuple[int, Any]:
    return await api(http, system, "POST", "/api/cron", body)


async def firings(pool: asyncpg.Pool, job_id: str) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT * FROM cron_runs WHERE job_id = $1 ORDER BY scheduled_for", uuid.UUID(job_id)
    )


async def leader(pool: asyncpg.Pool, namespace: str) -> str | None:
    """The scheduler replica (its id) whose session holds the advisory lock."""
    value: str | None = await pool.fetchval(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND a.application_name LIKE $1",
        f"clawbus-scheduler:{namespace}-%",
    )
    return value.rsplit(":", 1)[1] if value else None


# --- exactly once -----------------------------------------------------------------------------


async def test_three_replicas_fire_each_time_once_across_a_leader_kill(
    system: System,
    pool: asyncpg.Pool,
    agent: str,
    fake_models: FakeModelServer,
    tmp_path: Path,
) -> None:
    async with aiohttp.ClientSession() as http:
        status, created = await cron(
            http,
            system,
            action="create",
            name="tick",
            agentId=agent,
            message="tick",
            everyMs=EVERY_MS,
        )
    assert status == 200, created
    job_id = created["result"]["id"]
    anchor_ms = created["result"]["schedule"]["anchorMs"]

    async def fired(count: int) -> bool:
        return len(await firings(pool, job_id)) >= count

    with processes() as spawn:
        env = system.env | SCHEDULER_ENV
        replicas = {
            f"{system.namespace}-{i}": spawn(
                f"scheduler-{i}",
                ["scheduler"],
                env | {"CLAWBUS_SCHEDULER_ID": f"{system.namespace}-{i}"},
                tmp_path / f"scheduler-{i}.log",
            )
            for i in range(3)
        }
        await wait_for(lambda: fired(5), timeout_s=30, interval_s=0.1)
        first = await leader(pool, system.namespace)
        assert first in replicas
        before = len(await firings(pool, job_id))
        killed_at = time.monotonic()
        replicas[first].kill9()

        async def next_leader() -> str | None:
            holder = await leader(pool, system.namespace)
            return holder if holder != first else None

        second = await wait_for(next_leader, timeout_s=10)
        takeover_s = time.monotonic() - killed_at
        assert second in replicas
        await wait_for(lambda: fired(before + 5), timeout_s=30, interval_s=0.1)
        async with aiohttp.ClientSession() as http:
            status, _ = await cron(http, system, action="disable", id=job_id)
        assert status == 200

        # Every firing's run ended and was recorded (by the new leader).
        async def recorded() -> bool:
            return all(f["status"] == "completed" for f in await firings(pool, job_id))

        await wait_for(recorded, timeout_s=20, interval_s=0.2)
        for process in replicas.values():
            process.stop()

    rows = await firings(pool, job_id)
    times = [r["scheduled_for"] for r in rows]
    # Each due time fired once: one firing per time (unique) and one run per firing...
    assert len(set(times)) == len(times) >= 10
    run_ids = [r["run_id"] for r in rows]
    assert None not in run_ids and len(set(run_ids)) == len(run_ids)
    runs = await pool.fetch(
        "SELECT idempotency_key, status FROM runs WHERE tenant_id = $1 AND idempotency_key LIKE $2",
        DEFAULT_TENANT,
        f"cron:{job_id}:%",
    )
    assert len(runs) == len(rows)  # ...and no run beside them
    assert {r["status"] for r in runs} == {"completed"}
    assert len(fake_models.requests_for(agent)) == len(rows)  # each run ran once
    # ...on the job's grid, one interval apart: no gap but (at most) one for the takeover.
    ms = [int(t.timestamp() * 1000) for t in times]
    assert all((m - anchor_ms) % EVERY_MS == 0 for m in ms)
    gaps = [b - a for a, b in itertools.pairwise(ms) if b - a != EVERY_MS]
    assert len(gaps) <= 1, ms
    assert all(gap <= takeover_s * 1000 + 2 * EVERY_MS for gap in gaps), (gaps, takeover_s)
    assert all(r["duration_ms"] is not None for r in rows)


# --- the API, both shapes ---------------------------------------------------------------------


async def test_jobs_through_both_api_shapes(
    system: System, pool: asyncpg.Pool, agent: str, fake_models: FakeModelServer
) -> None:
    async with aiohttp.ClientSession() as http, scheduler(system):
        # 003's create, with its flat fields: a cron expression in a time zone.
        status, body = await cron(
            http,
            system,
            action="create",
            name="daily-check",
            message="Run daily check",
            expr="0 9 * * *",
            tz="Europe/Berlin",
            deliver=False,
            channel="",
            to="",
            agentId=agent,
        )
        assert status == 200, body
        assert body["ok"] is True
        job = body["result"]
        assert job["schedule"] == {
            "kind": "cron",
            "expr": "0 9 * * *",
            "tz": "Europe/Berlin",
            "everyMs": None,
            "anchorMs": None,
            "atMs": None,
            "at": None,
        }
        assert job["payload"]["message"] == "Run daily check"
        assert job["delivery"] == {"mode": "none", "channel": None, "to": None, "url": None}
        next_run = datetime.fromtimestamp(job["state"]["nextRunAtMs"] / 1000, UTC)
        assert next_run > datetime.now(UTC)
        assert next_run.astimezone(ZoneInfo("Europe/Berlin")).hour == 9
        job_id = job["id"]

        # The legacy fields: kind + everyMs, kind + atMs; OpenClaw's nested schedule.
        status, body = await cron(
            http,
            system,
            action="create",
            name="legacy-every",
            message="m",
            kind="every",
            everyMs=60_000,
            agentId=agent,
        )
        assert status == 200 and body["result"]["schedule"]["everyMs"] == 60_000, body
        at_ms = int((time.time() + 3600) * 1000)
        status, body = await cron(
            http,
            system,
            action="create",
            name="legacy-at",
            message="m",
            kind="at",
            atMs=at_ms,
            agentId=agent,
        )
        assert status == 200 and body["result"]["state"]["nextRunAtMs"] == at_ms, body
        status, body = await cron(
            http,
            system,
            action="create",
            name="nested",
            agentId=agent,
            schedule={"kind": "cron", "expr": "*/5 * * * *"},
            payload={"kind": "agentTurn", "message": "hello"},
        )
        assert status == 200 and body["result"]["sessionTarget"] == "job", body

        # Invalid expressions, zones and intervals: 400 naming the field, nothing stored.
        for fields, param, words in (
            ({"expr": "61 * * * *"}, "schedule.expr", "minute 61 is out of range"),
            ({"expr": "0 9 * *"}, "schedule.expr", "expected 5 fields"),
            ({"expr": "0 9 * * *", "tz": "Moon/Base"}, "schedule.tz", "unknown time zone"),
            ({"everyMs": 10}, "schedule.everyMs", "between 1000"),
            ({}, "schedule", "a schedule is required"),
        ):
            status, body = await cron(
                http, system, action="create", name="bad", message="m", agentId=agent, **fields
            )
            assert status == 400, (fields, body)
            assert body["error"]["code"] == "INVALID_REQUEST"
            assert words in body["error"]["message"]
            assert body["error"]["details"]["param"] == param
        status, body = await cron(http, system, action="explode")
        assert status == 400 and body["error"]["code"] == "INVALID_REQUEST"
        status, body = await cron(
            http,
            system,
            action="create",
            name="daily-check",
            message="x",
            expr="0 9 * * *",
            agentId=agent,
        )
        assert status == 409, body
        status, body = await cron(
            http, system, action="create", name="x", message="m", expr="0 9 * * *", agentId="nope"
        )
        assert status == 404 and body["error"]["details"]["param"] == "agentId", body

        # 001's and 003's list (one shape), 003's single read.
        status, body = await api(http, system, "GET", "/api/cron")
        assert status == 200 and body["ok"] is True
        names = [j["name"] for j in body["jobs"]]
        assert names == ["daily-check", "legacy-every", "legacy-at", "nested"]
        status, body = await cron(http, system, action="list")
        assert [j["name"] for j in body["result"]] == names
        status, body = await api(http, system, "GET", "/api/cron?id=daily-check")
        assert status == 200 and body["job"]["id"] == job_id and body["runs"] == []
        status, body = await cron(http, system, action="get", id=job_id)
        assert status == 200 and body["result"]["name"] == "daily-check"

        # Update: a new expression moves the next run; a bad one changes nothing.
        status, body = await api(
            http,
            system,
            "POST",
            f"/api/cron?id={job_id}",
            {"action": "update", "expr": "30 7 * * 1"},
        )
        assert status == 200, body
        assert body["result"]["schedule"]["expr"] == "30 7 * * 1"
        assert body["result"]["payload"]["message"] == "Run daily check"  # kept
        moved = body["result"]["state"]["nextRunAtMs"]
        status, body = await cron(http, system, action="update", id=job_id, expr="* * * * * *")
        assert status == 400 and "expected 5 fields" in body["error"]["message"]
        status, body = await cron(http, system, action="get", id=job_id)
        assert body["result"]["schedule"]["expr"] == "30 7 * * 1"
        assert body["result"]["state"]["nextRunAtMs"] == moved

        # Disable and enable.
        status, body = await cron(http, system, action="disable", id="daily-check")
        assert status == 200 and body["result"]["enabled"] is False
        assert body["result"]["state"]["nextRunAtMs"] is None
        status, body = await cron(http, system, action="enable", id="daily-check")
        assert status == 200 and body["result"]["enabled"] is True
        assert body["result"]["state"]["nextRunAtMs"] == moved

        # Run now (001): the firing is recorded, the scheduler runs it, the history shows it.
        fake_models.script(agent, Reply(text="Daily check done."))
        status, body = await api(http, system, "POST", "/api/cron/daily-check/run")
        assert status == 200, body
        assert body["ok"] is True and body["jobId"] == job_id and body["status"] == "pending"

        async def ran() -> Any:
            _, detail = await api(http, system, "GET", f"/api/cron?id={job_id}")
            runs = detail["runs"]
            return runs if runs and runs[0]["status"] == "completed" else None

        [run] = await wait_for(ran, timeout_s=20, interval_s=0.2)
        assert run["manual"] is True and run["result"] == "Daily check done."
        assert run["runId"] and run["durationMs"] is not None
        assert run["deliveryStatus"] == "none"
        session = await pool.fetchval(
            "SELECT s.session_key FROM runs r JOIN sessions s ON s.id = r.session_id "
            "WHERE r.id = $1",
            uuid.UUID(run["runId"]),
        )
        assert session == f"agent:{agent}:cron:{job_id}"
        _, detail = await api(http, system, "GET", f"/api/cron?id={job_id}")
        assert detail["job"]["state"]["lastStatus"] == "completed"
        assert detail["job"]["state"]["totalRuns"] == 1

        # Unknown ids: 404; no id: 400.
        for path, body_ in (
            ("/api/cron/no-such-job/run", None),
            ("/api/cron", {"action": "get", "id": "no-such-job"}),
            ("/api/cron", {"action": "update", "id": str(uuid.uuid4()), "message": "x"}),
            ("/api/cron", {"action": "delete", "id": "no-such-job"}),
            ("/api/cron", {"action": "enable", "id": "no-such-job"}),
        ):
            status, body = await api(http, system, "POST", path, body_)
            assert status == 404, (path, body_, body)
            assert body["error"]["code"] == "NOT_FOUND"
        status, body = await api(http, system, "GET", "/api/cron?id=no-such-job")
        assert status == 404
        status, body = await cron(http, system, action="disable")
        assert status == 400 and body["error"]["details"]["param"] == "id"

        # Delete.
        status, body = await cron(http, system, action="delete", id=job_id)
        assert status == 200 and body["result"] == {"id": job_id, "deleted": True}
        status, body = await api(http, system, "GET", f"/api/cron?id={job_id}")
        assert status == 404
        assert (
            await pool.fetchval(
                "SELECT count(*) FROM cron_runs WHERE job_id = $1", uuid.UUID(job_id)
            )
            == 0
        )


# --- delivery to a chat -----------------------------------------------------------------------


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegramServer]:
    async with FakeTelegramServer() as fake:
        yield fake


@pytest.fixture
async def bridged(
    endpoints: Endpoints,
    namespace: str,
    fake_models: FakeModelServer,
    tmp_path: Path,
    telegram: FakeTelegramServer,
    agent: str,
) -> AsyncIterator[System]:
    """A system with a channel-bridge polling the fake Telegram."""
    del agent
    overrides = bridge_env(telegram) | SCHEDULER_ENV
    async with start_system(
        endpoints, namespace, fake_models, tmp_path, bridges=1, overrides=overrides
    ) as running:
        yield running


async def telegram_channel(
    http: aiohttp.ClientSession, system: System, telegram: FakeTelegramServer, agent: str
) -> str:
    token = new_token()
    telegram.add_bot(token, "cron_bot")
    telegram.add_chat(token, ALICE)  # the chat the jobs send to
    await create_channel(http, system, agent, token, allow_from=[str(ALICE.id)])
    await telegram.wait_polling(token, timeout_s=15)
    return token


async def delivered(pool: asyncpg.Pool, run_id: str) -> bool:
    state = await pool.fetchval(
        "SELECT state FROM channel_deliveries WHERE run_id = $1", uuid.UUID(run_id)
    )
    return state == "sent"


async def test_a_job_delivers_its_reply_to_a_telegram_chat_once(
    bridged: System,
    pool: asyncpg.Pool,
    agent: str,
    fake_models: FakeModelServer,
    telegram: FakeTelegramServer,
) -> None:
    system = bridged
    fake_models.script(agent, Reply(text="Good morning, Alice! Three meetings today."))
    async with aiohttp.ClientSession() as http, scheduler(system, "a"), scheduler(system, "b"):
        token = await telegram_channel(http, system, telegram, agent)
        soon = datetime.now(UTC) + timedelta(seconds=1)
        status, body = await cron(
            http,
            system,
            action="create",
            name="morning",
            agentId=agent,
            message="Brief me on today.",
            atMs=int(soon.timestamp() * 1000),
            delivery={"mode": "channel", "channel": "telegram", "to": str(ALICE.id)},
        )
        assert status == 200, body
        assert body["result"]["delivery"]["channel"] == "telegram"
        assert body["result"]["payload"]["deliver"] is True
        job_id = body["result"]["id"]

        [sent] = await telegram.wait_sent(token, 1, timeout_s=20)
        assert visible(sent.text) == "Good morning, Alice! Three meetings today."
        assert sent.chat_id == ALICE.id

        async def done() -> asyncpg.Record | None:
            rows = await firings(pool, job_id)
            return rows[0] if rows and rows[0]["status"] == "completed" else None

        firing = await wait_for(done, timeout_s=10)
        assert firing["delivery_status"] == "queued"
        await wait_for(lambda: delivered(pool, str(firing["run_id"])), timeout_s=10)
        # The outbox row is final (sent, one chunk): no replica or sweep sends it again.
        outbox = await pool.fetch(
            "SELECT state, platform_ids FROM channel_deliveries WHERE run_id = $1",
            firing["run_id"],
        )
        assert [(r["state"], len(r["platform_ids"])) for r in outbox] == [("sent", 1)]
        assert len(telegram.sent(token)) == 1
        assert len(await firings(pool, job_id)) == 1
        _, detail = await api(http, system, "GET", f"/api/cron?id={job_id}")
        assert detail["job"]["enabled"] is False  # a one-off job is done


async def test_a_heartbeat_ok_is_not_delivered_and_a_real_reply_is(
    bridged: System,
    pool: asyncpg.Pool,
    agent: str,
    fake_models: FakeModelServer,
    telegram: FakeTelegramServer,
) -> None:
    system = bridged
    cheap = f"{agent}-cheap"
    fake_models.script(cheap, Reply(text="HEARTBEAT_OK"), Reply(text="Reminder: water the plants."))
    agent_id = await pool.fetchval(
        "SELECT id FROM agents WHERE tenant_id = $1 AND key = $2", DEFAULT_TENANT, agent
    )
    checklist = "# Heartbeat\n\n- Remind Alice to water the plants on Fridays.\n"
    await workspace.write_file(pool, DEFAULT_TENANT, agent_id, "HEARTBEAT.md", checklist)
    async with aiohttp.ClientSession() as http, scheduler(system):
        token = await telegram_channel(http, system, telegram, agent)
        status, body = await cron(
            http,
            system,
            action="create",
            agentId=agent,
            everyMs=3_600_000,
            model=f"openai/{cheap}",
            heartbeat={"activeHours": {"start": "00:00", "end": "24:00", "tz": "Europe/Berlin"}},
            delivery={"mode": "channel", "channel": "telegram", "to": str(ALICE.id)},
        )
        assert status == 200, body
        job = body["result"]
        assert job["name"] == f"heartbeat-{agent}" and job["payload"]["kind"] == "heartbeat"
        status, again = await cron(
            http, system, action="create", agentId=agent, name="hb2", everyMs=60_000, heartbeat={}
        )
        assert status == 409 and again["error"]["details"]["param"] == "heartbeat"

        async def firing_done(count: int) -> list[asyncpg.Record] | None:
            rows = await firings(pool, job["id"])
            ended = [r for r in rows if r["status"] == "completed"]
            return rows if len(ended) == len(rows) == count else None

        # 1: the model answers HEARTBEAT_OK: recorded, not delivered.
        status, _ = await api(http, system, "POST", f"/api/cron/{job['id']}/run")
        assert status == 200
        [quiet] = await wait_for(lambda: firing_done(1), timeout_s=20, interval_s=0.2)
        assert quiet["result"] == "HEARTBEAT_OK"
        assert quiet["delivery_status"] == "suppressed"
        # 2: a real reply: delivered.
        status, _ = await api(http, system, "POST", f"/api/cron/{job['id']}/run")
        assert status == 200
        [sent] = await telegram.wait_sent(token, 1, timeout_s=20)
        assert visible(sent.text) == "Reminder: water the plants."
        rows = await wait_for(lambda: firing_done(2), timeout_s=20, interval_s=0.2)
        assert [r["delivery_status"] for r in rows] == ["suppressed", "queued"]
        await wait_for(lambda: delivered(pool, str(rows[1]["run_id"])), timeout_s=10)
        assert len(telegram.sent(token)) == 1  # the HEARTBEAT_OK never went out

    # The cheaper model answered, with HEARTBEAT.md in its prompt, in the heartbeat session.
    requests = fake_models.requests_for(cheap)
    assert len(requests) == 2 and fake_models.requests_for(agent) == []
    assert "Remind Alice to water the plants on Fridays." in requests[0].last_user_text
    assert "HEARTBEAT_OK" in requests[0].last_user_text
    sessions = await pool.fetch(
        "SELECT DISTINCT s.session_key FROM runs r JOIN sessions s ON s.id = r.session_id "
        "WHERE r.id = ANY($1::uuid[])",
        [r["run_id"] for r in rows],
    )
    assert [s["session_key"] for s in sessions] == [f"agent:{agent}:heartbeat"]


# --- the agent tool ---------------------------------------------------------------------------


async def test_the_agent_schedules_lists_runs_and_removes_its_own_job(
    system: System, pool: asyncpg.Pool, agent: str, fake_models: FakeModelServer
) -> None:
    add = {
        "action": "add",
        "name": "stretch",
        "message": "Time to stretch!",
        "expr": "0 * * * *",
        "model": f"openai/{agent}-job",  # the job's runs: a model queue of their own
    }
    fake_models.script(
        agent,
        Reply(tool_calls=[ToolCall("cron", add)]),
        Reply(
            tool_calls=[
                ToolCall(
                    "cron", {"action": "add", "name": "bad", "message": "m", "expr": "99 * * * *"}
                )
            ]
        ),
        Reply(tool_calls=[ToolCall("cron", {"action": "list"})]),
        Reply(tool_calls=[ToolCall("cron", {"action": "run", "id": "stretch"})]),
        Reply(text="Scheduled, and running it once now."),
        Reply(tool_calls=[ToolCall("cron", {"action": "remove", "id": "stretch"})]),
        Reply(text="Removed."),
    )
    fake_models.script(f"{agent}-job", Reply(text="Stretched."))
    async with aiohttp.ClientSession() as http, scheduler(system):
        status, body = await api(
            http,
            system,
            "POST",
            "/v1/agent/run",
            {"message": "Remind me to stretch every hour.", "agentId": agent},
        )
        assert status == 200, body
        assert body["response"] == "Scheduled, and running it once now."
        results = [
            m["content"]
            for m in await pool.fetch(
                "SELECT content FROM messages WHERE run_id = $1 AND role = 'tool' "
                "ORDER BY run_step",
                uuid.UUID(body["runId"]),
            )
        ]
        assert results[0].startswith("created cron job:\n- stretch (id ")
        assert "schedule.expr: minute 99 is out of range" in results[1]
        assert results[2].startswith("- stretch (id ") and "0 * * * *, enabled" in results[2]
        assert results[3].startswith("cron job stretch will run now")
        _, listed = await api(http, system, "GET", "/api/cron")
        [job] = listed["jobs"]
        assert (job["name"], job["agentId"]) == ("stretch", agent)

        async def ran() -> Any:
            _, detail = await api(http, system, "GET", f"/api/cron?id={job['id']}")
            runs = detail["runs"]
            return runs if runs and runs[0]["status"] == "completed" else None

        [run] = await wait_for(ran, timeout_s=20, interval_s=0.2)
        assert run["manual"] is True and run["result"] == "Stretched."

        status, body = await api(
            http, system, "POST", "/v1/agent/run", {"message": "Stop it.", "agentId": agent}
        )
        assert status == 200 and body["response"] == "Removed.", body
        _, listed = await api(http, system, "GET", "/api/cron")
        assert listed["jobs"] == []


# --- missed times and backoff, with the clock given -------------------------------------------


@pytest.fixture
async def store_pool(endpoints: Endpoints) -> AsyncIterator[Pool]:
    """A pool as the services open it (jsonb as Python objects)."""
    pool = await create_pool(endpoints.database_url, min_size=1, max_size=2)
    try:
        yield pool
    finally:
        await pool.close()


async def test_missed_times_fire_once_or_are_skipped_and_failures_back_off(
    store_pool: Pool, namespace: str, agent: str
) -> None:
    pool = store_pool
    t0 = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
    minute = timedelta(minutes=1)
    grace = timedelta(seconds=60)

    def spec(name: str, missed: Literal["run_once", "skip"]) -> cron_store.JobSpec:
        return cron_store.JobSpec(
            name=name,
            agent_key=agent,
            schedule=Schedule.every(60_000, t0),
            payload=cron_store.Payload("message", "tick"),
            missed=missed,
        )

    once = await cron_store.create_job(
        pool, namespace, DEFAULT_TENANT, spec("once", "run_once"), now=t0
    )
    skip = await cron_store.create_job(
        pool, namespace, DEFAULT_TENANT, spec("skip", "skip"), now=t0
    )
    assert once.next_run_at == skip.next_run_at == t0 + minute

    async def claim(now: datetime) -> cron_store.Claimed:
        async with pool.acquire() as conn:
            return await cron_store.claim_due(conn, namespace, now, grace=grace)

    async def job(name: str) -> cron_store.Job:
        return await cron_store.find_job(pool, namespace, DEFAULT_TENANT, name)

    # No scheduler ran for an hour: sixty times were missed.
    back = t0 + timedelta(hours=1, seconds=20)
    claimed = await claim(back)
    [fired] = claimed.firings  # one firing, for the first missed time: never a burst
    assert [j.id for j in claimed.passed_over] == [skip.id]  # counted as missed
    assert (fired.job_id, fired.scheduled_for) == (once.id, t0 + minute)
    assert fired.idempotency_key == f"cron:{once.id}:2026-01-01T10:01:00.000+00:00"
    assert (await job("once")).next_run_at == t0 + 61 * minute  # continues from now
    assert (await job("skip")).next_run_at == t0 + 61 * minute  # skipped them all
    assert await claim(back) == cron_store.Claimed([], [])
    assert (await claim(t0 + 61 * minute)).firings != []  # both due again, on their grid

    # Failures hold the job back: 30 s, then 1 min (past its next time), reset by a success.
    await cron_store.record_end(pool, fired, status="failed", now=back)
    failed = await job("once")
    assert failed.consecutive_failures == 1
    assert failed.next_retry_at == back + timedelta(seconds=30)
    assert failed.next_run_at == t0 + 62 * minute  # its next time is later than that anyway
    [second] = [f for f in (await claim(t0 + 62 * minute)).firings if f.job_id == once.id]
    failed_at = t0 + 62 * minute + timedelta(seconds=10)
    await cron_store.record_end(pool, second, status="failed", now=failed_at)
    held = await job("once")
    assert held.consecutive_failures == 2
    assert held.next_run_at == failed_at + minute  # 63:10, not its 63:00
    assert [f for f in (await claim(t0 + 63 * minute)).firings if f.job_id == once.id] == []
    [third] = [f for f in (await claim(failed_at + minute)).firings if f.job_id == once.id]
    await cron_store.record_end(pool, third, status="completed", now=failed_at + minute)
    healed = await job("once")
    assert (healed.consecutive_failures, healed.next_retry_at) == (0, None)
    assert [f.status for f in await cron_store.history(pool, once.id)] == [
        "completed",
        "failed",
        "pending",
        "failed",
    ]


# --- delivery to a webhook --------------------------------------------------------------------


async def test_a_job_posts_its_answer_to_a_webhook_the_network_policy_allows(
    endpoints: Endpoints,
    namespace: str,
    fake_models: FakeModelServer,
    tmp_path: Path,
    agent: str,
) -> None:
    received: list[tuple[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((request.headers["Idempotency-Key"], await request.json()))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    overrides = SCHEDULER_ENV | {"CLAWBUS_NET_ALLOW": f'["127.0.0.1:{port}"]'}
    fake_models.script(agent, Reply(text="Backup finished."), Reply(text="Again."))
    try:
        async with (
            start_system(
                endpoints, namespace, fake_models, tmp_path, overrides=overrides
            ) as system,
            aiohttp.ClientSession() as http,
            scheduler(system),
        ):
            ids = {}
            for name, url in (
                ("allowed", f"http://127.0.0.1:{port}/hook"),
                ("refused", f"http://127.0.0.1:{port + 1}/hook"),  # a port the policy keeps shut
            ):
                status, body = await cron(
                    http,
                    system,
                    action="create",
                    name=name,
                    agentId=agent,
                    message="Report the backup.",
                    expr="0 3 * * *",
                    delivery={"mode": "webhook", "url": url},
                )
                assert status == 200, body
                ids[name] = body["result"]["id"]
                status, _ = await api(http, system, "POST", f"/api/cron/{name}/run")
                assert status == 200

            async def ended(name: str) -> asyncpg.Record | None:
                rows = await store_rows(system, ids[name])
                return rows[0] if rows and rows[0]["delivery_status"] else None

            allowed = await wait_for(lambda: ended("allowed"), timeout_s=20, interval_s=0.2)
            refused = await wait_for(lambda: ended("refused"), timeout_s=20, interval_s=0.2)
    finally:
        await runner.cleanup()
    assert allowed["delivery_status"] == "delivered"
    [(key, body)] = received
    assert key.startswith(f"cron:{ids['allowed']}:")
    assert body["text"] in ("Backup finished.", "Again.")
    assert (body["jobId"], body["jobName"], body["runId"]) == (
        ids["allowed"],
        "allowed",
        str(allowed["run_id"]),
    )
    assert refused["delivery_status"] == "failed"
    assert "network policy does not allow it" in refused["delivery_error"]


async def store_rows(system: System, job_id: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(system.endpoints.database_url)
    try:
        return await conn.fetch(
            "SELECT * FROM cron_runs WHERE job_id = $1 ORDER BY scheduled_for", uuid.UUID(job_id)
        )
    finally:
        await conn.close()
