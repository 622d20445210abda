"""Alembic environment: async, on asyncpg, URL from clawbus settings (never from an ini file).

Runs under a Postgres advisory lock so that concurrent `clawbus migrate` calls (several
replicas starting at once, a test session beside `clawbus up`) apply each revision once.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

_MIGRATION_LOCK = 0x636C6177  # "claw"


def _sqlalchemy_url(url: str) -> str:
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url


def _run(connection: Connection) -> None:
    connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _MIGRATION_LOCK})
    try:
        context.configure(
            connection=connection, target_metadata=None, transaction_per_migration=True
        )
        with context.begin_transaction():
            context.run_migrations()
    except BaseException:
        # The failed migration's error is the one to see, not the aborted transaction's
        # refusal of the unlock below (the advisory lock belongs to the session: it survives).
        connection.rollback()
        raise
    finally:
        connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _MIGRATION_LOCK})
        connection.commit()


async def _run_async(url: str) -> None:
    engine = create_async_engine(_sqlalchemy_url(url), pool_pre_ping=False)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


def _main() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("clawbus migrations need a database URL (CLAWBUS_DATABASE_URL)")
    if context.is_offline_mode():
        context.configure(url=url, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    asyncio.run(_run_async(url))


_main()
