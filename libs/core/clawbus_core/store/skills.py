"""Skills: SKILL.md folders stored as rows of `skills`.

A skill belongs to one agent (agent_id) or is shared by the whole tenant (agent_id NULL).
An agent sees its own skills and the shared ones; where both have a name, the agent's own
wins, even when it is disabled: that is how one agent opts out of a shared skill.
The prompt lists only names and descriptions; bodies and extra files are read on demand.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
from clawbus_protocol.errors import InvalidRequest, NotFound, PayloadTooLarge

from clawbus_core.bootstrap import SkillSummary
from clawbus_core.db import Pool
from clawbus_core.sessionkeys import AGENT_ID_RE
from clawbus_core.store.workspace import normalize_path

MAX_SKILL_BYTES = 256 * 1024  # the body, and each extra file (UTF-8)
MAX_SKILL_FILES = 64
MAX_DESCRIPTION_CHARS = 1024

# The visible skills of an agent ($2; NULL: shared only): one row per name, its own first.
VISIBLE_SKILLS = """
SELECT DISTINCT ON (s.name) s.*
FROM skills s
WHERE s.tenant_id = $1 AND (s.agent_id IS NULL OR s.agent_id = $2)
ORDER BY s.name, s.agent_id NULLS LAST
"""

_INFO_COLUMNS = """
v.id, v.agent_id, v.name, v.description, v.enabled, v.updated_at,
ARRAY(SELECT jsonb_object_keys(v.files) ORDER BY 1) AS file_names
"""

_LIST = f"""
SELECT {_INFO_COLUMNS} FROM ({VISIBLE_SKILLS}) v
WHERE v.enabled OR $3::bool
ORDER BY v.name
"""  # noqa: S608 (constants, not input)

_GET = f"""
SELECT {_INFO_COLUMNS}, v.body,
       CASE WHEN $5::text IS NULL THEN v.files
            ELSE jsonb_strip_nulls(jsonb_build_object($5::text, v.files -> $5::text)) END
           ::text AS files_json
FROM ({VISIBLE_SKILLS}) v
WHERE v.name = $3 AND (v.enabled OR $4::bool)
"""  # noqa: S608 (constants, not input)

_UPSERT = """
INSERT INTO skills (tenant_id, agent_id, name, description, body, files)
VALUES ($1, $2, $3, $4, $5, $6::text::jsonb)
ON CONFLICT (tenant_id, coalesce(agent_id, '00000000-0000-0000-0000-000000000000'::uuid), name)
DO UPDATE SET description = EXCLUDED.description, body = EXCLUDED.body,
              files = EXCLUDED.files, updated_at = now()
RETURNING id, agent_id, name, description, enabled, updated_at,
          ARRAY(SELECT jsonb_object_keys(files) ORDER BY 1) AS file_names
"""

_SET_ENABLED = """
UPDATE skills SET enabled = $4, updated_at = now()
WHERE tenant_id = $1 AND agent_id IS NOT DISTINCT FROM $2 AND name = $3
RETURNING id
"""

_DELETE = """
DELETE FROM skills WHERE tenant_id = $1 AND agent_id IS NOT DISTINCT FROM $2 AND name = $3
RETURNING id
"""


@dataclass(frozen=True)
class SkillInfo(SkillSummary):
    id: UUID
    agent_id: UUID | None  # None: shared by the tenant
    enabled: bool
    file_names: tuple[str, ...]  # the extra files, by path
    updated_at: datetime

    @property
    def shared(self) -> bool:
        return self.agent_id is None


@dataclass(frozen=True)
class Skill(SkillInfo):
    body: str
    files: Mapping[str, str]  # path -> content (only the one asked for, when one was)


def check_skill_name(name: str) -> str:
    """A skill's name: the agent-key rule (1-64 of a-z 0-9 _ -, letter or digit first)."""
    if not AGENT_ID_RE.fullmatch(name):
        raise InvalidRequest(
            f"invalid skill name {name!r}: 1-64 characters of a-z, 0-9, '_' and '-', "
            "starting with a letter or digit",
            param="name",
        )
    return name


