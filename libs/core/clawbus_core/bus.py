"""NATS JetStream: connecting, and the streams and consumers every service relies on.

Streams are declared idempotently by whoever starts first (gateway or runner), so no
service depends on another having run.
"""

from __future__ import annotations

import logging

import nats
from clawbus_protocol.names import Names
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError

log = logging.getLogger(__name__)


async def connect(url: str, *, name: str) -> NatsClient:
    nc: NatsClient | None = None  # set before any callback can run

    async def _disconnected() -> None:
        if nc is not None and not nc.is_closed:  # a close of our own also reports one
            log.warning("nats disconnected; reconnecting")

    async def _reconnected() -> None:
        log.info("nats reconnected")

    nc = await nats.connect(
        url,
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        disconnected_cb=_disconnected,
        reconnected_cb=_reconnected,
    )
    return nc


async def settle(nc: NatsClient) -> None:
    """Return once the server has everything this client sent before the call (its SUBs and
    PUBs), so that a subscription is reachable from every other connection afterwards.

    nats-py's `flush()` alone does not promise that: it writes its PING straight to the
    socket while commands queued before it wait for the flusher task, so the PONG can come
    back before the server has seen them. Waiting for that first PONG lets the flusher run
    (it was woken when the commands were queued); the second PING then follows them on the
    wire, and its PONG means they were processed.
    """
    await nc.flush()
    await nc.flush()


async def ensure_runs_stream(
    js: JetStreamContext,
    names: Names,
    *,
    replicas: int = 1,
    max_msgs: int = 100_000,
    duplicate_window_s: float = 120,
) -> None:
    """The work-queue stream: a run stays in it until a runner acks it (after its commit).

    `replicas` (CLAWBUS_NATS_STREAM_REPLICAS): 3 on a clustered JetStream, so the queue
    survives the loss of a server; every service applies the same value."""
    config = StreamConfig(
        name=names.runs_stream,
        subjects=[names.runs_subject],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        # Limits: a full queue refuses new work (the gateway answers 503) instead of
        # silently dropping queued runs.
        max_msgs=max_msgs,
        max_msg_size=8 * 1024 * 1024,
        discard=DiscardPolicy.NEW,
        duplicate_window=duplicate_window_s,
        num_replicas=replicas,
    )
    try:
        await js.stream_info(names.runs_stream)
    except NotFoundError:
        await js.add_stream(config)
    else:
        await js.update_stream(config)


async def ensure_runners_consumer(
    js: JetStreamContext,
    names: Names,
    *,
    ack_wait_s: float,
    max_deliver: int,
    max_ack_pending: int = 10_000,
) -> None:
    config = ConsumerConfig(
        durable_name=names.runners_consumer,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ack_wait_s,
        max_deliver=max_deliver,
        max_ack_pending=max_ack_pending,
        max_waiting=4096,
    )
    await js.add_consumer(names.runs_stream, config)
