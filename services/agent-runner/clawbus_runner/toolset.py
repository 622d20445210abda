"""The runner's built-in tools, registered once per process."""

from __future__ import annotations

from dataclasses import dataclass

from clawbus_core.netguard import NetPolicy

from clawbus_runner.embeddings import Embedder
from clawbus_runner.settings import RunnerSettings
from clawbus_runner.skills import SkillTool
from clawbus_runner.tools import ToolRegistry
from clawbus_runner.tools.browser import browser_tools
from clawbus_runner.tools.cron import CronTool
from clawbus_runner.tools.memory import memory_tools
from clawbus_runner.tools.web import WebFetchTool
from clawbus_runner.tools.workspace import workspace_tools


@dataclass
class Toolset:
    registry: ToolRegistry
    web: WebFetchTool
    embedder: Embedder | None = None

    async def aclose(self) -> None:
        await self.web.aclose()
        if self.embedder is not None:
            await self.embedder.aclose()


def build_tools(settings: RunnerSettings) -> Toolset:
    embedder = Embedder.from_settings(settings)  # first: a bad embedding_model fails here
    web = WebFetchTool(NetPolicy.from_entries(settings.net_allow))
    # workspace_tools() includes keyword-only memory tools: swap in ones given the embedder.
    memory = memory_tools(embedder)
    replaced = {tool.spec.name for tool in memory}
    files = [tool for tool in workspace_tools() if tool.spec.name not in replaced]
    registry = ToolRegistry([*files, *memory, web, SkillTool(), *browser_tools()])
    registry.register(CronTool())
    return Toolset(registry=registry, web=web, embedder=embedder)
