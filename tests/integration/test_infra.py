"""Embedded NATS/Postgres/Redis and the process supervisor, with real processes.

Every wait is bounded and polls; every process a test starts is killed by PID at the end of the
test, pass or fail (`leftovers`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import stat
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import nats
import psutil
import pytest
import redis.asyncio as aioredis
from clawbus_core.infra import EmbeddedInfra, InfraURLs, running_infra
from clawbus_core.supervisor import ProcessSpec, Supervisor
from nats.js.api import StreamConfig


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _descendants() -> set[psutil.Process]:
    return set(psutil.Process().children(recursive=True))


def _new_alive(before: set[psutil.Process]) -> list[psutil.Process]:
    return [p for p in _descendants() - before if _alive(p)]


@pytest.fixture
def leftovers() -> Iterator[set[psutil.Process]]:
    """Yields this test's pre-existing descendants; afterwards SIGKILLs any new ones by PID."""
    before = _descendants()
    try:
        yield before
    finally:
        stray = _new_alive(before)
        for proc in stray:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        psutil.wait_procs(stray, timeout=10)


def _wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.02)


async def _async_wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
def fast_infra(
    tmp_path: Path, leftovers: set[psutil.Process]
) -> Iterator[tuple[EmbeddedInfra, InfraURLs]]:
    infra = EmbeddedInfra(tmp_path / "data", fast=True)
    try:
        urls = infra.start()
        yield infra, urls
    finally:
        infra.stop()


# --------------------------------------------------------------------------------------------
# EmbeddedInfra


async def test_servers_answer_on_loopback(fast_infra: tuple[EmbeddedInfra, InfraURLs]) -> None:
    infra, urls = fast_infra
    assert infra.owned == {"nats", "postgres", "redis"}
    for url in (urls.nats_url, urls.database_url, urls.redis_url):
        assert "@127.0.0.1:" in url or "//127.0.0.1:" in url
    assert urls.database_url.endswith("/clawbus")

    conn = await asyncpg.connect(urls.database_url, timeout=10)
    try:
        assert await conn.fetchval("SELECT 1") == 1
        assert await conn.fetchval("SELECT current_database()") == "clawbus"
    finally:
        await conn.close()

    nc = await nats.connect(urls.nats_url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="T", subjects=["t.>"]))
        for i in range(3):
            await js.publish(f"t.{i}", f"m{i}".encode(), timeout=5)
        sub = await js.pull_subscribe("t.>", durable="c", stream="T")
        msgs = await sub.fetch(3, timeout=5)
        assert [m.data for m in msgs] == [b"m0", b"m1", b"m2"]
        for m in msgs:
            await m.ack()
    finally:
        await nc.close()

    r = aioredis.from_url(urls.redis_url, socket_timeout=5)
    try:
        assert await r.ping()
        await r.set("k", "v")
        assert await r.get("k") == b"v"
    finally:
        await r.aclose()

    # Listening on 127.0.0.1 only.
    for name, pid in infra.pids().items():
        listening = [
            c for c in psutil.Process(pid).net_connections("inet") if c.status == psutil.CONN_LISTEN
        ]
        assert listening, name
        assert {c.laddr.ip for c in listening} == {"127.0.0.1"}, (name, listening)

    # Private state: nothing under the data dir readable or writable by group/other.
    data = infra.data_dir
    assert stat.S_IMODE((data / "infra.json").stat().st_mode) == 0o600
    for path in (data, data / "nats", data / "redis", data / "logs", data / "postgres"):
        assert stat.S_IMODE(path.stat().st_mode) & 0o066 == 0, path


def test_second_infra_reuses_running_servers(
    fast_infra: tuple[EmbeddedInfra, InfraURLs],
) -> None:
    owner, urls = fast_infra
    pids = owner.pids()
    messages: list[str] = []
    t0 = time.monotonic()
    other = EmbeddedInfra(owner.data_dir, fast=True, progress=messages.append)
    with other as reused:
        elapsed = time.monotonic() - t0
        assert reused == urls
        assert other.owned == set()
        assert len([m for m in messages if m.startswith("reusing ")]) == 3, messages
    assert elapsed < 5
    # Stopping the non-owner touched nothing.
    assert running_infra(owner.data_dir) == urls
    for pid in pids.values():
        assert _alive(psutil.Process(pid))
    assert owner.pids() == pids


