"""Fixtures shared by every test: real infrastructure once per session, a system per test."""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from clawbus_core.config import Endpoints
from clawbus_core.db import migrate
from clawbus_core.store import agents as agents_store
from clawbus_core.store.runs import DEFAULT_TENANT
from clawbus_fakes.models import FakeModelServer

from tests.infra import test_infrastructure
from tests.system import System, start_system


@pytest.fixture(scope="session")
def endpoints() -> Iterator[Endpoints]:
    # Not pytest's tmp_path: the embedded Postgres runs as an unprivileged user and needs
    # a directory it can reach.
    data_dir = Path(tempfile.mkdtemp(prefix="clawbus-test-"))
    os.chmod(data_dir, 0o755)
    with test_infrastructure(data_dir / "infra") as found:
        migrate(found.database_url)
        yield found


@pytest.fixture
def namespace() -> str:
    """A namespace per test: its own stream, consumer and Redis keys."""
    return f"t{secrets.token_hex(5)}"


@pytest.fixture
async def fake_models() -> AsyncIterator[FakeModelServer]:
    async with FakeModelServer() as fake:
        yield fake


@pytest.fixture
async def db(endpoints: Endpoints) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(endpoints.database_url)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def pool(endpoints: Endpoints) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(endpoints.database_url, min_size=1, max_size=2) as p:
        yield p


@pytest.fixture
async def agent(pool: asyncpg.Pool) -> AsyncIterator[str]:
    """An agent of the default tenant of its own, whose model is the fake model named like
    it (`openai/<key>`: script it with `fake_models.script(agent, ...)`); deleted afterwards."""
    key = f"a-{secrets.token_hex(6)}"
    await agents_store.create_agent(pool, DEFAULT_TENANT, key, "Test agent", model=f"openai/{key}")
    try:
        yield key
    finally:
        await pool.execute(
            "DELETE FROM agents WHERE tenant_id = $1 AND key = $2", DEFAULT_TENANT, key
        )


@pytest.fixture
async def system(
    endpoints: Endpoints, namespace: str, fake_models: FakeModelServer, tmp_path: Path
) -> AsyncIterator[System]:
    async with start_system(endpoints, namespace, fake_models, tmp_path) as running:
        yield running
