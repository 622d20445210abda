"""The OpenAI Responses surface end to end, through the real openai SDK: plain and streamed
responses, the SDK's stream helper, sessions, errors, a dropped stream resumed, and the
client's own function tools (calls out as `function_call` items, results back as
`function_call_output` items, stateless and stateful)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aiohttp
import asyncpg
import openai
import pytest
from clawbus_fakes.models import Reply, ToolCall
from openai.types.responses import (
    FunctionToolParam,
    Response,
    ResponseFunctionCallArgumentsDeltaEvent,
    ResponseFunctionCallArgumentsDoneEvent,
    ResponseFunctionToolCall,
    ResponseInputItemParam,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
    ResponseOutputMessage,
    ToolChoiceFunction,
)

from tests.integration.test_http_000 import Frame, assistant_message, auth, sse_frames
from tests.integration.test_tool_passthrough import (
    ARGS,
    ARGS_TEXT,
    WIRES,
    _assert_result_reached_the_model,
    _offered,
    _system_prompt,
    _transcript,
    _upstream,
)
from tests.system import System

STREAM_TYPES_HEAD = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
]
STREAM_TYPES_TAIL = [
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
]


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("clawbus/echo", "You said: hello there"),
        ("openai/gpt-fake", "echo: hello there"),
        ("anthropic/claude-fake", "echo: hello there"),
        ("agent:main", "You said: hello there"),
    ],
)
async def test_plain_response(
    system: System, db: asyncpg.Connection, model: str, expected: str
) -> None:
    raw = await system.openai().responses.with_raw_response.create(model=model, input="hello there")
    response = raw.parse()
    assert response.object == "response"
    assert response.id.startswith("resp_")
    assert response.status == "completed"
    assert response.model == model
    assert response.output_text == expected
    [item] = response.output
    assert item.type == "message" and item.role == "assistant" and item.status == "completed"
    [part] = item.content
    assert part.type == "output_text" and part.text == expected
    assert response.usage is not None
    assert response.usage.output_tokens > 0
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    assert response.error is None
    assert await assistant_message(db, raw.headers["x-clawbus-run-id"]) == expected


@pytest.mark.parametrize("model", ["openai/gpt-fake", "anthropic/claude-fake"])
async def test_streamed_response_sends_the_sdk_event_sequence(
    system: System, db: asyncpg.Connection, model: str
) -> None:
    # A pause between chunks keeps them apart (the runner coalesces deltas that queue up).
    system.fake.script(model.split("/", 1)[1], Reply(text="one two three four", chunk_delay_s=0.02))
    stream = await system.openai().responses.create(model=model, input="count", stream=True)
    events = [event async for event in stream]
    types = [e.type for e in events]
    deltas = len(types) - len(STREAM_TYPES_HEAD) - len(STREAM_TYPES_TAIL) - 1
    assert deltas >= 2
    assert types == [
        *STREAM_TYPES_HEAD,
        *["response.output_text.delta"] * deltas,
        *STREAM_TYPES_TAIL,
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "one two three four"
    created, completed = events[0], events[-1]
    assert created.type == "response.created" and created.response.status == "in_progress"
    assert completed.type == "response.completed"
    final = completed.response
    assert final.id == created.response.id
    assert final.status == "completed"
    assert final.output_text == text
    assert final.usage is not None and final.usage.total_tokens > 0
    done = [e for e in events if e.type == "response.output_text.done"]
    assert done[0].text == text
    item_ids = {getattr(e, "item_id", None) for e in events} - {None}
    assert item_ids == {final.output[0].id}
    run_id = final.id.removeprefix("resp_")
    assert await assistant_message(db, str(run_id)) == text


async def test_the_sdk_stream_helper_accumulates_the_response(system: System) -> None:
    system.fake.script("gpt-fake", Reply(text="alpha beta gamma"))
    async with system.openai().responses.stream(
        model="openai/gpt-fake", input="go", instructions="be brief"
    ) as stream:
        seen = [event.type async for event in stream]
        final = await stream.get_final_response()
    assert seen[-1] == "response.completed"
    assert final.output_text == "alpha beta gamma"
    assert final.instructions == "be brief"


async def test_input_messages_and_instructions_reach_the_model(system: System) -> None:
    response = await system.openai().responses.create(
        model="openai/gpt-fake",
        instructions="answer in French",
        input=[
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "c"}]},
        ],
    )
    assert response.output_text == "echo: c"
    sent = system.fake.requests_for("gpt-fake")[-1].body["messages"]
    assert sent[0]["role"] == "system"
    assert sent[0]["content"].endswith("answer in French\n\nbe brief")
    assert [(m["role"], m["content"]) for m in sent[1:]] == [
        ("user", "a"),
        ("assistant", "b"),
        ("user", "c"),
    ]


async def test_previous_response_id_continues_the_conversation(system: System) -> None:
    client = system.openai()
    first = await client.responses.create(model="openai/gpt-fake", input="first question")
    second = await client.responses.create(
        model="openai/gpt-fake", input="second question", previous_response_id=first.id
    )
    assert second.output_text == "echo: second question"
    sent = system.fake.requests_for("gpt-fake")[-1].body["messages"]
    assert [(m["role"], m["content"]) for m in sent if m["role"] != "system"] == [
        ("user", "first question"),
        ("assistant", "echo: first question"),
        ("user", "second question"),
    ]


async def test_user_names_the_session(system: System) -> None:
    raw = await system.openai().responses.with_raw_response.create(
        model="openai/gpt-fake", input="hi", user=f"carol-{system.namespace}"
    )
    assert raw.headers["x-openclaw-session-key"] == (
        f"agent:main:openai-user:carol-{system.namespace}"
    )


@pytest.mark.parametrize("stream", [False, True])
async def test_a_cut_off_answer_is_incomplete(system: System, stream: bool) -> None:
    system.fake.script("gpt-fake", Reply(text="so much to say", finish_reason="length"))
    client = system.openai()
    if stream:
        events = [
            e
            async for e in await client.responses.create(
                model="openai/gpt-fake", input="talk", max_output_tokens=4, stream=True
            )
        ]
        assert events[-1].type == "response.incomplete"
        response = events[-1].response
    else:
        response = await client.responses.create(
            model="openai/gpt-fake", input="talk", max_output_tokens=4
        )
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text == "so much to say"
    assert system.fake.requests_for("gpt-fake")[-1].body["max_tokens"] == 4


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_upstream_failure_is_an_http_error_before_the_stream(
    system: System, stream: bool
) -> None:
    system.fake.set_default("gpt-broken", Reply(status=429))
    with pytest.raises(openai.RateLimitError) as err:
        result = await system.openai().responses.create(
            model="openai/gpt-broken", input="hi", stream=stream
        )
        if stream:
            async for _ in result:  # type: ignore[union-attr]
                pass
    assert err.value.status_code == 429
    assert isinstance(err.value.body, dict) and err.value.body["code"] == "upstream_rate_limited"


async def test_a_run_failing_mid_stream_ends_with_response_failed(system: System) -> None:
    system.fake.set_default("gpt-dropped", Reply(text="a b c d e f", drop_after_chunks=2))
    stream = await system.openai().responses.create(
        model="openai/gpt-dropped", input="hi", stream=True
    )
    events = [e async for e in stream]
    assert events[0].type == "response.created"
    last = events[-1]
    assert last.type == "response.failed"
    assert last.response.status == "failed"
    assert last.response.error is not None and last.response.error.code == "server_error"
    assert [e.sequence_number for e in events] == list(range(len(events)))


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "'item_reference'"),
        ({"input": [{"type": ["message"]}]}, "input.items.0.other.type"),
        (
            {"input": [{"type": "function_call", "call_id": "c", "name": "f"}]},
            "input.items.0.function_call.arguments: Field required",
        ),
        ({"input": [{"role": "user", "content": [{"type": "input_image"}]}]}, "input_text"),
        ({"input": [{"role": "assistant", "content": "x"}]}, "user message"),
        ({"input": "   "}, "empty"),
        ({"input": "hi", "previous_response_id": "resp_nope"}, "previous_response_id"),
    ],
)
async def test_bad_input_gets_400(system: System, kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        await system.openai().responses.create(model="openai/gpt-fake", **kwargs)  # type: ignore[call-overload]
    assert fragment in err.value.message


async def test_unknown_model_or_previous_response_is_404(system: System) -> None:
    client = system.openai()
    with pytest.raises(openai.NotFoundError):
        await client.responses.create(model="nope/model-x", input="hi")
    with pytest.raises(openai.NotFoundError):
        await client.responses.create(
            model="openai/gpt-fake",
            input="hi",
            previous_response_id="resp_0000000000000000000000000000abcd",
        )


# --- resuming ------------------------------------------------------------------------------------


async def test_a_dropped_response_stream_resumes_with_the_same_numbering(
    system: System, db: asyncpg.Connection
) -> None:
    text = " ".join(f"w{i}" for i in range(20))
    system.fake.script("gpt-slow", Reply(text=text, chunk_delay_s=0.05))
    url = f"{system.url}/v1/responses"
    body = {"model": "openai/gpt-slow", "input": "go", "stream": True}
    first: list[Frame] = []
    async with aiohttp.ClientSession() as http:
        async with http.post(url, headers=auth(system), json=body) as r:
            run_id = r.headers["x-clawbus-run-id"]
            async for frame in sse_frames(r):
                first.append(frame)
                if sum(f.event == "response.output_text.delta" for f in first) == 3:
                    break
            r.close()
        last_id = first[-1].id
        assert last_id is not None
        resume = auth(system, **{"Last-Event-ID": str(last_id), "x-clawbus-run-id": run_id})
        async with http.post(url, headers=resume, json=body) as r:
            assert r.status == 200
            rest = [f async for f in sse_frames(r)]
    frames = first + rest
    events = [f.json() for f in frames]
    assert [f.event for f in frames] == [e["type"] for e in events]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[-1]["type"] == "response.completed"
    streamed = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert streamed == events[-1]["response"]["output"][0]["content"][0]["text"]
    assert streamed == await assistant_message(db, run_id) == text


# --- the client's function tools ----------------------------------------------------------------

WEATHER: FunctionToolParam = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city now.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
        "required": ["city"],
    },
    "strict": False,
}
TIME: FunctionToolParam = {
    "type": "function",
    "name": "get_time",
    "parameters": {"type": "object", "properties": {}},
    "strict": None,
}
QUESTION = "What is the weather in Paris?"


def _calls_weather(call_id: str, text: str = "") -> Reply:
    return Reply(text=text, tool_calls=[ToolCall("get_weather", ARGS, id=call_id)])


def _calls(response: Response) -> list[tuple[str, str, str, str | None]]:
    """(call_id, name, arguments, status) of the response's function_call items."""
    out: list[tuple[str, str, str, str | None]] = []
    for item in response.output:
        if isinstance(item, ResponseFunctionToolCall):
            assert item.id is not None and item.id.startswith("fc_")
            out.append((item.call_id, item.name, item.arguments, item.status))
    return out


