"""Agents, workspaces and skills on a real Postgres: creation seeds the workspace atomically,
one statement loads a run's context, agent skills override shared ones, the skill tool reads
bodies and files."""

from __future__ import annotations

import dataclasses
import secrets
import uuid
from collections.abc import AsyncIterator
from uuid import UUID

import asyncpg
import pytest
import redis.asyncio as aioredis
from clawbus_core.bootstrap import BOOTSTRAP_FILES, DEFAULT_FILES
from clawbus_core.config import Endpoints
from clawbus_core.db import Pool, create_pool
from clawbus_core.store import agents, skills
from clawbus_protocol.errors import Conflict, InvalidRequest, NotFound, PayloadTooLarge
from clawbus_runner.skills import SkillTool
from clawbus_runner.tools.base import ToolContext, ToolError

DEFAULT_TENANT = UUID("00000000-0000-0000-0000-000000000001")


def _key(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


@pytest.fixture
async def pool(endpoints: Endpoints) -> AsyncIterator[Pool]:
    created = await create_pool(endpoints.database_url, min_size=1, max_size=4)
    try:
        yield created
    finally:
        await created.close()


@pytest.fixture
async def tenant(db: asyncpg.Connection) -> AsyncIterator[UUID]:
    """A tenant of its own: shared skills are tenant-wide and must not leak into others."""
    tenant_id = uuid.uuid4()
    slug = _key("t")
    await db.execute("INSERT INTO tenants (id, slug, name) VALUES ($1, $2, $2)", tenant_id, slug)
    try:
        yield tenant_id
    finally:
        await db.execute("DELETE FROM tenants WHERE id = $1", tenant_id)


async def _files(db: asyncpg.Connection, agent_id: UUID) -> dict[str, str]:
    rows = await db.fetch("SELECT path, content FROM workspace_files WHERE agent_id = $1", agent_id)
    return {r["path"]: r["content"] for r in rows}


async def test_create_agent_seeds_the_bootstrap_files(pool: Pool, db: asyncpg.Connection) -> None:
    key = _key("ops")
    profile = await agents.create_agent(
        pool,
        DEFAULT_TENANT,
        key.upper(),
        "  Ops agent ",
        model="openai/gpt-4o",
        fallbacks=["anthropic/claude"],
        system_prompt="You run ops.",
        tool_policy={"allow": ["exec"]},
        queue_mode="collect",
    )
    assert profile.key == key  # folded to lower case, as OpenClaw does
    assert profile.tenant_id == DEFAULT_TENANT
    assert profile.name == "Ops agent"
    assert profile.model == "openai/gpt-4o"
    assert profile.fallbacks == ("anthropic/claude",)
    assert profile.tool_policy == {"allow": ["exec"]}
    assert profile.queue_mode == "collect"
    assert profile.context_tokens == 32000

    assert await _files(db, profile.id) == dict(DEFAULT_FILES)
    assert await agents.get_agent_by_key(pool, DEFAULT_TENANT, key.upper()) == profile
    assert await agents.get_agent_by_key(pool, DEFAULT_TENANT, _key("nobody")) is None


@pytest.mark.parametrize(
    ("key", "fields"),
    [
        ("", {}),
        ("-ops", {}),
        ("ops agent", {}),
        ("ops/../x", {}),
        ("a" * 65, {}),
        ("fine", {"name": " "}),
        ("fine", {"queue_mode": "later"}),
        ("fine", {"fallbacks": [""]}),
    ],
)
async def test_create_agent_refuses_bad_input(
    pool: Pool, db: asyncpg.Connection, key: str, fields: dict[str, object]
) -> None:
    key = key.replace("fine", _key("fine"))
    name = fields.pop("name", "Agent")
    with pytest.raises(InvalidRequest):
        await agents.create_agent(pool, DEFAULT_TENANT, key, name, **fields)  # type: ignore[arg-type]
    count = await db.fetchval(
        "SELECT count(*) FROM agents WHERE tenant_id = $1 AND key = $2", DEFAULT_TENANT, key
    )
    assert count == 0


async def test_a_duplicate_key_conflicts_and_writes_nothing(
    pool: Pool, db: asyncpg.Connection
) -> None:
    key = _key("dup")
    first = await agents.create_agent(pool, DEFAULT_TENANT, key, "First")
    await db.execute(
        "UPDATE workspace_files SET content = 'edited' WHERE agent_id = $1 AND path = 'AGENTS.md'",
        first.id,
    )
    with pytest.raises(Conflict) as err:
        await agents.create_agent(pool, DEFAULT_TENANT, key, "Second", model="other")
    assert err.value.info.http_status == 409

    rows = await db.fetch("SELECT id, name, model FROM agents WHERE key = $1", key)
    assert [(r["id"], r["name"], r["model"]) for r in rows] == [(first.id, "First", None)]
    files = await _files(db, first.id)
    assert files["AGENTS.md"] == "edited"
    assert len(files) == len(BOOTSTRAP_FILES)
    # The same key in another tenant is another agent.
    other_tenant = uuid.uuid4()
    await db.execute(
        "INSERT INTO tenants (id, slug, name) VALUES ($1, $2, $2)", other_tenant, _key("t")
    )
    try:
        other = await agents.create_agent(pool, other_tenant, key, "Elsewhere")
        assert other.id != first.id
    finally:
        await db.execute("DELETE FROM tenants WHERE id = $1", other_tenant)


async def test_an_unknown_tenant_is_not_found(pool: Pool, db: asyncpg.Connection) -> None:
    key = _key("orphan")
    with pytest.raises(NotFound):
        await agents.create_agent(pool, uuid.uuid4(), key, "Orphan")
    assert await db.fetchval("SELECT count(*) FROM agents WHERE key = $1", key) == 0


async def test_seed_workspace_is_idempotent(pool: Pool, db: asyncpg.Connection) -> None:
    profile = await agents.create_agent(pool, DEFAULT_TENANT, _key("seed"), "Seed")
    assert await agents.seed_workspace(pool, DEFAULT_TENANT, profile.id) == 0
    await db.execute(
        "UPDATE workspace_files SET content = 'mine' WHERE agent_id = $1 AND path = 'SOUL.md'",
        profile.id,
    )
    await db.execute(
        "DELETE FROM workspace_files WHERE agent_id = $1 AND path = 'USER.md'", profile.id
    )
    # Inside someone else's transaction, on a plain connection.
    async with db.transaction():
        assert await agents.seed_workspace(db, DEFAULT_TENANT, profile.id) == 1
    files = await _files(db, profile.id)
    assert files["SOUL.md"] == "mine"
    assert files["USER.md"] == DEFAULT_FILES["USER.md"]


async def test_load_context_returns_files_and_enabled_skills(
    pool: Pool, db: asyncpg.Connection, tenant: UUID
) -> None:
    ops = await agents.create_agent(pool, tenant, "ops", "Ops", system_prompt="Run ops.")
    other = await agents.create_agent(pool, tenant, "other", "Other")
    await db.execute(
        "INSERT INTO workspace_files (tenant_id, agent_id, path, content) "
        "VALUES ($1, $2, 'notes/todo.md', 'not a bootstrap file')",
        tenant,
        ops.id,
    )
    await skills.upsert_skill(
        pool, tenant, None, "weather", description="Shared weather.", body="shared body"
    )
    await skills.upsert_skill(
        pool, tenant, None, "github", description="Shared github.", body="shared gh"
    )
    await skills.upsert_skill(
        pool, tenant, ops.id, "github", description="Ops github.", body="ops gh"
    )
    await skills.upsert_skill(pool, tenant, None, "retired", description="Old.", body="old")
    await skills.set_enabled(pool, tenant, None, "retired", False)
    await skills.upsert_skill(pool, tenant, other.id, "secret", description="Other's.", body="x")

    profile, files, enabled = await agents.load_context(pool, tenant, ops.id)
    # Skills are part of what the agent's prompt is built from: they moved its version on.
    assert profile.updated_at > ops.updated_at
    assert dataclasses.replace(profile, updated_at=ops.updated_at) == ops
    assert files == dict(DEFAULT_FILES)
    assert [(s.name, s.description, s.agent_id) for s in enabled] == [
        ("github", "Ops github.", ops.id),  # the agent's own wins over the shared one
        ("weather", "Shared weather.", None),
    ]
    assert enabled == await skills.list_skills(pool, tenant, ops.id)

    _, _, other_skills = await agents.load_context(pool, tenant, other.id)
    assert [(s.name, s.description) for s in other_skills] == [
        ("github", "Shared github."),
        ("secret", "Other's."),
        ("weather", "Shared weather."),
    ]
    assert [s.name for s in await skills.list_skills(pool, tenant, None)] == [
        "github",
        "weather",
    ]
    with pytest.raises(NotFound):
        await agents.load_context(pool, tenant, uuid.uuid4())


async def test_disabling_hides_a_skill(pool: Pool, tenant: UUID) -> None:
    ops = await agents.create_agent(pool, tenant, "ops", "Ops")
    await skills.upsert_skill(pool, tenant, None, "weather", description="W.", body="w")
    await skills.upsert_skill(pool, tenant, None, "github", description="G.", body="g")

    await skills.set_enabled(pool, tenant, None, "weather", False)
    _, _, visible = await agents.load_context(pool, tenant, ops.id)
    assert [s.name for s in visible] == ["github"]
    assert await skills.get_skill(pool, tenant, ops.id, "weather") is None
    hidden = await skills.get_skill(pool, tenant, ops.id, "weather", include_disabled=True)
    assert hidden is not None
    assert not hidden.enabled

    # Replacing a skill keeps it disabled; enabling brings it back.
    await skills.upsert_skill(pool, tenant, None, "weather", description="W2.", body="w2")
    assert [s.name for s in await skills.list_skills(pool, tenant, ops.id)] == ["github"]
    await skills.set_enabled(pool, tenant, None, "weather", True)
    assert [s.name for s in await skills.list_skills(pool, tenant, ops.id)] == [
        "github",
        "weather",
    ]

    # An agent opts out of a shared skill with a disabled override of its own.
    await skills.upsert_skill(pool, tenant, ops.id, "github", description="Mine.", body="m")
    await skills.set_enabled(pool, tenant, ops.id, "github", False)
    assert [s.name for s in await skills.list_skills(pool, tenant, ops.id)] == ["weather"]
    everything = await skills.list_skills(pool, tenant, ops.id, include_disabled=True)
    assert [(s.name, s.shared, s.enabled) for s in everything] == [
        ("github", False, False),
        ("weather", True, True),
    ]
    with pytest.raises(NotFound):
        await skills.set_enabled(pool, tenant, ops.id, "weather", False)  # not its own
    await skills.delete_skill(pool, tenant, ops.id, "github")
    assert [s.name for s in await skills.list_skills(pool, tenant, ops.id)] == [
        "github",
        "weather",
    ]


async def test_upsert_skill_refuses_bad_skills(pool: Pool, tenant: UUID) -> None:
    with pytest.raises(InvalidRequest):
        await skills.upsert_skill(pool, tenant, None, "Bad Name", description="d", body="b")
    with pytest.raises(InvalidRequest):
        await skills.upsert_skill(pool, tenant, None, "ok", description=" ", body="b")
    with pytest.raises(PayloadTooLarge):
        await skills.upsert_skill(
            pool, tenant, None, "ok", description="d", body="b" * (skills.MAX_SKILL_BYTES + 1)
        )
    for files in ({"../escape.md": "x"}, {"/abs.md": "x"}, {"SKILL.md": "x"}):
        with pytest.raises(InvalidRequest):
            await skills.upsert_skill(
                pool, tenant, None, "ok", description="d", body="b", files=files
            )
    too_many = {f"f{i}.md": "x" for i in range(skills.MAX_SKILL_FILES + 1)}
    with pytest.raises(InvalidRequest):
        await skills.upsert_skill(
            pool, tenant, None, "ok", description="d", body="b", files=too_many
        )
    assert await skills.list_skills(pool, tenant, None, include_disabled=True) == []


async def test_the_skill_tool_returns_bodies_and_files(
    pool: Pool, endpoints: Endpoints, tenant: UUID
) -> None:
    ops = await agents.create_agent(pool, tenant, "ops", "Ops")
    await skills.upsert_skill(
        pool,
        tenant,
        None,
        "weather",
        description="Forecasts.",
        body="# Weather\nUse wttr.in.",
        files={"./reference/api.md": "API notes", "scripts/get.sh": "curl wttr.in"},
    )
    await skills.upsert_skill(pool, tenant, None, "retired", description="Old.", body="old")
    await skills.set_enabled(pool, tenant, None, "retired", False)

    redis = aioredis.Redis.from_url(endpoints.redis_url)
    ctx = ToolContext(
        pool=pool,
        redis=redis,
        tenant_id=tenant,
        agent_id=ops.id,
        agent_key=ops.key,
        session_id=uuid.uuid4(),
        session_key="agent:ops:main",
        run_id=uuid.uuid4(),
    )
    tool = SkillTool()
    try:
        body = await tool.run(ctx, {"name": "Weather"})
        assert body.startswith("# Weather\nUse wttr.in.")
        assert "reference/api.md, scripts/get.sh" in body
        assert await tool.run(ctx, {"name": "weather", "file": "reference/api.md"}) == "API notes"
        assert await tool.run(ctx, {"name": "weather", "file": "scripts//get.sh"}) == (
            "curl wttr.in"
        )

        with pytest.raises(ToolError, match=r"no skill named 'nope'.*available skills: weather"):
            await tool.run(ctx, {"name": "nope"})
        with pytest.raises(ToolError, match="no skill named 'retired'"):
            await tool.run(ctx, {"name": "retired"})
        with pytest.raises(ToolError, match=r"has no file 'missing.md'.*reference/api.md"):
            await tool.run(ctx, {"name": "weather", "file": "missing.md"})
        with pytest.raises(ToolError):
            await tool.run(ctx, {"name": "weather", "file": "../../etc/passwd"})
        with pytest.raises(ToolError):
            await tool.run(ctx, {})
        with pytest.raises(ToolError):
            await tool.run(ctx, {"name": "weather", "file": 3})
    finally:
        await redis.aclose()
