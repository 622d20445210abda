"""The channel-bridge's /metrics and its `channel.inbound` span: a real `clawbus channel-bridge`
process on the fake Telegram, the gateway and a runner in this test's event loop.

What counts: a message that becomes a run is one `in`; a refused sender (who gets a pairing
code) and group chatter not addressed to the bot are not; each reply chunk delivered is one
`out`, a pairing code is not. The connected gauge follows the channel up and back to 0 when it
is disabled. The run's trace starts at the bridge's span (traceparent on the run's message);
a webhook request's own traceparent, when it has one, is that span's parent.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import nats
import pytest
import redis.asyncio as aioredis
from clawbus_core.config import Endpoints
from clawbus_fakes.models import FakeModelServer, Reply
from clawbus_fakes.otlp import FakeCollector, ReceivedSpan
from clawbus_fakes.telegram import FakeTelegramServer, FakeUser
from clawbus_protocol.channels import WebhookAnswer, WebhookRequest
from clawbus_protocol.names import Names

from tests.integration.test_channel_telegram import (
    api,
    bridge_env,
    create_channel,
    new_token,
    visible,
)
from tests.integration.test_channel_webhook import SECRET, Receiver, create_webhook_channel, sign
from tests.metrics_support import Scrape, ops_listener, readyz, scrape, watch_published_runs
from tests.system import processes, start_system, wait_for

CAROL = FakeUser(3003, "Carol", username="carol")
MESSAGES = "clawbus_channel_messages_total"
CONNECTED = "clawbus_channels_connected"
CONSUMER = 5  # span kind in the OTLP protobuf


def messages(scraped: Scrape, direction: str) -> float:
    return scraped.value(MESSAGES, channel_type="telegram", direction=direction)


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegramServer]:
    async with FakeTelegramServer() as fake:
        yield fake


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    try:
        yield r
    finally:
        assert r.runner is not None
        await r.runner.cleanup()


async def test_bridge_metrics_count_messages_and_connections_and_the_run_trace_starts_there(
    endpoints: Endpoints,
    namespace: str,
    fake_models: FakeModelServer,
    tmp_path: Path,
    telegram: FakeTelegramServer,
    agent: str,
) -> None:
    fake_models.script(agent, Reply(text="Hello Alice."))
    token = new_token()
    telegram.add_bot(token, "metrics_bot")
    redis = aioredis.Redis.from_url(endpoints.redis_url)
    nc = await nats.connect(endpoints.nats_url)
    try:
        published = await watch_published_runs(nc, namespace)
        async with (
            FakeCollector() as collector,
            start_system(
                endpoints, namespace, fake_models, tmp_path, overrides=bridge_env(telegram)
            ) as system,
            aiohttp.ClientSession() as http,
        ):
            created = await create_channel(http, system, agent, token, allow_from=["1001"])
            env = system.env | {
                "CLAWBUS_BRIDGE_ID": f"{namespace}-metrics",
                "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
                "OTEL_BSP_SCHEDULE_DELAY": "100",  # export within 0.1 s, not the default 5 s
            }
            with processes() as spawn:
                bridge = spawn("bridge", ["channel-bridge"], env, tmp_path / "bridge.log")
                ops = await ops_listener(redis, namespace, "channel-bridge", bridge.pid)
                assert await readyz(ops.url) == 200
                await telegram.wait_polling(token, timeout_s=30)

                async def connected(want: float) -> bool:
                    return (await scrape(ops.url)).value(CONNECTED, channel_type="telegram") == want

                await wait_for(lambda: connected(1), timeout_s=10, interval_s=0.2)
                before = await scrape(ops.url)
                received, delivered = messages(before, "in"), messages(before, "out")

                # Not counted: a sender the pairing policy refuses, chatter not for the bot.
                telegram.private_message(token, "who are you?", user=CAROL)
                [code] = await telegram.wait_sent(token, 1, timeout_s=20)
                assert "pairing code" in (code.text or "")
                telegram.group_message(token, "just chatting", user=CAROL)
                # Counted: Alice (allowed) writes, her run's one-chunk reply is delivered.
                telegram.private_message(token, "Hi there!")
                sent = await telegram.wait_sent(token, 2, timeout_s=30)
                assert visible(sent[1].text or "") == "Hello Alice."

                async def out_counted() -> bool:
                    return messages(await scrape(ops.url), "out") > delivered

                await wait_for(out_counted, timeout_s=10, interval_s=0.2)
                after = await scrape(ops.url)
                assert messages(after, "in") == received + 1
                assert messages(after, "out") == delivered + 1
                assert after.label_values(MESSAGES, "direction") == {"in", "out"}
                assert after.value(CONNECTED, channel_type="telegram") == 1

                # The run's message carries the trace the bridge's span started.
                [run_message] = published
                run_id = json.loads(run_message.data)["run_id"]
                traceparent = (run_message.headers or {}).get("traceparent", "")
                assert traceparent.startswith("00-"), run_message.headers
                trace_id = traceparent.split("-")[1]

                def inbound_span() -> ReceivedSpan | None:
                    return next(
                        (
                            s
                            for s in collector.trace(trace_id)
                            if (s.service, s.name) == ("channel-bridge", "channel.inbound telegram")
                        ),
                        None,
                    )

                span = await wait_for(inbound_span, timeout_s=20)
                assert span.parent_span_id == "" and span.kind == CONSUMER  # the trace's root
                assert span.attributes["clawbus.run_id"] == run_id
                assert span.attributes["clawbus.channel"] == created["name"]
                # One span per accepted message: Carol's and the group's made none.
                assert [s.name for s in collector.spans].count("channel.inbound telegram") == 1

                # Disabled: the replica lets the channel go, and the gauge says so.
                status, _ = await api(http, system, "POST", "/v1/channels/telegram/disable")
                assert status == 200
                await wait_for(lambda: connected(0), timeout_s=15, interval_s=0.2)
                assert bridge.stop() == 0, (tmp_path / "bridge.log").read_text()
    finally:
        await nc.close()
        await redis.aclose()


async def test_a_webhook_requests_traceparent_is_the_parent_of_the_inbound_span(
    endpoints: Endpoints,
    namespace: str,
    fake_models: FakeModelServer,
    tmp_path: Path,
    telegram: FakeTelegramServer,
    receiver: Receiver,
    agent: str,
) -> None:
    fake_models.script(agent, Reply(text="Your order shipped."))
    redis = aioredis.Redis.from_url(endpoints.redis_url)
    nc = await nats.connect(endpoints.nats_url)
    overrides = bridge_env(telegram) | {"CLAWBUS_NET_ALLOW": '["127.0.0.1"]'}
    try:
        async with (
            FakeCollector() as collector,
            start_system(
                endpoints, namespace, fake_models, tmp_path, overrides=overrides
            ) as system,
            aiohttp.ClientSession() as http,
        ):
            created = await create_webhook_channel(http, system, agent, receiver)
            env = system.env | {
                "CLAWBUS_BRIDGE_ID": f"{namespace}-webhook",
                "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
                "OTEL_BSP_SCHEDULE_DELAY": "100",
            }
            with processes() as spawn:
                bridge = spawn("bridge", ["channel-bridge"], env, tmp_path / "bridge.log")
                ops = await ops_listener(redis, namespace, "channel-bridge", bridge.pid)

                async def connected() -> bool:
                    scraped = await scrape(ops.url)
                    return scraped.value(CONNECTED, channel_type="webhook") == 1

                await wait_for(connected, timeout_s=15, interval_s=0.2)

                # What the gateway forwards, sent as a caller in a trace of its own would.
                body = json.dumps({"id": "m-1", "from": {"id": "u-42"}, "text": "order?"}).encode()
                stamp = str(int(time.time()))
                request = WebhookRequest(
                    headers={
                        "x-clawbus-timestamp": stamp,
                        "x-clawbus-signature": sign(SECRET, stamp, body),
                    },
                    body=base64.b64encode(body).decode(),
                )
                trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
                answer = await nc.request(
                    Names(namespace).channel_inbound_subject(uuid.UUID(created["id"])),
                    request.model_dump_json().encode(),
                    timeout=15,
                    headers={"traceparent": f"00-{trace_id}-{parent_id}-01"},
                )
                assert WebhookAnswer.model_validate_json(answer.data).error is None

                def inbound_span() -> ReceivedSpan | None:
                    return next(
                        (
                            s
                            for s in collector.trace(trace_id)
                            if s.name == "channel.inbound webhook"
                        ),
                        None,
                    )

                span = await wait_for(inbound_span, timeout_s=20)
                assert span.service == "channel-bridge" and span.parent_span_id == parent_id
                await wait_for(lambda: len(receiver.calls) == 1, timeout_s=20)

                async def counted() -> bool:
                    scraped = await scrape(ops.url)
                    return scraped.value(MESSAGES, channel_type="webhook", direction="out") == 1

                await wait_for(counted, timeout_s=10, interval_s=0.2)
                scraped = await scrape(ops.url)
                assert scraped.value(MESSAGES, channel_type="webhook", direction="in") == 1
                assert scraped.label_values(MESSAGES, "channel_type") == {"webhook"}
                assert bridge.stop() == 0, (tmp_path / "bridge.log").read_text()
    finally:
        await nc.close()
        await redis.aclose()


pytestmark = pytest.mark.timeout(150)