CallEvent = tuple[str, int, str | None, str, str | None]


def _call_events(events: Sequence[object]) -> list[CallEvent]:
    """(type, output_index, item id, arguments so far, item status) of each function call
    event of a stream."""
    out: list[CallEvent] = []
    for e in events:
        if isinstance(e, ResponseOutputItemAddedEvent | ResponseOutputItemDoneEvent):
            if isinstance(e.item, ResponseFunctionToolCall):
                out.append((e.type, e.output_index, e.item.id, e.item.arguments, e.item.status))
        elif isinstance(e, ResponseFunctionCallArgumentsDeltaEvent):
            out.append((e.type, e.output_index, e.item_id, e.delta, None))
        elif isinstance(e, ResponseFunctionCallArgumentsDoneEvent):
            out.append((e.type, e.output_index, e.item_id, e.arguments, None))
    return out


def _streamed_call(item_id: str, index: int, arguments: str) -> list[CallEvent]:
    """One call as the stream sends it: added empty, its arguments whole, done."""
    return [
        ("response.output_item.added", index, item_id, "", "in_progress"),
        ("response.function_call_arguments.delta", index, item_id, arguments, None),
        ("response.function_call_arguments.done", index, item_id, arguments, None),
        ("response.output_item.done", index, item_id, arguments, "completed"),
    ]


