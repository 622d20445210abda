"""Traces leave the processes by OTLP when configured: a real gateway and a real agent-runner,
each its own OS process, export to a fake collector that speaks OTLP/HTTP (protobuf), and one
chat request is one trace across both."""

from __future__ import annotations

import secrets
from pathlib import Path

import aiohttp
import openai
import pytest
from clawbus_core.config import Endpoints
from clawbus_fakes.models import FakeModelServer
from clawbus_fakes.otlp import FakeCollector, ReceivedSpan

from tests.system import free_port, processes, settings_env, wait_for

SERVER, CONSUMER = 2, 5  # span kinds in the OTLP protobuf


async def test_one_request_is_one_trace_across_gateway_and_runner_processes(
    endpoints: Endpoints, namespace: str, fake_models: FakeModelServer, tmp_path: Path
) -> None:
    token = secrets.token_urlsafe(24)
    port = free_port()
    async with FakeCollector() as collector:
        env = settings_env(endpoints, namespace, fake_models, tmp_path / "data", token) | {
            "CLAWBUS_GATEWAY_PORT": str(port),
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
            "OTEL_BSP_SCHEDULE_DELAY": "100",  # export within 0.1 s, not the default 5 s
        }
        url = f"http://127.0.0.1:{port}"
        with processes() as spawn:
            gateway = spawn("gateway", ["gateway"], env, tmp_path / "gateway.log")
            runner = spawn("runner", ["agent-runner"], env, tmp_path / "runner.log")

            async def healthy() -> bool:
                try:
                    async with aiohttp.ClientSession() as http, http.get(f"{url}/health") as r:
                        return r.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_for(healthy, timeout_s=60, interval_s=0.2)
            client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=token, max_retries=0)
            reply = await client.chat.completions.create(
                model="clawbus/echo", messages=[{"role": "user", "content": "trace me"}]
            )
            assert reply.choices[0].message.content == "You said: trace me"

            def request_span() -> ReceivedSpan | None:
                return next(
                    (
                        s
                        for s in collector.spans
                        if s.service == "api-gateway" and s.name == "POST /v1/chat/completions"
                    ),
                    None,
                )

            root = await wait_for(request_span, timeout_s=20)
            assert root.kind == SERVER and root.parent_span_id == ""

            def run_span() -> ReceivedSpan | None:
                return next(
                    (
                        s
                        for s in collector.trace(root.trace_id)
                        if s.service == "agent-runner" and s.name == "run"
                    ),
                    None,
                )

            run = await wait_for(run_span, timeout_s=20)
            # The runner's span continues the gateway's trace: its parent is a gateway span.
            gateway_spans = {
                s.span_id for s in collector.trace(root.trace_id) if s.service == "api-gateway"
            }
            assert run.parent_span_id in gateway_spans
            assert run.attributes["clawbus.session_key"].startswith("agent:main:")
            for process in (gateway, runner):
                assert process.stop() == 0, (tmp_path / f"{process.name}.log").read_text()


pytestmark = pytest.mark.timeout(120)
