"""One provider client per configured provider, reused across runs (pooled connections)."""

from __future__ import annotations

from clawbus_core.models import ModelRef

from clawbus_runner.providers.anthropic import AnthropicProvider
from clawbus_runner.providers.base import Provider
from clawbus_runner.providers.echo import EchoProvider
from clawbus_runner.providers.openai import OpenAIProvider


class Providers:
    def __init__(self) -> None:
        self._clients: dict[str, Provider] = {}

    def get(self, ref: ModelRef) -> Provider:
        client = self._clients.get(ref.provider)
        if client is None:
            client = self._build(ref)
            self._clients[ref.provider] = client
        return client

    @staticmethod
    def _build(ref: ModelRef) -> Provider:
        kind = ref.config.kind
        if kind == "echo":
            return EchoProvider()
        if kind == "openai":
            return OpenAIProvider(ref.provider, ref.config)
        return AnthropicProvider(ref.provider, ref.config)

    async def aclose(self) -> None:
        for client in self._clients.values():
            if isinstance(client, OpenAIProvider | AnthropicProvider):
                await client.aclose()
        self._clients.clear()
