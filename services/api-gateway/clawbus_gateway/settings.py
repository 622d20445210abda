"""api-gateway settings (env prefix CLAWBUS_)."""

from __future__ import annotations

import ipaddress
import secrets

from clawbus_core.secrets import PLACEHOLDERS, load_or_create_token
from clawbus_protocol.settings import ClawbusSettings
from pydantic import BaseModel, Field, SecretStr, model_validator


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ApiTokenConfig(BaseModel):
    name: str
    token: SecretStr
    permissions: list[str] = ["chat"]


class GatewaySettings(ClawbusSettings):
    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(default=18789, ge=0, le=65535)
    gateway_token: SecretStr | None = None
    gateway_max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    gateway_request_timeout_s: float = Field(default=300.0, gt=0)
    # On SIGTERM: stop accepting, give in-flight requests this long to finish.
    gateway_shutdown_timeout_s: float = Field(default=15.0, ge=0)
    # Identifies this replica's reply channel; unique per process.
    gateway_instance_id: str = Field(default_factory=lambda: secrets.token_hex(6))
    gateway_db_pool_size: int = Field(default=20, ge=2)

    # --- auth (issue 4) ---------------------------------------------------------------
    # Password auth (000): `Authorization: Basic`, `X-OpenClaw-Password`, WS `?password=`.
    gateway_password: SecretStr | None = None
    # API tokens from config, with permissions (002).
    gateway_api_tokens: list[ApiTokenConfig] = []
    # Failed authentication attempts allowed per client address per minute.
    gateway_auth_failures_per_minute: int = Field(default=20, ge=1)

    # --- limits (issue 4) -------------------------------------------------------------
    # Requests per minute per credential, by route class (token bucket in Redis).
    gateway_rate_limits: dict[str, int] = {"default": 100}
    gateway_max_connections_per_client: int = Field(default=64, ge=1)

    # --- WebSocket control channel (issue 4) -----------------------------------------
    # Origins a browser may open the WebSocket from ("*" for any); no Origin header
    # (non-browser clients) is always allowed.
    gateway_allowed_origins: list[str] = []
    gateway_ws_max_frame_bytes: int = Field(default=1024 * 1024, ge=1024)
    gateway_ws_idle_timeout_s: float = Field(default=300.0, gt=0)
    gateway_ws_heartbeat_s: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _check_token(self) -> GatewaySettings:
        token = self.gateway_token.get_secret_value() if self.gateway_token else None
        if token is not None and token.lower() in PLACEHOLDERS:
            raise ValueError("CLAWBUS_GATEWAY_TOKEN is a placeholder; set a real secret")
        if token is not None and len(token) < 16 and not _is_loopback(self.gateway_host):
            raise ValueError(
                "refusing to listen on a non-loopback address with a gateway token "
                "shorter than 16 characters"
            )
        return self

    def token(self) -> str:
        """The configured token, or the one generated and stored in the data dir."""
        if self.gateway_token is not None:
            return self.gateway_token.get_secret_value()
        return load_or_create_token(self.data_dir)

    @property
    def public_url(self) -> str:
        host = self.gateway_host
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        return f"http://{shown}:{self.gateway_port}"
