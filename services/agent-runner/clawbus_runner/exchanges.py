"""Tool exchanges in a conversation, kept in the shape every provider accepts.

Providers refuse an assistant message whose tool calls are not each followed by one result,
and a result that answers no call. The runner's own tool loop always stores a result per
call, but a client that brings its own tools runs them itself: it may never send the
results (and go on with a new question), or send them twice (a continuation retried after
its run failed). Both end up in the session's transcript, which must not break the session.
"""

from __future__ import annotations

from clawbus_protocol.runs import ChatMessage, ToolCall

NO_RESULT = "no result was sent for this tool call"


def paired(messages: list[ChatMessage]) -> list[ChatMessage]:
    """`messages` with each call answered once, right after its assistant message: a call
    without a result gets a stand-in, a repeated or stray result is left out."""
    out: list[ChatMessage] = []
    waiting: dict[str, ToolCall] = {}
    for message in messages:
        if message.role == "tool":
            if waiting.pop(message.tool_call_id or "", None) is not None:
                out.append(message)
            continue
        out += _stand_ins(waiting)
        waiting = {c.id: c for c in message.tool_calls} if message.role == "assistant" else {}
        out.append(message)
    return out + _stand_ins(waiting)


def _stand_ins(waiting: dict[str, ToolCall]) -> list[ChatMessage]:
    return [
        ChatMessage(role="tool", content=NO_RESULT, tool_call_id=c.id, name=c.name)
        for c in waiting.values()
    ]
