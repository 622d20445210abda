"""The OpenAI Responses surface end to end, through the real openai SDK: plain and streamed
responses, the SDK's stream helper, sessions, errors, and a dropped stream resumed."""

from __future__ import annotations

import aiohttp
import asyncpg
import openai
import pytest
from clawbus_fakes.models import Reply

from tests.integration.test_http_000 import Frame, assistant_message, auth, sse_frames
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
        ({"input": [{"type": "function_call_output", "call_id": "c", "output": "x"}]}, "messages"),
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
