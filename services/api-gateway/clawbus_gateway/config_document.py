"""The configuration document GET /api/config answers, and why a PATCH key is refused.

The document is the gateway's settings (what every replica of the deployment reads from
the same environment and config file) with the runtime overrides applied, every secret
masked: known secrets by construction, and every secret-named key and URL credential by
`mask_secrets` over the whole document as well, so a secret added later cannot leak
through a view nobody updated. `_meta` names the patchable keys and, for every other key,
the environment variable that sets it.
"""

from __future__ import annotations

import re
from typing import Any

from clawbus_core.config import Endpoints
from clawbus_core.models import ModelCatalog
from clawbus_core.runtime_config import MASK, StoredConfig, mask_secrets, mask_url
from clawbus_protocol.config import (
    ApiTokenView,
    AuthConfig,
    ConfigDocument,
    ConfigMeta,
    GatewayConfig,
    InfrastructureConfig,
    LimitsConfig,
    LoggingConfig,
    ModelsConfig,
    ProviderView,
    RunnerConfig,
    WebSocketConfig,
    patchable_keys,
)
from clawbus_protocol.errors import InvalidRequest
from pydantic import SecretStr, ValidationError

from clawbus_gateway.ratelimit import ROUTE_CLASS_NAMES, RateLimits
from clawbus_gateway.settings import GatewaySettings

PATCHABLE = patchable_keys()

# Every read-only key of the document -> the setting that sets it (env CLAWBUS_<SETTING>).
READ_ONLY: dict[str, str] = {
    "gateway.bind": "gateway_host",
    "gateway.port": "gateway_port",
    "gateway.auth.token": "gateway_token",
    "gateway.auth.password": "gateway_password",
    "gateway.auth.apiTokens": "gateway_api_tokens",
    "gateway.auth.failuresPerMinute": "gateway_auth_failures_per_minute",
    "gateway.limits.maxBodyBytes": "gateway_max_body_bytes",
    "gateway.limits.requestTimeoutS": "gateway_request_timeout_s",
    "gateway.limits.shutdownTimeoutS": "gateway_shutdown_timeout_s",
    "gateway.limits.maxConnectionsPerClient": "gateway_max_connections_per_client",
    "gateway.limits.dbPoolSize": "gateway_db_pool_size",
    "gateway.allowedOrigins": "gateway_allowed_origins",
    "gateway.websocket.maxFrameBytes": "gateway_ws_max_frame_bytes",
    "gateway.websocket.idleTimeoutS": "gateway_ws_idle_timeout_s",
    "gateway.websocket.heartbeatS": "gateway_ws_heartbeat_s",
    # The runner caches each agent's context with the default model it resolved, and
    # /v1/models lists it from the start: a runtime change would not reach every run.
    "models.default": "default_model",
    "models.advertised": "models",
    "models.embedding": "embedding_model",
    "models.providers": "providers",
    "runner.netAllow": "net_allow",
    "infrastructure.namespace": "namespace",
    "infrastructure.dataDir": "data_dir",
    "infrastructure.natsUrl": "nats_url",
    "infrastructure.databaseUrl": "database_url",
    "infrastructure.redisUrl": "redis_url",
}


def env_var(key: str) -> str:
    """The environment variable behind a read-only dotted key (or one of its sub-keys)."""
    setting = next(s for k, s in READ_ONLY.items() if key == k or key.startswith(f"{k}."))
    name = f"CLAWBUS_{setting.upper()}"
    if setting == "providers":
        # models.providers.<name>.<field>: CLAWBUS_PROVIDERS__<NAME>__<FIELD>
        rest = key.split(".")[2:]
        parts = [rest[0].upper()] if rest else ["<NAME>"]
        parts += [_snake(rest[1]).upper()] if len(rest) > 1 else []
        name = "__".join([name, *parts])
    return name


