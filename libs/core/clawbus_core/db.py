"""Postgres: the connection pool every service shares, and `migrate`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import asyncpg
from alembic import command
from alembic.config import Config
from asyncpg import Pool
from clawbus_protocol.errors import InvalidRequest

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

__all__ = ["Pool", "create_pool", "migrate"]


async def _init_connection(conn: asyncpg.Connection) -> None:
    # jsonb columns come and go as Python objects.
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Return connections to the pool as they are.

    asyncpg's default runs `pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL` on
    every release: a round trip per query on the hot path. Pooled connections here never
    hold session state (no SET, LISTEN, cursors or advisory locks; migrations use their own
    connection), so there is nothing to reset.
    """


async def create_pool(url: str, *, min_size: int = 2, max_size: int = 20) -> Pool:
    pool: Pool = await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=_keep_session,
        command_timeout=30,
        # Prepared statements are cached per connection; the hot path reuses a handful.
        statement_cache_size=256,
    )
    return pool


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(url: str, revision: str = "head") -> None:
    """Apply migrations up to `revision` (blocking; call outside an event loop)."""
    command.upgrade(alembic_config(url), revision)


def current_revision(url: str) -> Any:
    return command.current(alembic_config(url))


def refuse_unstorable(value: object, path: str = "") -> None:
    """InvalidRequest naming the field if `value` (a JSON-like tree, keys included) holds
    what Postgres text and jsonb cannot store: NUL, or a lone UTF-16 surrogate."""
    if isinstance(value, str):
        problem = None
        if "\x00" in value:
            problem = "a NUL character"
        else:
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                problem = "an unpaired surrogate (not valid Unicode)"
        if problem is not None:
            where = path or "(body)"
            raise InvalidRequest(
                f"{where}: contains {problem}, which cannot be stored", param=path or None
            )
    elif isinstance(value, dict):
        for key, item in value.items():
            refuse_unstorable(key, f"{path}.<key>" if path else "<key>")
            refuse_unstorable(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            refuse_unstorable(item, f"{path}.{i}" if path else str(i))
