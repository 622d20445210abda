"""Runtime configuration: overrides of a deployment's settings that take effect on every
gateway replica and agent-runner while they run (001's PATCH /api/config).

    store     `load` / `patch`: one row per namespace in `config_overrides`; a patch is a
              JSON merge patch (RFC 7396) written with optimistic versioning
    announce  `announce`: a `ConfigChanged` notice on `names.config_subject` (NATS core)
    follow    `RuntimeConfigFollower`: each service subscribes, reads the row again on a
              notice and hands the overrides to its appliers (`RootLogLevel` for everyone);
              it reads the row when it starts, and again every `resync_s`, so a lost notice
              only delays a change
    mask      `mask_secrets` / `mask_url`: what a configuration document shows of a secret

The database is the source of truth and a notice only says "read it again": a follower
applies whatever the row holds when it reads it, so the order notices arrive in never
matters. A follower that stops hands its appliers empty overrides: what it changed in its
process is back to the settings' values.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
from clawbus_protocol.config import ConfigChanged, ConfigOverrides
from clawbus_protocol.errors import Conflict
from clawbus_protocol.names import Names
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from pydantic import ValidationError

from clawbus_core import bus
from clawbus_core.db import Pool

log = logging.getLogger(__name__)

# --- masking ----------------------------------------------------------------------------------

MASK = "********"
# A key whose name says it holds a secret; its string values are never shown.
SECRET_NAME = re.compile(r"key|token|secret|passw|credential", re.IGNORECASE)


def mask_url(value: str) -> str:
    """`value` with any credentials a URL carries replaced by MASK: the password of its
    user info (or the whole user info when it has no password: NATS and many HTTP APIs
    take a token there) and secret-named query parameters. Anything else is unchanged."""
    try:
        parts = urlsplit(value)
    except ValueError:
        return value
    if not parts.scheme or not parts.netloc:
        return value
    netloc, query = parts.netloc, parts.query
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:{MASK}@{host}" if colon else f"{MASK}@{host}"
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(SECRET_NAME.search(k) for k, _ in pairs):
            query = urlencode(
                [(k, MASK if SECRET_NAME.search(k) else v) for k, v in pairs], safe="*"
            )
    if (netloc, query) == (parts.netloc, parts.query):
        return value
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def mask_secrets(value: Any, *, secret: bool = False) -> Any:
    """A JSON document with every string under a secret-named key masked, and credentials
    in every URL masked. Numbers and booleans stay (`maxTokens: 4096` is no secret)."""
    if isinstance(value, dict):
        return {k: mask_secrets(v, secret=bool(SECRET_NAME.search(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_secrets(v, secret=secret) for v in value]
    if isinstance(value, str):
        if secret:
            return MASK if value else value
        return mask_url(value)
    return value


# --- merge patch ------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396: objects merge key by key, a null removes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def prune(doc: dict[str, Any]) -> dict[str, Any]:
    """`doc` without empty objects (an emptied section is no override at all)."""
    pruned: dict[str, Any] = {}
    for key, value in doc.items():
        kept = prune(value) if isinstance(value, dict) else value
        if kept != {}:
            pruned[key] = kept
    return pruned


# --- store ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredConfig:
    """A namespace's overrides as the database holds them (version 0: none ever stored)."""

    overrides: ConfigOverrides = field(default_factory=ConfigOverrides)
    version: int = 0
    updated_at: datetime | None = None
    updated_by: str | None = None

    @property
    def doc(self) -> dict[str, Any]:
        return prune(self.overrides.model_dump(exclude_none=True))


_LOAD = "SELECT doc, version, updated_at, updated_by FROM config_overrides WHERE namespace = $1"

# Written only if the row is still at the version the patch was merged into ($3; 0 = no row).
_WRITE = """
INSERT INTO config_overrides AS c (namespace, doc, version, updated_by)
VALUES ($1, $2, $3::bigint + 1, $4)
ON CONFLICT (namespace) DO UPDATE
    SET doc = EXCLUDED.doc, version = EXCLUDED.version,
        updated_at = now(), updated_by = EXCLUDED.updated_by
    WHERE c.version = $3::bigint
RETURNING version, updated_at
"""

PATCH_ATTEMPTS = 5


async def load(pool: Pool, namespace: str) -> StoredConfig:
    row = await pool.fetchrow(_LOAD, namespace)
    if row is None:
        return StoredConfig()
    return StoredConfig(
        overrides=ConfigOverrides.model_validate(row["doc"]),
        version=row["version"],
        updated_at=row["updated_at"],
        updated_by=row["updated_by"],
    )


async def patch(
    pool: Pool, namespace: str, changes: ConfigOverrides, *, updated_by: str
) -> tuple[StoredConfig, bool]:
    """Merge `changes` (validated; `changes.changes()` is the merge patch) into the stored
    overrides. Returns the stored overrides and whether they changed (a patch that changes
    nothing writes nothing and keeps the version). A patch that meets a concurrent one
    merges again into the newer document."""
    for _ in range(PATCH_ATTEMPTS):
        current = await load(pool, namespace)
        merged = prune(merge_patch(current.doc, changes.changes()))
        if merged == current.doc:
            return current, False
        overrides = ConfigOverrides.model_validate(merged)
        row = await pool.fetchrow(_WRITE, namespace, merged, current.version, updated_by)
        if row is not None:
            stored = StoredConfig(overrides, row["version"], row["updated_at"], updated_by)
            return stored, True
    raise Conflict(
        f"the configuration changed {PATCH_ATTEMPTS} times while this patch was applied; "
        "send it again",
        retryable=True,
    )