def check_skill_text(text: str, what: str) -> None:
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_SKILL_BYTES:
        raise PayloadTooLarge(
            f"{what} is {size} bytes; the limit is {MAX_SKILL_BYTES}",
            param=what,
            limit=MAX_SKILL_BYTES,
        )
    if "\0" in text:
        raise InvalidRequest(f"{what} contains a NUL character", param=what)


def check_description(description: str) -> str:
    text = " ".join(description.split())
    if not text:
        raise InvalidRequest("a skill needs a description", param="description")
    if len(text) > MAX_DESCRIPTION_CHARS:
        raise InvalidRequest(
            f"the description is longer than {MAX_DESCRIPTION_CHARS} characters",
            param="description",
        )
    return text


def _check_files(files: Mapping[str, str]) -> dict[str, str]:
    if len(files) > MAX_SKILL_FILES:
        raise InvalidRequest(
            f"a skill has at most {MAX_SKILL_FILES} extra files", param="files", count=len(files)
        )
    checked: dict[str, str] = {}
    for raw, content in files.items():
        path = normalize_path(raw)
        if path == "SKILL.md":
            raise InvalidRequest("SKILL.md is the skill's body, not an extra file", param="files")
        if path in checked:
            raise InvalidRequest(f"the file {path!r} is given twice", param="files")
        check_skill_text(content, f"files[{path!r}]")
        checked[path] = content
    return dict(sorted(checked.items()))


def _info(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "agent_id": row["agent_id"],
        "name": row["name"],
        "description": row["description"],
        "enabled": row["enabled"],
        "file_names": tuple(row["file_names"]),
        "updated_at": row["updated_at"],
    }


async def upsert_skill(
    pool: Pool,
    tenant_id: UUID,
    agent_id: UUID | None,
    name: str,
    *,
    description: str,
    body: str,
    files: Mapping[str, str] | None = None,
) -> SkillInfo:
    """Create or replace a skill (agent_id None: shared); a replaced one keeps `enabled`."""
    check_skill_name(name)
    text = check_description(description)
    check_skill_text(body, "body")
    extra = _check_files(files or {})
    row = await pool.fetchrow(
        _UPSERT, tenant_id, agent_id, name, text, body, json.dumps(extra, ensure_ascii=False)
    )
    assert row is not None
    return SkillInfo(**_info(row))


async def set_enabled(
    pool: Pool, tenant_id: UUID, agent_id: UUID | None, name: str, enabled: bool
) -> None:
    """Enable or disable the skill stored under exactly (agent_id, name); NotFound if none."""
    if await pool.fetchrow(_SET_ENABLED, tenant_id, agent_id, name, enabled) is None:
        raise NotFound(f"skill {name!r} not found", param="name", skill=name)


async def delete_skill(pool: Pool, tenant_id: UUID, agent_id: UUID | None, name: str) -> None:
    if await pool.fetchrow(_DELETE, tenant_id, agent_id, name) is None:
        raise NotFound(f"skill {name!r} not found", param="name", skill=name)


async def list_skills(
    pool: Pool, tenant_id: UUID, agent_id: UUID | None, *, include_disabled: bool = False
) -> list[SkillInfo]:
    """The skills `agent_id` sees (None: the shared ones), by name; enabled ones unless asked."""
    rows = await pool.fetch(_LIST, tenant_id, agent_id, include_disabled)
    return [SkillInfo(**_info(r)) for r in rows]


async def get_skill(
    pool: Pool,
    tenant_id: UUID,
    agent_id: UUID | None,
    name: str,
    *,
    file: str | None = None,
    include_disabled: bool = False,
) -> Skill | None:
    """The skill `agent_id` sees under `name`, with its body and extra files.

    With `file`, `files` holds only that file (empty if the skill has no such file), so
    reading one file does not carry the others. None if no such (enabled) skill.
    """
    path = normalize_path(file) if file is not None else None
    row = await pool.fetchrow(_GET, tenant_id, agent_id, name, include_disabled, path)
    if row is None:
        return None
    return Skill(**_info(row), body=row["body"], files=json.loads(row["files_json"]))
