"""Test infrastructure: real NATS, Postgres and Redis for the whole test session.

Order of preference: the `CLAWBUS_*_URL`s from the environment; containers (testcontainers)
when a Docker engine answers; otherwise the same embedded servers `clawbus up` runs.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from clawbus_core.config import Endpoints


def _from_env() -> Endpoints | None:
    urls = [os.environ.get(f"CLAWBUS_{n}_URL") for n in ("NATS", "DATABASE", "REDIS")]
    if all(urls):
        nats_url, database_url, redis_url = urls
        assert nats_url and database_url and redis_url
        return Endpoints(nats_url=nats_url, database_url=database_url, redis_url=redis_url)
    return None


def _docker_available() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
    except Exception:
        return False
    return True


@contextlib.contextmanager
def _containers() -> Iterator[Endpoints]:  # pragma: no cover - this machine has no engine
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs
    from testcontainers.postgres import PostgresContainer
    from testcontainers.redis import RedisContainer

    nats = DockerContainer("nats:2.10").with_command("-js").with_exposed_ports(4222)
    with PostgresContainer("postgres:16", driver=None) as pg, RedisContainer("redis:7") as rd:
        with nats:
            wait_for_logs(nats, "Server is ready")
            yield Endpoints(
                nats_url=f"nats://{nats.get_container_host_ip()}:{nats.get_exposed_port(4222)}",
                database_url=pg.get_connection_url(),
                redis_url=f"redis://{rd.get_container_host_ip()}:{rd.get_exposed_port(6379)}/0",
            )


@contextlib.contextmanager
def test_infrastructure(data_dir: Path) -> Iterator[Endpoints]:
    configured = _from_env()
    if configured is not None:
        yield configured
        return
    if _docker_available():
        with _containers() as endpoints:
            yield endpoints
        return
    from clawbus_core.infra import EmbeddedInfra

    infra = EmbeddedInfra(data_dir, fast=True)
    urls = infra.start()
    try:
        yield Endpoints(
            nats_url=urls.nats_url, database_url=urls.database_url, redis_url=urls.redis_url
        )
    finally:
        infra.stop()
