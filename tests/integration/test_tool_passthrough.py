"""OpenAI function calling through clawbus: a client's `tools` reach the model instead of the
agent's, the model's calls come back to the client (plain and streamed) and the client's
results go back to the model, for an OpenAI-wire and an Anthropic-wire upstream. Real openai
SDK -> gateway -> NATS -> runner -> fake model; Postgres holds the transcript."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import asyncpg
import openai
import pytest
from clawbus_fakes.models import RecordedRequest, Reply, ToolCall
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionMessageFunctionToolCall,
    ChatCompletionMessageParam,
    ChatCompletionToolParam,
)
from pydantic import BaseModel

from tests.system import System

WEATHER: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city now.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TIME: ChatCompletionToolParam = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
}
ARGS = {"city": "Paris", "unit": "c"}
# What the fake model writes for ARGS (compact, as the real APIs do); json.dumps would add
# spaces, so the client seeing exactly this proves the model's text passed through untouched.
ARGS_TEXT = '{"city":"Paris","unit":"c"}'
QUESTION: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "What is the weather in Paris?"}
]

WIRES = pytest.mark.parametrize(
    ("model", "call_id"),
    [("openai/gpt-fn", "call_w1"), ("anthropic/claude-fn", "toolu_w1")],
    ids=["openai-wire", "anthropic-wire"],
)


def _upstream(model: str) -> str:
    return model.split("/", 1)[1]


def _calls_weather(call_id: str, text: str = "") -> Reply:
    return Reply(text=text, tool_calls=[ToolCall("get_weather", ARGS, id=call_id)])


def _offered(request: RecordedRequest) -> list[str]:
    """Names of the tools the model was offered, on either wire."""
    tools = request.body.get("tools") or []
    if request.protocol == "openai":
        return [t["function"]["name"] for t in tools]
    return [t["name"] for t in tools]


def _system_prompt(request: RecordedRequest) -> str:
    if request.protocol == "anthropic":
        return str(request.body.get("system") or "")
    return "\n".join(m["content"] for m in request.messages if m["role"] == "system")


def _calls(completion: ChatCompletion) -> list[tuple[str, str, str]]:
    """(id, name, arguments) of the completion's tool calls."""
    calls = []
    for call in completion.choices[0].message.tool_calls or ():
        assert isinstance(call, ChatCompletionMessageFunctionToolCall)
        calls.append((call.id, call.function.name, call.function.arguments))
    return calls


def _follow_up(first: ChatCompletion, result: str) -> list[ChatCompletionMessageParam]:
    """The conversation again, with the model's calls and one result per call."""
    message = first.choices[0].message
    assert message.tool_calls
    calls: list[Any] = [c.model_dump() for c in message.tool_calls]
    results: list[ChatCompletionMessageParam] = [
        {"role": "tool", "tool_call_id": c.id, "content": result} for c in message.tool_calls
    ]
    return [
        *QUESTION,
        {"role": "assistant", "content": message.content, "tool_calls": calls},
        *results,
    ]


def _assert_result_reached_the_model(request: RecordedRequest, call_id: str, result: str) -> None:
    """The model saw its call (arguments as it wrote them) and the client's result for it."""
    if request.protocol == "openai":
        call, answer = request.messages[-2], request.messages[-1]
        assert call["role"] == "assistant"
        assert call["tool_calls"] == [
            {
                "id": call_id,
                "type": "function",
                "function": {"name": "get_weather", "arguments": ARGS_TEXT},
            }
        ]
        assert answer == {"role": "tool", "content": result, "tool_call_id": call_id}
    else:
        call, answer = request.messages[-2], request.messages[-1]
        assert call == {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": call_id, "name": "get_weather", "input": ARGS}],
        }
        assert answer == {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call_id, "content": result}],
        }


async def _transcript(db: asyncpg.Connection, session_key: str) -> list[asyncpg.Record]:
    return await db.fetch(
        """SELECT m.role, m.content, m.tool_calls, m.tool_call_id
           FROM messages m JOIN sessions s ON s.id = m.session_id
           WHERE s.session_key = $1 ORDER BY m.id""",
        session_key,
    )


# --- the model's calls reach the client ---------------------------------------------------


