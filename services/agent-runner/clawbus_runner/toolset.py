"""The runner's built-in tools, registered once per process."""

from __future__ import annotations

from dataclasses import dataclass

from clawbus_core.netguard import NetPolicy

from clawbus_runner.settings import RunnerSettings
from clawbus_runner.skills import SkillTool
from clawbus_runner.tools import ToolRegistry
from clawbus_runner.tools.web import WebFetchTool
from clawbus_runner.tools.workspace import workspace_tools


@dataclass
class Toolset:
    registry: ToolRegistry
    web: WebFetchTool

    async def aclose(self) -> None:
        await self.web.aclose()


def build_tools(settings: RunnerSettings) -> Toolset:
    web = WebFetchTool(NetPolicy.from_entries(settings.net_allow))
    registry = ToolRegistry([*workspace_tools(), web, SkillTool()])
    return Toolset(registry=registry, web=web)
