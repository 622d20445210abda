"""The settings base every service extends.

Sources, strongest first: constructor arguments, environment (`CLAWBUS_` prefix, `__` for
nesting, plus the providers' conventional `OPENAI_API_KEY` / `ANTHROPIC_API_KEY`), then a
TOML file (`CLAWBUS_CONFIG_FILE`, default `<data dir>/clawbus.toml` when it exists).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from clawbus_protocol.names import Names

ProviderKind = Literal["openai", "anthropic", "echo"]


class ProviderConfig(BaseModel):
    """A model provider. `openai` covers every OpenAI-compatible server (Ollama, vLLM...)."""

    kind: ProviderKind
    base_url: str | None = None
    api_key: SecretStr | None = None
    # Model names served; empty means "any name", checked by the provider itself.
    models: list[str] = Field(default_factory=list)
    max_retries: int = Field(default=2, ge=0, le=10)
    timeout_s: float = Field(default=300.0, gt=0)


def _config_file() -> Path:
    explicit = os.environ.get("CLAWBUS_CONFIG_FILE")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("CLAWBUS_DATA_DIR", ".clawbus")) / "clawbus.toml"


class ClawbusSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CLAWBUS_",
        env_nested_delimiter="__",
        extra="ignore",
        populate_by_name=True,
    )

    data_dir: Path = Path(".clawbus")
    nats_url: str | None = None
    database_url: str | None = None
    redis_url: str | None = None
    namespace: str = "clawbus"
    # Replicas of the runs stream on the JetStream cluster (1 on a single server).
    nats_stream_replicas: int = Field(default=1, ge=1, le=5)
    log_level: str = "INFO"
    # `json`: one JSON object per line (service, run, session and trace ids as fields);
    # `text`: one readable line (what `clawbus up` prints on a terminal).
    log_format: Literal["json", "text"] = "json"

    # Every service's operations listener: /metrics (Prometheus), /livez, /readyz.
    # Port 0 picks a free port; each instance registers where it listens in Redis (what
    # `clawbus status` reads). Containers set 0.0.0.0 and a fixed port (9100).
    ops_host: str = "127.0.0.1"
    ops_port: int = Field(default=0, ge=0, le=65535)

    # Models: `provider/model`. The offline `clawbus/echo` always exists.
    default_model: str = "clawbus/echo"
    # Network destinations agents may reach although they are loopback/private/link-local
    # (web_fetch, the browser): CIDRs, IPs or hostnames, each optionally with `:port`.
    # JSON list in env: CLAWBUS_NET_ALLOW='["10.0.0.0/8", "intranet.example:8080"]'.
    net_allow: list[str] = []
    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("CLAWBUS_OPENAI_API_KEY", "OPENAI_API_KEY")
    )
    openai_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("CLAWBUS_OPENAI_BASE_URL", "OPENAI_BASE_URL")
    )
    anthropic_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("CLAWBUS_ANTHROPIC_API_KEY", "ANTHROPIC_API_KEY"),
    )
    anthropic_base_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("CLAWBUS_ANTHROPIC_BASE_URL", "ANTHROPIC_BASE_URL"),
    )
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    # Extra model ids to advertise on /v1/models (any configured provider may serve more).
    models: list[str] = Field(default_factory=list)
    # The model memory_search embeds memory with, as `provider/model` of an OpenAI-compatible
    # provider (e.g. "openai/text-embedding-3-small"): search then ranks by keywords and
    # meaning together. Unset: keywords (Postgres full-text search) only.
    embedding_model: str | None = None
    # The Fernet key secrets at rest (channel credentials) are encrypted with; every service
    # of a deployment needs the same one. Unset: generated once into <data_dir>/secret.key.
    secret_key: SecretStr | None = None

    @field_validator("namespace")
    @classmethod
    def _valid_namespace(cls, value: str) -> str:
        Names(value)  # raises with a clear message
        return value

    @property
    def names(self) -> Names:
        return Names(self.namespace)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=_config_file())
        return (init_settings, env_settings, toml, file_secret_settings)
