"""001's configuration API: GET /api/config and PATCH /api/config (permission `config`).

GET answers the deployment's effective configuration, secrets masked, with `_meta` naming
the keys PATCH may change (see clawbus_gateway.config_document). PATCH takes a JSON merge
patch (RFC 7396) of those keys, such as 001's `{"logging": {"level": "debug"}}`; a null
resets a key to its setting. The whole patch is validated first: an unknown key, a
read-only one (the error names its environment variable) or a bad value is a 400 naming
the key, and nothing is stored. A valid patch is stored in Postgres with a new version,
applied on this replica, announced on NATS so every gateway replica and agent-runner
applies it at once, and answered with the new effective configuration.

Every replica follows the stored overrides from start to shutdown (`following`, a
cleanup_ctx after the infrastructure's); the gateway's own applier puts
`gateway.rateLimits` into the rate-limit middleware. GET reads the stored overrides, so
any replica answers with the latest version (and applies it, if its notice is late).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web
from clawbus_core import runtime_config
from clawbus_core.config import Endpoints, resolve_endpoints
from clawbus_core.runtime_config import RuntimeConfigFollower, StoredConfig
from clawbus_protocol.config import ConfigOverrides
from clawbus_protocol.errors import InvalidRequest, PayloadTooLarge, ServiceUnavailable
from pydantic import ValidationError

from clawbus_gateway import config_document
from clawbus_gateway.keys import CATALOG, RUNS, SETTINGS
from clawbus_gateway.principal import require_operator
from clawbus_gateway.ratelimit import RateLimits, configured_limits

log = logging.getLogger(__name__)

PATH = "/api/config"
# A patch names a handful of keys; anything bigger is not one.
MAX_PATCH_BYTES = 64 * 1024

routes = web.RouteTableDef()


@dataclass(frozen=True)
class ConfigState:
    follower: RuntimeConfigFollower
    endpoints: Endpoints
    limits: RateLimits


CONFIG: web.AppKey[ConfigState] = web.AppKey("config", ConfigState)


def _rate_limits_applier(
    settings_limits: dict[str, int], limits: RateLimits
) -> runtime_config.Applier:
    def apply(overrides: ConfigOverrides) -> None:
        patched = overrides.gateway.rate_limits if overrides.gateway else None
        extra = patched.model_dump(exclude_none=True) if patched else {}
        limits.limits = configured_limits(settings_limits | extra)

    return apply


async def following(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx, after the infrastructure's: shares its pool and NATS connection."""
    settings, runs = app[SETTINGS], app[RUNS]
    # The one RateLimits of this application (a middleware: it holds the limits it enforces).
    limits = next(m for m in app.middlewares if isinstance(m, RateLimits))
    follower = runtime_config.following(
        runs.pool,
        runs.nc,
        settings.names,
        _rate_limits_applier(settings.gateway_rate_limits, limits),
    )
    async with follower:
        app[CONFIG] = ConfigState(follower, resolve_endpoints(settings), limits)
        yield


def _unavailable(exc: Exception) -> ServiceUnavailable:
    log.warning("configuration store: %r", exc)
    return ServiceUnavailable("the configuration store (database) is unavailable; try again")


async def _current(state: ConfigState) -> StoredConfig:
    try:
        return await state.follower.refresh()
    except runtime_config.STORE_ERRORS as exc:
        raise _unavailable(exc) from None


def _document(request: web.Request, stored: StoredConfig) -> web.Response:
    state = request.app[CONFIG]
    body = config_document.build(
        request.app[SETTINGS],
        stored=stored,
        catalog=request.app[CATALOG],
        endpoints=state.endpoints,
        limits=state.limits,
    )
    return web.json_response(body)


async def _read_patch(request: web.Request) -> ConfigOverrides:
    too_large = PayloadTooLarge(f"a configuration patch is at most {MAX_PATCH_BYTES} bytes")
    if (request.content_length or 0) > MAX_PATCH_BYTES:
        raise too_large
    raw = await request.read()  # aiohttp enforces client_max_size (413) on chunked bodies
    if len(raw) > MAX_PATCH_BYTES:
        raise too_large
    if not raw.strip():
        raise InvalidRequest(
            'request body is empty; send a JSON merge patch such as {"logging": {"level": "debug"}}'
        )
    try:
        return ConfigOverrides.model_validate_json(raw)
    except ValidationError as exc:
        raise config_document.invalid_patch(exc) from None


@routes.get(PATH)
async def get_config(request: web.Request) -> web.Response:
    require_operator(request, "config")
    return _document(request, await _current(request.app[CONFIG]))


@routes.patch(PATH)
async def patch_config(request: web.Request) -> web.Response:
    who = require_operator(request, "config")
    changes = await _read_patch(request)
    state, runs = request.app[CONFIG], request.app[RUNS]
    try:
        stored, changed = await runtime_config.patch(
            runs.pool, runs.names.namespace, changes, updated_by=f"{who.kind}:{who.name}"
        )
    except runtime_config.STORE_ERRORS as exc:
        raise _unavailable(exc) from None
    if changed:
        await runtime_config.announce(runs.nc, runs.names, stored)
    return _document(request, await _current(state))
