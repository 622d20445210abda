"""Runtime configuration without infrastructure: RFC 7396 merge patches, masking, the
overrides model, the configuration document and why a patch key is refused."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from clawbus_core.config import Endpoints
from clawbus_core.models import ModelCatalog
from clawbus_core.runtime_config import (
    MASK,
    RootLogLevel,
    StoredConfig,
    mask_secrets,
    mask_url,
    merge_patch,
    prune,
)
from clawbus_gateway import config_document
from clawbus_gateway.ratelimit import ROUTE_CLASS_NAMES, RateLimits
from clawbus_gateway.settings import ApiTokenConfig, GatewaySettings
from clawbus_protocol.config import ConfigOverrides, RateLimitOverrides, patchable_keys
from clawbus_protocol.errors import InvalidRequest
from clawbus_protocol.settings import ProviderConfig
from pydantic import SecretStr, ValidationError

# --- merge patch ------------------------------------------------------------------------------

# RFC 7396, appendix A: (original, patch, result).
RFC_7396_EXAMPLES: list[tuple[Any, Any, Any]] = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("original", "patch", "result"), RFC_7396_EXAMPLES)
def test_merge_patch_follows_rfc_7396(original: Any, patch: Any, result: Any) -> None:
    before = json.dumps(original)
    assert merge_patch(original, patch) == result
    assert json.dumps(original) == before  # the target is not modified


def test_prune_drops_emptied_sections_only() -> None:
    assert prune({"a": {"bb": {}}, "b": 0, "c": [], "d": {"e": 1, "f": {}}}) == {
        "b": 0,
        "c": [],
        "d": {"e": 1},
    }


# --- masking ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://app:s3cret-pw@db:5432/clawbus", f"postgresql://app:{MASK}@db:5432/clawbus"),
        ("redis://:redispass@cache:6379/0", f"redis://:{MASK}@cache:6379/0"),
        ("nats://natstoken@bus:4222", f"nats://{MASK}@bus:4222"),
        (
            "postgresql://db/clawbus?user=app&password=qs-secret&sslmode=require",
            f"postgresql://db/clawbus?user=app&password={MASK}&sslmode=require",
        ),
        ("https://api.example/v1?api_key=abc123", f"https://api.example/v1?api_key={MASK}"),
        ("http://127.0.0.1:4222", "http://127.0.0.1:4222"),
        ("postgresql://db/clawbus?sslmode=require", "postgresql://db/clawbus?sslmode=require"),
        ("not a url", "not a url"),
        ("clawbus/echo", "clawbus/echo"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_mask_secrets_masks_secret_named_strings_and_url_credentials() -> None:
    doc = {
        "auth": {
            "token": "gw-token-value",
            "password": "hunter2-long",
            "apiTokens": [{"name": "ops", "token": "ops-token", "permissions": ["config"]}],
        },
        "providers": {"x": {"apiKey": "sk-abcdef", "baseUrl": "https://u:pw-in-url@h/v1"}},
        "clientSecret": "cs-value",
        "apiKeys": ["k-one", "k-two"],
        "maxTokens": 4096,
        "tokenizer": None,
        "emptyPassword": "",
        "level": "debug",
    }
    masked = mask_secrets(doc)
    assert masked == {
        "auth": {
            "token": MASK,
            "password": MASK,
            "apiTokens": [{"name": "ops", "token": MASK, "permissions": ["config"]}],
        },
        "providers": {"x": {"apiKey": MASK, "baseUrl": f"https://u:{MASK}@h/v1"}},
        "clientSecret": MASK,
        "apiKeys": [MASK, MASK],
        "maxTokens": 4096,
        "tokenizer": None,
        "emptyPassword": "",
        "level": "debug",
    }
    text = json.dumps(masked)
    for secret in ("gw-token", "hunter2", "ops-token", "sk-ab", "pw-in-url", "cs-v", "k-one"):
        assert secret not in text


# --- the overrides model ----------------------------------------------------------------------


def test_patchable_keys_are_the_log_level_and_the_rate_limits() -> None:
    assert patchable_keys() == [
        "logging.level",
        "gateway.rateLimits.default",
        "gateway.rateLimits.chat",
        "gateway.rateLimits.tools",
        "gateway.rateLimits.sessions",
        "gateway.rateLimits.config",
    ]
    # One field per route class the gateway limits.
    assert set(RateLimitOverrides.model_fields) == ROUTE_CLASS_NAMES


def test_overrides_as_a_merge_patch() -> None:
    patch = ConfigOverrides.model_validate_json(
        '{"logging": {"level": " DEBUG "}, "gateway": {"rateLimits": {"chat": null}}}'
    )
    assert patch.changes() == {
        "logging": {"level": "debug"},
        "gateway": {"rateLimits": {"chat": None}},
    }
    assert ConfigOverrides.model_validate_json('{"logging": null}').changes() == {"logging": None}
    assert ConfigOverrides.model_validate_json("{}").changes() == {}
    stored = StoredConfig(ConfigOverrides.model_validate({"logging": {"level": "error"}}), 3)
    assert stored.doc == {"logging": {"level": "error"}}
    assert StoredConfig().doc == {}


@pytest.mark.parametrize(
    "body",
    [
        '{"logging": {"level": "verbose"}}',
        '{"logging": {"level": 10}}',
        '{"logging": {"colour": "red"}}',
        '{"gateway": {"rateLimits": {"chat": -1}}}',
        '{"gateway": {"rateLimits": {"chat": "many"}}}',
        '{"gateway": {"rate_limits": {"chat": 1}}}',  # wire names only
        '{"gateway": {"port": 1}}',
        "[]",
        "null",
    ],
)
def test_overrides_refuse_bad_patches(body: str) -> None:
    with pytest.raises(ValidationError):
        ConfigOverrides.model_validate_json(body)


# --- refusals ---------------------------------------------------------------------------------


def refusal(body: str) -> InvalidRequest:
    with pytest.raises(ValidationError) as caught:
        ConfigOverrides.model_validate_json(body)
    return config_document.invalid_patch(caught.value)


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        ('{"gateway": {"port": 8080}}', "gateway.port", ["CLAWBUS_GATEWAY_PORT", "restart"]),
        ('{"models": {"default": "openai/gpt-4o"}}', "models.default", ["CLAWBUS_DEFAULT_MODEL"]),
        (
            '{"models": {"providers": {"openai": {"apiKey": "sk-new-secret"}}}}',
            "models.providers.openai.apiKey",
            ["CLAWBUS_PROVIDERS__OPENAI__API_KEY", "restart"],
        ),
        ('{"gateway": {"auth": {"token": "x"}}}', "gateway.auth.token", ["CLAWBUS_GATEWAY_TOKEN"]),
        ('{"infrastructure": 1}', "infrastructure", ["restart"]),
        ('{"colour": "red"}', "colour", ["unknown configuration key", "logging.level"]),
        ('{"models": {"nope": 1}}', "models.nope", ["unknown configuration key"]),
        ('{"logging": {"level": "verbose"}}', "logging.level", ["'debug'", "'error'"]),
        ('{"logging": "debug"}', "logging", ["must be a JSON object"]),
        ('{"gateway": {"rateLimits": {"chat": -1}}}', "gateway.rateLimits.chat", ["0"]),
    ],
)
def test_refusals_name_the_key(body: str, param: str, says: list[str]) -> None:
    error = refusal(body)
    assert error.info.details["param"] == param
    assert param in error.info.message
    for words in says:
        assert words in error.info.message
    assert "sk-new-secret" not in json.dumps(error.info.model_dump(mode="json"))


@pytest.mark.parametrize("body", ["[]", '"debug"', "null", "1", "true"])
def test_a_body_that_is_no_object_is_refused(body: str) -> None:
    error = refusal(body)
    assert "must be a JSON object" in error.info.message
    assert error.info.details["param"] is None


def test_invalid_json_is_refused() -> None:
    assert refusal('{"logging":').info.message == "request body is not valid JSON"
    assert refusal("[" * 10_000).info.message == "request body is not valid JSON"


# --- the document -----------------------------------------------------------------------------

SECRETS = {  # distinct random-looking values, so that not even a prefix may show
    "token": "Qx7tK2gw9LmN4pR8sT1v",
    "password": "Hb3nW8yZ1cVd5fJ0",
    "api_token": "Pm4kS9qL2wXe7rT3",
    "openai": "sk-Ua6dF1gH8jK3lZ5x",
    "provider": "sk-Yc2vB7nM4qW9eR1t",
    "url_password": "Jr8uI3oP6aS1dF4g",
    "db_password": "Kz5xC0vB3nM8qW2e",
    "redis_password": "Lw9eR4tY7uI2oP5a",
    "nats_token": "Nf1gH6jK9lZ3xC8v",
}


def settings_with_secrets() -> GatewaySettings:
    return GatewaySettings(
        gateway_token=SecretStr(SECRETS["token"]),
        gateway_password=SecretStr(SECRETS["password"]),
        gateway_api_tokens=[
            ApiTokenConfig(
                name="ops", token=SecretStr(SECRETS["api_token"]), permissions=["config"]
            )
        ],
        openai_api_key=SecretStr(SECRETS["openai"]),
        providers={
            "local": ProviderConfig(
                kind="openai",
                api_key=SecretStr(SECRETS["provider"]),
                base_url=f"http://user:{SECRETS['url_password']}@127.0.0.1:11434/v1",
            )
        },
        gateway_rate_limits={"chat": 7},
        log_level="WARNING",
    )


def document(settings: GatewaySettings, stored: StoredConfig | None = None) -> dict[str, Any]:
    endpoints = Endpoints(
        nats_url=f"nats://{SECRETS['nats_token']}@127.0.0.1:4222",
        database_url=f"postgresql://clawbus:{SECRETS['db_password']}@127.0.0.1:5432/clawbus",
        redis_url=f"redis://:{SECRETS['redis_password']}@127.0.0.1:6379/0",
    )
    return config_document.build(
        settings,
        stored=stored or StoredConfig(),
        catalog=ModelCatalog.from_settings(settings),
        endpoints=endpoints,
        limits=RateLimits(settings),
    )


def leaves(doc: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in doc.items():
        if isinstance(value, dict) and value:
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def test_the_document_masks_every_secret() -> None:
    body = document(settings_with_secrets())
    text = json.dumps(body)
    for secret in SECRETS.values():
        assert secret[:5] not in text  # not even a prefix
    auth = body["gateway"]["auth"]
    assert auth["token"] == MASK
    assert auth["password"] == MASK
    assert auth["apiTokens"] == [{"name": "ops", "token": MASK, "permissions": ["config"]}]
    providers = body["models"]["providers"]
    assert providers["openai"]["apiKey"] == MASK
    assert providers["local"]["apiKey"] == MASK
    assert providers["local"]["baseUrl"] == f"http://user:{MASK}@127.0.0.1:11434/v1"
    assert providers["clawbus"]["apiKey"] is None  # no secret: nothing to mask
    infra = body["infrastructure"]
    assert infra["databaseUrl"] == f"postgresql://clawbus:{MASK}@127.0.0.1:5432/clawbus"
    assert infra["redisUrl"] == f"redis://:{MASK}@127.0.0.1:6379/0"
    assert infra["natsUrl"] == f"nats://{MASK}@127.0.0.1:4222"


def test_the_document_shows_settings_and_overrides() -> None:
    settings = settings_with_secrets()
    body = document(settings)
    assert body["logging"] == {"level": "warning"}
    assert body["gateway"]["rateLimits"] == {
        "chat": 7,
        "config": 100,
        "default": 100,
        "sessions": 1000,
        "tools": 50,
    }
    assert body["gateway"]["bind"] == "127.0.0.1"
    assert body["gateway"]["port"] == settings.gateway_port
    assert body["models"]["default"] == "clawbus/echo"
    assert body["_meta"]["version"] == 0
    assert body["_meta"]["overrides"] == {}
    assert body["_meta"]["patchable"] == patchable_keys()
    assert body["_meta"]["restartRequired"]["gateway.port"] == "CLAWBUS_GATEWAY_PORT"
    assert body["_meta"]["restartRequired"]["models.default"] == "CLAWBUS_DEFAULT_MODEL"
    assert "logging.level" not in body["_meta"]["restartRequired"]

    stored = StoredConfig(ConfigOverrides.model_validate({"logging": {"level": "debug"}}), 4)
    body = document(settings, stored)
    assert body["logging"] == {"level": "debug"}
    assert body["_meta"]["version"] == 4
    assert body["_meta"]["overrides"] == {"logging": {"level": "debug"}}


def test_every_key_of_the_document_is_patchable_or_names_its_setting() -> None:
    body = document(settings_with_secrets())
    meta = body.pop("_meta")
    readonly = meta["restartRequired"]
    for leaf in leaves(body):
        patchable = leaf in meta["patchable"]
        under_setting = any(leaf == k or leaf.startswith(f"{k}.") for k in readonly)
        assert patchable != under_setting, leaf
    for setting in config_document.READ_ONLY.values():
        assert setting in GatewaySettings.model_fields
    assert not set(meta["patchable"]) & set(readonly)


# --- applying the log level -------------------------------------------------------------------


@pytest.fixture
def root_level() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    saved = root.level
    root.setLevel(logging.WARNING)
    try:
        yield root
    finally:
        root.setLevel(saved)


def test_root_log_level_applies_and_restores(root_level: logging.Logger) -> None:
    apply = RootLogLevel()
    apply(ConfigOverrides())
    assert root_level.level == logging.WARNING
    apply(ConfigOverrides.model_validate({"logging": {"level": "debug"}}))
    assert root_level.level == logging.DEBUG
    apply(ConfigOverrides.model_validate({"logging": {"level": "error"}}))
    assert root_level.level == logging.ERROR
    apply(ConfigOverrides())
    assert root_level.level == logging.WARNING
    root_level.setLevel(logging.INFO)  # someone else's level: left alone without an override
    apply(ConfigOverrides())
    assert root_level.level == logging.INFO