def _output(call_id: str, result: str) -> ResponseInputItemParam:
    return {"type": "function_call_output", "call_id": call_id, "output": result}


@WIRES
async def test_a_function_call_comes_back_as_an_output_item(
    system: System, model: str, call_id: str
) -> None:
    system.fake.script(_upstream(model), _calls_weather(call_id))
    response = await system.openai().responses.create(
        model=model, input=QUESTION, tools=[WEATHER, TIME]
    )
    assert response.status == "completed"
    # Calls only: no message item, the arguments exactly as the model wrote them.
    assert [item.type for item in response.output] == ["function_call"]
    assert _calls(response) == [(call_id, "get_weather", ARGS_TEXT, "completed")]
    assert response.output_text == ""
    # The request's tools are echoed as given.
    assert [t.model_dump(exclude_none=True) for t in response.tools] == [
        {k: v for k, v in tool.items() if v is not None} for tool in (WEATHER, TIME)
    ]
    assert response.tool_choice == "auto"
    assert response.parallel_tool_calls is True

    # The model was offered exactly the client's tools, not the agent's (nor told of them).
    [request] = system.fake.requests_for(_upstream(model))
    assert _offered(request) == ["get_weather", "get_time"]
    assert "Tools available to you" not in _system_prompt(request)


async def test_without_tools_the_response_echoes_none(system: System) -> None:
    response = await system.openai().responses.create(model="openai/gpt-own", input=QUESTION)
    assert (response.tools, response.tool_choice, response.parallel_tool_calls) == (
        [],
        "auto",
        False,
    )
    [request] = system.fake.requests_for("gpt-own")
    assert {"read", "write"} <= set(_offered(request))


