"""Scripted fake model provider speaking the OpenAI Chat Completions and Anthropic Messages wires.

`async with FakeModelServer() as fake:` serves on loopback; point the real SDKs at it with
`AsyncOpenAI(base_url=fake.url + "/v1")` / `AsyncAnthropic(base_url=fake.url)`. Replies are queued
per model with `script()`; with nothing queued the model's `set_default()` reply is used, else an
echo of the last user message. Run standalone with `python -m clawbus_fakes.models --port 0`.

OpenAI's `POST /v1/embeddings` answers with `fake_embedding` vectors (a hashed bag of words:
texts sharing words are close, others are orthogonal), as floats or base64 like the real API.
A scripted reply for the model applies only its failure and timing fields (`status`, `error`,
`delay_s`, `drop_after_chunks`, `retry_after_s`) to an embeddings request.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import itertools
import json
import math
import re
import signal
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeGuard

from aiohttp import web

from clawbus_fakes import _anthropic_wire, _openai_wire
from clawbus_fakes._serve import Served, http_url, serve
from clawbus_fakes._wire import CONTENT, TERMINAL, Events, Plan, ToolPlan, encode_json

__all__ = [
    "DefaultReply",
    "FakeModelServer",
    "NamedError",
    "RecordedRequest",
    "Reply",
    "ToolCall",
    "WireProtocol",
    "fake_embedding",
    "main",
]

WireProtocol = Literal["openai", "anthropic"]
# Errors a Reply can name, answered with each wire's real body for them (see Reply.error).
NamedError = Literal["context_length_exceeded"]

# Words with their leading whitespace, so "".join(chunks) == text; trailing space joins the last.
_WORD_RE: Final = re.compile(r"\s*\S+(?:\s+$)?|\s+")
# Context-length errors as the real APIs word them (only the token counts vary there).
_CONTEXT_LENGTH_OPENAI: Final = (
    "This model's maximum context length is 128000 tokens. However, your messages resulted in "
    "131072 tokens. Please reduce the length of the messages."
)
_CONTEXT_LENGTH_ANTHROPIC: Final = "prompt is too long: 208310 tokens > 200000 maximum"
# A refusal scripted in either wire's name is answered in the requested wire's name.
_REFUSAL: Final[dict[str, dict[str, str]]] = {
    "openai": {"refusal": "content_filter"},
    "anthropic": {"content_filter": "refusal"},
}
# Tool arguments stream in fragments of this many characters, like a tokenizer would cut them.
_ARG_FRAGMENT: Final = 16
_MAX_BODY: Final = 64 * 1024 * 1024  # agents send long transcripts; aiohttp's default is 1 MiB
EMBEDDING_DIMENSIONS: Final = 256
_MAX_DIMENSIONS: Final = 4096
# The fake's stemmer: a word's first five letters ("vegetables" and "vegetarian" -> "veget"),
# cruder than Postgres' English stemmer, so tests can find a file by meaning but not by lexeme.
_STEM_CHARS: Final = 5
_BAD_EMBEDDING_INPUT: Final = (
    "'$.input' is invalid. Please check the API reference: "
    "https://platform.openai.com/docs/api-reference."
)
_EMBED_WORD_RE: Final = re.compile(r"[^\W_]{3,}")
_STOP_WORDS: Final = frozenset({
    "the", "and", "for", "are", "but", "not", "you", "all", "any", "can", "had", "her", "was",
    "one", "our", "out", "has", "his", "how", "its", "may", "new", "now", "who", "did", "get",
    "him", "she", "they", "them", "this", "that", "with", "have", "from", "what", "when",
    "where", "which", "will", "your", "about", "there", "their", "would", "been", "were",
    "into", "than", "then", "these", "those", "very", "also",
})  # fmt: skip


@dataclass
class ToolCall:
    """A tool call the fake model makes."""

    name: str
    arguments: dict[str, Any]
    id: str | None = None  # generated ("call_…" / "toolu_…") if None


@dataclass
class Reply:
    """One scripted model turn.

    `text` streams word by word ("a b" -> ["a", " b"]) unless `chunks` is given, which then
    replaces it. `status` (>= 400) answers with that provider's real error body instead; 429 sends
    `retry-after: 1` unless `retry_after_s` says otherwise. `drop_after_chunks` closes the socket
    after that many content chunks (text pieces or tool-argument fragments) with no terminal event;
    on a non-streaming call it closes the socket before any response. `finish_reason` defaults to
    stop/tool_calls (OpenAI) or end_turn/tool_use (Anthropic); either wire's name is accepted
    (a refusal: `content_filter` / `refusal`). `error` names an error answered with each wire's
    real body for it, with `status` 400 unless given: `"context_length_exceeded"` is OpenAI's
    `error.code` of that name and Anthropic's "prompt is too long: ..." invalid_request_error.
    """

    text: str = ""
    chunks: list[str] | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    delay_s: float = 0.0  # before the response headers
    chunk_delay_s: float = 0.0  # between streamed content chunks
    status: int | None = None
    drop_after_chunks: int | None = None
    finish_reason: str | None = None
    retry_after_s: float | None = None
    error: NamedError | None = None

    def __post_init__(self) -> None:
        if self.error is not None and self.status is None:
            self.status = 400
        if self.status is not None and self.status < 400:
            raise ValueError(f"Reply.status must be an HTTP error (>= 400), got {self.status}")
        if self.drop_after_chunks is not None and self.drop_after_chunks < 0:
            raise ValueError("Reply.drop_after_chunks must be >= 0")
        if self.delay_s < 0 or self.chunk_delay_s < 0:
            raise ValueError("Reply delays must be >= 0")

    def content_chunks(self) -> list[str]:
        if self.chunks is not None:
            return list(self.chunks)
        return _WORD_RE.findall(self.text)


@dataclass(frozen=True)
class RecordedRequest:
    """A model call as received: `body` is the parsed JSON, `headers` have lower-cased names."""

    protocol: WireProtocol
    model: str
    body: dict[str, Any]
    headers: dict[str, str]
    path: str

    @property
    def stream(self) -> bool:
        return self.body.get("stream") is True

    @property
    def messages(self) -> list[dict[str, Any]]:
        messages = self.body.get("messages")
        return [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []

    @property
    def last_user_text(self) -> str:
        """Text of the last user message that has any (tool results alone are skipped)."""
        for message in reversed(self.messages):
            if message.get("role") == "user":
                text = _text_of(message.get("content"), tool_results=False)
                if text:
                    return text
        return ""

    @property
    def prompt_tokens(self) -> int:
        """Whitespace-separated words in the system prompt and every message."""
        words = len(_text_of(self.body.get("system"), tool_results=True).split())
        for message in self.messages:
            words += len(_text_of(message.get("content"), tool_results=True).split())
        return words


DefaultReply = Reply | Callable[[RecordedRequest], Reply]


def _text_of(content: object, *, tool_results: bool) -> str:
    """Plain text of an OpenAI/Anthropic `content` value (a string or a list of parts)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    parts: list[str] = []
    for part in content:
        if not isinstance(part, dict):
            continue
        text = part.get("text")
        if isinstance(text, str):
            parts.append(text)
        elif tool_results and part.get("type") == "tool_result":
            parts.append(_text_of(part.get("content"), tool_results=True))
    return "\n".join(parts)


