"""The agent-runner's observability: one trace from the client's request through the gateway
and the bus into the run, its model calls and its tools (spans and log records alike); its
/metrics moving as runs complete, fail and abort; its queue gauges and /readyz.

Spans are read from an in-memory exporter on this process's tracer provider, so the gateway
and runner run in the test's event loop for those; the /metrics test runs a real
`clawbus agent-runner` process.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import asyncpg
import openai
import pytest
import redis.asyncio as aioredis
from clawbus_core.config import Endpoints
from clawbus_core.logs import ContextFilter
from clawbus_fakes.models import FakeModelServer, Reply, ToolCall
from clawbus_protocol.names import Names
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind
from prometheus_client import REGISTRY

from tests.metrics_support import Scrape, ops_listener, readyz, scrape
from tests.system import System, processes, start_system, wait_for
from tests.tracing_support import memory_exporter

FINISHED = "clawbus_runs_finished_total"
ACTIVE = "clawbus_runs_active"


class Captured(logging.Handler):
    """Every record, stamped with the run and trace fields as the services' handlers are."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.addFilter(ContextFilter())
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def captured() -> Iterator[Captured]:
    handler = Captured()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _hex(value: int, width: int) -> str:
    return format(value, f"0{width}x")


def _trace_id(span: ReadableSpan) -> str:
    assert span.context is not None
    return _hex(span.context.trace_id, 32)


async def test_a_requests_trace_id_is_the_same_in_gateway_and_runner_spans_and_logs(
    system: System, agent: str, captured: Captured
) -> None:
    exporter = memory_exporter()
    exporter.clear()
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    system.fake.script(
        agent,
        Reply(tool_calls=[ToolCall("write", {"path": "traced.md", "content": "traced"})]),
        Reply(text="written"),
    )
    raw = await system.openai().chat.completions.with_raw_response.create(
        model=f"agent:{agent}",
        messages=[{"role": "user", "content": "write it down"}],
        extra_headers={"traceparent": f"00-{trace_id}-{parent_id}-01"},
    )
    assert raw.parse().choices[0].message.content == "written"
    run_id = raw.headers["x-clawbus-run-id"]

    def run_spans() -> list[ReadableSpan]:
        return [
            s
            for s in exporter.get_finished_spans()
            if s.name == "run" and s.attributes and s.attributes.get("clawbus.run_id") == run_id
        ]

    # The run span ends just after the client has its answer.
    (run,) = await wait_for(run_spans)
    assert run.attributes is not None and run.context is not None
    assert _trace_id(run) == trace_id
    assert run.kind is SpanKind.CONSUMER
    assert run.attributes["clawbus.agent"] == agent
    assert run.attributes["clawbus.attempt"] == 1
    assert str(run.attributes["clawbus.session_key"]).startswith(f"agent:{agent}:")
    assert run.attributes["clawbus.run.outcome"] == "completed"

    spans = exporter.get_finished_spans()
    children = [
        s for s in spans if s.parent is not None and s.parent.span_id == run.context.span_id
    ]
    chats = [s for s in children if s.name == f"chat {agent}"]
    assert len(chats) == 2, [s.name for s in children]
    for chat in chats:
        assert chat.attributes is not None
        assert _trace_id(chat) == trace_id
        assert chat.kind is SpanKind.CLIENT
        assert chat.attributes["gen_ai.system"] == "openai"
        assert chat.attributes["gen_ai.request.model"] == agent
        assert int(str(chat.attributes["gen_ai.usage.input_tokens"])) > 0
        assert int(str(chat.attributes["gen_ai.usage.output_tokens"])) > 0
    (tool,) = [s for s in children if s.name == "tool write"]
    assert tool.attributes is not None
    assert tool.attributes["clawbus.tool.name"] == "write"
    assert tool.attributes["clawbus.tool.outcome"] == "ok"
    # The gateway's own span for the request, where it records one, is in the same trace.
    gateway = [
        s
        for s in spans
        if s.kind is SpanKind.SERVER
        and s.attributes
        and s.attributes.get("url.path") == "/v1/chat/completions"
    ]
    assert all(_trace_id(s) == trace_id for s in gateway)

    # Log records: the gateway's (publishing the run) and the runner's (taking the message,
    # running it) carry the request's trace id; the runner's carry the run's ids too.
    published = [
        r
        for r in captured.records
        if r.name == "clawbus_core.runservice" and run_id in r.getMessage()
    ]
    assert published, "the gateway logged nothing for the run"
    assert all(getattr(r, "trace_id", None) == trace_id for r in published)
    runner = [r for r in captured.records if r.name.startswith("clawbus_runner.")]
    mine = [r for r in runner if getattr(r, "run_id", None) == run_id]
    assert {r.name for r in mine} >= {"clawbus_runner.worker", "clawbus_runner.lanes"}
    for record in mine:
        assert getattr(record, "trace_id", None) == trace_id, record.getMessage()
        assert getattr(record, "agent", None) == agent
        assert getattr(record, "session_key", None) == run.attributes["clawbus.session_key"]
    inside = [r for r in mine if getattr(r, "span_id", None) == _hex(run.context.span_id, 16)]
    assert inside, "no runner record was logged inside the run span"


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def _settled(active_before: float) -> None:
    """Wait until this process's runners are back to the runs they had (the counters move
    just before the active gauge goes down)."""
    await wait_for(lambda: _sample(ACTIVE) == active_before)


