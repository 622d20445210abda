"""Agents: creation (with a seeded workspace), lookup, and the context a run loads.

`create_agent` inserts the agent and its bootstrap files in one transaction, so an agent
never exists without its workspace. `load_context` reads everything a run needs to build
its system prompt (profile, bootstrap files, enabled skills) in one statement.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, NamedTuple, get_args
from uuid import UUID

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from clawbus_protocol.errors import Conflict, InvalidRequest, NotFound

from clawbus_core.bootstrap import BOOTSTRAP_FILES, DEFAULT_FILES
from clawbus_core.db import Pool
from clawbus_core.sessionkeys import normalize_agent_id
from clawbus_core.store.skills import VISIBLE_SKILLS, SkillInfo

QueueMode = Literal["followup", "collect", "interrupt"]
QUEUE_MODES: tuple[str, ...] = get_args(QueueMode)
MAX_NAME_CHARS = 200

_COLUMNS = """
a.id, a.tenant_id, a.key, a.name, a.model, a.fallbacks, a.system_prompt,
a.tool_policy::text AS tool_policy_json, a.queue_mode, a.context_tokens, a.updated_at
"""

_INSERT = f"""
WITH a AS (
    INSERT INTO agents (id, tenant_id, key, name, model, fallbacks, system_prompt,
                        tool_policy, queue_mode)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::jsonb, $9)
    ON CONFLICT (tenant_id, key) DO NOTHING
    RETURNING *
)
SELECT {_COLUMNS} FROM a
"""  # noqa: S608 (constants, not input)

_SEED = """
INSERT INTO workspace_files (tenant_id, agent_id, path, content)
SELECT $1, $2, f.path, f.content FROM unnest($3::text[], $4::text[]) AS f(path, content)
ON CONFLICT (agent_id, path) DO NOTHING
"""

_BY_KEY = f"SELECT {_COLUMNS} FROM agents a WHERE a.tenant_id = $1 AND a.key = $2"  # noqa: S608
_BY_ID = f"SELECT {_COLUMNS} FROM agents a WHERE a.id = $1"  # noqa: S608

# $1 tenant, $2 agent id (the parameters VISIBLE_SKILLS uses), $3 bootstrap file paths.
_CONTEXT = f"""
SELECT {_COLUMNS},
       (SELECT coalesce(json_object_agg(f.path, f.content), '{{}}'::json)::text
        FROM workspace_files f
        WHERE f.agent_id = a.id AND f.tenant_id = a.tenant_id AND f.path = ANY($3::text[])
       ) AS files_json,
       (SELECT coalesce(json_agg(json_build_object(
                   'id', v.id, 'agent_id', v.agent_id, 'name', v.name,
                   'description', v.description, 'enabled', v.enabled,
                   'updated_at', v.updated_at,
                   'file_names', ARRAY(SELECT jsonb_object_keys(v.files) ORDER BY 1))
               ORDER BY v.name), '[]'::json)::text
        FROM ({VISIBLE_SKILLS}) v
        WHERE v.enabled
       ) AS skills_json
