"""Client tools in the schema (RunOptions, ToolCall) and tool exchanges in a transcript."""

from __future__ import annotations

import pytest
from clawbus_protocol.runs import ChatMessage, ClientTool, RunOptions, ToolCall
from clawbus_runner.exchanges import NO_RESULT, paired
from pydantic import ValidationError


@pytest.mark.parametrize(
    ("text", "arguments", "shown"),
    [
        ('{"b":1,"a":2}', {"b": 1, "a": 2}, '{"b":1,"a":2}'),
        ('{ "a" : [1, 2] }', {"a": [1, 2]}, '{ "a" : [1, 2] }'),
        ("", {}, "{}"),
        ("  ", {}, "{}"),
        ("not json", {"_raw": "not json"}, "not json"),
        ("[1]", {"_raw": "[1]"}, "[1]"),
    ],
)
def test_a_call_keeps_the_arguments_as_written(
    text: str, arguments: dict[str, object], shown: str
) -> None:
    call = ToolCall.parsed("c1", "f", text)
    assert call.arguments == arguments
    assert call.arguments_text() == shown
    again = ToolCall.model_validate_json(call.model_dump_json())  # through the bus and store
    assert again.arguments_text() == shown


def test_a_call_without_its_text_is_shown_as_json() -> None:
    assert ToolCall(id="c", name="f", arguments={"a": 1}).arguments_text() == '{"a": 1}'
    legacy = ToolCall(id="c", name="f", arguments={"_raw": "{oops"})
    assert legacy.arguments_text() == "{oops"


def _tools(*names: str) -> list[ClientTool]:
    return [ClientTool(name=n) for n in names]


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"tools": _tools("a", "b", "a")}, "tools.2.name: the name 'a' is already used by tools.0"),
        ({"tools": [{"name": "a b"}]}, "should match pattern"),
        ({"tools": _tools(*(f"t{i}" for i in range(129)))}, "at most 128"),
        ({"tools": _tools("a"), "tool_choice": {"name": "b"}}, "'b', which is not one of"),
        ({"tool_choice": "auto"}, "send tools"),
        ({"parallel_tool_calls": False}, "send tools"),
    ],
)
def test_run_options_refuse_tools_that_do_not_fit(options: dict[str, object], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        RunOptions.model_validate(options)


def test_run_options_take_client_tools() -> None:
    options = RunOptions(tools=_tools("a", "b"), tool_choice="required", parallel_tool_calls=True)
    assert RunOptions.model_validate_json(options.model_dump_json()) == options
    assert options.tools is not None and options.tools[0].parameters["type"] == "object"


def _call(*ids: str) -> ChatMessage:
    calls = [ToolCall(id=i, name="f") for i in ids]
    return ChatMessage(role="assistant", tool_calls=calls)


def _result(call_id: str, content: str = "ok") -> ChatMessage:
    return ChatMessage(role="tool", content=content, tool_call_id=call_id)


def test_paired_leaves_a_well_formed_transcript_alone() -> None:
    messages = [
        ChatMessage(role="user", content="q"),
        _call("a", "b"),
        _result("b"),
        _result("a"),
        ChatMessage(role="assistant", content="done"),
    ]
    assert paired(messages) == messages


def test_paired_answers_unanswered_calls_and_drops_repeated_results() -> None:
    user = ChatMessage(role="user", content="q")
    messages = [
        _result("stray"),
        user,
        _call("a", "b"),
        _result("a", "first"),
        _result("a", "again"),
        user,
        _call("c"),
    ]
    assert [(m.role, m.tool_call_id, m.content) for m in paired(messages)] == [
        ("user", None, "q"),
        ("assistant", None, ""),
        ("tool", "a", "first"),
        ("tool", "b", NO_RESULT),
        ("user", None, "q"),
        ("assistant", None, ""),
        ("tool", "c", NO_RESULT),
    ]