async def test_a_run_queued_behind_another_keeps_its_own_trace(
    system: System, agent: str, pool: asyncpg.Pool
) -> None:
    """The second run of a busy session is executed by the lane holder after the first, from
    the database (its own message was handed back as busy): its `run` span still joins the
    trace of the request that made it (the stored trace context), linked to the delivery
    that ran it."""
    exporter = memory_exporter()
    exporter.clear()
    first_trace, second_trace = secrets.token_hex(16), secrets.token_hex(16)
    system.fake.script(agent, Reply(text="first", delay_s=1.5), Reply(text="second"))
    client = system.openai()
    session = {"x-openclaw-session-key": f"queued-{secrets.token_hex(4)}"}

    async def ask(text: str, trace_id: str) -> str:
        raw = await client.chat.completions.with_raw_response.create(
            model=f"agent:{agent}",
            messages=[{"role": "user", "content": text}],
            extra_headers=session | {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"},
        )
        return raw.headers["x-clawbus-run-id"]

    first = asyncio.create_task(ask("one", first_trace))
    await wait_for(lambda: system.fake.requests_for(agent))  # the first run is running
    second_id = await ask("two", second_trace)
    await first
    stored = await pool.fetchval(
        "SELECT trace_context->>'traceparent' FROM runs WHERE id = $1::uuid", second_id
    )
    assert stored.split("-")[1] == second_trace

    def run_span() -> list[ReadableSpan]:
        return [
            s
            for s in exporter.get_finished_spans()
            if s.name == "run" and s.attributes and s.attributes.get("clawbus.run_id") == second_id
        ]

    (second,) = await wait_for(run_span)
    assert _trace_id(second) == second_trace
    # Run by the lane holder while it handled the first run's delivery: linked to that trace.
    assert [_hex(link.context.trace_id, 32) for link in second.links] == [first_trace]


async def test_a_failed_run_counts_as_failed(system: System, agent: str) -> None:
    before = {status: _sample(FINISHED, status=status) for status in ("completed", "failed")}
    durations = _sample("clawbus_run_duration_seconds_count", status="failed")
    errors = _sample(
        "clawbus_model_request_duration_seconds_count",
        provider="openai",
        model=agent,
        outcome="error",
    )
    active = _sample(ACTIVE)
    system.fake.script(agent, Reply(status=400))
    with pytest.raises(openai.APIStatusError):
        await system.openai().chat.completions.create(
            model=f"agent:{agent}", messages=[{"role": "user", "content": "fail please"}]
        )
    await wait_for(lambda: _sample(FINISHED, status="failed") == before["failed"] + 1)
    await _settled(active)
    assert _sample(FINISHED, status="failed") == before["failed"] + 1
    assert _sample(FINISHED, status="completed") == before["completed"]
    assert _sample("clawbus_run_duration_seconds_count", status="failed") == durations + 1
    model_errors = _sample(
        "clawbus_model_request_duration_seconds_count",
        provider="openai",
        model=agent,
        outcome="error",
    )
    assert model_errors == errors + 1


async def _first_delta(response: aiohttp.ClientResponse) -> None:
    async for line in response.content:
        if b'"content":"' in line and b'"content":""' not in line:
            return


async def test_an_aborted_run_counts_as_aborted(system: System, agent: str) -> None:
    before = {s: _sample(FINISHED, status=s) for s in ("completed", "failed", "aborted")}
    active = _sample(ACTIVE)
    words = " ".join(f"w{i}" for i in range(200))
    system.fake.script(agent, Reply(text=words, chunk_delay_s=0.05))
    headers = {"Authorization": f"Bearer {system.token}"}
    body = {
        "model": f"agent:{agent}",
        "messages": [{"role": "user", "content": "talk"}],
        "stream": True,
    }
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{system.url}/v1/chat/completions", json=body, headers=headers
        ) as response:
            run_id = response.headers["x-clawbus-run-id"]
            await _first_delta(response)
            assert _sample(ACTIVE) == active + 1  # it is running now
            async with http.post(f"{system.url}/v1/runs/{run_id}/abort", headers=headers) as r:
                assert r.status == 200
            await response.read()
    await wait_for(lambda: _sample(FINISHED, status="aborted") == before["aborted"] + 1)
    await _settled(active)
    assert _sample(FINISHED, status="aborted") == before["aborted"] + 1
    assert _sample(FINISHED, status="completed") == before["completed"]
    assert _sample(FINISHED, status="failed") == before["failed"]