def test_stop_leaves_no_process(tmp_path: Path, leftovers: set[psutil.Process]) -> None:
    infra = EmbeddedInfra(tmp_path / "data", fast=True)
    try:
        urls = infra.start()
        assert running_infra(infra.data_dir) == urls
        record = json.loads((infra.data_dir / "infra.json").read_text())
        assert set(record) == {"nats", "postgres", "redis"}
        servers = [psutil.Process(pid) for pid in infra.pids().values()]
        started = _new_alive(leftovers)  # the servers and the postgres backends
        assert set(servers) <= set(started)
        assert len(started) > 3
    finally:
        infra.stop()
    assert not [p for p in started if _alive(p)]
    assert not _new_alive(leftovers)
    assert infra.owned == set()
    assert json.loads((infra.data_dir / "infra.json").read_text()) == {}
    assert running_infra(infra.data_dir) is None


def test_stale_record_is_not_reused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    me = psutil.Process()
    record = {"pid": me.pid, "port": 1, "create_time": me.create_time()}
    (data / "infra.json").write_text(
        json.dumps(dict.fromkeys(("nats", "postgres", "redis"), record))
    )
    assert running_infra(data) is None
    assert running_infra(tmp_path / "missing") is None


def test_failed_start_stops_what_it_started(tmp_path: Path, leftovers: set[psutil.Process]) -> None:
    data = tmp_path / "data"
    (data / "postgres").mkdir(parents=True)
    (data / "postgres" / "PG_VERSION").write_text("1\n")  # not a cluster postgres can open
    infra = EmbeddedInfra(data, fast=True)
    try:
        with pytest.raises(RuntimeError, match="postgres") as failure:
            infra.start()
        assert "last lines of" in str(failure.value)
        assert infra.owned == set()
        assert not _new_alive(leftovers)
        assert json.loads((data / "infra.json").read_text()) == {}
    finally:
        infra.stop()


