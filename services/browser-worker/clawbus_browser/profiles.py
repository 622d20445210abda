"""Named browser profiles: a context's storage state (cookies, localStorage) kept in Postgres
(table `browser_profiles`, migration 0006) between the contexts that use it."""

from __future__ import annotations

import json
from typing import Any, cast
from uuid import UUID

import asyncpg
from clawbus_core.db import Pool
from clawbus_protocol.errors import NotFound, PayloadTooLarge
from playwright.async_api import StorageState

_LOAD = "SELECT storage_state FROM browser_profiles WHERE tenant_id = $1 AND name = $2"

_SAVE = """
INSERT INTO browser_profiles (tenant_id, name, storage_state) VALUES ($1, $2, $3)
ON CONFLICT (tenant_id, name) DO UPDATE
SET storage_state = EXCLUDED.storage_state, updated_at = now()
"""


class ProfileStore:
    def __init__(self, pool: Pool, *, max_bytes: int) -> None:
        self.pool = pool
        self.max_bytes = max_bytes

    async def load(self, tenant_id: UUID, name: str) -> StorageState | None:
        state: Any = await self.pool.fetchval(_LOAD, tenant_id, name)
        return cast(StorageState, state) if isinstance(state, dict) else None

    async def save(self, tenant_id: UUID, name: str, state: StorageState) -> None:
        size = len(json.dumps(state))
        if size > self.max_bytes:
            raise PayloadTooLarge(
                f"browser profile {name!r}: its cookies and storage take {size} bytes, over "
                f"the limit of {self.max_bytes}; they were not saved",
                profile=name,
                size=size,
            )
        try:
            await self.pool.execute(_SAVE, tenant_id, name, dict(state))
        except asyncpg.ForeignKeyViolationError:
            raise NotFound(f"tenant {tenant_id} not found", param="tenant_id") from None