@WIRES
async def test_a_tool_call_comes_back_with_the_models_arguments(
    system: System, model: str, call_id: str
) -> None:
    system.fake.script(_upstream(model), _calls_weather(call_id))
    completion = await system.openai().chat.completions.create(
        model=model, messages=QUESTION, tools=[WEATHER, TIME]
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert _calls(completion) == [(call_id, "get_weather", ARGS_TEXT)]

    # The model was offered exactly the client's tools, not the agent's (nor told of them).
    [request] = system.fake.requests_for(_upstream(model))
    assert _offered(request) == ["get_weather", "get_time"]
    assert "Tools available to you" not in _system_prompt(request)


async def test_without_client_tools_the_agent_keeps_its_own(system: System) -> None:
    completion = await system.openai().chat.completions.create(
        model="openai/gpt-own", messages=QUESTION
    )
    assert completion.choices[0].finish_reason == "stop"
    [request] = system.fake.requests_for("gpt-own")
    assert {"read", "write"} <= set(_offered(request))
    assert "Tools available to you" in _system_prompt(request)


@WIRES
async def test_a_streamed_tool_call_accumulates_to_the_plain_one(
    system: System, model: str, call_id: str
) -> None:
    upstream = _upstream(model)
    system.fake.script(upstream, _calls_weather(call_id, "Let me look."))
    system.fake.script(upstream, _calls_weather(call_id, "Let me look."))
    client = system.openai()
    plain = await client.chat.completions.create(model=model, messages=QUESTION, tools=[WEATHER])
    async with client.chat.completions.stream(
        model=model, messages=QUESTION, tools=[WEATHER]
    ) as stream:
        streamed = await stream.get_final_completion()
    for completion in (plain, streamed):
        assert completion.choices[0].finish_reason == "tool_calls"
        assert completion.choices[0].message.content == "Let me look."
    assert _calls(streamed) == _calls(plain) == [(call_id, "get_weather", ARGS_TEXT)]


async def test_streamed_tool_calls_are_openai_chunks_with_event_ids(system: System) -> None:
    system.fake.script(
        "gpt-fn",
        Reply(
            tool_calls=[
                ToolCall("get_weather", ARGS, id="call_a"),
                ToolCall("get_time", {}, id="call_b"),
            ]
        ),
    )
    body = {"model": "openai/gpt-fn", "messages": QUESTION, "tools": [WEATHER, TIME]}
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{system.url}/v1/chat/completions",
            json={**body, "stream": True},
            headers={"Authorization": f"Bearer {system.token}"},
        ) as r,
    ):
        assert r.status == 200
        raw = (await r.read()).decode()
    frames = [f for f in raw.split("\n\n") if f.strip()]
    assert all(f.startswith("id: ") for f in frames), frames  # every frame resumable
    data = [f.split("data: ", 1)[1] for f in frames]
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert [d["tool_calls"] for d in deltas if "tool_calls" in d] == [
        [
            {
                "index": 0,
                "id": "call_a",
                "type": "function",
                "function": {"name": "get_weather", "arguments": ARGS_TEXT},
            }
        ],
        [
            {
                "index": 1,
                "id": "call_b",
                "type": "function",
                "function": {"name": "get_time", "arguments": "{}"},
            }
        ],
    ]
    finishes = [c["choices"][0].get("finish_reason") for c in chunks]
    assert [f for f in finishes if f] == ["tool_calls"]
    assert finishes[-1] == "tool_calls"


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (
            "openai/gpt-fn",
            {
                "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
                "parallel_tool_calls": False,
            },
        ),
        (
            "anthropic/claude-fn",
            {
                "tool_choice": {
                    "type": "tool",
                    "name": "get_weather",
                    "disable_parallel_tool_use": True,
                }
            },
        ),
    ],
    ids=["openai-wire", "anthropic-wire"],
)
async def test_tool_choice_and_parallel_tool_calls_reach_the_model(
    system: System, model: str, expected: dict[str, Any]
) -> None:
    system.fake.script(_upstream(model), _calls_weather("call_c"))
    await system.openai().chat.completions.create(
        model=model,
        messages=QUESTION,
        tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False,
    )
    [request] = system.fake.requests_for(_upstream(model))
    assert {k: request.body.get(k) for k in expected} == expected


class Weather(BaseModel):
    city: str
    unit: str