@pytest.mark.parametrize("server", ["nats", "postgres", "redis"])
def test_port_taken_meanwhile_is_retried_on_another(
    server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, leftovers: set[psutil.Process]
) -> None:
    """The free port is picked before the server binds it: another process may grab it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        launch = EmbeddedInfra._launch
        launched: list[tuple[str, int]] = []

        def launch_on_taken_port_first(self: EmbeddedInfra, name: str, port: int) -> None:
            if name == server and not any(n == server for n, _ in launched):
                port = taken
            launched.append((name, port))
            launch(self, name, port)

        monkeypatch.setattr(EmbeddedInfra, "_launch", launch_on_taken_port_first)
        messages: list[str] = []
        infra = EmbeddedInfra(tmp_path / "data", fast=True, progress=messages.append)
        try:
            urls = infra.start()
            assert f"{server}: port {taken} was taken; retrying on another port" in messages
            assert infra.owned == {"nats", "postgres", "redis"}
            assert running_infra(infra.data_dir) == urls
            assert f":{taken}" not in str(urls)
        finally:
            infra.stop()
    assert not _new_alive(leftovers)


async def test_restart_keeps_postgres_rows_stream_and_redis(
    tmp_path: Path, leftovers: set[psutil.Process]
) -> None:
    data = tmp_path / "data"

    first = EmbeddedInfra(data)
    try:
        urls = first.start()
        conn = await asyncpg.connect(urls.database_url, timeout=10)
        try:
            await conn.execute("CREATE TABLE kept (id int PRIMARY KEY, note text)")
            await conn.executemany(
                "INSERT INTO kept VALUES ($1, $2)", [(i, f"row {i}") for i in range(5)]
            )
        finally:
            await conn.close()
        nc = await nats.connect(urls.nats_url, connect_timeout=5, max_reconnect_attempts=0)
        try:
            js = nc.jetstream()
            await js.add_stream(StreamConfig(name="KEPT", subjects=["kept.>"]))
            for i in range(4):
                await js.publish(f"kept.{i}", f"msg {i}".encode(), timeout=5)
        finally:
            await nc.close()
        r = aioredis.from_url(urls.redis_url, socket_timeout=5)
        try:
            await r.set("kept", "yes")
        finally:
            await r.aclose()
    finally:
        first.stop()
    assert not _new_alive(leftovers)

    second = EmbeddedInfra(data)
    try:
        urls = second.start()
        assert second.owned == {"nats", "postgres", "redis"}
        conn = await asyncpg.connect(urls.database_url, timeout=10)
        try:
            rows = await conn.fetch("SELECT id, note FROM kept ORDER BY id")
        finally:
            await conn.close()
        assert [(r["id"], r["note"]) for r in rows] == [(i, f"row {i}") for i in range(5)]
        nc = await nats.connect(urls.nats_url, connect_timeout=5, max_reconnect_attempts=0)
        try:
            js = nc.jetstream()
            info = await js.stream_info("KEPT")
            assert info.state.messages == 4
            sub = await js.pull_subscribe("kept.>", durable="reader", stream="KEPT")
            msgs = await sub.fetch(4, timeout=5)
            assert [m.data for m in msgs] == [f"msg {i}".encode() for i in range(4)]
        finally:
            await nc.close()
        r = aioredis.from_url(urls.redis_url, socket_timeout=5)
        try:
            assert await r.get("kept") == b"yes"  # AOF, flushed on SIGTERM
        finally:
            await r.aclose()
    finally:
        second.stop()
    assert not _new_alive(leftovers)


# --------------------------------------------------------------------------------------------
# Supervisor


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


async def _finish(run: asyncio.Task[None], stop: asyncio.Event, timeout_s: float) -> None:
    stop.set()
    await asyncio.wait_for(run, timeout_s)


async def test_supervisor_restarts_exited_child_with_backoff(
    leftovers: set[psutil.Process],
) -> None:
    logs: list[str] = []
    env = dict(os.environ)
    supervisor = Supervisor(
        [
            ProcessSpec("flaky", _python("import sys, time; time.sleep(0.3); sys.exit(3)"), env),
            ProcessSpec("steady", _python("import time; time.sleep(60)"), env),
        ],
        log=logs.append,
        min_backoff_s=0.1,
        max_backoff_s=0.4,
        stable_after_s=30.0,
        stop_timeout_s=5.0,
    )
    stop = asyncio.Event()
    run = asyncio.create_task(supervisor.run(stop))
    try:
        await _async_wait_until(lambda: {"flaky", "steady"} <= set(supervisor.pids()), 10, "start")
        steady = supervisor.pids()["steady"]
        seen = {supervisor.pids()["flaky"]}

        def restarted_twice() -> bool:
            pid = supervisor.pids().get("flaky")
            if pid is not None:
                seen.add(pid)
            return len(seen) >= 3

        await _async_wait_until(restarted_twice, 15, "flaky to be restarted twice")
        await _async_wait_until(
            lambda: len([m for m in logs if m.startswith("flaky exited")]) >= 4, 15, "4 exits"
        )
        restarts = [m.rsplit(" ", 1)[1] for m in logs if m.startswith("flaky exited")]
        assert restarts[:4] == ["0.1s", "0.2s", "0.4s", "0.4s"], logs
        assert supervisor.pids()["steady"] == steady
    finally:
        await _finish(run, stop, 15)
    assert supervisor.pids() == {}
    assert not _new_alive(leftovers)


async def test_supervisor_backoff_resets_after_a_stable_run(
    leftovers: set[psutil.Process],
) -> None:
    logs: list[str] = []
    supervisor = Supervisor(
        [ProcessSpec("slow", _python("import time; time.sleep(0.3)"), dict(os.environ))],
        log=logs.append,
        min_backoff_s=0.1,
        max_backoff_s=10.0,
        stable_after_s=0.2,
    )
    stop = asyncio.Event()
    run = asyncio.create_task(supervisor.run(stop))
    try:
        await _async_wait_until(
            lambda: len([m for m in logs if m.startswith("slow exited")]) >= 3, 15, "3 exits"
        )
    finally:
        await _finish(run, stop, 25)
    delays = [m.rsplit(" ", 1)[1] for m in logs if m.startswith("slow exited")]
    assert delays[:3] == ["0.1s", "0.1s", "0.1s"], logs
    assert not _new_alive(leftovers)


async def test_supervisor_stop_terms_then_kills(
    tmp_path: Path, leftovers: set[psutil.Process]
) -> None:
    stubborn_ready, polite_ready = tmp_path / "stubborn", tmp_path / "polite"
    stubborn = (
        "import pathlib, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "pathlib.Path(sys.argv[1]).touch()\n"
        "time.sleep(60)\n"
    )
    polite = "import pathlib, sys, time\npathlib.Path(sys.argv[1]).touch()\ntime.sleep(60)\n"
    logs: list[str] = []
    env = dict(os.environ)
    supervisor = Supervisor(
        [
            ProcessSpec("stubborn", [*_python(stubborn), str(stubborn_ready)], env),
            ProcessSpec("polite", [*_python(polite), str(polite_ready)], env),
        ],
        log=logs.append,
        stop_timeout_s=1.0,
    )
    stop = asyncio.Event()
    run = asyncio.create_task(supervisor.run(stop))
    try:
        await _async_wait_until(
            lambda: stubborn_ready.exists() and polite_ready.exists(), 15, "children ready"
        )
        children = [psutil.Process(pid) for pid in supervisor.pids().values()]
        assert len(children) == 2
        t0 = time.monotonic()
        await _finish(run, stop, 10)
        elapsed = time.monotonic() - t0
    finally:
        if not run.done():
            await _finish(run, stop, 15)
    assert 1.0 <= elapsed < 5.0
    assert "stubborn did not exit within 1.0s of SIGTERM; killing it" in logs
    assert not [m for m in logs if m.startswith("polite did not exit")]
    assert not [p for p in children if _alive(p)]
    assert not _new_alive(leftovers)