def fake_embedding(text: str, dimensions: int = EMBEDDING_DIMENSIONS) -> list[float]:
    """The fake's deterministic embedding: a unit vector counting, per dimension, the words
    hashed there. Words are lower-cased runs of three or more letters or digits, without a few
    dozen English stop words, cut to their first five letters; a text with no such word is
    hashed whole."""
    words = [w[:_STEM_CHARS] for w in _EMBED_WORD_RE.findall(text.lower())]
    words = [w for w in words if w not in _STOP_WORDS] or [text.strip().lower()]
    vector = [0.0] * dimensions
    for word in words:
        digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
        vector[int.from_bytes(digest, "big") % dimensions] += 1.0
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector]


def _embedding_inputs(raw: object) -> list[str] | None:
    """The texts of an embeddings `input` (a token array becomes words), None if invalid."""
    if isinstance(raw, str) or _is_tokens(raw):
        raw = [raw]  # one text, or one token array
    if not isinstance(raw, list) or not raw:
        return None
    texts = []
    for item in raw:
        if _is_tokens(item):
            texts.append(" ".join(f"token{t}" for t in item))
        elif isinstance(item, str) and item:
            texts.append(item)
        else:  # the real API refuses empty strings too
            return None
    return texts


def _is_tokens(item: object) -> TypeGuard[list[int]]:
    return isinstance(item, list) and bool(item) and all(type(t) is int for t in item)