async def test_a_strict_tool_is_parsed_by_the_sdk(system: System) -> None:
    system.fake.script("gpt-fn", Reply(tool_calls=[ToolCall("Weather", ARGS, id="call_s")]))
    async with system.openai().chat.completions.stream(
        model="openai/gpt-fn", messages=QUESTION, tools=[openai.pydantic_function_tool(Weather)]
    ) as stream:
        final = await stream.get_final_completion()
    [call] = final.choices[0].message.tool_calls or []
    assert call.function.parsed_arguments == Weather(city="Paris", unit="c")
    [request] = system.fake.requests_for("gpt-fn")
    assert request.body["tools"][0]["function"]["strict"] is True


async def test_a_retried_request_gets_the_same_tool_calls(system: System) -> None:
    system.fake.script("gpt-fn", _calls_weather("call_r"))
    client = system.openai()
    headers = {"Idempotency-Key": f"fn-{system.namespace}"}
    first, second = [
        await client.chat.completions.create(
            model="openai/gpt-fn", messages=QUESTION, tools=[WEATHER], extra_headers=headers
        )
        for _ in range(2)
    ]
    assert len(system.fake.requests_for("gpt-fn")) == 1
    assert second.choices[0].finish_reason == "tool_calls"
    assert second.choices[0].message.tool_calls == first.choices[0].message.tool_calls


# --- the client's results reach the model -------------------------------------------------


@WIRES
async def test_the_full_round_trip(system: System, model: str, call_id: str) -> None:
    upstream = _upstream(model)
    system.fake.script(upstream, _calls_weather(call_id), Reply(text="It is 18C in Paris."))
    client = system.openai()
    first = await client.chat.completions.create(model=model, messages=QUESTION, tools=[WEATHER])
    final = await client.chat.completions.create(
        model=model, messages=_follow_up(first, "18C and sunny"), tools=[WEATHER]
    )
    assert final.choices[0].finish_reason == "stop"
    assert final.choices[0].message.content == "It is 18C in Paris."
    assert final.choices[0].message.tool_calls is None
    _assert_result_reached_the_model(
        system.fake.requests_for(upstream)[-1], call_id, "18C and sunny"
    )


@WIRES
async def test_a_stateful_round_trip_keeps_the_exchange_in_the_session(
    system: System, db: asyncpg.Connection, model: str, call_id: str
) -> None:
    upstream = _upstream(model)
    system.fake.script(
        upstream,
        _calls_weather(call_id),
        Reply(text="It is 18C in Paris."),
        Reply(text="You asked about Paris."),
    )
    client = system.openai()
    user = f"fn-{system.namespace}"
    first = await client.chat.completions.create(
        model=model, messages=QUESTION, tools=[WEATHER], user=user
    )
    await client.chat.completions.create(
        model=model, messages=_follow_up(first, "18C"), tools=[WEATHER], user=user
    )
    # The follow-up was built from the session's transcript: the stored call and result.
    _assert_result_reached_the_model(system.fake.requests_for(upstream)[-1], call_id, "18C")

    later = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "What did I ask?"}], user=user
    )
    assert later.choices[0].message.content == "You asked about Paris."
    rows = await _transcript(db, f"agent:main:openai-user:{user}")
    assert [(r["role"], r["content"], r["tool_call_id"]) for r in rows] == [
        ("user", "What is the weather in Paris?", None),
        ("assistant", "", None),
        ("tool", "18C", call_id),
        ("assistant", "It is 18C in Paris.", None),
        ("user", "What did I ask?", None),
        ("assistant", "You asked about Paris.", None),
    ]
    [stored_call] = json.loads(rows[1]["tool_calls"])
    assert (stored_call["id"], stored_call["raw_arguments"]) == (call_id, ARGS_TEXT)
    # The last turn's history holds the whole exchange, in order (Anthropic's tool results
    # travel in user turns).
    seen = system.fake.requests_for(upstream)[-1].messages
    roles = [m["role"] for m in seen if m["role"] != "system"]
    result_role = "tool" if upstream.startswith("gpt") else "user"
    assert roles == ["user", "assistant", result_role, "assistant", "user"]


async def test_a_session_goes_on_when_the_client_never_answers_its_calls(
    system: System, db: asyncpg.Connection
) -> None:
    system.fake.script("gpt-fn", _calls_weather("call_u"), Reply(text="Sure, hello."))
    client = system.openai()
    user = f"fn-unanswered-{system.namespace}"
    await client.chat.completions.create(
        model="openai/gpt-fn", messages=QUESTION, tools=[WEATHER], user=user
    )
    answer = await client.chat.completions.create(
        model="openai/gpt-fn", messages=[{"role": "user", "content": "never mind"}], user=user
    )
    assert answer.choices[0].message.content == "Sure, hello."
    # The model was shown the call answered by a stand-in, as every provider requires.
    seen = system.fake.requests_for("gpt-fn")[-1].messages
    assert [m["role"] for m in seen[-4:]] == ["user", "assistant", "tool", "user"]
    assert seen[-2]["tool_call_id"] == "call_u"


