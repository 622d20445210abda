"""agent-runner: executes runs from the bus."""

from clawbus_runner.settings import RunnerSettings
from clawbus_runner.worker import AgentRunner

__all__ = ["AgentRunner", "RunnerSettings"]
