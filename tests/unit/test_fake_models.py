"""The fake model server, driven by the real OpenAI and Anthropic async SDKs."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import Any, TypeVar

import anthropic
import httpx2
import openai
import pytest
from anthropic.types import RawMessageStreamEvent
from clawbus_fakes import FakeModelServer, RecordedRequest, Reply, ToolCall
from openai.types.chat import ChatCompletionChunk

WEATHER_TOOL_OPENAI: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
WEATHER_TOOL_ANTHROPIC: Any = {
    "name": "get_weather",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
ARGS = {"city": "Paris", "unit": "celsius", "days": [1, 2, 3], "note": 'naïve ☀ "quoted"'}


@pytest.fixture
async def fake() -> AsyncIterator[FakeModelServer]:
    async with FakeModelServer() as server:
        yield server


# Clients are closed inside the test's loop; left to GC they try to close after it is gone.
@pytest.fixture
async def oa(fake: FakeModelServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=f"{fake.url}/v1", api_key="x", max_retries=0) as client:
        yield client


@pytest.fixture
async def an(fake: FakeModelServer) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(base_url=fake.url, api_key="x", max_retries=0) as client:
        yield client


T = TypeVar("T")


def user(text: str) -> Any:
    return [{"role": "user", "content": text}]


async def drain(stream: AsyncIterable[T], into: list[T]) -> None:
    """Collect items one at a time, so those received before a mid-stream error are kept."""
    async for item in stream:
        into.append(item)


# --------------------------------------------------------------------------- OpenAI


async def test_openai_non_streaming_text(fake: FakeModelServer, oa: openai.AsyncOpenAI) -> None:
    fake.script("gpt-x", Reply(text="Hello there, friend"))
    completion = await oa.chat.completions.create(
        model="gpt-x",
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "say hi to me"},
        ],
    )
    choice = completion.choices[0]
    assert choice.message.content == "Hello there, friend"
    assert choice.message.role == "assistant"
    assert choice.message.tool_calls is None
    assert choice.finish_reason == "stop"
    assert completion.model == "gpt-x"
    assert completion.id.startswith("chatcmpl-")
    assert completion.usage is not None
    # 2 system words + 4 user words; 3 word chunks produced
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (6, 3)
    assert completion.usage.total_tokens == 9


async def test_openai_streaming_text_without_usage(
    fake: FakeModelServer, oa: openai.AsyncOpenAI
) -> None:
    fake.script("gpt-x", Reply(text="one two three"))
    stream = await oa.chat.completions.create(model="gpt-x", messages=user("go"), stream=True)
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks[1:-1]]
    assert pieces == ["one", " two", " three"]
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1


async def test_openai_streaming_include_usage(
    fake: FakeModelServer, oa: openai.AsyncOpenAI
) -> None:
    fake.script("gpt-x", Reply(chunks=["He", "llo", "!"]))
    stream = await oa.chat.completions.create(
        model="gpt-x",
        messages=user("three words here"),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (3, 3)
    assert last.usage.total_tokens == 6
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-2].choices[0].finish_reason == "stop"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello!"


async def test_openai_tool_calls_non_streaming(
    fake: FakeModelServer, oa: openai.AsyncOpenAI
) -> None:
    fake.script(
        "gpt-x",
        Reply(
            tool_calls=[
                ToolCall("get_weather", ARGS),
                ToolCall("get_time", {}, id="call_fixed"),
            ]
        ),
    )
    completion = await oa.chat.completions.create(
        model="gpt-x", messages=user("weather?"), tools=[WEATHER_TOOL_OPENAI]
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls
    assert calls is not None
    assert len(calls) == 2
    first, second = calls
    assert first.type == "function"
    assert second.type == "function"
    assert first.id.startswith("call_")
    assert first.function.name == "get_weather"
    assert json.loads(first.function.arguments) == ARGS
    assert (second.id, second.function.name, second.function.arguments) == (
        "call_fixed",
        "get_time",
        "{}",
    )


async def test_openai_tool_calls_streaming(fake: FakeModelServer, oa: openai.AsyncOpenAI) -> None:
    fake.script("gpt-x", Reply(text="Checking.", tool_calls=[ToolCall("get_weather", ARGS)]))
    stream = await oa.chat.completions.create(
        model="gpt-x",
        messages=user("weather?"),
        tools=[WEATHER_TOOL_OPENAI],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, name, call_id, fragments, finish = "", None, None, [], None
    usage = None
    async for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or []:
                assert delta.index == 0
                call_id = delta.id or call_id
                if delta.function is not None:
                    name = delta.function.name or name
                    fragments.append(delta.function.arguments or "")
    assert text == "Checking."
    assert name == "get_weather"
    assert call_id is not None
    assert call_id.startswith("call_")
    assert finish == "tool_calls"
    assert len([f for f in fragments if f]) > 1  # arguments really arrive in pieces
    assert json.loads("".join(fragments)) == ARGS
    assert usage is not None
    assert usage.completion_tokens == 1 + len([f for f in fragments if f])


async def test_openai_stream_helper_accumulates_tool_calls(
    fake: FakeModelServer, oa: openai.AsyncOpenAI
) -> None:
    fake.script("gpt-x", Reply(tool_calls=[ToolCall("a", {"x": 1}), ToolCall("b", ARGS)]))
    async with oa.chat.completions.stream(
        model="gpt-x", messages=user("go"), tools=[WEATHER_TOOL_OPENAI]
    ) as stream:
        async for _ in stream:
            pass
        final = await stream.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert calls is not None
    assert [c.function.name for c in calls] == ["a", "b"]
    assert [json.loads(c.function.arguments) for c in calls] == [{"x": 1}, ARGS]
    assert final.choices[0].finish_reason == "tool_calls"


async def test_openai_429_is_rate_limit_error(
    fake: FakeModelServer, oa: openai.AsyncOpenAI
) -> None:
    fake.script("gpt-x", Reply(status=429))
    with pytest.raises(openai.RateLimitError) as info:
        await oa.chat.completions.create(model="gpt-x", messages=user("hi"))
    err = info.value
    assert err.status_code == 429
    assert err.code == "rate_limit_exceeded"
    assert err.type == "requests"
    assert err.response.headers["retry-after"] == "1"
    assert err.request_id is not None


async def test_openai_500_is_internal_server_error_also_when_streaming(
    fake: FakeModelServer, oa: openai.AsyncOpenAI
) -> None:
    fake.script("gpt-x", Reply(status=500), Reply(status=500))
    with pytest.raises(openai.InternalServerError) as info:
        await oa.chat.completions.create(model="gpt-x", messages=user("hi"))
    assert info.value.status_code == 500
    assert info.value.type == "server_error"
    with pytest.raises(openai.InternalServerError):
        await oa.chat.completions.create(model="gpt-x", messages=user("hi"), stream=True)


async def test_openai_sdk_retries_a_scripted_error(fake: FakeModelServer) -> None:
    fake.script("gpt-x", Reply(status=500, retry_after_s=0.01), Reply(text="recovered"))
    async with openai.AsyncOpenAI(base_url=f"{fake.url}/v1", api_key="x", max_retries=2) as client:
        completion = await client.chat.completions.create(model="gpt-x", messages=user("hi"))
    assert completion.choices[0].message.content == "recovered"
    retries = [r.headers.get("x-stainless-retry-count") for r in fake.requests_for("gpt-x")]
    assert retries == ["0", "1"]


async def test_openai_dropped_stream_raises_connection_error(
    fake: FakeModelServer, oa: openai.AsyncOpenAI
) -> None:
    fake.script("gpt-x", Reply(text="one two three four", drop_after_chunks=2))
    stream = await oa.chat.completions.create(model="gpt-x", messages=user("hi"), stream=True)
    received: list[ChatCompletionChunk] = []
    with pytest.raises(openai.APIConnectionError) as info:
        await drain(stream, received)
    # Content before the cut arrives; the truncated chunked body surfaces as a connection error.
    assert "".join(c.choices[0].delta.content or "" for c in received) == "one two"
    assert all(c.choices[0].finish_reason is None for c in received)
    assert isinstance(info.value.__cause__, httpx2.RemoteProtocolError)


async def test_openai_dropped_non_streaming_call(
    fake: FakeModelServer, oa: openai.AsyncOpenAI
) -> None:
    fake.script("gpt-x", Reply(text="never sent", drop_after_chunks=0))
    with pytest.raises(openai.APIConnectionError):
        await oa.chat.completions.create(model="gpt-x", messages=user("hi"))


async def test_openai_models_list(fake: FakeModelServer, oa: openai.AsyncOpenAI) -> None:
    fake.script("gpt-a", Reply(text="x"))
    fake.set_default("gpt-b", Reply(text="y"))
    models = [m async for m in oa.models.list()]
    assert [m.id for m in models] == ["gpt-a", "gpt-b"]
    assert all(m.object == "model" for m in models)


# --------------------------------------------------------------------------- Anthropic


async def test_anthropic_non_streaming_text(
    fake: FakeModelServer, an: anthropic.AsyncAnthropic
) -> None:
    fake.script("claude-x", Reply(text="Hi from the fake"))
    message = await an.messages.create(
        model="claude-x",
        max_tokens=64,
        system="you are terse",
        messages=[{"role": "user", "content": [{"type": "text", "text": "hello there"}]}],
    )
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.id.startswith("msg_")
    assert message.model == "claude-x"
    assert message.stop_reason == "end_turn"
    assert len(message.content) == 1
    block = message.content[0]
    assert block.type == "text"
    assert block.text == "Hi from the fake"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (5, 4)


async def test_anthropic_stream_helper_text(
    fake: FakeModelServer, an: anthropic.AsyncAnthropic
) -> None:
    fake.script("claude-x", Reply(text="streamed words arrive"))
    async with an.messages.stream(
        model="claude-x", max_tokens=64, messages=user("one two")
    ) as stream:
        pieces = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    assert pieces == ["streamed", " words", " arrive"]
    assert final.stop_reason == "end_turn"
    assert final.content[0].type == "text"
    assert final.content[0].text == "streamed words arrive"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (2, 3)


async def test_anthropic_raw_stream_event_sequence(
    fake: FakeModelServer, an: anthropic.AsyncAnthropic
) -> None:
    fake.script("claude-x", Reply(text="a b"))
    stream = await an.messages.create(
        model="claude-x", max_tokens=64, messages=user("hi"), stream=True
    )
    events = [event async for event in stream]
    # The SDK swallows `ping`; check it on the wire below.
    assert [e.type for e in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start, delta = events[0], events[-2]
    assert start.type == "message_start"
    assert start.message.usage.input_tokens == 1
    assert delta.type == "message_delta"
    assert delta.delta.stop_reason == "end_turn"
    assert delta.usage.output_tokens == 2


async def test_anthropic_wire_has_event_lines_and_ping(fake: FakeModelServer) -> None:
    fake.script("claude-x", Reply(text="a"))
    async with httpx2.AsyncClient() as http:
        response = await http.post(
            f"{fake.url}/v1/messages",
            json={"model": "claude-x", "max_tokens": 5, "stream": True, "messages": user("hi")},
        )
    assert response.headers["content-type"].startswith("text/event-stream")
    frames = [f for f in response.text.split("\n\n") if f]
    kinds = [f.split("\n")[0].removeprefix("event: ") for f in frames]
    assert kinds == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    for frame, kind in zip(frames, kinds, strict=True):
        event_line, data_line = frame.split("\n")
        assert event_line == f"event: {kind}"
        assert json.loads(data_line.removeprefix("data: "))["type"] == kind


async def test_anthropic_tool_use_non_streaming(
    fake: FakeModelServer, an: anthropic.AsyncAnthropic
) -> None:
    fake.script("claude-x", Reply(tool_calls=[ToolCall("get_weather", ARGS, id="toolu_1")]))
    message = await an.messages.create(
        model="claude-x", max_tokens=64, messages=user("weather?"), tools=[WEATHER_TOOL_ANTHROPIC]
    )
    assert message.stop_reason == "tool_use"
    assert len(message.content) == 1  # no empty text block before a tool-only turn
    block = message.content[0]
    assert block.type == "tool_use"
    assert (block.id, block.name, block.input) == ("toolu_1", "get_weather", ARGS)


async def test_anthropic_tool_use_streaming(
    fake: FakeModelServer, an: anthropic.AsyncAnthropic
) -> None:
    fake.script(
        "claude-x",
        Reply(
            text="Let me check.",
            tool_calls=[ToolCall("get_weather", ARGS), ToolCall("noop", {})],
        ),
    )
    async with an.messages.stream(
        model="claude-x", max_tokens=64, messages=user("weather?"), tools=[WEATHER_TOOL_ANTHROPIC]
    ) as stream:
        partials = [e.partial_json async for e in stream if e.type == "input_json"]
        final = await stream.get_final_message()
    assert len(partials) > 1
    assert final.stop_reason == "tool_use"
    assert [b.type for b in final.content] == ["text", "tool_use", "tool_use"]
    text, weather, noop = final.content
    assert text.type == "text"
    assert text.text == "Let me check."
    assert weather.type == "tool_use"
    assert weather.id.startswith("toolu_")
    assert (weather.name, weather.input) == ("get_weather", ARGS)
    assert noop.type == "tool_use"
    assert (noop.name, noop.input) == ("noop", {})
    assert final.usage.output_tokens == 3 + len(partials)


async def test_anthropic_529_is_overloaded_error(
    fake: FakeModelServer, an: anthropic.AsyncAnthropic
) -> None:
    fake.script("claude-x", Reply(status=529))
    with pytest.raises(anthropic.InternalServerError) as info:
        await an.messages.create(model="claude-x", max_tokens=5, messages=user("hi"))
    err = info.value
    # anthropic 2.x maps 529 to OverloadedError, a subclass of InternalServerError.
    assert isinstance(err, anthropic.OverloadedError)
    assert err.status_code == 529
    assert err.type == "overloaded_error"
    assert err.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
        "request_id": err.request_id,
    }


async def test_anthropic_errors_when_streaming(
    fake: FakeModelServer, an: anthropic.AsyncAnthropic
) -> None:
    fake.script("claude-x", Reply(status=429), Reply(status=529))
    with pytest.raises(anthropic.RateLimitError) as info:
        async with an.messages.stream(model="claude-x", max_tokens=5, messages=user("hi")):
            pass
    assert info.value.type == "rate_limit_error"
    with pytest.raises(anthropic.OverloadedError):
        await an.messages.create(model="claude-x", max_tokens=5, messages=user("hi"), stream=True)


async def test_anthropic_dropped_stream_raises_raw_httpx_error(
    fake: FakeModelServer, an: anthropic.AsyncAnthropic
) -> None:
    fake.script("claude-x", Reply(text="one two three", drop_after_chunks=1))
    received: list[str] = []
    async with an.messages.stream(model="claude-x", max_tokens=5, messages=user("hi")) as stream:
        # Unlike openai, the anthropic SDK does not wrap errors raised while reading the stream.
        with pytest.raises(httpx2.RemoteProtocolError):
            await drain(stream.text_stream, received)
    assert received == ["one"]


async def test_anthropic_drop_beyond_content_still_withholds_terminal_events(
    fake: FakeModelServer, an: anthropic.AsyncAnthropic
) -> None:
    fake.script("claude-x", Reply(text="one two", drop_after_chunks=99))
    stream = await an.messages.create(
        model="claude-x", max_tokens=5, messages=user("hi"), stream=True
    )
    events: list[RawMessageStreamEvent] = []
    with pytest.raises(httpx2.RemoteProtocolError):
        await drain(stream, events)
    seen = [e.type for e in events]
    assert seen[-1] == "content_block_stop"
    assert "message_delta" not in seen


async def test_anthropic_models_list(fake: FakeModelServer, an: anthropic.AsyncAnthropic) -> None:
    fake.script("claude-a", Reply(text="x"))
    models = [m async for m in an.models.list()]
    assert [(m.id, m.type) for m in models] == [("claude-a", "model")]


# --------------------------------------------------------------------------- scripting


async def test_echo_default_on_both_wires(
    fake: FakeModelServer, oa: openai.AsyncOpenAI, an: anthropic.AsyncAnthropic
) -> None:
    completion = await oa.chat.completions.create(
        model="anything",
        messages=[
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": "ping me"}]},
        ],
    )
    assert completion.choices[0].message.content == "echo: ping me"
    message = await an.messages.create(
        model="anything",
        max_tokens=5,
        messages=[
            {"role": "user", "content": "use the tool"},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "toolu_1", "name": "t", "input": {}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "42 degrees"},
                ],
            },
        ],
    )
    # A tool-result-only turn has no user text, so the echo reaches back to the prompt...
    assert message.content[0].type == "text"
    assert message.content[0].text == "echo: use the tool"
    # ...but the tool result still counts as input.
    assert message.usage.input_tokens == 5


async def test_fifo_then_default_then_echo(fake: FakeModelServer, oa: openai.AsyncOpenAI) -> None:
    fake.script("m", Reply(text="first"), Reply(text="second"))

    async def ask(model: str) -> str | None:
        completion = await oa.chat.completions.create(model=model, messages=user("q"))
        return completion.choices[0].message.content

    assert [await ask("m"), await ask("m"), await ask("m")] == ["first", "second", "echo: q"]
    fake.set_default("m", Reply(text="fallback"))
    assert [await ask("m"), await ask("m")] == ["fallback", "fallback"]

    def by_request(request: RecordedRequest) -> Reply:
        return Reply(text=f"{request.protocol}:{request.model}:{len(request.messages)}")

    fake.set_default("n", by_request)
    fake.script("n", Reply(text="scripted wins"))
    assert [await ask("n"), await ask("n")] == ["scripted wins", "openai:n:1"]
    assert await ask("other") == "echo: q"  # scripts are per model


async def test_requests_are_recorded(
    fake: FakeModelServer, oa: openai.AsyncOpenAI, an: anthropic.AsyncAnthropic
) -> None:
    await oa.chat.completions.create(model="gpt-x", messages=user("a"), temperature=0.5)
    await an.messages.create(model="claude-x", max_tokens=7, messages=user("b"), stream=True)
    await oa.chat.completions.create(model="gpt-x", messages=user("c"))
    assert [(r.protocol, r.model) for r in fake.requests] == [
        ("openai", "gpt-x"),
        ("anthropic", "claude-x"),
        ("openai", "gpt-x"),
    ]
    first, second, _ = fake.requests
    assert first.body["temperature"] == 0.5
    assert first.path == "/v1/chat/completions"
    assert first.headers["authorization"] == "Bearer x"
    assert not first.stream
    assert second.stream
    assert second.body["max_tokens"] == 7
    # anthropic 2.x sends the key as a bearer token, not x-api-key
    assert second.headers["authorization"] == "Bearer x"
    assert "anthropic-version" in second.headers
    assert [r.last_user_text for r in fake.requests_for("gpt-x")] == ["a", "c"]
    fake.reset()
    assert fake.requests == []


async def test_bad_requests_get_provider_error_bodies(
    fake: FakeModelServer, oa: openai.AsyncOpenAI, an: anthropic.AsyncAnthropic
) -> None:
    with pytest.raises(openai.BadRequestError) as oa_info:
        await oa.chat.completions.create(model="", messages=user("a"))
    assert oa_info.value.type == "invalid_request_error"
    with pytest.raises(anthropic.BadRequestError) as an_info:
        await an.messages.create(model="", max_tokens=5, messages=user("a"))
    assert an_info.value.type == "invalid_request_error"
    assert fake.requests == []


async def test_delays(fake: FakeModelServer, oa: openai.AsyncOpenAI) -> None:
    fake.script("m", Reply(text="a b c", delay_s=0.2, chunk_delay_s=0.1))
    started = time.perf_counter()
    stream = await oa.chat.completions.create(model="m", messages=user("q"), stream=True)
    headers_at = time.perf_counter() - started
    arrivals = [
        time.perf_counter() - started
        async for chunk in stream
        if chunk.choices and chunk.choices[0].delta.content
    ]
    assert headers_at >= 0.19
    assert len(arrivals) == 3
    assert arrivals[2] - arrivals[0] >= 0.19  # two pauses between three chunks


async def test_finish_reason_override_and_translation(
    fake: FakeModelServer, oa: openai.AsyncOpenAI, an: anthropic.AsyncAnthropic
) -> None:
    fake.script(
        "m",
        Reply(text="cut", finish_reason="max_tokens"),
        Reply(text="cut", finish_reason="length"),
    )
    completion = await oa.chat.completions.create(model="m", messages=user("q"))
    assert completion.choices[0].finish_reason == "length"
    message = await an.messages.create(model="m", max_tokens=1, messages=user("q"))
    assert message.stop_reason == "max_tokens"


def test_reply_chunking() -> None:
    assert Reply(text="a b").content_chunks() == ["a", " b"]
    assert Reply(text=" lead  and trail ").content_chunks() == [" lead", "  and", " trail "]
    assert Reply(text="").content_chunks() == []
    assert Reply(text="ignored", chunks=["x", "y"]).content_chunks() == ["x", "y"]
    with pytest.raises(ValueError):
        Reply(status=200)


async def test_cli_prints_url_and_stops_on_sigterm() -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "libs" / "fakes")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "clawbus_fakes.models",
        "--port",
        "0",
        "--chunk-delay-s",
        "0.0",
        "--delay-s",
        "0.0",
        "--model",
        "fake-1",
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode().strip()
        assert line.startswith("FAKE_MODEL_URL=http://127.0.0.1:")
        url = line.removeprefix("FAKE_MODEL_URL=")
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as client:
            completion = await client.chat.completions.create(model="m", messages=user("cli"))
            assert completion.choices[0].message.content == "echo: cli"
            assert [m.id async for m in client.models.list()] == ["fake-1"]
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