async def announce(nc: NatsClient, names: Names, stored: StoredConfig) -> None:
    """Tell every service of the namespace to read the overrides again. A lost notice only
    delays the change until each follower's next resync."""
    notice = ConfigChanged(version=stored.version, updated_by=stored.updated_by or "")
    try:
        await nc.publish(names.config_subject, notice.model_dump_json().encode())
        await bus.settle(nc)
    except (NatsError, TimeoutError) as exc:
        log.warning("could not announce config version %d: %r", stored.version, exc)


# --- follow -----------------------------------------------------------------------------------

# Takes the whole overrides document (empty: back to the settings) and makes it so in this
# process. Must not block: it runs on the event loop.
Applier = Callable[[ConfigOverrides], None]

STORE_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


class RootLogLevel:
    """Applies `logging.level` to the root logger. Without an override the level is the one
    the process had when this was made (its `log_level` setting, set by setup_logging)."""

    def __init__(self) -> None:
        self.baseline = logging.getLogger().level
        self._overridden = False

    def __call__(self, overrides: ConfigOverrides) -> None:
        level = overrides.logging.level if overrides.logging else None
        if level is not None:
            logging.getLogger().setLevel(level.upper())
            self._overridden = True
        elif self._overridden:  # never touch a level this did not set
            logging.getLogger().setLevel(self.baseline)
            self._overridden = False


class RuntimeConfigFollower:
    """`async with RuntimeConfigFollower(pool, nc, names, appliers):` keeps this process on
    the namespace's current overrides until the block ends."""

    def __init__(
        self,
        pool: Pool,
        nc: NatsClient,
        names: Names,
        appliers: Sequence[Applier],
        *,
        resync_s: float = 60.0,
    ) -> None:
        self.pool = pool
        self.nc = nc
        self.names = names
        self.appliers = list(appliers)
        self.resync_s = resync_s
        self.current = StoredConfig()
        self._lock = asyncio.Lock()
        self._subscription: Subscription | None = None
        self._resync: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RuntimeConfigFollower:
        # Subscribed before the first read: a change is either read now or heard later.
        self._subscription = await self.nc.subscribe(self.names.config_subject, cb=self._heard)
        await bus.settle(self.nc)
        try:
            await self.refresh()
        except BaseException:
            await self._unsubscribe()
            raise
        self._resync = asyncio.create_task(self._resync_loop(), name="runtime-config-resync")
        log.info(
            "following runtime config on %s (version %d)",
            self.names.config_subject,
            self.current.version,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._resync is not None:
            self._resync.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._resync
            self._resync = None
        await self._unsubscribe()
        # What this process changed goes back to its settings (in-process test systems
        # share the root logger with the test runner).
        self._apply(StoredConfig(), announce=False)

    async def refresh(self) -> StoredConfig:
        """Read the stored overrides and apply them if they differ from what is applied."""
        async with self._lock:
            stored = await load(self.pool, self.names.namespace)
            if stored.doc != self.current.doc:
                self._apply(stored)
            self.current = stored
            return stored

    def _apply(self, stored: StoredConfig, *, announce: bool = True) -> None:
        for applier in self.appliers:
            try:
                applier(stored.overrides)
            except Exception:
                log.exception("applying runtime config version %d failed", stored.version)
        if announce:
            log.info("runtime config version %d applied: %s", stored.version, stored.doc)
            # Shows in the log only when the (new) level lets debug records through.
            log.debug("runtime config version %d in effect at debug level", stored.version)

    async def _heard(self, msg: Msg) -> None:
        try:
            notice = ConfigChanged.model_validate_json(msg.data)
        except ValidationError:
            log.warning("ignoring a malformed notice on %s", msg.subject)
            return
        try:
            await self.refresh()
        except STORE_ERRORS as exc:
            log.warning(
                "config version %d announced but not readable (%r); retrying within %.0f s",
                notice.version,
                exc,
                self.resync_s,
            )

    async def _resync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.resync_s)
            try:
                await self.refresh()
            except STORE_ERRORS as exc:
                log.warning("re-reading the runtime config failed: %r", exc)

    async def _unsubscribe(self) -> None:
        if self._subscription is not None:
            with contextlib.suppress(NatsError):
                await self._subscription.unsubscribe()
            self._subscription = None


def following(
    pool: Pool, nc: NatsClient, names: Names, *appliers: Applier
) -> RuntimeConfigFollower:
    """A follower applying the overrides every service honours (the log level), then
    `appliers` (the service's own)."""
    return RuntimeConfigFollower(pool, nc, names, [RootLogLevel(), *appliers])
