"""The one schema: errors, names, events, settings, model catalog."""

from __future__ import annotations

import uuid

import pytest
from clawbus_core.models import ModelCatalog
from clawbus_protocol import (
    HTTP_STATUS,
    DeltaEvent,
    DoneEvent,
    ErrorCode,
    ErrorEvent,
    ModelNotFound,
    Names,
    RateLimited,
    is_terminal,
    parse_event,
)
from clawbus_protocol.errors import ErrorInfo
from clawbus_protocol.settings import ClawbusSettings, ProviderConfig


def test_every_error_code_has_an_http_status() -> None:
    assert set(HTTP_STATUS) == set(ErrorCode)


def test_error_envelope_carries_the_retry_fields() -> None:
    err = RateLimited("slow down", retry_after_ms=1500, param="x")
    body = err.info.envelope().model_dump()["error"]
    assert body == {
        "code": "rate_limited",
        "message": "slow down",
        "type": "rate_limit_error",
        "param": "x",
        "retryable": True,
        "retryAfterMs": 1500,
        "details": {"param": "x"},
    }
    assert err.info.http_status == 429


def test_events_round_trip_through_json() -> None:
    run_id = uuid.uuid4()
    for event in (
        DeltaEvent(run_id=run_id, seq=1, text="hi"),
        DoneEvent(run_id=run_id, seq=2, text="hi", model="clawbus/echo"),
        ErrorEvent(
            run_id=run_id, seq=3, error=ErrorInfo(code=ErrorCode.UPSTREAM_ERROR, message="x")
        ),
    ):
        parsed = parse_event(event.model_dump_json())
        assert parsed == event
    assert not is_terminal(DeltaEvent(run_id=run_id, seq=1, text=""))
    assert is_terminal(DoneEvent(run_id=run_id, seq=1, text="", model="m"))


def test_names_are_namespaced_and_validated() -> None:
    names = Names("t1")
    assert names.runs_stream == "T1_RUNS"
    assert names.runs_subject == "t1.runs.request"
    assert names.run_events_key(uuid.UUID(int=1)).startswith("t1:run:")
    with pytest.raises(ValueError, match="namespace"):
        Names("bad.name")


def _catalog(**kwargs: object) -> ModelCatalog:
    return ModelCatalog.from_settings(ClawbusSettings(**kwargs))  # type: ignore[arg-type]


def test_catalog_offline_default() -> None:
    catalog = _catalog()
    assert catalog.list() == ["clawbus/echo"]
    assert catalog.resolve("clawbus/echo").config.kind == "echo"
    assert catalog.resolve("echo").id == "clawbus/echo"  # a unique bare name


@pytest.mark.parametrize("model", ["clawbus/nope", "openai/gpt-4o", "gpt-4o", "x/", "/"])
def test_catalog_unknown_models_are_named(model: str) -> None:
    with pytest.raises(ModelNotFound) as err:
        _catalog().resolve(model)
    assert model in err.value.info.message
    assert err.value.info.http_status == 404


def test_catalog_providers_from_keys_and_config() -> None:
    catalog = _catalog(
        openai_api_key="sk-x",
        anthropic_api_key="sk-ant",
        providers={
            "ollama": ProviderConfig(kind="openai", base_url="http://h/v1", models=["llama3"])
        },
        default_model="anthropic/claude-sonnet-4-5",
    )
    assert catalog.resolve("openai/anything").config.kind == "openai"
    assert catalog.resolve("anthropic/claude-x").config.kind == "anthropic"
    assert catalog.resolve("ollama/llama3").config.base_url == "http://h/v1"
    with pytest.raises(ModelNotFound):
        catalog.resolve("ollama/mistral")
    assert "anthropic/claude-sonnet-4-5" in catalog.list()
    assert "ollama/llama3" in catalog.list()


def test_an_unknown_default_model_fails_at_start() -> None:
    with pytest.raises(ModelNotFound):
        _catalog(default_model="nowhere/model")


def test_settings_read_provider_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    monkeypatch.setenv("CLAWBUS_PROVIDERS__VLLM__KIND", "openai")
    monkeypatch.setenv("CLAWBUS_PROVIDERS__VLLM__BASE_URL", "http://127.0.0.1:8000/v1")
    settings = ClawbusSettings()
    assert settings.openai_api_key is not None
    assert settings.openai_api_key.get_secret_value() == "sk-env"
    assert settings.providers["vllm"].base_url == "http://127.0.0.1:8000/v1"


def test_gateway_refuses_placeholder_tokens() -> None:
    from clawbus_gateway.settings import GatewaySettings

    with pytest.raises(ValueError, match="placeholder"):
        GatewaySettings(gateway_token="changeme")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-loopback"):
        GatewaySettings(gateway_token="short", gateway_host="0.0.0.0")  # type: ignore[arg-type]
