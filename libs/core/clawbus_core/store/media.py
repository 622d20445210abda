"""Media any service stores for a tenant: browser screenshots, and chat apps' uploads (tied to
their channel by `channel_id`).

The gateway serves an item at GET /v1/media/{id} to its tenant's credentials. See migration
0005 for the table.
"""

from __future__ import annotations

import hashlib
import uuid
from uuid import UUID

import asyncpg
from clawbus_protocol.errors import NotFound, PayloadTooLarge

from clawbus_core.db import Pool

MAX_MEDIA_BYTES = 20 * 2**20  # Telegram bots may download files up to 20 MB


async def store_media(
    pool: Pool,
    tenant_id: UUID,
    *,
    kind: str,
    content: bytes,
    mime_type: str | None,
    file_name: str | None = None,
    channel_id: UUID | None = None,
) -> UUID:
    """Store `content` as the tenant's media item and return its id."""
    if len(content) > MAX_MEDIA_BYTES:
        raise PayloadTooLarge(
            f"media of {len(content)} bytes is over the limit of {MAX_MEDIA_BYTES}",
            size=len(content),
            limit=MAX_MEDIA_BYTES,
        )
    media_id = uuid.uuid4()
    try:
        await pool.execute(
            "INSERT INTO media (id, tenant_id, channel_id, kind, file_name, mime_type, size, "
            "sha256, content) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            media_id,
            tenant_id,
            channel_id,
            kind,
            file_name,
            mime_type,
            len(content),
            hashlib.sha256(content).digest(),
            content,
        )
    except asyncpg.ForeignKeyViolationError:
        raise NotFound(f"tenant {tenant_id} not found", param="tenant_id") from None
    return media_id
