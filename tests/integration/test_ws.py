"""The WebSocket control channel end to end: real clients (aiohttp's and the `websockets`
library) -> gateway -> NATS -> runner -> fake model -> Redis -> client, with a second
gateway replica on the same NATS/Postgres/Redis namespace for the session events."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import websockets
from aiohttp import WSMsgType, web
from clawbus_core.config import Endpoints
from clawbus_fakes.models import FakeModelServer, Reply, ToolCall
from clawbus_gateway.app import create_app
from clawbus_gateway.settings import GatewaySettings
from clawbus_protocol import __version__
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

from tests.system import System, patched_env, start_system

Frame = dict[str, Any]
TIMEOUT_S = 15


@contextlib.asynccontextmanager
async def second_replica(system: System) -> AsyncIterator[str]:
    """Another gateway on the same endpoints and namespace (its own instance id), no runner."""
    with patched_env(system.env):
        settings = GatewaySettings()
    runner = web.AppRunner(create_app(settings), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def ws_url(http_url: str, path: str = "/") -> str:
    return "ws" + http_url.removeprefix("http") + path


def auth(system: System) -> dict[str, str]:
    return {"Authorization": f"Bearer {system.token}"}


class Client:
    """Request/response and event reading over either client library."""

    def __init__(self, receive: Callable[[], Any], send: Callable[[str], Any]) -> None:
        self._receive = receive
        self._send = send
        self._ids = itertools.count(1)
        self.backlog: list[Frame] = []

    @classmethod
    def aiohttp(cls, ws: aiohttp.ClientWebSocketResponse) -> Client:
        async def receive() -> Frame:
            msg = await ws.receive()
            assert msg.type is WSMsgType.TEXT, (msg.type, msg.data, msg.extra)
            frame: Frame = json.loads(msg.data)
            return frame

        return cls(receive, ws.send_str)

    @classmethod
    def websockets(cls, ws: ClientConnection) -> Client:
        async def receive() -> Frame:
            frame: Frame = json.loads(await ws.recv())
            return frame

        return cls(receive, ws.send)

    async def send(self, text: str) -> None:
        await self._send(text)

    async def request(self, method: str, params: dict[str, Any] | None = None) -> int:
        frame_id = next(self._ids)
        await self._send(json.dumps({"id": frame_id, "method": method, "params": params or {}}))
        return frame_id

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Frame:
        frame_id = await self.request(method, params)
        return await self.response(frame_id)

    async def response(self, frame_id: int | None) -> Frame:
        return await self.until(lambda f: f["type"] == "res" and f["id"] == frame_id)

    async def event(self, kind: str, **data: Any) -> Frame:
        def matches(frame: Frame) -> bool:
            body = frame.get("data", frame.get("payload", {}))
            return frame["type"] == kind and all(body.get(k) == v for k, v in data.items())

        return await self.until(matches)

    async def until(self, wanted: Callable[[Frame], bool]) -> Frame:
        for i, frame in enumerate(self.backlog):
            if wanted(frame):
                return self.backlog.pop(i)
        async with asyncio.timeout(TIMEOUT_S):
            while True:
                frame = await self._receive()
                if wanted(frame):
                    return frame
                self.backlog.append(frame)


@contextlib.asynccontextmanager
async def aiohttp_client(
    url: str, headers: dict[str, str], path: str = "/"
) -> AsyncIterator[tuple[Client, aiohttp.ClientWebSocketResponse]]:
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(ws_url(url, path), headers=headers) as ws,
    ):
        yield Client.aiohttp(ws), ws


@contextlib.asynccontextmanager
async def websockets_client(url: str, headers: dict[str, str]) -> AsyncIterator[Client]:
    async with ws_connect(ws_url(url, "/ws"), additional_headers=headers) as ws:
        yield Client.websockets(ws)


async def test_connected_then_chat_run_streams_to_chat_done(system: System) -> None:
    system.fake.script("gpt-ws", Reply(text="one two three four", chunk_delay_s=0.02))
    key = f"ws-{system.namespace}"
    async with aiohttp_client(system.url, auth(system)) as (client, _):
        connected = await client.event("connected")
        assert connected["data"]["gatewayVersion"] == __version__
        assert connected["data"]["clientId"]
        assert {"chat.run", "chat.abort", "session.list", "system.status"} <= set(
            connected["data"]["capabilities"]
        )

        answer = await client.call(
            "chat.run",
            {"message": "count", "sessionKey": key, "options": {"model": "openai/gpt-ws"}},
        )
        assert answer["ok"] is True, answer
        run_id = answer["result"]["runId"]
        assert answer["result"]["sessionKey"] == key

        deltas: list[str] = []
        while True:
            frame = await client.until(lambda f: f["type"] in ("chat.delta", "chat.done"))
            assert frame["data"]["runId"] == run_id
            assert frame["data"]["sessionKey"] == key
            if frame["type"] == "chat.done":
                break
            deltas.append(frame["data"]["delta"])
        done = frame["data"]
        assert done["text"] == "one two three four" == "".join(deltas)
        assert len(deltas) > 1
        assert done["finishReason"] == "stop" and done["aborted"] is False
        assert done["usage"]["totalTokens"] > 0
        assert done["usage"]["totalTokens"] == (
            done["usage"]["promptTokens"] + done["usage"]["completionTokens"]
        )

        # The same idempotencyKey again: that run, replayed, not a second one.
        system.fake.script("gpt-ws", Reply(text="first"))
        params = {"message": "once", "sessionKey": key, "idempotencyKey": f"idem-{key}"}
        first = await client.call("chat.run", params | {"options": {"model": "openai/gpt-ws"}})
        await client.event("chat.done", runId=first["result"]["runId"], text="first")
        retry = await client.call("chat.run", params | {"options": {"model": "openai/gpt-ws"}})
        assert retry["result"]["runId"] == first["result"]["runId"]
        assert retry["result"]["status"] == "completed"
        await client.event("chat.done", runId=first["result"]["runId"], text="first")

        listed = await client.call("session.list")
        assert key in [s["sessionKey"] for s in listed["result"]["sessions"]]
        got = await client.call("session.get", {"sessionKey": key})
        assert got["result"]["sessionKey"] == key
        assert got["result"]["agentId"] == "main"
        assert got["result"]["channel"] == "webchat"
        assert got["result"]["messageCount"] == 4
        missing = await client.call("session.get", {"sessionKey": f"nope-{key}"})
        assert missing["ok"] is False and missing["error"]["code"] == "not_found"

        status = await client.call("system.status")
        assert status["result"]["gatewayVersion"] == __version__
        assert status["result"]["sessions"] >= 1
        assert status["result"]["connections"] >= 1


async def test_session_events_reach_a_client_of_the_other_replica(system: System) -> None:
    system.fake.script(
        "gpt-ws-tools",
        Reply(tool_calls=[ToolCall("list", {})]),
        Reply(text="nothing in there"),
    )
    key = f"ws-events-{system.namespace}"
    async with (
        second_replica(system) as other,
        websockets_client(other, auth(system)) as watcher,
        websockets_client(other, auth(system)) as bystander,
        aiohttp_client(system.url, auth(system)) as (runner_client, _),
    ):
        subscribed = await watcher.call("subscribe", {"sessionKeys": [key]})
        assert subscribed["result"] == {"sessionKeys": [key], "all": False}
        await bystander.call("subscribe", {"sessionKeys": [f"other-{key}"]})

        answer = await runner_client.call(
            "chat.run",
            {
                "message": "what is there?",
                "sessionKey": key,
                "options": {"model": "openai/gpt-ws-tools"},
            },
        )
        run_id = answer["result"]["runId"]

        # The runner's client sees the tool round trip and the answer...
        call = await runner_client.event("tool.call", runId=run_id)
        assert call["data"]["tool"] == "list"
        result = await runner_client.event("tool.result", runId=run_id)
        assert result["data"]["callId"] == call["data"]["callId"]
        done = await runner_client.event("chat.done", runId=run_id)
        assert done["data"]["text"] == "nothing in there"

        # ...and the other replica's subscriber the session's events, in order.
        created = await watcher.event("session:created", sessionKey=key)
        assert created["payload"]["agentId"] == "main"
        received = await watcher.event("message:received", sessionKey=key)
        assert received["payload"] == received["payload"] | {
            "runId": run_id,
            "role": "user",
            "message": "what is there?",
        }
        invoked = await watcher.event("tool:invoked", sessionKey=key)
        assert invoked["payload"]["tool"] == "list"
        sent = await watcher.event("message:sent", sessionKey=key)
        assert sent["payload"]["message"] == "nothing in there"
        assert sent["payload"]["runId"] == run_id

        # A second turn on the same session is not a new session.
        system.fake.script("gpt-ws-tools", Reply(text="again"))
        await runner_client.call(
            "chat.run",
            {"message": "again", "sessionKey": key, "options": {"model": "openai/gpt-ws-tools"}},
        )
        await watcher.event("message:sent", sessionKey=key, message="again")
        assert not [f for f in watcher.backlog if f["type"] == "session:created"]

        # The bystander listened to another session: it heard none of this.
        await bystander.call("system.status")
        assert not [f for f in bystander.backlog if f["type"] not in ("connected", "heartbeat")]


async def test_chat_abort_from_the_other_replica_ends_the_stream_within_a_second(
    system: System,
) -> None:
    words = " ".join(f"w{i}" for i in range(100))
    system.fake.set_default("gpt-ws-long", Reply(text=words, chunk_delay_s=0.1))
    key = f"ws-abort-{system.namespace}"
    async with (
        second_replica(system) as other,
        aiohttp_client(system.url, auth(system)) as (client, _),
        websockets_client(other, auth(system)) as controller,
    ):
        answer = await client.call(
            "chat.run",
            {"message": "talk", "sessionKey": key, "options": {"model": "openai/gpt-ws-long"}},
        )
        run_id = answer["result"]["runId"]
        await client.event("chat.delta", runId=run_id)

        started = time.monotonic()
        aborted = await controller.call("chat.abort", {"runId": run_id})
        assert aborted["result"] == {"aborted": True, "runIds": [run_id]}
        done = await client.event("chat.done", runId=run_id)
        stopped = time.monotonic() - started
        assert stopped < 1.0, f"the stream went on for {stopped:.2f}s after the abort"
        assert done["data"]["aborted"] is True
        assert done["data"]["finishReason"] == "aborted"
        assert words.startswith(done["data"]["text"]) and done["data"]["text"] != words

        # Nothing left to abort: by session, the answer says so.
        again = await client.call("chat.abort", {"sessionKey": key})
        assert again["result"] == {"aborted": False, "runIds": []}


async def test_bad_frames_are_answered_and_the_connection_stays(system: System) -> None:
    async with aiohttp_client(system.url, auth(system), path="/ws") as (client, ws):
        await client.send("{not json")
        bad = await client.response(None)
        assert bad["ok"] is False and bad["error"]["code"] == "invalid_request"
        assert "JSON" in bad["error"]["message"]

        await client.send(json.dumps({"id": 7, "params": {}}))
        no_method = await client.response(7)
        assert no_method["error"]["code"] == "invalid_request"
        assert "method" in no_method["error"]["message"]

        unknown = await client.call("chat.teleport")
        assert unknown["error"]["code"] == "invalid_request"
        assert "chat.teleport" in unknown["error"]["message"]

        no_message = await client.call("chat.run", {"sessionKey": "x"})
        assert no_message["error"]["code"] == "invalid_request"
        assert no_message["error"]["param"] == "params.message"

        typo = await client.call("chat.run", {"message": "hi", "sesionKey": "x"})
        assert typo["error"]["param"] == "params.sesionKey"

        both = await client.call("chat.abort", {})
        assert both["error"]["code"] == "invalid_request"

        await ws.send_bytes(b"\x00\x01")
        binary = await client.response(None)
        assert "binary" in binary["error"]["message"]

        screenshot = await client.call("browser.screenshot", {"fullPage": True})
        assert screenshot["error"]["code"] == "service_unavailable"
        assert screenshot["error"]["details"]["service"] == "browser-worker"
        channels = await client.call("channel.list")
        assert channels["result"] == {"channels": []}  # none in this deployment
        missing = await client.call("channel.status", {"channelId": "telegram"})
        assert missing["error"]["code"] == "not_found"

        unknown_model = await client.call(
            "chat.run", {"message": "hi", "options": {"model": "openai-nope/x"}}
        )
        assert unknown_model["error"]["code"] == "model_not_found"

        still = await client.call("system.status")
        assert still["ok"] is True
        assert not ws.closed


async def test_plain_get_origin_and_auth_are_checked_before_the_upgrade(
    endpoints: Endpoints, namespace: str, fake_models: FakeModelServer, tmp_path: Path
) -> None:
    overrides = {"CLAWBUS_GATEWAY_ALLOWED_ORIGINS": '["https://ui.example"]'}
    async with (
        start_system(endpoints, namespace, fake_models, tmp_path, overrides=overrides) as system,
        aiohttp.ClientSession() as http,
    ):
        async with http.get(f"{system.url}/", headers=auth(system)) as plain:
            assert plain.status == 400
            body = await plain.json()
            assert "Upgrade: websocket" in body["error"]["message"]

        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(
                ws_url(system.url), headers={**auth(system), "Origin": "https://evil.example"}
            )
        assert refused.value.status == 403

        with pytest.raises(aiohttp.WSServerHandshakeError) as anonymous:
            await http.ws_connect(ws_url(system.url, "/ws"))
        assert anonymous.value.status == 401

        for origin in ({"Origin": "https://ui.example"}, {}):
            async with http.ws_connect(ws_url(system.url), headers=auth(system) | origin) as ws:
                assert (await Client.aiohttp(ws).event("connected"))["data"]["clientId"]


async def test_query_token_opens_the_websocket(system: System) -> None:
    async with ws_connect(ws_url(system.url, f"/ws?token={system.token}")) as ws:
        connected = await Client.websockets(ws).event("connected")
    assert connected["data"]["clientId"]


@pytest.fixture
async def limited(
    endpoints: Endpoints, namespace: str, fake_models: FakeModelServer, tmp_path: Path
) -> AsyncIterator[System]:
    overrides = {
        "CLAWBUS_GATEWAY_WS_MAX_FRAME_BYTES": "2048",
        "CLAWBUS_GATEWAY_WS_HEARTBEAT_S": "0.2",
        "CLAWBUS_GATEWAY_WS_IDLE_TIMEOUT_S": "1.5",
    }
    async with start_system(
        endpoints, namespace, fake_models, tmp_path, overrides=overrides
    ) as system:
        yield system


async def test_heartbeats_arrive(limited: System) -> None:
    async with websockets_client(limited.url, auth(limited)) as client:
        first = await client.event("heartbeat")
        second = await client.event("heartbeat")
        assert first["data"]["status"] == "ok"
        assert second["data"]["timestamp"] > first["data"]["timestamp"]


async def test_an_oversized_frame_closes_with_1009(limited: System) -> None:
    async with aiohttp_client(limited.url, auth(limited)) as (client, ws):
        await client.event("connected")
        await ws.send_str(
            json.dumps({"id": 1, "method": "chat.run", "params": {"message": "x" * 4096}})
        )
        async with asyncio.timeout(TIMEOUT_S):
            while (msg := await ws.receive()).type is WSMsgType.TEXT:
                pass
        assert msg.type is WSMsgType.CLOSE
        assert ws.close_code == 1009


async def test_an_idle_connection_is_closed(limited: System) -> None:
    async with websockets_client(limited.url, auth(limited)) as client:
        await client.event("connected")
        with pytest.raises(websockets.ConnectionClosedOK) as closed:
            await client.until(lambda _: False)  # heartbeats do not count as activity
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1000
    assert closed.value.rcvd.reason == "idle timeout"


async def test_a_subscribed_connection_is_not_idle(limited: System) -> None:
    async with websockets_client(limited.url, auth(limited)) as client:
        await client.call("subscribe", {"all": True})
        beats = 0
        while beats < 12:  # 2.4 s of heartbeats, past the 1.5 s idle timeout
            await client.event("heartbeat")
            beats += 1


async def test_a_flooding_client_is_refused_then_closed(system: System) -> None:
    async with aiohttp_client(system.url, auth(system)) as (client, ws):
        await client.event("connected")
        for i in range(300):
            await ws.send_str(json.dumps({"id": i, "method": "no.such.method"}))
        codes: list[str] = []
        async with asyncio.timeout(TIMEOUT_S):
            while (msg := await ws.receive()).type is WSMsgType.TEXT:
                frame = json.loads(msg.data)
                if frame["type"] == "res":
                    codes.append(frame["error"]["code"])
        assert "rate_limited" in codes
        assert codes.index("rate_limited") >= 30  # the burst went through first
        assert ws.close_code == 1008


async def test_methods_follow_the_credential_s_permissions(
    endpoints: Endpoints, namespace: str, fake_models: FakeModelServer, tmp_path: Path
) -> None:
    reader = f"tok-reader-{namespace}-0123456789"
    tokens = [{"name": "reader", "token": reader, "permissions": ["sessions"]}]
    overrides = {"CLAWBUS_GATEWAY_API_TOKENS": json.dumps(tokens)}
    async with start_system(
        endpoints, namespace, fake_models, tmp_path, overrides=overrides
    ) as system:
        async with aiohttp_client(system.url, {"Authorization": f"Bearer {reader}"}) as (
            client,
            _,
        ):
            connected = await client.event("connected")
            capabilities = connected["data"]["capabilities"]
            assert "session.list" in capabilities and "chat.run" not in capabilities
            refused = await client.call("chat.run", {"message": "hi"})
            assert refused["error"]["code"] == "forbidden"
            assert refused["error"]["details"]["permission"] == "chat"
            assert (await client.call("session.list"))["ok"] is True


async def test_shutdown_closes_clients_with_1001(system: System) -> None:
    async with aiohttp.ClientSession() as http:
        async with second_replica(system) as other:
            ws = await http.ws_connect(ws_url(other), headers=auth(system))
            await Client.aiohttp(ws).event("connected")
            closing = asyncio.create_task(ws.receive())  # reads, and answers, the close
            started = time.monotonic()
        msg = await closing
        assert time.monotonic() - started < 5
    assert msg.type is WSMsgType.CLOSE
    assert ws.close_code == 1001


async def test_runs_of_every_surface_are_announced_to_subscribers(system: System) -> None:
    """001's events come from the run service, so an OpenAI-style HTTP request is seen by a
    WebSocket subscriber on another replica too."""
    system.fake.script("gpt-ws-http", Reply(text="from http"))
    key = f"ws-http-{system.namespace}"
    async with (
        second_replica(system) as other,
        websockets_client(other, auth(system)) as watcher,
    ):
        await watcher.call("subscribe", {"sessionKeys": [key]})
        raw = await system.openai().chat.completions.with_raw_response.create(
            model="openai/gpt-ws-http",
            messages=[{"role": "user", "content": "over http"}],
            extra_headers={"x-openclaw-session-key": key},
        )
        run_id = raw.headers["x-clawbus-run-id"]
        created = await watcher.event("session:created", sessionKey=key)
        assert created["payload"]["channel"] == "api"
        received = await watcher.event("message:received", sessionKey=key)
        assert received["payload"]["message"] == "over http"
        assert received["payload"]["runId"] == run_id
        sent = await watcher.event("message:sent", sessionKey=key)
        assert sent["payload"]["message"] == "from http"
