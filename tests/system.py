"""A whole clawbus (gateway, agent runners, channel-bridges) in the test's event loop, or as OS
processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
from aiohttp import web
from clawbus_bridge.service import ChannelBridge
from clawbus_bridge.settings import BridgeSettings
from clawbus_core.config import Endpoints
from clawbus_core.infra import free_port
from clawbus_fakes.models import FakeModelServer
from clawbus_gateway.app import create_app
from clawbus_gateway.settings import GatewaySettings
from clawbus_runner.settings import RunnerSettings
from clawbus_runner.worker import AgentRunner


def settings_env(
    endpoints: Endpoints, namespace: str, fake: FakeModelServer, data_dir: Path, token: str
) -> dict[str, str]:
    """The environment a clawbus process of this test runs with."""
    return {
        "CLAWBUS_NATS_URL": endpoints.nats_url,
        "CLAWBUS_DATABASE_URL": endpoints.database_url,
        "CLAWBUS_REDIS_URL": endpoints.redis_url,
        "CLAWBUS_NAMESPACE": namespace,
        "CLAWBUS_DATA_DIR": str(data_dir),
        "CLAWBUS_GATEWAY_TOKEN": token,
        "CLAWBUS_PROVIDERS__OPENAI__KIND": "openai",
        "CLAWBUS_PROVIDERS__OPENAI__API_KEY": "sk-fake",
        "CLAWBUS_PROVIDERS__OPENAI__BASE_URL": f"{fake.url}/v1",
        "CLAWBUS_PROVIDERS__OPENAI__MAX_RETRIES": "0",
        "CLAWBUS_PROVIDERS__ANTHROPIC__KIND": "anthropic",
        "CLAWBUS_PROVIDERS__ANTHROPIC__API_KEY": "sk-ant-fake",
        "CLAWBUS_PROVIDERS__ANTHROPIC__BASE_URL": fake.url,
        "CLAWBUS_PROVIDERS__ANTHROPIC__MAX_RETRIES": "0",
        # Idle runner slots ask often, so a test's runner stops at once.
        "CLAWBUS_RUNNER_FETCH_WAIT_S": "0.2",
    }


@contextlib.contextmanager
def patched_env(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


__all__ = ["Process", "System", "free_port", "processes", "start_system", "wait_for"]


@dataclass
class System:
    url: str
    token: str
    endpoints: Endpoints
    namespace: str
    fake: FakeModelServer
    env: dict[str, str]
    runners: list[AgentRunner] = field(default_factory=list)
    bridges: list[ChannelBridge] = field(default_factory=list)

    def openai(self, **kwargs: Any) -> openai.AsyncOpenAI:
        kwargs.setdefault("max_retries", 0)
        return openai.AsyncOpenAI(base_url=f"{self.url}/v1", api_key=self.token, **kwargs)


@contextlib.asynccontextmanager
async def start_system(
    endpoints: Endpoints,
    namespace: str,
    fake: FakeModelServer,
    data_dir: Path,
    *,
    runners: int = 1,
    bridges: int = 0,
    overrides: dict[str, str] | None = None,
) -> AsyncIterator[System]:
    token = secrets.token_urlsafe(24)
    env = settings_env(endpoints, namespace, fake, data_dir, token) | (overrides or {})
    with patched_env(env):
        gateway_settings = GatewaySettings()
        runner_settings = [RunnerSettings(runner_id=f"test-runner-{i}") for i in range(runners)]
        bridge_settings = [BridgeSettings(bridge_id=f"test-bridge-{i}") for i in range(bridges)]
    app = create_app(gateway_settings)
    app_runner = web.AppRunner(app, access_log=None)
    await app_runner.setup()
    site = web.TCPSite(app_runner, "127.0.0.1", 0)
    await site.start()
    port = app_runner.addresses[0][1]
    system = System(
        url=f"http://127.0.0.1:{port}",
        token=token,
        endpoints=endpoints,
        namespace=namespace,
        fake=fake,
        env=env,
    )
    async with contextlib.AsyncExitStack() as stack:
        for settings in runner_settings:
            system.runners.append(await stack.enter_async_context(AgentRunner(settings)))
        for bridge in bridge_settings:
            system.bridges.append(await stack.enter_async_context(ChannelBridge(bridge)))
        try:
            yield system
        finally:
            await app_runner.cleanup()


@dataclass
class Process:
    """A clawbus service as its own OS process, stopped by PID at the end of the test."""

    name: str
    popen: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.popen.pid

    def kill9(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)

    def stop(self, timeout_s: float = 20) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
        return self.popen.returncode


@contextlib.contextmanager
def processes() -> Iterator[Callable[..., Process]]:
    started: list[Process] = []

    def spawn(name: str, args: list[str], env: dict[str, str], log: Path) -> Process:
        out = log.open("ab")
        popen = subprocess.Popen(
            [sys.executable, "-m", "clawbus_core.cli", *args],
            env=os.environ | env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        process = Process(name, popen)
        started.append(process)
        return process

    try:
        yield spawn
    finally:
        for process in started:
            process.stop(timeout_s=10)


async def wait_for(
    predicate: Callable[[], Any], *, timeout_s: float = 30, interval_s: float = 0.05
) -> Any:
    """Poll `predicate` (sync or async) until it returns a truthy value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout_s}s")
        await asyncio.sleep(interval_s)
