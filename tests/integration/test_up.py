"""`clawbus up` on an empty data dir: healthy, serves a request, stops on SIGTERM, and starts
again on the same data dir with the history intact."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import openai
import psutil
import pytest

from tests.system import free_port


def _env(data_dir: Path, port: int) -> dict[str, str]:
    """A clean environment: embedded servers, whatever the test session itself uses."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CLAWBUS_", "OPENAI_", "ANTHROPIC_"))
    }
    return env | {"CLAWBUS_DATA_DIR": str(data_dir), "CLAWBUS_GATEWAY_PORT": str(port)}


def _up(data_dir: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "clawbus_core.cli", "up", "--replicas", "agent-runner=2"],
        env=_env(data_dir, port),
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _wait_up(proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 120) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if "clawbus: up:" in log.read_text():
            return
        if proc.poll() is not None:
            pytest.fail(f"clawbus up exited with {proc.returncode}:\n{log.read_text()}")
        time.sleep(0.2)
    pytest.fail(f"clawbus up did not come up in {timeout_s}s:\n{log.read_text()}")


def _stop(proc: subprocess.Popen[bytes], log: Path) -> list[int]:
    """SIGTERM; returns the PIDs of the whole process tree as it was, to check they are gone."""
    tree = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(timeout=60) == 0, log.read_text()
    finally:
        for pid in tree:
            if psutil.pid_exists(pid):
                os.kill(pid, signal.SIGKILL)
    return tree


def test_up_serves_stops_and_restarts_with_history() -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="clawbus-up-"))
    os.chmod(data_dir, 0o755)
    port = free_port()
    log = data_dir / "up-1.log"
    url = f"http://127.0.0.1:{port}"
    proc = _up(data_dir / "data", port, log)
    try:
        _wait_up(proc, log)
        token = (data_dir / "data" / "gateway.token").read_text().strip()
        assert oct((data_dir / "data" / "gateway.token").stat().st_mode & 0o777) == "0o600"
        assert f"gateway token: {token}" in log.read_text()
        with urllib.request.urlopen(f"{url}/health", timeout=10) as r:
            assert json.load(r)["status"] == "ok"
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=token, max_retries=0)
        reply = client.chat.completions.create(
            model="clawbus/echo", messages=[{"role": "user", "content": "remember me"}], user="u1"
        )
        assert reply.choices[0].message.content == "You said: remember me"
    finally:
        tree = _stop(proc, log)
    assert not [pid for pid in tree if psutil.pid_exists(pid)]

    log = data_dir / "up-2.log"
    proc = _up(data_dir / "data", port, log)
    try:
        _wait_up(proc, log)
        token2 = (data_dir / "data" / "gateway.token").read_text().strip()
        assert token2 == token  # generated once
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=token, max_retries=0)
        client.chat.completions.create(
            model="clawbus/echo", messages=[{"role": "user", "content": "again"}], user="u1"
        )
        status = subprocess.run(
            [sys.executable, "-m", "clawbus_core.cli", "status"],
            env=_env(data_dir / "data", port),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert status.returncode == 0, status.stdout + status.stderr
        # Every service instance registered its ops listener and is ready.
        listed = [line.split() for line in status.stdout.splitlines() if line.startswith("  ")]
        services = sorted(fields[0] for fields in listed if fields[2] == "ready")
        expected = ["agent-runner", "agent-runner", "api-gateway", "channel-bridge", "scheduler"]
        if Path("/usr/bin/chromium").exists():
            expected = sorted([*expected, "browser-worker"])
        assert services == expected, status.stdout
        # The first run's messages survived the restart, in the same session.
        import asyncio

        import asyncpg
        from clawbus_core.infra import running_infra

        infra = running_infra(data_dir / "data")
        assert infra is not None

        async def history() -> list[tuple[str, str]]:
            conn = await asyncpg.connect(infra.database_url)
            try:
                rows = await conn.fetch(
                    """SELECT m.role, m.content FROM messages m
                       JOIN sessions s ON s.id = m.session_id
                       WHERE s.session_key = 'agent:main:openai-user:u1' ORDER BY m.id"""
                )
            finally:
                await conn.close()
            return [(r["role"], r["content"]) for r in rows]

        assert asyncio.run(history()) == [
            ("user", "remember me"),
            ("assistant", "You said: remember me"),
            ("user", "again"),
            ("assistant", "You said: again"),
        ]
    finally:
        tree = _stop(proc, log)
    assert not [pid for pid in tree if psutil.pid_exists(pid)]