def _json_response(
    data: object, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=encode_json(data).encode(),
        status=status,
        headers=headers,
        content_type="application/json",
    )


# --------------------------------------------------------------------------- server


class FakeModelServer(Served):
    """Async context manager serving both wires on `host` (a free port when `port` is 0).

    `delay_s` / `chunk_delay_s` apply to the built-in echo reply; `models` are advertised by
    `GET /v1/models` besides every model that has been scripted or given a default.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        delay_s: float = 0.0,
        chunk_delay_s: float = 0.0,
        models: Iterable[str] = (),
    ) -> None:
        self.host = host
        self.port = port
        self.requests: list[RecordedRequest] = []
        self._delay_s = delay_s
        self._chunk_delay_s = chunk_delay_s
        self._advertised = list(models)
        self._queues: dict[str, deque[Reply]] = {}
        self._defaults: dict[str, DefaultReply] = {}
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        if self._runner is None:
            raise RuntimeError("FakeModelServer is not started")
        return http_url(self.host, self.port)

    # -- scripting

    def script(self, model: str, *replies: Reply) -> None:
        """Queue replies (FIFO) for requests naming `model`."""
        self._queues.setdefault(model, deque()).extend(replies)

    def set_default(self, model: str, reply: DefaultReply) -> None:
        """Serve `reply` (or `reply(request)`) whenever `model`'s queue is empty."""
        self._defaults[model] = reply

    def requests_for(self, model: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.model == model]

    def reset(self) -> None:
        """Forget queued replies, defaults and recorded requests."""
        self._queues.clear()
        self._defaults.clear()
        self.requests.clear()

    # -- lifecycle

    async def start(self) -> None:
        if self._runner is not None:
            return
        app = web.Application(client_max_size=_MAX_BODY)
        app.router.add_post("/v1/chat/completions", self._handle_openai)
        app.router.add_post("/v1/messages", self._handle_anthropic)
        app.router.add_post("/v1/embeddings", self._handle_embeddings)
        app.router.add_get("/v1/models", self._handle_models)
        self._runner, self.port = await serve(app, self.host, self.port)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # -- handlers

    def _next_reply(self, request: RecordedRequest) -> Reply:
        queue = self._queues.get(request.model)
        if queue:
            return queue.popleft()
        default = self._defaults.get(request.model)
        if isinstance(default, Reply):
            return default
        if default is not None:
            return default(request)
        return Reply(
            text="echo: " + request.last_user_text,
            delay_s=self._delay_s,
            chunk_delay_s=self._chunk_delay_s,
        )

    async def _receive(self, request: web.Request, protocol: WireProtocol) -> RecordedRequest | str:
        """Parse and record a model call; a string is the reason it is a bad request."""
        try:
            body = json.loads(await request.read())
        except ValueError as exc:
            return f"Request body is not valid JSON: {exc}"
        if not isinstance(body, dict):
            return "Request body must be a JSON object."
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return "model: field required"
        recorded = RecordedRequest(
            protocol=protocol,
            model=model,
            body=body,
            path=request.path,
            headers={k.lower(): v for k, v in request.headers.items()},
        )
        self.requests.append(recorded)
        return recorded

    def _plan(self, reply: Reply, recorded: RecordedRequest, id_prefix: str) -> Plan:
        tools = []
        for call in reply.tool_calls:
            args = encode_json(call.arguments)
            tools.append(
                ToolPlan(
                    id=call.id or f"{id_prefix}fake{next(self._ids):016d}",
                    name=call.name,
                    arguments=call.arguments,
                    fragments=[
                        args[i : i + _ARG_FRAGMENT] for i in range(0, len(args), _ARG_FRAGMENT)
                    ],
                )
            )
        finish = reply.finish_reason
        if finish is not None:
            finish = _REFUSAL[recorded.protocol].get(finish, finish)
        return Plan(reply.content_chunks(), tools, finish, recorded.prompt_tokens)

    async def _handle_openai(self, request: web.Request) -> web.StreamResponse:
        rid = f"req_fake{next(self._ids):016d}"
        headers = {"x-request-id": rid}
        recorded = await self._receive(request, "openai")
        if isinstance(recorded, str):
            return _json_response(_openai_wire.error_body(400, recorded), 400, headers)
        reply = self._next_reply(recorded)
        if reply.delay_s > 0:
            await asyncio.sleep(reply.delay_s)
        if reply.status is not None:
            body = _openai_wire.error_body(reply.status)
            if reply.error == "context_length_exceeded":
                body["error"].update(
                    message=_CONTEXT_LENGTH_OPENAI, param="messages", code=reply.error
                )
            return _json_response(body, reply.status, _error_headers(reply, headers))
        plan = self._plan(reply, recorded, "call_")
        cid, created = f"chatcmpl-fake{next(self._ids):016d}", int(time.time())
        if not recorded.stream:
            if reply.drop_after_chunks is not None:
                return _drop(request)
            body = _openai_wire.completion(plan, cid, recorded.model, created)
            return _json_response(body, headers=headers)
        options = recorded.body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        events = _openai_wire.stream_events(plan, cid, recorded.model, created, include_usage)
        return await _write_stream(request, reply, headers, events)

    async def _handle_anthropic(self, request: web.Request) -> web.StreamResponse:
        rid = f"req_fake{next(self._ids):016d}"
        headers = {"request-id": rid}
        recorded = await self._receive(request, "anthropic")
        if isinstance(recorded, str):
            return _json_response(_anthropic_wire.error_body(400, rid, recorded), 400, headers)
        reply = self._next_reply(recorded)
        if reply.delay_s > 0:
            await asyncio.sleep(reply.delay_s)
        if reply.status is not None:
            message = (
                _CONTEXT_LENGTH_ANTHROPIC if reply.error == "context_length_exceeded" else None
            )
            return _json_response(
                _anthropic_wire.error_body(reply.status, rid, message),
                reply.status,
                _error_headers(reply, headers),
            )
        plan = self._plan(reply, recorded, "toolu_")
        mid = f"msg_fake{next(self._ids):016d}"
        if not recorded.stream:
            if reply.drop_after_chunks is not None:
                return _drop(request)
            body = _anthropic_wire.message(plan, mid, recorded.model)
            return _json_response(body, headers=headers)
        events = _anthropic_wire.stream_events(plan, mid, recorded.model)
        return await _write_stream(request, reply, headers, events)

    async def _handle_embeddings(self, request: web.Request) -> web.StreamResponse:
        headers = {"x-request-id": f"req_fake{next(self._ids):016d}"}
        recorded = await self._receive(request, "openai")
        if isinstance(recorded, str):
            return _json_response(_openai_wire.error_body(400, recorded), 400, headers)
        reply = self._next_reply(recorded)
        if reply.delay_s > 0:
            await asyncio.sleep(reply.delay_s)
        if reply.status is not None:
            message = _CONTEXT_LENGTH_OPENAI if reply.error == "context_length_exceeded" else None
            body = _openai_wire.error_body(reply.status, message)
            return _json_response(body, reply.status, _error_headers(reply, headers))
        if reply.drop_after_chunks is not None:
            return _drop(request)
        texts = _embedding_inputs(recorded.body.get("input"))
        dimensions = recorded.body.get("dimensions", EMBEDDING_DIMENSIONS)
        encoding = recorded.body.get("encoding_format", "float")
        problem = None
        if texts is None:
            problem = _BAD_EMBEDDING_INPUT
        elif type(dimensions) is not int or not 1 <= dimensions <= _MAX_DIMENSIONS:
            problem = f"Invalid value for 'dimensions': {dimensions!r}."
        elif encoding not in ("float", "base64"):
            problem = f"Invalid value for 'encoding_format': {encoding!r}."
        if texts is None or problem is not None:
            return _json_response(_openai_wire.error_body(400, problem), 400, headers)
        data = []
        for index, text in enumerate(texts):
            vector: list[float] | str = fake_embedding(text, dimensions)
            if encoding == "base64":  # what the SDK asks for by default: little-endian float32
                packed = struct.pack(f"<{len(vector)}f", *vector)
                vector = base64.b64encode(packed).decode()
            data.append({"object": "embedding", "index": index, "embedding": vector})
        tokens = sum(len(text.split()) for text in texts)
        body = {
            "object": "list",
            "data": data,
            "model": recorded.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return _json_response(body, headers=headers)

    async def _handle_models(self, request: web.Request) -> web.StreamResponse:
        # One body both SDKs parse: OpenAI reads id/object/created/owned_by and the list's
        # `object`; Anthropic reads type/display_name/created_at and has_more/first_id/last_id.
        names = list(dict.fromkeys([*self._advertised, *self._queues, *self._defaults]))
        data = [
            {
                "id": name,
                "object": "model",
                "created": 1_700_000_000,
                "owned_by": "clawbus-fakes",
                "type": "model",
                "display_name": name,
                "created_at": "2023-11-14T22:13:20Z",
                "lifecycle": "active",
            }
            for name in names
        ]
        return _json_response(
            {
                "object": "list",
                "data": data,
                "has_more": False,
                "first_id": names[0] if names else None,
                "last_id": names[-1] if names else None,
            }
        )


def _error_headers(reply: Reply, headers: dict[str, str]) -> dict[str, str]:
    retry_after = reply.retry_after_s
    if retry_after is None and reply.status == 429:
        retry_after = 1.0
    if retry_after is None:
        return headers
    return {**headers, "retry-after": f"{retry_after:g}"}


def _drop(request: web.Request) -> web.StreamResponse:
    """Close the socket with no response; aiohttp's later write_eof fails quietly on it."""
    if request.transport is not None:
        request.transport.close()
    return web.Response()


async def _write_stream(
    request: web.Request, reply: Reply, headers: dict[str, str], events: Events
) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            **headers,
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
        }
    )
    await response.prepare(request)
    drop, pause = reply.drop_after_chunks, reply.chunk_delay_s
    # Events are batched and written only when a pause or the end forces it: with no
    # chunk delay the whole stream is a single write.
    buffer = bytearray()
    sent = 0
    try:
        for data, kind in events:
            if drop is not None and (kind == TERMINAL or (kind == CONTENT and sent >= drop)):
                break
            if kind == CONTENT:
                if pause > 0 and sent > 0:
                    await response.write(bytes(buffer))
                    buffer.clear()
                    await asyncio.sleep(pause)
                sent += 1
            buffer += data
        else:
            await response.write_eof(bytes(buffer))
            return response
        # Dropped: flush what was "generated", then close without the chunked terminator, so the
        # client sees a truncated body rather than a clean end of stream.
        if buffer:
            await response.write(bytes(buffer))
        if request.transport is not None:
            request.transport.close()
    except ConnectionError:
        pass  # the client went away; nobody is left to tell
    return response


# --------------------------------------------------------------------------- CLI


async def _serve(args: argparse.Namespace) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    async with FakeModelServer(
        args.host,
        args.port,
        delay_s=args.delay_s,
        chunk_delay_s=args.chunk_delay_s,
        models=args.model,
    ) as fake:
        print(f"FAKE_MODEL_URL={fake.url}", flush=True)
        await stopping.wait()


def main(argv: list[str] | None = None) -> None:
    """`python -m clawbus_fakes.models`: serve echo replies until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(
        prog="python -m clawbus_fakes.models",
        description="Fake OpenAI/Anthropic model server (echoes the last user message).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--delay-s", type=float, default=0.0, help="latency before headers")
    parser.add_argument("--chunk-delay-s", type=float, default=0.0, help="pause between chunks")
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        help="model name to advertise on GET /v1/models (repeatable)",
    )
    args = parser.parse_args(argv)
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop  # a project dependency off Windows; it lowers the baseline latency

        loop_factory = uvloop.new_event_loop
    except ImportError:
        pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(_serve(args))


if __name__ == "__main__":
    main()
