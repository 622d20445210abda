"""Reading a service's `/metrics` as Prometheus does, and finding a service process's
operations listener through its registration in Redis (clawbus_core.ops)."""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
import redis.asyncio as aioredis
from clawbus_core import bus
from clawbus_core.ops import Registration, registered
from clawbus_protocol.names import Names
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.system import wait_for

_HTTP_TIMEOUT = aiohttp.ClientTimeout(total=10)


@dataclass(frozen=True)
class Scrape:
    """One `/metrics` answer, parsed as Prometheus exposition text."""

    samples: list[Sample]

    def value(self, name: str, **labels: str) -> float:
        """The sample `name` with exactly these labels; 0 when the series is not there yet
        (a labelled counter appears only once something touched it)."""
        found = [s.value for s in self.samples if s.name == name and s.labels == labels]
        assert len(found) <= 1, (name, labels, found)
        return found[0] if found else 0.0

    def label_values(self, name: str, label: str) -> set[str]:
        return {s.labels[label] for s in self.samples if s.name == name and label in s.labels}


async def scrape(url: str) -> Scrape:
    """GET `<url>/metrics`; fails unless it is 200 and parses as Prometheus text exposition."""
    async with (
        aiohttp.ClientSession(timeout=_HTTP_TIMEOUT) as http,
        http.get(f"{url}/metrics") as answer,
    ):
        assert answer.status == 200, answer.status
        assert answer.content_type == "text/plain", answer.content_type
        text = await answer.text()
    families = list(text_string_to_metric_families(text))
    assert families, "no metrics at all"
    return Scrape([sample for family in families for sample in family.samples])


async def readyz(url: str) -> int:
    async with (
        aiohttp.ClientSession(timeout=_HTTP_TIMEOUT) as http,
        http.get(f"{url}/readyz") as answer,
    ):
        return answer.status


async def ops_listener(
    redis: aioredis.Redis, namespace: str, service: str, pid: int, timeout_s: float = 60
) -> Registration:
    """The registration of `service`'s process `pid` in the test's namespace, once it is there."""

    async def found() -> Registration | None:
        return next(
            (
                r
                for r in await registered(redis, Names(namespace))
                if r.service == service and r.pid == pid
            ),
            None,
        )

    registration: Registration = await wait_for(found, timeout_s=timeout_s, interval_s=0.2)
    return registration


async def watch_published_runs(nc: NatsClient, namespace: str) -> list[Msg]:
    """Every RunRequest published in the namespace from now on, headers included (a core
    subscription beside the stream's), in the order they arrived."""
    published: list[Msg] = []

    async def keep(msg: Msg) -> None:
        published.append(msg)

    await nc.subscribe(Names(namespace).runs_subject, cb=keep)
    await bus.settle(nc)  # subscribed at the server before anything is published
    return published
