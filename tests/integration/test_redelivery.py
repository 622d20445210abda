"""Two agent-runner processes share the work; kill -9 of the one holding a run (and its
session's lane) mid-stream: the run completes via redelivery, the client sees the reply
once, the session has exactly one assistant message for it, and the session's next message
completes within the lane lease time plus a few seconds."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis
from clawbus_core.config import Endpoints
from clawbus_core.db import create_pool
from clawbus_core.ops import registered
from clawbus_core.store import runs as runstore
from clawbus_fakes.models import FakeModelServer, Reply
from clawbus_protocol.names import Names
from clawbus_protocol.runs import ChatMessage, RunInput, RunOptions

from tests.system import processes, start_system, wait_for

WORDS = [f"w{i}" for i in range(40)]


async def test_kill_9_of_the_runner_mid_stream(
    endpoints: Endpoints,
    namespace: str,
    fake_models: FakeModelServer,
    db: asyncpg.Connection,
    tmp_path: Path,
) -> None:
    reply = " ".join(WORDS)
    # Deterministic and slow enough to be caught mid-stream (40 chunks, 50 ms apart).
    fake_models.set_default("gpt-slow", Reply(text=reply, chunk_delay_s=0.05))
    overrides = {
        "CLAWBUS_RUNNER_ACK_WAIT_S": "2",
        "CLAWBUS_RUNNER_LEASE_S": "3",
        "CLAWBUS_RUNNER_CONCURRENCY": "4",
        "CLAWBUS_LOG_LEVEL": "DEBUG",
    }
    # The in-process system serves HTTP only (no in-process runner): the runners are processes.
    async with start_system(
        endpoints, namespace, fake_models, tmp_path, runners=0, overrides=overrides
    ) as system:
        with processes() as spawn:
            runners = {
                name: spawn(
                    name,
                    ["agent-runner"],
                    system.env | overrides | {"CLAWBUS_RUNNER_ID": name},
                    tmp_path / f"{name}.log",
                )
                for name in ("runner-a", "runner-b")
            }
            # Both runners take work once they registered their ops listeners (after their
            # consumers were ready): only then can the eight runs below be shared.
            redis = aioredis.Redis.from_url(endpoints.redis_url)
            try:

                async def both_up() -> bool:
                    found = await registered(redis, Names(namespace))
                    return {r.instance for r in found if r.service == "agent-runner"} == set(
                        runners
                    )

                await wait_for(both_up, timeout_s=60)
            finally:
                await redis.aclose()
            client = system.openai(timeout=60)
            # Eight overlapping runs need both runners' four slots: they share the work.
            fake_models.set_default("gpt-quick", Reply(text="a b c d", chunk_delay_s=0.1))
            shared = await asyncio.gather(
                *(
                    client.chat.completions.with_raw_response.create(
                        model="openai/gpt-quick", messages=[{"role": "user", "content": f"{i}"}]
                    )
                    for i in range(8)
                )
            )
            holders = {
                await db.fetchval(
                    "SELECT runner_id FROM runs WHERE id = $1::uuid", r.headers["x-clawbus-run-id"]
                )
                for r in shared
            }
            assert holders == set(runners)

            stream = await client.chat.completions.with_raw_response.create(
                model="openai/gpt-slow",
                messages=[{"role": "user", "content": "go"}],
                stream=True,
                extra_headers={"x-openclaw-session-key": f"kill-9-{namespace}"},
            )
            run_id = stream.headers["x-clawbus-run-id"]
            pieces: list[str] = []
            chunks = stream.parse()
            iterator = chunks.__aiter__()
            while len([p for p in pieces if p]) < 5:
                chunk = await iterator.__anext__()
                pieces.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
            holder = await db.fetchval("SELECT runner_id FROM runs WHERE id = $1::uuid", run_id)
            assert holder in runners
            runners[holder].kill9()
            killed_at = time.monotonic()

            async def rest() -> None:
                async for chunk in iterator:
                    if chunk.choices:
                        pieces.append(chunk.choices[0].delta.content or "")

            async def next_message() -> float:
                fake_models.set_default("gpt-next", Reply(text="next ok"))
                answer = await client.chat.completions.create(
                    model="openai/gpt-next",
                    messages=[{"role": "user", "content": "and then?"}],
                    extra_headers={"x-openclaw-session-key": f"kill-9-{namespace}"},
                )
                assert answer.choices[0].message.content == "next ok"
                return time.monotonic() - killed_at

            _, next_after = await asyncio.wait_for(
                asyncio.gather(rest(), next_message()), timeout=60
            )
            assert "".join(pieces) == reply
            # Lease 3 s; the slow run (~2 s of chunks) is re-run first, in order.
            assert next_after < 3 + 2 + 5, f"the next message took {next_after:.1f}s"

            row = await db.fetchrow(
                "SELECT status, attempt, runner_id FROM runs WHERE id = $1::uuid", run_id
            )
            assert row["status"] == "completed"
            assert row["attempt"] >= 2
            survivor = next(n for n in runners if n != holder)
            assert row["runner_id"] == survivor
            roles = Counter(
                r["role"]
                for r in await db.fetch("SELECT role FROM messages WHERE run_id = $1::uuid", run_id)
            )
            assert roles == {"user": 1, "assistant": 1}
            stored = await db.fetchval(
                "SELECT content FROM messages WHERE run_id = $1::uuid AND role = 'assistant'",
                run_id,
            )
            assert stored == reply

            assert runners[survivor].popen.poll() is None


async def test_a_run_stored_but_never_published_is_published_by_the_retry(
    endpoints: Endpoints, namespace: str, fake_models: FakeModelServer, tmp_path: Path
) -> None:
    """A gateway that died between storing a run and publishing it leaves the run queued with
    nothing on the bus: the client's retry (same Idempotency-Key) publishes it again."""
    key = f"stored-only-{namespace}"
    async with (
        start_system(endpoints, namespace, fake_models, tmp_path) as system,
    ):
        pool = await create_pool(endpoints.database_url, min_size=1, max_size=2)
        messages = [ChatMessage(role="user", content="are you there?")]
        stored = await runstore.create_run(
            pool,
            run_id=uuid.uuid4(),
            session_id=uuid.uuid4(),
            tenant_id=runstore.DEFAULT_TENANT,
            agent_key="main",
            session_key=f"agent:main:openai:{uuid.uuid4()}",
            channel="api",
            idempotency_key=key,
            model=None,
            user_text="are you there?",
            run_input=RunInput(messages=messages),
            options=RunOptions(),
            reply_to=None,
            queue_mode=None,
            named_session=False,
        )
        assert isinstance(stored, runstore.NewRun)  # stored; the "crash": never published
        reply = await system.openai(timeout=30).chat.completions.create(
            model="clawbus/echo",
            messages=[{"role": "user", "content": "are you there?"}],
            extra_headers={"Idempotency-Key": key},
        )
        assert reply.choices[0].message.content == "You said: are you there?"
        assert reply.id == f"chatcmpl-{stored.run_id.hex}"
        await pool.close()
