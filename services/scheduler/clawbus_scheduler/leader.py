"""Leader election: the replica holding a Postgres advisory lock is the leader.

Why an advisory lock rather than a Redis lease: the lock lives in the database that holds
the jobs, on a connection of its own, for exactly as long as that connection's session. A
leader that dies (kill -9 included) closes its socket, Postgres ends the session and frees
the lock at once: a standby takes over at its next try, with no lease time to wait out and
no clock to trust. A leader cut off from the database without a clean close is found out
by TCP keepalives (set on the session below) within about 15 s. And the lock fences: the
leader records firings in transactions on the lock's own connection, so only the session
holding the lock can record one (and each time is recorded once anyway:
clawbus_core.store.cron).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging

import asyncpg
from clawbus_core import metrics

log = logging.getLogger(__name__)

# Seconds: a silent peer is probed after 5 s, then every 2 s, given up after 4 probes.
_KEEPALIVES = {
    "tcp_keepalives_idle": "5",
    "tcp_keepalives_interval": "2",
    "tcp_keepalives_count": "4",
}


def lock_key(namespace: str) -> int:
    """The deployment's advisory lock: a signed 64-bit number from its namespace."""
    digest = hashlib.sha256(f"clawbus-scheduler:{namespace}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class Leadership:
    def __init__(self, database_url: str, namespace: str, name: str) -> None:
        self.database_url = database_url
        self.key = lock_key(namespace)
        self.name = name
        self.conn: asyncpg.Connection | None = None  # set while leading

    @property
    def leading(self) -> bool:
        return self.conn is not None

    async def try_lead(self) -> bool:
        """Become the leader if no one is; False (and no connection kept) otherwise."""
        conn = await asyncpg.connect(
            self.database_url,
            server_settings={"application_name": f"clawbus-scheduler:{self.name}", **_KEEPALIVES},
            # A statement on a connection that went silent fails instead of hanging.
            command_timeout=30,
        )
        try:
            if await conn.fetchval("SELECT pg_try_advisory_lock($1)", self.key):
                # jsonb as Python objects, as on every pooled connection (db.create_pool).
                await conn.set_type_codec(
                    "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
                )
                self.conn = conn
                metrics.SCHEDULER_LEADER.set(1)
                return True
        except BaseException:
            await conn.close()
            raise
        await conn.close()
        return False

    async def step_down(self) -> None:
        """Stop leading: closing the session frees the lock for a standby."""
        conn, self.conn = self.conn, None
        metrics.SCHEDULER_LEADER.set(0)
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close(timeout=5)
