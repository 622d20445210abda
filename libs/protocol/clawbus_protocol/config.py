"""The configuration API's shapes (001's GET and PATCH /api/config) and its bus notice.

A deployment's configuration is its settings (environment and config file, read when each
service starts) plus the runtime overrides stored in Postgres. `ConfigOverrides` names the
keys that may change while the services run; it is both the JSON merge patch a client sends
(RFC 7396: objects merge, a null resets a key to its setting) and the stored overrides
document. Every other key of `ConfigDocument` is read-only: its setting takes a restart.

Field names on the wire are camelCase, as OpenClaw's configuration writes them.
"""

from __future__ import annotations

import types
from datetime import datetime
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel

from clawbus_protocol.settings import ProviderKind

LogLevel = Literal["debug", "info", "warning", "error"]


def _lowercase(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


class _Wire(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, serialize_by_alias=True
    )


# --- overrides: the patch and the stored document ---------------------------------------------


class _Overrides(BaseModel):
    # Wire names only, and nothing else: an unknown or read-only key is refused, not dropped.
    model_config = ConfigDict(
        alias_generator=to_camel, serialize_by_alias=True, extra="forbid", frozen=True
    )


class LoggingOverrides(_Overrides):
    # The root logger level of every gateway and agent-runner process; case-insensitive.
    level: Annotated[LogLevel, BeforeValidator(_lowercase)] | None = None


RateLimit = Annotated[int, Field(ge=0, le=1_000_000)]


class RateLimitOverrides(_Overrides):
    """Requests per minute per credential, by route class (the gateway's `RouteClass`);
    0 turns a class's limit off."""

    default: RateLimit | None = None
    chat: RateLimit | None = None
    tools: RateLimit | None = None
    sessions: RateLimit | None = None
    config: RateLimit | None = None


class GatewayOverrides(_Overrides):
    rate_limits: RateLimitOverrides | None = None


class ConfigOverrides(_Overrides):
    logging: LoggingOverrides | None = None
    gateway: GatewayOverrides | None = None

    def changes(self) -> dict[str, Any]:
        """As a merge patch: the keys the client named, nulls (resets) included."""
        return self.model_dump(exclude_unset=True)


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The model inside `Model | None`, if the annotation is one."""
    if get_origin(annotation) in (Union, types.UnionType):
        return next((m for a in get_args(annotation) if (m := _nested_model(a))), None)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def patchable_keys(model: type[BaseModel] = ConfigOverrides, prefix: str = "") -> list[str]:
    """Every key `model` accepts, as dotted wire paths: `["gateway.rateLimits.chat", ...]`."""
    keys: list[str] = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{info.alias or name}"
        nested = _nested_model(info.annotation)
        keys += patchable_keys(nested, f"{path}.") if nested else [path]
    return keys


# --- the bus notice ---------------------------------------------------------------------------


class ConfigChanged(BaseModel):
    """NATS core (`names.config_subject`), to every gateway and agent-runner: the overrides
    changed; read them again (the database holds them, the notice only says when)."""

    version: int
    updated_by: str = ""


# --- GET /api/config: the effective configuration, secrets masked -----------------------------


class ApiTokenView(_Wire):
    name: str
    token: str
    permissions: list[str]


class AuthConfig(_Wire):
    token: str
    password: str | None
    api_tokens: list[ApiTokenView]
    failures_per_minute: int


class LimitsConfig(_Wire):
    max_body_bytes: int
    request_timeout_s: float
    shutdown_timeout_s: float
    max_connections_per_client: int
    db_pool_size: int


class WebSocketConfig(_Wire):
    max_frame_bytes: int
    idle_timeout_s: float
    heartbeat_s: float


class GatewayConfig(_Wire):
    bind: str
    port: int
    auth: AuthConfig
    limits: LimitsConfig
    # Route class -> requests per minute per credential (0: no limit).
    rate_limits: dict[str, int]
    allowed_origins: list[str]
    websocket: WebSocketConfig


class LoggingConfig(_Wire):
    level: str


class ProviderView(_Wire):
    kind: ProviderKind
    base_url: str | None
    api_key: str | None
    models: list[str]
    max_retries: int
    timeout_s: float


class ModelsConfig(_Wire):
    default: str
    # Extra model ids advertised on /v1/models.
    advertised: list[str]
    # The memory_search embedding model, if any.
    embedding: str | None
    providers: dict[str, ProviderView]


class RunnerConfig(_Wire):
    """The agent-runner knobs in the settings every service shares."""

    # Private destinations web_fetch and the browser may reach anyway.
    net_allow: list[str]


class InfrastructureConfig(_Wire):
    namespace: str
    data_dir: str
    nats_url: str
    database_url: str
    redis_url: str


class ConfigMeta(_Wire):
    # Version of the stored overrides: 0 before the first PATCH, +1 on every change.
    version: int
    updated_at: datetime | None
    updated_by: str | None
    # The stored overrides (only patchable keys, never secrets).
    overrides: dict[str, Any]
    # Dotted keys PATCH may change (they take effect on every replica at once).
    patchable: list[str]
    # Dotted key -> the environment variable that sets it; changing it takes a restart.
    restart_required: dict[str, str]


class ConfigDocument(_Wire):
    gateway: GatewayConfig
    logging: LoggingConfig
    models: ModelsConfig
    runner: RunnerConfig
    infrastructure: InfrastructureConfig
    meta: ConfigMeta = Field(alias="_meta")
