"""GET /v1/media/{media_id}: a stored media item's bytes (a browser screenshot, a photo or
document received on a channel), with its mime type.

Any valid credential of the item's tenant may read it: ids are random UUIDs handed out only
in answers that already needed their own permission (`browser` for a screenshot, `chat` or
`sessions` for the messages naming a channel's media). Another tenant's item, an unknown id
and a malformed one are the same 404, so ids cannot be probed across tenants.

The bytes are served as data, never as a page of this origin: `nosniff` and a sandboxing CSP,
since a channel's sender chooses the mime type of what it uploads.
"""

from __future__ import annotations

import re
from uuid import UUID

from aiohttp import web
from clawbus_core.db import Pool
from clawbus_protocol.errors import NotFound

from clawbus_gateway.keys import RUNS
from clawbus_gateway.principal import principal

routes = web.RouteTableDef()

_FALLBACK_TYPE = "application/octet-stream"
# What may go out as a Content-Type: a plain type/subtype with optional parameters (stored
# types come from chat-app uploads too, so anything else goes out as the fallback).
_MIME = re.compile(
    r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}"
    r"(?:\s*;\s*[a-z0-9_.+-]+=[a-z0-9_.+\"-]+)*",
    re.IGNORECASE,
)


async def _load(pool: Pool, tenant_id: UUID, media_id: UUID) -> tuple[bytes, str | None]:
    row = await pool.fetchrow(
        "SELECT content, mime_type FROM media WHERE id = $1 AND tenant_id = $2",
        media_id,
        tenant_id,
    )
    if row is None:
        raise NotFound("no such media", param="mediaId")
    return bytes(row["content"]), row["mime_type"]


@routes.get("/v1/media/{media_id}")
async def media(request: web.Request) -> web.Response:
    who = principal(request)
    try:
        media_id = UUID(request.match_info["media_id"])
    except ValueError:
        raise NotFound("no such media", param="mediaId") from None
    content, mime_type = await _load(request.app[RUNS].pool, who.tenant_id, media_id)
    shown = mime_type if mime_type is not None and _MIME.fullmatch(mime_type) else _FALLBACK_TYPE
    return web.Response(
        body=content,
        headers={
            "Content-Type": shown,
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox; default-src 'none'",
            "Cache-Control": "private, max-age=3600",
        },
    )
