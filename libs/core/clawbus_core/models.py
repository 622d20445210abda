"""The model catalog: which `provider/model` ids exist, from settings, shared by all services.

Built in: `clawbus/echo` (offline, always). `openai/*` when an OpenAI key or an
OpenAI-compatible base URL is set, `anthropic/*` when an Anthropic key is set, and any
provider declared under `providers` in the config file or env.
"""

from __future__ import annotations

from dataclasses import dataclass

from clawbus_protocol.errors import ModelNotFound
from clawbus_protocol.settings import ClawbusSettings, ProviderConfig

ECHO_PROVIDER = "clawbus"
ECHO_MODELS = ("echo",)


@dataclass(frozen=True)
class ModelRef:
    provider: str
    name: str
    config: ProviderConfig

    @property
    def id(self) -> str:
        return f"{self.provider}/{self.name}"


class ModelCatalog:
    def __init__(self, providers: dict[str, ProviderConfig], advertised: list[str]) -> None:
        self.providers = providers
        self._advertised = advertised

    @classmethod
    def from_settings(cls, settings: ClawbusSettings) -> ModelCatalog:
        providers: dict[str, ProviderConfig] = {
            ECHO_PROVIDER: ProviderConfig(kind="echo", models=list(ECHO_MODELS))
        }
        if settings.openai_api_key or settings.openai_base_url:
            providers["openai"] = ProviderConfig(
                kind="openai", api_key=settings.openai_api_key, base_url=settings.openai_base_url
            )
        if settings.anthropic_api_key:
            providers["anthropic"] = ProviderConfig(
                kind="anthropic",
                api_key=settings.anthropic_api_key,
                base_url=settings.anthropic_base_url,
            )
        providers.update(settings.providers)
        advertised = [settings.default_model, *settings.models]
        catalog = cls(providers, advertised)
        catalog.resolve(settings.default_model)  # fail at start, not on the first request
        return catalog

    def resolve(self, model_id: str) -> ModelRef:
        if "/" in model_id:
            return self._resolve_qualified(model_id)
        # A bare name ("gpt-4o-mini") is accepted when exactly one listed model has it.
        candidates = [m for m in self.list() if m.split("/", 1)[1] == model_id]
        if len(candidates) == 1:
            return self._resolve_qualified(candidates[0])
        raise ModelNotFound(
            f"model {model_id!r} not found: name models as provider/model "
            f"(known: {', '.join(self.list())})",
            param="model",
            model=model_id,
        )

    def _resolve_qualified(self, model_id: str) -> ModelRef:
        provider, _, name = model_id.partition("/")
        if not name:
            raise ModelNotFound(f"model {model_id!r} not found", param="model", model=model_id)
        config = self.providers.get(provider)
        if config is None:
            raise ModelNotFound(
                f"model {model_id!r} not found: provider {provider!r} is not configured "
                f"(configured: {', '.join(sorted(self.providers))})",
                param="model",
                model=model_id,
            )
        if config.models and name not in config.models:
            raise ModelNotFound(
                f"model {model_id!r} not found: provider {provider!r} serves "
                f"{', '.join(config.models)}",
                param="model",
                model=model_id,
            )
        return ModelRef(provider=provider, name=name, config=config)

    def list(self) -> list[str]:
        ids: dict[str, None] = dict.fromkeys(self._advertised)
        for provider, config in self.providers.items():
            ids.update(dict.fromkeys(f"{provider}/{m}" for m in config.models))
        return [m for m in ids if "/" in m and self._known(m)]

    def _known(self, model_id: str) -> bool:
        try:
            self._resolve_qualified(model_id)
        except ModelNotFound:
            return False
        return True