FROM agents a
WHERE a.tenant_id = $1 AND a.id = $2
"""  # noqa: S608 (constants, not input)


# A pool, or a connection (one inside a transaction).
Executor = Pool | asyncpg.Connection | PoolConnectionProxy


@dataclass(frozen=True)
class AgentProfile:
    id: UUID
    tenant_id: UUID
    key: str
    name: str
    model: str | None
    fallbacks: tuple[str, ...]
    system_prompt: str
    tool_policy: dict[str, Any]
    queue_mode: QueueMode
    context_tokens: int
    updated_at: datetime


class AgentContext(NamedTuple):
    """What a run loads: `profile, files, skills = await load_context(...)`."""

    profile: AgentProfile
    files: dict[str, str]  # bootstrap file path -> content
    skills: list[SkillInfo]  # enabled, visible to the agent, by name


def _profile(row: asyncpg.Record) -> AgentProfile:
    return AgentProfile(
        id=row["id"],
        tenant_id=row["tenant_id"],
        key=row["key"],
        name=row["name"],
        model=row["model"],
        fallbacks=tuple(row["fallbacks"]),
        system_prompt=row["system_prompt"],
        tool_policy=json.loads(row["tool_policy_json"]),
        queue_mode=row["queue_mode"],
        context_tokens=row["context_tokens"],
        updated_at=row["updated_at"],
    )


def _skill(raw: Mapping[str, Any]) -> SkillInfo:
    return SkillInfo(
        id=UUID(raw["id"]),
        agent_id=UUID(raw["agent_id"]) if raw["agent_id"] else None,
        name=raw["name"],
        description=raw["description"],
        enabled=raw["enabled"],
        file_names=tuple(raw["file_names"]),
        updated_at=datetime.fromisoformat(raw["updated_at"]),
    )


def _check_new_agent(
    name: str, fallbacks: Sequence[str], tool_policy: Mapping[str, Any] | None, queue_mode: str
) -> str:
    clean = name.strip()
    if not clean or len(clean) > MAX_NAME_CHARS:
        raise InvalidRequest(f"an agent name has 1-{MAX_NAME_CHARS} characters", param="name")
    if any(not isinstance(f, str) or not f.strip() for f in fallbacks):
        raise InvalidRequest("fallbacks must be non-empty model names", param="fallbacks")
    if tool_policy is not None and not isinstance(tool_policy, Mapping):
        raise InvalidRequest("tool_policy must be an object", param="tool_policy")
    if queue_mode not in QUEUE_MODES:
        raise InvalidRequest(
            f"queue_mode must be one of {', '.join(QUEUE_MODES)}", param="queue_mode"
        )
    return clean


async def seed_workspace(
    conn: Executor,
    tenant_id: UUID,
    agent_id: UUID,
    files: Mapping[str, str] = DEFAULT_FILES,
) -> int:
    """Write the bootstrap files the agent does not have yet; how many were written.

    Idempotent: an existing file, edited or not, is left alone.
    """
    paths = list(files)
    status = await conn.execute(_SEED, tenant_id, agent_id, paths, [files[p] for p in paths])
    return int(status.rsplit(" ", 1)[-1])


async def create_agent(
    pool: Pool,
    tenant_id: UUID,
    key: str,
    name: str,
    *,
    model: str | None = None,
    fallbacks: Sequence[str] = (),
    system_prompt: str = "",
    tool_policy: Mapping[str, Any] | None = None,
    queue_mode: QueueMode = "followup",
) -> AgentProfile:
    """Create the agent and seed its workspace, atomically.

    InvalidRequest for a bad key (1-64 of a-z 0-9 _ -, letter or digit first; upper case is
    folded, as OpenClaw does) or field; Conflict if the tenant has the key; NotFound for an
    unknown tenant.
    """
    agent_key = normalize_agent_id(key)
    clean_name = _check_new_agent(name, fallbacks, tool_policy, queue_mode)
    policy_json = json.dumps(dict(tool_policy or {}))
    try:
        async with pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                _INSERT,
                uuid.uuid4(),
                tenant_id,
                agent_key,
                clean_name,
                model,
                list(fallbacks),
                system_prompt,
                policy_json,
                queue_mode,
            )
            if row is None:
                raise Conflict(f"agent {agent_key!r} already exists", param="key", key=agent_key)
            await seed_workspace(conn, tenant_id, row["id"])
            # Seeding bumped the agent's version (a trigger): return the row as it is now.
            row = await conn.fetchrow(_BY_ID, row["id"])
    except asyncpg.ForeignKeyViolationError as err:
        raise NotFound(f"tenant {tenant_id} not found", param="tenant_id") from err
    assert row is not None
    return _profile(row)


async def get_agent_by_key(pool: Pool, tenant_id: UUID, key: str) -> AgentProfile | None:
    row = await pool.fetchrow(_BY_KEY, tenant_id, key.strip().lower())
    return _profile(row) if row is not None else None


async def load_context(pool: Pool, tenant_id: UUID, agent_id: UUID) -> AgentContext:
    """The agent's profile, bootstrap files and enabled skills, in one round trip."""
    row = await pool.fetchrow(_CONTEXT, tenant_id, agent_id, list(BOOTSTRAP_FILES))
    if row is None:
        raise NotFound(f"agent {agent_id} not found", param="agent_id")
    files: dict[str, str] = json.loads(row["files_json"])
    skills = [_skill(s) for s in json.loads(row["skills_json"])]
    return AgentContext(_profile(row), files, skills)