def _snake(camel: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", camel).lower()


def _mask(secret: SecretStr | None) -> str | None:
    return None if secret is None else MASK


def build(
    settings: GatewaySettings,
    *,
    stored: StoredConfig,
    catalog: ModelCatalog,
    endpoints: Endpoints,
    limits: RateLimits,
) -> dict[str, Any]:
    """The effective configuration as JSON, every secret masked."""
    level = stored.overrides.logging.level if stored.overrides.logging else None
    document = ConfigDocument(
        gateway=GatewayConfig(
            bind=settings.gateway_host,
            port=settings.gateway_port,
            auth=AuthConfig(
                token=MASK,  # configured or generated: there always is one
                password=_mask(settings.gateway_password),
                api_tokens=[
                    ApiTokenView(name=t.name, token=MASK, permissions=t.permissions)
                    for t in settings.gateway_api_tokens
                ],
                failures_per_minute=settings.gateway_auth_failures_per_minute,
            ),
            limits=LimitsConfig(
                max_body_bytes=settings.gateway_max_body_bytes,
                request_timeout_s=settings.gateway_request_timeout_s,
                shutdown_timeout_s=settings.gateway_shutdown_timeout_s,
                max_connections_per_client=settings.gateway_max_connections_per_client,
                db_pool_size=settings.gateway_db_pool_size,
            ),
            rate_limits={c: limits.limit_for(c) for c in sorted(ROUTE_CLASS_NAMES)},
            allowed_origins=settings.gateway_allowed_origins,
            websocket=WebSocketConfig(
                max_frame_bytes=settings.gateway_ws_max_frame_bytes,
                idle_timeout_s=settings.gateway_ws_idle_timeout_s,
                heartbeat_s=settings.gateway_ws_heartbeat_s,
            ),
        ),
        logging=LoggingConfig(level=level or settings.log_level.lower()),
        models=ModelsConfig(
            default=settings.default_model,
            advertised=settings.models,
            embedding=settings.embedding_model,
            providers={
                name: ProviderView(
                    kind=p.kind,
                    base_url=mask_url(p.base_url) if p.base_url else None,
                    api_key=_mask(p.api_key),
                    models=p.models,
                    max_retries=p.max_retries,
                    timeout_s=p.timeout_s,
                )
                for name, p in catalog.providers.items()
            },
        ),
        runner=RunnerConfig(net_allow=settings.net_allow),
        infrastructure=InfrastructureConfig(
            namespace=settings.namespace,
            data_dir=str(settings.data_dir),
            nats_url=mask_url(endpoints.nats_url),
            database_url=mask_url(endpoints.database_url),
            redis_url=mask_url(endpoints.redis_url),
        ),
        meta=ConfigMeta(
            version=stored.version,
            updated_at=stored.updated_at,
            updated_by=stored.updated_by,
            overrides=stored.doc,
            patchable=PATCHABLE,
            restart_required={key: env_var(key) for key in READ_ONLY},
        ),
    )
    body: dict[str, Any] = document.model_dump(mode="json")
    # `_meta` is ours alone (its key names would read as secret names).
    return {k: v if k == "_meta" else mask_secrets(v) for k, v in body.items()}


# --- refusing a patch -------------------------------------------------------------------------


def _under(key: str, section: str) -> bool:
    return key == section or key.startswith(f"{section}.")


def _named(path: tuple[str, ...], value: Any) -> tuple[str, bool]:
    """The first key the patch names at or under `path` (as deep as it goes), and whether
    it is read-only (a read-only key or a section made of them)."""
    key = ".".join(path)
    read_only = any(_under(key, k) for k in READ_ONLY)
    section = any(k.startswith(f"{key}.") for k in READ_ONLY)
    if (read_only or section) and isinstance(value, dict) and value:
        named = [_named((*path, str(child)), v) for child, v in value.items()]
        return next((n for n in named if n[1]), named[0])
    return key, read_only or section


def _refusal(path: tuple[str, ...], value: Any) -> tuple[str, str]:
    """(key, why) for a key the overrides model does not accept."""
    key, read_only = _named(path, value)
    if not read_only:
        return key, (
            f"unknown configuration key {key!r}; the keys that change at runtime are "
            f"{', '.join(PATCHABLE)}"
        )
    if any(_under(key, k) for k in READ_ONLY):
        return key, (
            f"{key} cannot change at runtime: it is set by {env_var(key)} (environment or "
            "config file) and takes a restart"
        )
    settings = ", ".join(env_var(k) for k in READ_ONLY if _under(k, key))
    return key, (
        f"{key} cannot change at runtime: its keys are set by {settings} (environment or "
        "config file) and take a restart"
    )


_NOT_AN_OBJECT = (
    'the body must be a JSON object: a merge patch such as {"logging": {"level": "debug"}}'
)


def invalid_patch(exc: ValidationError) -> InvalidRequest:
    """The 400 for a patch `ConfigOverrides` refused, naming the first key at fault."""
    problems: list[tuple[str, str]] = []
    for error in exc.errors(include_url=False):
        path = tuple(str(p) for p in error["loc"])
        if error["type"] == "json_invalid":
            return InvalidRequest("request body is not valid JSON")
        key = ".".join(path)
        if not path:
            problems.append(("", _NOT_AN_OBJECT))
        elif error["type"] == "extra_forbidden":
            problems.append(_refusal(path, error["input"]))
        elif error["type"] == "model_type":
            problems.append((key, f"{key} must be a JSON object (or null to reset it)"))
        else:
            problems.append((key, f"{key}: {error['msg']}"))
    key, message = problems[0]
    return InvalidRequest(
        f"invalid configuration patch: {message}",
        param=key or None,
        errors=[{"field": k or "(body)", "problem": m} for k, m in problems],
    )
