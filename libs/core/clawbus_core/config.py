"""Where the infrastructure is: explicit URLs, else the embedded servers `clawbus up` runs."""

from __future__ import annotations

from dataclasses import dataclass

from clawbus_protocol.settings import ClawbusSettings


@dataclass(frozen=True)
class Endpoints:
    nats_url: str
    database_url: str
    redis_url: str


def resolve_endpoints(settings: ClawbusSettings) -> Endpoints:
    """Use the configured URLs; fill gaps from the data dir's running embedded servers."""
    nats_url, database_url, redis_url = settings.nats_url, settings.database_url, settings.redis_url
    if not (nats_url and database_url and redis_url):
        from clawbus_core.infra import running_infra

        embedded = running_infra(settings.data_dir)
        if embedded is not None:
            nats_url = nats_url or embedded.nats_url
            database_url = database_url or embedded.database_url
            redis_url = redis_url or embedded.redis_url
    missing = [
        name
        for name, value in (
            ("CLAWBUS_NATS_URL", nats_url),
            ("CLAWBUS_DATABASE_URL", database_url),
            ("CLAWBUS_REDIS_URL", redis_url),
        )
        if not value
    ]
    if missing or nats_url is None or database_url is None or redis_url is None:
        raise SystemExit(
            f"{', '.join(missing)} not set and no embedded servers are running under "
            f"{settings.data_dir}: run `clawbus up`, or set the URLs of your servers."
        )
    return Endpoints(nats_url=nats_url, database_url=database_url, redis_url=redis_url)