# --- bad requests -------------------------------------------------------------------------


def _tool(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}


@pytest.mark.parametrize(
    ("extra", "param", "fragment"),
    [
        # Postgres can store NUL nowhere: a 400 up front, not a 500 from the database.
        (
            {"tools": [{"type": "function", "function": {"name": "a", "description": "\x00"}}]},
            "tools.0",
            "NUL",
        ),
        (
            {
                "messages": [
                    *QUESTION,
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "id": "call_1",
                                "type": "function",
                                "function": {"name": "a", "arguments": '{"k": "\\u0000"}'},
                            }
                        ],
                    },
                    {"role": "tool", "tool_call_id": "call_1", "content": "done"},
                ]
            },
            "messages.1",
            "NUL",
        ),
        ({"tools": [_tool("a"), _tool("b"), _tool("a")]}, "tools", "tools.2.function.name"),
        ({"tools": [_tool("get weather")]}, "tools.0.function.name", "pattern"),
        ({"tools": [_tool("x" * 65)]}, "tools.0.function.name", "pattern"),
        ({"tools": [_tool(f"t{i}") for i in range(129)]}, "tools", "128"),
        ({"tools": [{"type": "custom", "function": {"name": "a"}}]}, "tools.0.type", "function"),
        (
            {
                "tools": [_tool("a")],
                "tool_choice": {"type": "function", "function": {"name": "b"}},
            },
            "tool_choice",
            "not one of the tools",
        ),
        ({"tool_choice": "required"}, "tool_choice", "needs tools"),
        (
            {
                "messages": [
                    *QUESTION,
                    {"role": "tool", "tool_call_id": "call_nope", "content": "18C"},
                ]
            },
            "messages.1.tool_call_id",
            "call_nope",
        ),
        (
            {
                "messages": [
                    *QUESTION,
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "id": "call_1",
                                "type": "function",
                                "function": {"name": "a", "arguments": "{}"},
                            },
                            {
                                "id": "call_2",
                                "type": "function",
                                "function": {"name": "a", "arguments": "{}"},
                            },
                        ],
                    },
                    {"role": "tool", "tool_call_id": "call_1", "content": "done"},
                ]
            },
            "messages.1.tool_calls",
            "call_2",
        ),
        (
            {
                "messages": [
                    *QUESTION,
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "id": "call_1",
                                "type": "function",
                                "function": {"name": "a", "arguments": "{}"},
                            }
                        ],
                    },
                    {"role": "tool", "content": "done"},
                ]
            },
            "messages.2.tool_call_id",
            "tool_call_id",
        ),
    ],
    ids=[
        "nul-in-a-schema",
        "nul-in-arguments",
        "duplicate-names",
        "name-with-space",
        "name-too-long",
        "too-many-tools",
        "not-a-function",
        "choice-names-no-tool",
        "required-without-tools",
        "result-without-call",
        "call-without-result",
        "result-without-id",
    ],
)
async def test_bad_tools_get_400_and_store_nothing(
    system: System, db: asyncpg.Connection, extra: dict[str, Any], param: str, fragment: str
) -> None:
    user = f"bad-tools-{system.namespace}"
    body = {"model": "openai/gpt-fn", "messages": QUESTION, "user": user, **extra}
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{system.url}/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {system.token}"},
        ) as r,
    ):
        assert r.status == 400
        error = (await r.json())["error"]
    assert error["code"] == "invalid_request"
    assert error["param"] == param
    assert fragment in error["message"]
    assert (
        await db.fetchval(
            "SELECT count(*) FROM sessions WHERE session_key = $1", f"agent:main:openai-user:{user}"
        )
        == 0
    )
    assert system.fake.requests_for("gpt-fn") == []


async def test_the_sdk_raises_bad_request_for_bad_tools(system: System) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        await system.openai().chat.completions.create(
            model="openai/gpt-fn", messages=QUESTION, tools=[WEATHER, WEATHER]
        )
    assert "already used by tools.0.function.name" in str(err.value)
