"""Authentication: the gateway token as a bearer credential, checked on every request."""

from __future__ import annotations

import hmac

from aiohttp import web
from aiohttp.typedefs import Handler
from clawbus_protocol.errors import Unauthorized

from clawbus_gateway.keys import SETTINGS_TOKEN
from clawbus_gateway.principal import OPERATOR, PRINCIPAL

PUBLIC_PATHS = frozenset({"/health"})


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in PUBLIC_PATHS:
        return await handler(request)
    presented = _bearer(request)
    if presented is None:
        raise Unauthorized("missing credentials: send Authorization: Bearer <gateway token>")
    expected = request.app[SETTINGS_TOKEN]
    if not hmac.compare_digest(presented.encode(), expected.encode()):
        raise Unauthorized("invalid gateway token")
    request[PRINCIPAL] = OPERATOR
    return await handler(request)
