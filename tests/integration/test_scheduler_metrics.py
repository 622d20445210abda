"""The scheduler's /metrics and its `cron.fire` span: two real `clawbus scheduler` processes
(one leads), the gateway and a runner in this test's event loop.

The leader's `scheduler_leader` is 1 and the standby's 0 (until the leader stops); the leader
counts each firing it starts (`submitted`; a heartbeat with nothing to check is `skipped`),
the standby none; each firing's run carries the trace its `cron.fire` span started.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import nats
import pytest
import redis.asyncio as aioredis
from clawbus_core.config import Endpoints
from clawbus_core.ops import Registration
from clawbus_core.store import workspace
from clawbus_core.store.runs import DEFAULT_TENANT
from clawbus_fakes.models import FakeModelServer, Reply
from clawbus_fakes.otlp import FakeCollector, ReceivedSpan

from tests.integration.test_scheduler import SCHEDULER_ENV, api, cron, firings
from tests.metrics_support import ops_listener, readyz, scrape, watch_published_runs
from tests.system import Process, processes, start_system, wait_for

FIRINGS = "clawbus_scheduler_firings_total"
LEADER = "clawbus_scheduler_leader"
PRODUCER = 4  # span kind in the OTLP protobuf


@pytest.fixture
async def pool(endpoints: Endpoints) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(endpoints.database_url, min_size=1, max_size=4) as p:
        yield p


async def leaders(listeners: dict[str, Registration]) -> dict[str, float]:
    return {name: (await scrape(r.url)).value(LEADER) for name, r in listeners.items()}


async def test_scheduler_metrics_follow_the_leader_and_its_firings(
    endpoints: Endpoints,
    namespace: str,
    fake_models: FakeModelServer,
    tmp_path: Path,
    pool: asyncpg.Pool,
    agent: str,
) -> None:
    fake_models.set_default(agent, Reply(text="tock"))
    agent_id = await pool.fetchval(
        "SELECT id FROM agents WHERE tenant_id = $1 AND key = $2", DEFAULT_TENANT, agent
    )
    # Headings only: a heartbeat finds nothing to check and skips its run.
    await workspace.write_file(pool, DEFAULT_TENANT, agent_id, "HEARTBEAT.md", "# Heartbeat\n")
    redis = aioredis.Redis.from_url(endpoints.redis_url)
    nc = await nats.connect(endpoints.nats_url)
    try:
        published = await watch_published_runs(nc, namespace)
        async with (
            FakeCollector() as collector,
            start_system(
                endpoints, namespace, fake_models, tmp_path, overrides=SCHEDULER_ENV
            ) as system,
            aiohttp.ClientSession() as http,
        ):
            env = system.env | {
                "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
                "OTEL_BSP_SCHEDULE_DELAY": "100",  # export within 0.1 s, not the default 5 s
            }
            with processes() as spawn:
                replicas: dict[str, Process] = {
                    name: spawn(
                        name,
                        ["scheduler"],
                        env | {"CLAWBUS_SCHEDULER_ID": f"{namespace}-{name}"},
                        tmp_path / f"{name}.log",
                    )
                    for name in ("a", "b")
                }
                listeners = {
                    name: await ops_listener(redis, namespace, "scheduler", process.pid)
                    for name, process in replicas.items()
                }
                for listener in listeners.values():
                    assert await readyz(listener.url) == 200

                async def one_leader() -> dict[str, float] | None:
                    found = await leaders(listeners)
                    return found if sorted(found.values()) == [0, 1] else None

                found = await wait_for(one_leader, timeout_s=20, interval_s=0.2)
                first = next(name for name, value in found.items() if value == 1)
                standby = next(name for name in replicas if name != first)

                status, created = await cron(
                    http,
                    system,
                    action="create",
                    name="metered",
                    agentId=agent,
                    message="tick",
                    everyMs=1000,
                )
                assert status == 200, created
                job_id = created["result"]["id"]

                async def submitted(at_least: int) -> bool:
                    leader = await scrape(listeners[first].url)
                    return leader.value(FIRINGS, kind="cron", outcome="submitted") >= at_least

                await wait_for(lambda: submitted(2), timeout_s=20, interval_s=0.2)
                status, _ = await cron(http, system, action="disable", id=job_id)
                assert status == 200

                async def all_started() -> list[asyncpg.Record] | None:
                    rows = await firings(pool, job_id)
                    return rows if all(r["run_id"] is not None for r in rows) else None

                rows = await wait_for(all_started, timeout_s=20, interval_s=0.2)
                leader = await scrape(listeners[first].url)
                assert leader.value(FIRINGS, kind="cron", outcome="submitted") == len(rows)
                assert leader.value(FIRINGS, kind="cron", outcome="failed") == 0
                assert (await scrape(listeners[standby].url)).value(
                    FIRINGS, kind="cron", outcome="submitted"
                ) == 0

                # A heartbeat run now, with nothing to check: skipped, not submitted.
                status, body = await cron(
                    http, system, action="create", agentId=agent, everyMs=3_600_000, heartbeat={}
                )
                assert status == 200, body
                heartbeat_id = body["result"]["id"]
                status, _ = await api(http, system, "POST", f"/api/cron/{heartbeat_id}/run")
                assert status == 200

                async def skipped() -> list[asyncpg.Record] | None:
                    rows = await firings(pool, heartbeat_id)
                    done = rows and all(r["status"] == "skipped" for r in rows)
                    return rows if done else None

                skipped_rows = await wait_for(skipped, timeout_s=20, interval_s=0.2)
                leader = await scrape(listeners[first].url)
                assert leader.value(FIRINGS, kind="heartbeat", outcome="skipped") == len(
                    skipped_rows
                )
                assert leader.value(FIRINGS, kind="heartbeat", outcome="submitted") == 0

                # Each run's message carries the trace its firing's span started.
                first_run = published[0]
                run_id = json.loads(first_run.data)["run_id"]
                assert uuid.UUID(run_id) in {r["run_id"] for r in rows}
                traceparent = (first_run.headers or {}).get("traceparent", "")
                assert traceparent.startswith("00-"), first_run.headers
                trace_id = traceparent.split("-")[1]

                def fire_span() -> ReceivedSpan | None:
                    return next(
                        (
                            s
                            for s in collector.trace(trace_id)
                            if s.service == "scheduler" and s.name == "cron.fire"
                        ),
                        None,
                    )

                span = await wait_for(fire_span, timeout_s=20)
                assert span.parent_span_id == "" and span.kind == PRODUCER  # the trace's root
                assert span.attributes["clawbus.run_id"] == run_id
                assert span.attributes["clawbus.cron.job_id"] == job_id
                assert span.attributes["clawbus.cron.outcome"] == "submitted"

                # The leader stops: the standby leads, and says so.
                assert replicas[first].stop() == 0, (tmp_path / f"{first}.log").read_text()

                async def standby_leads() -> bool:
                    return (await scrape(listeners[standby].url)).value(LEADER) == 1

                await wait_for(standby_leads, timeout_s=20, interval_s=0.2)
                assert replicas[standby].stop() == 0
    finally:
        await nc.close()
        await redis.aclose()


pytestmark = pytest.mark.timeout(150)
