"""API keys (GoClaw's `goclaw_` + 32 hex): shown once at creation, stored only as SHA-256.

A key belongs to one tenant and carries scopes (the permission names a principal can hold).
`verify` is one statement on the request path: it finds a live key by its hash and stamps
`last_used_at`, at most once a minute, so a busy key does not write on every request.
Revocation is immediate: nothing is cached, the next `verify` of a revoked key is None.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
from clawbus_protocol.errors import InvalidRequest, NotFound

from clawbus_core.db import Pool

KEY_PREFIX = "goclaw_"
KEY_PATTERN = re.compile(r"goclaw_[0-9a-f]{32}")
# Hex digits of the key kept in clear as its `prefix`, to tell keys apart in listings.
_SHOWN_HEX = 4
MAX_NAME_CHARS = 200

_COLUMNS = "id, tenant_id, name, prefix, scopes, created_at, last_used_at, revoked_at"

_INSERT = f"""
INSERT INTO api_keys (id, tenant_id, name, prefix, key_sha256, scopes)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING {_COLUMNS}
"""  # noqa: S608 (constant columns, not input)

_VERIFY = f"""
WITH k AS (
    SELECT {_COLUMNS} FROM api_keys WHERE key_sha256 = $1 AND revoked_at IS NULL
), used AS (
    UPDATE api_keys SET last_used_at = now()
    WHERE id = (SELECT id FROM k)
      AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')
    RETURNING last_used_at
)
SELECT k.id, k.tenant_id, k.name, k.prefix, k.scopes, k.created_at, k.revoked_at,
       coalesce((SELECT last_used_at FROM used), k.last_used_at) AS last_used_at
FROM k
"""  # noqa: S608

_LIST = f"""
SELECT {_COLUMNS} FROM api_keys
WHERE ($1::uuid IS NULL OR tenant_id = $1)
ORDER BY created_at, id
"""  # noqa: S608

# Revoking twice keeps the first revocation time.
_REVOKE = f"""
UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
WHERE id = $1 AND ($2::uuid IS NULL OR tenant_id = $2)
RETURNING {_COLUMNS}
"""  # noqa: S608

_TENANT = "SELECT id FROM tenants WHERE id::text = $1 OR slug = $1"


@dataclass(frozen=True)
class ApiKey:
    """A key as it can be shown: everything but the secret."""

    id: UUID
    tenant_id: UUID
    name: str
    prefix: str
    scopes: tuple[str, ...]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def masked(self) -> str:
        return f"{self.prefix}{'*' * (32 - _SHOWN_HEX)}"


def _key(row: Any) -> ApiKey:
    return ApiKey(
        id=row["id"],
        tenant_id=row["tenant_id"],
        name=row["name"],
        prefix=row["prefix"],
        scopes=tuple(row["scopes"]),
        created_at=row["created_at"],
        last_used_at=row["last_used_at"],
        revoked_at=row["revoked_at"],
    )


def hash_key(plaintext: str) -> bytes:
    return hashlib.sha256(plaintext.encode()).digest()


def looks_like_key(value: str) -> bool:
    return KEY_PATTERN.fullmatch(value) is not None


def _checked_scopes(scopes: Iterable[str], known: Collection[str]) -> list[str]:
    wanted = sorted({s.strip() for s in scopes if s.strip()})
    unknown = [s for s in wanted if s not in known]
    if unknown:
        raise InvalidRequest(
            f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}",
            param="scopes",
        )
    return wanted


async def create_key(
    pool: Pool,
    tenant_id: UUID,
    name: str,
    scopes: Iterable[str],
    *,
    known_scopes: Collection[str],
) -> tuple[ApiKey, str]:
    """A new key and its plaintext, which exists only in this return value.

    `known_scopes` is the permission vocabulary of the services that honour the key
    (the gateway's `ALL_PERMISSIONS`); any other scope is refused.
    """
    name = name.strip()
    if not 0 < len(name) <= MAX_NAME_CHARS or "\x00" in name:
        raise InvalidRequest(f"key name must be 1 to {MAX_NAME_CHARS} characters", param="name")
    checked = _checked_scopes(scopes, known_scopes)
    random_hex = secrets.token_hex(16)
    plaintext = f"{KEY_PREFIX}{random_hex}"
    try:
        row = await pool.fetchrow(
            _INSERT,
            uuid.uuid4(),
            tenant_id,
            name,
            f"{KEY_PREFIX}{random_hex[:_SHOWN_HEX]}",
            hash_key(plaintext),
            checked,
        )
    except asyncpg.ForeignKeyViolationError:
        raise NotFound(f"tenant {tenant_id} not found", param="tenant") from None
    return _key(row), plaintext


async def verify(pool: Pool, plaintext: str) -> ApiKey | None:
    """The live key `plaintext` is, or None (unknown, malformed or revoked)."""
    if not looks_like_key(plaintext):
        return None
    row = await pool.fetchrow(_VERIFY, hash_key(plaintext))
    return None if row is None else _key(row)


async def list_keys(pool: Pool, tenant_id: UUID | None = None) -> list[ApiKey]:
    """Every key (revoked ones too), oldest first; one tenant's if `tenant_id` is given."""
    return [_key(r) for r in await pool.fetch(_LIST, tenant_id)]


async def revoke_key(pool: Pool, key_id: UUID, *, tenant_id: UUID | None = None) -> ApiKey:
    """Revoke the key (idempotent); NotFound if it does not exist (in `tenant_id`)."""
    row = await pool.fetchrow(_REVOKE, key_id, tenant_id)
    if row is None:
        raise NotFound(f"API key {key_id} not found")
    return _key(row)


async def resolve_tenant(pool: Pool, ref: str) -> UUID:
    """A tenant named by id or slug (GoClaw's `X-GoClaw-Tenant-Id` takes either)."""
    tenant: UUID | None = await pool.fetchval(_TENANT, ref)
    if tenant is None:
        raise NotFound(f"tenant {ref!r} not found", param="tenant")
    return tenant
