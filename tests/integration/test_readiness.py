"""Readiness follows the dependencies: a real scheduler process on a Redis of the test's own,
which the test stops (by PID) and starts again on the same port.

`clawbus status` finds the instance through its registration and reports it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis
from clawbus_core.config import Endpoints
from clawbus_core.infra import free_port, redis_server_binary
from clawbus_core.ops import Registration, registered
from clawbus_protocol.names import Names
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.system import processes, wait_for


@contextlib.contextmanager
def own_redis(port: int, data_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        str(redis_server_binary()),
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--dir", str(data_dir),
        "--save", "",
        "--appendonly", "no",
    ]  # fmt: skip
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


async def readyz(url: str) -> tuple[int, dict[str, object]]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
        http.get(f"{url}/readyz") as r,
    ):
        return r.status, await r.json()


async def test_readiness_goes_false_while_redis_is_down_and_back(
    endpoints: Endpoints, namespace: str, tmp_path: Path
) -> None:
    port = free_port()
    redis_url = f"redis://127.0.0.1:{port}/0"
    env = {
        "CLAWBUS_NATS_URL": endpoints.nats_url,
        "CLAWBUS_DATABASE_URL": endpoints.database_url,
        "CLAWBUS_REDIS_URL": redis_url,
        "CLAWBUS_NAMESPACE": namespace,
        "CLAWBUS_DATA_DIR": str(tmp_path / "data"),
    }
    names = Names(namespace)
    with own_redis(port, tmp_path / "redis") as server, processes() as spawn:
        client = aioredis.Redis.from_url(redis_url)
        try:

            async def pings() -> bool:
                try:
                    return bool(await client.ping())
                except RedisConnectionError:
                    return False

            await wait_for(pings, timeout_s=20)
            scheduler = spawn("scheduler", ["scheduler"], env, tmp_path / "scheduler.log")

            async def found() -> list[Registration]:
                return [r for r in await registered(client, names) if r.service == "scheduler"]

            (instance,) = await wait_for(found, timeout_s=60)
            assert instance.pid == scheduler.pid
            status, body = await readyz(instance.url)
            assert status == 200, body
            assert body["checks"] == {"nats": "ok", "postgres": "ok", "redis": "ok"}

            report = _status(env)
            (line,) = [ln for ln in report.splitlines() if instance.instance in ln]
            assert line.split()[:3] == ["scheduler", instance.instance, "ready"], report

            server.terminate()
            server.wait(timeout=10)

            async def unready() -> dict[str, object] | None:
                status, body = await readyz(instance.url)
                return body if status == 503 else None

            body = await wait_for(unready, timeout_s=30, interval_s=0.2)
            assert body["status"] == "unready"
            checks = body["checks"]
            assert isinstance(checks, dict)
            assert checks["nats"] == "ok" and checks["postgres"] == "ok"
            assert str(checks["redis"]).startswith("error:")
            assert scheduler.popen.poll() is None, "the scheduler died with its Redis"
        finally:
            await client.aclose()

        with own_redis(port, tmp_path / "redis"):

            async def ready() -> bool:
                status, _ = await readyz(instance.url)
                return status == 200

            await wait_for(ready, timeout_s=30, interval_s=0.2)
            assert scheduler.popen.poll() is None
        assert scheduler.stop() == 0, (tmp_path / "scheduler.log").read_text()


def _status(env: dict[str, str]) -> str:
    """`clawbus status`'s report (its exit code is 1 here: no gateway runs in this test)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CLAWBUS_")}
    done = subprocess.run(
        [sys.executable, "-m", "clawbus_core.cli", "status", "--timeout", "10"],
        env=clean | env | {"CLAWBUS_GATEWAY_PORT": str(free_port())},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.stdout + done.stderr


pytestmark = pytest.mark.timeout(150)