async def test_tool_calls_count_by_outcome_in_runs_and_over_http(
    system: System, agent: str
) -> None:
    calls = "clawbus_tool_calls_total"
    durations = "clawbus_tool_duration_seconds_count"
    outcomes = [("list", "ok"), ("read", "error"), ("write", "denied"), ("unknown", "denied")]
    before = {
        (tool, outcome): _sample(calls, tool=tool, outcome=outcome) for tool, outcome in outcomes
    }
    timed = {tool: _sample(durations, tool=tool) for tool in ("list", "read", "write")}

    # In a run: a name no tool has is refused to the model, and counted under `unknown`.
    system.fake.script(
        agent, Reply(tool_calls=[ToolCall("rm_rf", {"path": "/"})]), Reply(text="could not")
    )
    completion = await system.openai().chat.completions.create(
        model=f"agent:{agent}", messages=[{"role": "user", "content": "try"}]
    )
    assert completion.choices[0].message.content == "could not"
    # Over HTTP (the runner's tool service): one that runs, one that fails, one refused.
    headers = {"Authorization": f"Bearer {system.token}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        for tool, params, statuses in (
            ("list", {}, {200}),
            ("read", {"path": f"missing-{system.namespace}.md"}, {400, 404}),
            ("write", {"path": "nope.md", "content": "x"}, {403}),
        ):
            url = f"{system.url}/api/tools/{tool}/invoke"
            async with http.post(url, json={"params": params}) as r:
                assert r.status in statuses, await r.text()

    after = {
        (tool, outcome): _sample(calls, tool=tool, outcome=outcome) for tool, outcome in outcomes
    }
    assert {key: after[key] - before[key] for key in outcomes} == dict.fromkeys(outcomes, 1.0)
    # Refused calls never ran: only the others are timed.
    assert _sample(durations, tool="list") == timed["list"] + 1
    assert _sample(durations, tool="read") == timed["read"] + 1
    assert _sample(durations, tool="write") == timed["write"]


def _has(metrics: Scrape, name: str, **labels: str) -> bool:
    return any(s.name == name and s.labels == labels for s in metrics.samples)


async def test_a_runner_process_metrics_move_with_a_tool_using_run(
    endpoints: Endpoints,
    namespace: str,
    fake_models: FakeModelServer,
    tmp_path: Path,
    agent: str,
) -> None:
    fake_models.script(
        agent,
        Reply(tool_calls=[ToolCall("write", {"path": "m.md", "content": "measured"})]),
        Reply(text="measured it"),
    )
    names = Names(namespace)
    queue = {"stream": names.runs_stream, "consumer": names.runners_consumer}
    redis = aioredis.Redis.from_url(endpoints.redis_url)
    try:
        async with start_system(endpoints, namespace, fake_models, tmp_path, runners=0) as system:
            with processes() as spawn:
                env = system.env | {
                    "CLAWBUS_RUNNER_ID": f"{namespace}-metrics",
                    "CLAWBUS_RUNNER_QUEUE_POLL_S": "0.5",
                }
                runner = spawn("agent-runner", ["agent-runner"], env, tmp_path / "runner.log")
                ops = await ops_listener(redis, namespace, "agent-runner", runner.pid)
                assert await readyz(ops.url) == 200

                async def watched() -> Scrape | None:
                    found = await scrape(ops.url)
                    return found if _has(found, "clawbus_bus_consumer_pending", **queue) else None

                before = await wait_for(watched)
                answer = await system.openai(timeout=60).chat.completions.create(
                    model=f"agent:{agent}", messages=[{"role": "user", "content": "measure"}]
                )
                assert answer.choices[0].message.content == "measured it"

                async def finished() -> Scrape | None:
                    found = await scrape(ops.url)
                    done = found.value(FINISHED, status="completed")
                    return found if done == before.value(FINISHED, status="completed") + 1 else None

                after = await wait_for(finished)
                assert runner.stop() == 0, (tmp_path / "runner.log").read_text()
    finally:
        await redis.aclose()

    def delta(name: str, **labels: str) -> float:
        return float(after.value(name, **labels) - before.value(name, **labels))

    model = {"provider": "openai", "model": agent}
    assert delta(FINISHED, status="failed") == 0
    assert delta("clawbus_run_duration_seconds_count", status="completed") == 1
    assert delta("clawbus_model_request_duration_seconds_count", **model, outcome="ok") == 2
    assert delta("clawbus_model_request_duration_seconds_count", **model, outcome="error") == 0
    assert delta("clawbus_model_time_to_first_token_seconds_count", **model) == 2
    assert delta("clawbus_model_tokens_total", **model, kind="input") > 0
    assert delta("clawbus_model_tokens_total", **model, kind="output") > 0
    assert delta("clawbus_tool_calls_total", tool="write", outcome="ok") == 1
    assert delta("clawbus_tool_duration_seconds_count", tool="write") == 1
    assert after.value(ACTIVE) == 0
    for gauge in (
        "clawbus_bus_consumer_pending",
        "clawbus_bus_consumer_ack_pending",
        "clawbus_bus_consumer_redelivered",
    ):
        assert _has(after, gauge, **queue), gauge
    assert _has(after, "clawbus_runs_queued")