@WIRES
async def test_a_streamed_function_call_accumulates_to_the_plain_one(
    system: System, model: str, call_id: str
) -> None:
    upstream = _upstream(model)
    reply = _calls_weather(call_id, "Let me look.")
    system.fake.script(upstream, reply, reply)
    client = system.openai()
    plain = await client.responses.create(model=model, input=QUESTION, tools=[WEATHER])
    async with client.responses.stream(model=model, input=QUESTION, tools=[WEATHER]) as stream:
        events = [event async for event in stream]
        streamed = await stream.get_final_response()

    for response in (plain, streamed):
        assert [item.type for item in response.output] == ["message", "function_call"]
        assert response.output_text == "Let me look."
        assert _calls(response) == [(call_id, "get_weather", ARGS_TEXT, "completed")]

    types = [e.type for e in events]
    deltas = types.count("response.output_text.delta")
    assert deltas >= 1
    assert types == [
        *STREAM_TYPES_HEAD,
        *["response.output_text.delta"] * deltas,
        *STREAM_TYPES_TAIL,
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    message, call = streamed.output
    assert isinstance(message, ResponseOutputMessage)
    assert isinstance(call, ResponseFunctionToolCall) and call.id is not None
    assert _call_events(events) == _streamed_call(call.id, 1, ARGS_TEXT)
    message_items = [
        (e.type, e.output_index, e.item.id)
        for e in events
        if isinstance(e, ResponseOutputItemAddedEvent | ResponseOutputItemDoneEvent)
        and isinstance(e.item, ResponseOutputMessage)
    ]
    assert message_items == [
        ("response.output_item.added", 0, message.id),
        ("response.output_item.done", 0, message.id),
    ]


async def test_a_stream_of_calls_only_has_no_message_item(system: System) -> None:
    system.fake.script(
        "gpt-fn",
        Reply(
            tool_calls=[
                ToolCall("get_weather", ARGS, id="call_a"),
                ToolCall("get_time", {}, id="call_b"),
            ]
        ),
    )
    async with system.openai().responses.stream(
        model="openai/gpt-fn", input=QUESTION, tools=[WEATHER, TIME]
    ) as stream:
        events = [event async for event in stream]
        final = await stream.get_final_response()
    call_events = [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
    ]
    assert [e.type for e in events] == [
        "response.created",
        "response.in_progress",
        *call_events,
        *call_events,
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert _calls(final) == [
        ("call_a", "get_weather", ARGS_TEXT, "completed"),
        ("call_b", "get_time", "{}", "completed"),
    ]
    ids = [item.id for item in final.output if isinstance(item, ResponseFunctionToolCall)]
    assert len(set(ids)) == 2
    assert _call_events(events) == [
        *_streamed_call(str(ids[0]), 0, ARGS_TEXT),
        *_streamed_call(str(ids[1]), 1, "{}"),
    ]


async def test_tool_choice_names_a_function(system: System) -> None:
    system.fake.script("gpt-fn", _calls_weather("call_c"))
    response = await system.openai().responses.create(
        model="openai/gpt-fn",
        input=QUESTION,
        tools=[WEATHER, TIME],
        tool_choice={"type": "function", "name": "get_weather"},
        parallel_tool_calls=False,
    )
    [request] = system.fake.requests_for("gpt-fn")
    assert request.body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert request.body["parallel_tool_calls"] is False
    assert isinstance(response.tool_choice, ToolChoiceFunction)
    assert response.tool_choice.name == "get_weather"
    assert response.parallel_tool_calls is False


async def test_tool_choice_none_keeps_the_model_to_text(system: System) -> None:
    system.fake.script("gpt-fn", Reply(text="I will not look it up."))
    response = await system.openai().responses.create(
        model="openai/gpt-fn", input=QUESTION, tools=[WEATHER], tool_choice="none"
    )
    assert response.output_text == "I will not look it up."
    assert _calls(response) == []
    assert response.tool_choice == "none"
    [request] = system.fake.requests_for("gpt-fn")
    assert request.body["tool_choice"] == "none"
    assert _offered(request) == ["get_weather"]


@WIRES
async def test_the_stateless_round_trip(system: System, model: str, call_id: str) -> None:
    upstream = _upstream(model)
    system.fake.script(upstream, _calls_weather(call_id), Reply(text="It is 18C in Paris."))
    client = system.openai()
    first = await client.responses.create(model=model, input=QUESTION, tools=[WEATHER])
    [call] = first.output
    assert isinstance(call, ResponseFunctionToolCall)
    # As OpenAI's guide does it: the conversation so far, the model's output items as they
    # came, then one output per call.
    conversation: list[Any] = [{"role": "user", "content": QUESTION}, *first.output]
    final = await client.responses.create(
        model=model,
        input=[*conversation, _output(call.call_id, "18C and sunny")],
        tools=[WEATHER],
    )
    assert final.status == "completed"
    assert final.output_text == "It is 18C in Paris."
    assert _calls(final) == []
    request = system.fake.requests_for(upstream)[-1]
    _assert_result_reached_the_model(request, call_id, "18C and sunny")
    assert _offered(request) == ["get_weather"]


@pytest.mark.parametrize("continued_by", ["previous_response_id", "user"])
@WIRES
async def test_a_stateful_round_trip_sends_only_the_outputs(
    system: System, db: asyncpg.Connection, model: str, call_id: str, continued_by: str
) -> None:
    upstream = _upstream(model)
    system.fake.script(upstream, _calls_weather(call_id), Reply(text="It is 18C in Paris."))
    client = system.openai()
    user = f"fn-{system.namespace}"
    raw = await client.responses.with_raw_response.create(
        model=model, input=QUESTION, tools=[WEATHER], user=user
    )
    first = raw.parse()
    session = raw.headers["x-openclaw-session-key"]
    [(made, _, _, _)] = _calls(first)
    follow: dict[str, Any] = (
        {"previous_response_id": first.id}
        if continued_by == "previous_response_id"
        else {"user": user}
    )
    final = await client.responses.create(
        model=model, input=[_output(made, "18C")], tools=[WEATHER], **follow
    )
    assert final.output_text == "It is 18C in Paris."
    # The model saw the stored call and the client's result after it.
    _assert_result_reached_the_model(system.fake.requests_for(upstream)[-1], call_id, "18C")
    rows = await _transcript(db, session)
    assert [(r["role"], r["content"], r["tool_call_id"]) for r in rows] == [
        ("user", QUESTION, None),
        ("assistant", "", None),
        ("tool", "18C", call_id),
        ("assistant", "It is 18C in Paris.", None),
    ]


async def test_a_retried_continuation_gets_its_first_answer(system: System) -> None:
    system.fake.script("gpt-fn", _calls_weather("call_r"), Reply(text="It is 18C."))
    client = system.openai()
    first = await client.responses.create(model="openai/gpt-fn", input=QUESTION, tools=[WEATHER])
    headers = {"Idempotency-Key": f"fn-retry-{system.namespace}"}
    answers = [
        await client.responses.create(
            model="openai/gpt-fn",
            input=[_output("call_r", "18C")],
            previous_response_id=first.id,
            tools=[WEATHER],
            extra_headers=headers,
        )
        for _ in range(2)
    ]
    assert [a.output_text for a in answers] == ["It is 18C."] * 2
    assert answers[0].id == answers[1].id
    assert len(system.fake.requests_for("gpt-fn")) == 2


async def test_outputs_must_answer_the_sessions_last_calls(system: System) -> None:
    system.fake.script("gpt-fn", _calls_weather("call_old"), Reply(text="Fine."))
    client = system.openai()
    first = await client.responses.create(model="openai/gpt-fn", input=QUESTION, tools=[WEATHER])
    # An output for a call the session's last response did not make.
    with pytest.raises(openai.BadRequestError) as err:
        await client.responses.create(
            model="openai/gpt-fn",
            input=[_output("call_other", "18C")],
            previous_response_id=first.id,
        )
    assert err.value.body is not None and err.value.body["param"] == "input.0.call_id"  # type: ignore[index]
    assert "its calls: 'call_old'" in err.value.message
    # Outputs for the session's calls come first: after a message they answer nothing.
    with pytest.raises(openai.BadRequestError) as err:
        await client.responses.create(
            model="openai/gpt-fn",
            input=[{"role": "user", "content": "and?"}, _output("call_old", "18C")],
            previous_response_id=first.id,
        )
    assert "come first in input" in err.value.message
    # Once the session has gone on, its earlier calls are answered no more.
    second = await client.responses.create(
        model="openai/gpt-fn", input="never mind", previous_response_id=first.id
    )
    assert second.output_text == "Fine."
    with pytest.raises(openai.BadRequestError) as err:
        await client.responses.create(
            model="openai/gpt-fn",
            input=[_output("call_old", "18C")],
            previous_response_id=second.id,
        )
    assert "it made none" in err.value.message
    assert len(system.fake.requests_for("gpt-fn")) == 2


def _function_call(call_id: str, arguments: str = ARGS_TEXT) -> dict[str, Any]:
    return {
        "type": "function_call",
        "call_id": call_id,
        "name": "get_weather",
        "arguments": arguments,
    }


@pytest.mark.parametrize(
    ("extra", "param", "fragment"),
    [
        ({"tools": [{"type": "web_search"}]}, "tools.0.type", "'web_search' is not supported"),
        (
            {"tools": [{"type": "function", "name": "a", "description": "\x00"}]},
            "tools.0.description",
            "NUL",
        ),
        (
            {
                "input": [
                    {"role": "user", "content": QUESTION},
                    _function_call("call_1", '{"city": "\\u0000"}'),
                    _output("call_1", "18C"),
                ]
            },
            "input.1.arguments.city",
            "NUL",
        ),
        ({"input": [_output("call_nope", "18C")]}, "input.0.call_id", "'call_nope'"),
        (
            {"input": [{"role": "user", "content": QUESTION}, _output("call_nope", "18C")]},
            "input.1.call_id",
            "previous_response_id to continue it",
        ),
        (
            {
                "input": [
                    {"role": "user", "content": QUESTION},
                    _function_call("call_1"),
                    _output("call_2", "18C"),
                ]
            },
            "input.2.call_id",
            "'call_2'",
        ),
        (
            {
                "input": [
                    {"role": "user", "content": QUESTION},
                    _function_call("call_1"),
                    {"role": "user", "content": "and?"},
                ]
            },
            "input.1.call_id",
            "before input.2",
        ),
        (
            {"input": [{"role": "user", "content": QUESTION}, _function_call("call_1")]},
            "input.1.call_id",
            "no function_call_output",
        ),
        ({"tools": [WEATHER, TIME, WEATHER]}, "tools", "tools.2.name"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "name": "get_time"}},
            "tool_choice",
            "not one of the tools",
        ),
        ({"tool_choice": "required"}, "tool_choice", "needs tools"),
    ],
    ids=[
        "not-a-function",
        "nul-in-a-schema",
        "nul-in-arguments",
        "output-without-call",
        "output-after-a-message",
        "output-for-another-call",
        "call-answered-by-a-message",
        "call-without-output",
        "duplicate-names",
        "choice-names-no-tool",
        "required-without-tools",
    ],
)
async def test_bad_function_tools_get_400_and_run_nothing(
    system: System, db: asyncpg.Connection, extra: dict[str, Any], param: str, fragment: str
) -> None:
    body = {"model": "openai/gpt-fn", "input": QUESTION, **extra}
    runs = await db.fetchval("SELECT count(*) FROM runs")
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{system.url}/v1/responses", json=body, headers=auth(system)) as r,
    ):
        assert r.status == 400
        error = (await r.json())["error"]
    assert error["code"] == "invalid_request"
    assert error["param"] == param
    assert fragment in error["message"]
    assert system.fake.requests_for("gpt-fn") == []
    assert await db.fetchval("SELECT count(*) FROM runs") == runs
