"""Channels (chat-app accounts), their senders' pairing, the reply outbox and received media.

The gateway creates, lists, enables and disables channels and approves pairing codes; the
channel-bridge reads a channel's credentials, writes its status and counters, advances its
poll offset, and sends what the outbox owes. See migration 0005 for the tables.
"""

from __future__ import annotations

import json
import re
import secrets
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, get_args
from uuid import UUID

import asyncpg
from clawbus_protocol.errors import Conflict, InvalidRequest, NotFound

from clawbus_core.db import Pool, refuse_unstorable
from clawbus_core.logs import register_secrets
from clawbus_core.secrets import SecretBox

ChannelType = Literal["telegram", "discord", "webhook"]
DmPolicy = Literal["pairing", "allowlist", "open"]
ChannelStatus = Literal["connected", "connecting", "error", "disabled", "not_configured"]
CHANNEL_TYPES: tuple[ChannelType, ...] = get_args(ChannelType)
DM_POLICIES: tuple[DmPolicy, ...] = get_args(DmPolicy)
# Who may address the bot in groups: any member of any group (the default), the members (or
# the listed senders) of the listed groups, or nobody.
GROUP_POLICIES = ("open", "allowlist", "disabled")

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_NUMERIC_ID = re.compile(r"^-?[0-9]{1,20}$")
# Pairing codes: 8 characters people can read aloud (no 0/O, 1/I/L), shown as XXXX-XXXX.
_CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 8
MAX_STATUS_REASON = 500

# What every channel query returns (c: channels, a: agents).
_COLUMNS = """
    c.id, c.namespace, c.tenant_id, c.name, c.type, c.agent_id, a.key AS agent_key, c.settings,
    c.dm_policy, c.allow_from, c.enabled, c.status, c.status_reason, c.account,
    c.messages_received,
    c.messages_sent, c.poll_offset, c.credentials IS NOT NULL AS configured, c.created_at,
    c.updated_at
"""
_FROM = "FROM channels c JOIN agents a ON a.id = c.agent_id"


@dataclass(frozen=True)
class Channel:
    id: UUID
    namespace: str
    tenant_id: UUID
    name: str
    type: ChannelType
    agent_id: UUID
    agent_key: str
    settings: dict[str, Any]
    dm_policy: DmPolicy
    allow_from: tuple[str, ...]
    enabled: bool
    status: ChannelStatus
    status_reason: str | None
    account: str | None  # what the bot is connected as (`@mybot`), once connected
    messages_received: int
    messages_sent: int
    poll_offset: int
    configured: bool  # it has credentials
    created_at: datetime
    updated_at: datetime

    @property
    def shown_status(self) -> ChannelStatus:
        """The status as clients see it: a disabled or unconfigured channel says so."""
        if not self.enabled:
            return "disabled"
        if not self.configured:
            return "not_configured"
        return self.status


def _channel(row: asyncpg.Record) -> Channel:
    return Channel(
        id=row["id"],
        namespace=row["namespace"],
        tenant_id=row["tenant_id"],
        name=row["name"],
        type=row["type"],
        agent_id=row["agent_id"],
        agent_key=row["agent_key"],
        settings=dict(row["settings"]),
        dm_policy=row["dm_policy"],
        allow_from=tuple(row["allow_from"]),
        enabled=row["enabled"],
        status=row["status"],
        status_reason=row["status_reason"],
        account=row["account"],
        messages_received=row["messages_received"],
        messages_sent=row["messages_sent"],
        poll_offset=row["poll_offset"],
        configured=row["configured"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def check_name(name: str, param: str = "name") -> str:
    if not NAME_RE.match(name):
        raise InvalidRequest(
            "channel name must be 1-64 of a-z 0-9 _ - (letter or digit first)", param=param
        )
    return name


def _check_group_access(settings: Mapping[str, Any]) -> None:
    """`groupPolicy` (open, allowlist, disabled) with `groups` (chat ids admitted under
    allowlist) and `groupAllowFrom` (the senders admitted in them; empty: any member)."""
    policy = settings.get("groupPolicy", "open")
    if policy not in GROUP_POLICIES:
        raise InvalidRequest(
            f"groupPolicy must be one of {', '.join(GROUP_POLICIES)}", param="config.groupPolicy"
        )
    for key in ("groups", "groupAllowFrom"):
        ids = settings.get(key, [])
        if not isinstance(ids, list):
            raise InvalidRequest(f"{key} must be a list of numeric ids", param=f"config.{key}")
        for i, value in enumerate(ids):
            # Numeric ids only (a Telegram group's is negative): names can change hands.
            if isinstance(value, bool) or not _NUMERIC_ID.match(str(value)):
                raise InvalidRequest(
                    f"{key} entries must be numeric ids, not {value!r}", param=f"config.{key}.{i}"
                )
    if policy == "allowlist" and not settings.get("groups"):
        raise InvalidRequest(
            "groupPolicy allowlist needs the admitted chats' ids in `groups`",
            param="config.groups",
        )


def _check_new(
    channel_type: str, dm_policy: str, allow_from: Sequence[str], settings: Mapping[str, Any]
) -> None:
    if channel_type not in CHANNEL_TYPES:
        raise InvalidRequest(
            f"channel type must be one of {', '.join(CHANNEL_TYPES)}", param="type"
        )
    if dm_policy not in DM_POLICIES:
        raise InvalidRequest(f"dmPolicy must be one of {', '.join(DM_POLICIES)}", param="dmPolicy")
    for i, sender in enumerate(allow_from):
        # Numeric ids only: user names can be changed and taken over by someone else.
        if not _NUMERIC_ID.match(sender):
            raise InvalidRequest(
                f"allowFrom entries must be numeric user ids, not {sender!r}",
                param=f"allowFrom.{i}",
            )
    _check_group_access(settings)
    refuse_unstorable(dict(settings), "config")
    if len(json.dumps(settings)) > 64_000:
        raise InvalidRequest("settings are larger than 64 000 characters", param="settings")


async def create_channel(
    pool: Pool,
    box: SecretBox,
    namespace: str,
    tenant_id: UUID,
    *,
    name: str,
    channel_type: str,
    agent_key: str,
    credentials: Mapping[str, Any] | None,
    settings: Mapping[str, Any] | None = None,
    dm_policy: str = "pairing",
    allow_from: Sequence[str] = (),
    enabled: bool = True,
    replace: bool = False,
    keep_credentials: bool = False,
) -> Channel:
    """Create the channel (or, with `replace`, overwrite the one of that name: how channels
    from config are kept in step with it, and what PUT does; `keep_credentials` keeps the
    stored ones when none are given). Credentials are sealed before they are stored."""
    check_name(name)
    settings = dict(settings or {})
    _check_new(channel_type, dm_policy, allow_from, settings)
    sealed = box.seal(json.dumps(dict(credentials)).encode()) if credentials else None
    stored = (
        "coalesce(EXCLUDED.credentials, channels.credentials)"
        if keep_credentials
        else "EXCLUDED.credentials"
    )
    conflict = (
        f"""ON CONFLICT (namespace, tenant_id, name) DO UPDATE SET type = EXCLUDED.type,
           agent_id = EXCLUDED.agent_id, credentials = {stored},
           settings = EXCLUDED.settings, dm_policy = EXCLUDED.dm_policy,
           allow_from = EXCLUDED.allow_from, enabled = EXCLUDED.enabled, updated_at = now()"""
        if replace
        else "ON CONFLICT (namespace, tenant_id, name) DO NOTHING"
    )
    row = await pool.fetchrow(
        f"""
        WITH a AS (SELECT id FROM agents WHERE tenant_id = $2 AND key = $4)
        INSERT INTO channels (id, tenant_id, name, type, agent_id, credentials, settings,
                              dm_policy, allow_from, enabled, namespace)
        SELECT $1, $2, $3, $5, a.id, $6, $7::jsonb, $8, $9, $10, $11 FROM a
        {conflict}
        RETURNING id
        """,  # noqa: S608 (constant clauses)
        uuid.uuid4(),
        tenant_id,
        name,
        agent_key,
        channel_type,
        sealed,
        settings,
        dm_policy,
        list(allow_from),
        enabled,
        namespace,
    )
    if row is None:
        agent = await pool.fetchval(
            "SELECT id FROM agents WHERE tenant_id = $1 AND key = $2", tenant_id, agent_key
        )
        if agent is None:
            raise NotFound(f"agent {agent_key!r} not found", param="agentId")
        raise Conflict(f"channel {name!r} already exists", param="name")
    return await get_channel(pool, namespace, tenant_id, name)


async def list_channels(pool: Pool, namespace: str, tenant_id: UUID | None = None) -> list[Channel]:
    """The deployment's channels of one tenant (of every tenant with None, for the bridge)."""
    rows = await pool.fetch(
        f"SELECT {_COLUMNS} {_FROM} WHERE c.namespace = $1 "
        "AND ($2::uuid IS NULL OR c.tenant_id = $2) ORDER BY c.tenant_id, c.name",
        namespace,
        tenant_id,
    )
    return [_channel(r) for r in rows]


async def get_channel(pool: Pool, namespace: str, tenant_id: UUID, name: str) -> Channel:
    row = await pool.fetchrow(
        f"SELECT {_COLUMNS} {_FROM} WHERE c.namespace = $1 AND c.tenant_id = $2 AND c.name = $3",
        namespace,
        tenant_id,
        name,
    )
    if row is None:
        raise NotFound(f"channel {name!r} not found", param="channelId")
    return _channel(row)


async def find_channel(pool: Pool, namespace: str, tenant_id: UUID, ref: str) -> Channel:
    """The channel a route names: by name, or by id (GoClaw's instances have uuids)."""
    try:
        channel_id = UUID(ref)
    except ValueError:
        return await get_channel(pool, namespace, tenant_id, ref)
    found = await get_channel_by_id(pool, channel_id)
    if found is None or found.tenant_id != tenant_id or found.namespace != namespace:
        raise NotFound(f"channel {ref!r} not found", param="channelId")
    return found


async def get_channel_by_id(pool: Pool, channel_id: UUID) -> Channel | None:
    row = await pool.fetchrow(f"SELECT {_COLUMNS} {_FROM} WHERE c.id = $1", channel_id)
    return _channel(row) if row is not None else None


async def set_enabled(
    pool: Pool, namespace: str, tenant_id: UUID, name: str, enabled: bool
) -> Channel:
    updated = await pool.fetchval(
        "UPDATE channels SET enabled = $4, updated_at = now() "
        "WHERE namespace = $1 AND tenant_id = $2 AND name = $3 RETURNING id",
        namespace,
        tenant_id,
        name,
        enabled,
    )
    if updated is None:
        raise NotFound(f"channel {name!r} not found", param="channelId")
    return await get_channel(pool, namespace, tenant_id, name)


async def delete_channel(pool: Pool, namespace: str, tenant_id: UUID, name: str) -> None:
    deleted = await pool.fetchval(
        "DELETE FROM channels WHERE namespace = $1 AND tenant_id = $2 AND name = $3 RETURNING id",
        namespace,
        tenant_id,
        name,
    )
    if deleted is None:
        raise NotFound(f"channel {name!r} not found", param="channelId")


async def credentials(pool: Pool, box: SecretBox, channel_id: UUID) -> dict[str, Any] | None:
    sealed = await pool.fetchval("SELECT credentials FROM channels WHERE id = $1", channel_id)
    if sealed is None:
        return None
    value: dict[str, Any] = json.loads(box.open(sealed))
    # A credential this process knows is redacted from its logs wherever it shows up (a bot
    # token in a library's error message, not only inside a Bot API URL).
    register_secrets(*(v for v in value.values() if isinstance(v, str)))
    return value


async def set_status(
    pool: Pool,
    channel_id: UUID,
    status: ChannelStatus,
    reason: str | None = None,
    *,
    account: str | None = None,
) -> None:
    """Write the channel's status (and, when given, the account it is connected as)."""
    await pool.execute(
        "UPDATE channels SET status = $2, status_reason = $3, account = coalesce($4, account) "
        "WHERE id = $1 AND (status, coalesce(status_reason, ''), account) "
        "IS DISTINCT FROM ($2, coalesce($3, ''), coalesce($4, account))",
        channel_id,
        status,
        reason[:MAX_STATUS_REASON] if reason else None,
        account,
    )


async def count(pool: Pool, channel_id: UUID, *, received: int = 0, sent: int = 0) -> None:
    await pool.execute(
        "UPDATE channels SET messages_received = messages_received + $2, "
        "messages_sent = messages_sent + $3 WHERE id = $1",
        channel_id,
        received,
        sent,
    )


async def advance_offset(pool: Pool, channel_id: UUID, offset: int) -> None:
    """The next update id to ask for; never moves back (a stale poller cannot rewind it)."""
    await pool.execute(
        "UPDATE channels SET poll_offset = greatest(poll_offset, $2) WHERE id = $1",
        channel_id,
        offset,
    )


# --- pairing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pairing:
    """What to do about a sender under the `pairing` policy."""

    approved: bool
    code: str | None = None  # the sender's pending code
    send_code: bool = False  # tell the sender the code now (new, or not said for a while)


def format_code(code: str) -> str:
    return f"{code[:4]}-{code[4:]}"


def _new_code() -> str:
    return "".join(secrets.choice(_CODE_ALPHABET) for _ in range(CODE_LENGTH))


async def pairing(
    pool: Pool,
    channel_id: UUID,
    sender_id: str,
    *,
    display_name: str | None,
    ttl_s: float,
    resend_after_s: float,
) -> Pairing:
    """The sender's standing: approved, or pending with a code (issued anew once expired)."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "SELECT approved_at, code, code_expires_at > now() AS live, "
            "code_sent_at < now() - make_interval(secs => $3) AS stale "
            "FROM channel_senders WHERE channel_id = $1 AND sender_id = $2 FOR UPDATE",
            channel_id,
            sender_id,
            resend_after_s,
        )
        if row is not None and row["approved_at"] is not None:
            return Pairing(approved=True)
        if row is not None and row["live"]:
            if not row["stale"]:
                return Pairing(approved=False, code=row["code"])
            await conn.execute(
                "UPDATE channel_senders SET code_sent_at = now() "
                "WHERE channel_id = $1 AND sender_id = $2",
                channel_id,
                sender_id,
            )
            return Pairing(approved=False, code=row["code"], send_code=True)
        code = _new_code()
        await conn.execute(
            """
            INSERT INTO channel_senders (channel_id, sender_id, display_name, code,
                                         code_expires_at, code_sent_at)
            VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5), now())
            ON CONFLICT (channel_id, sender_id) DO UPDATE SET code = EXCLUDED.code,
                code_expires_at = EXCLUDED.code_expires_at, code_sent_at = now(),
                display_name = EXCLUDED.display_name
            """,
            channel_id,
            sender_id,
            display_name,
            code,
            ttl_s,
        )
        return Pairing(approved=False, code=code, send_code=True)


@dataclass(frozen=True)
class PendingSender:
    sender_id: str
    display_name: str | None
    code: str
    expires_at: datetime


async def pending_senders(pool: Pool, channel_id: UUID) -> list[PendingSender]:
    rows = await pool.fetch(
        "SELECT sender_id, display_name, code, code_expires_at FROM channel_senders "
        "WHERE channel_id = $1 AND approved_at IS NULL AND code_expires_at > now() "
        "ORDER BY created_at",
        channel_id,
    )
    return [
        PendingSender(r["sender_id"], r["display_name"], r["code"], r["code_expires_at"])
        for r in rows
    ]


async def approve(pool: Pool, channel_id: UUID, code: str, *, by: str) -> str:
    """Approve the sender holding `code` (case, spaces and dashes ignored); their id."""
    normalized = re.sub(r"[\s-]", "", code).upper()
    sender = await pool.fetchval(
        "UPDATE channel_senders SET approved_at = now(), approved_by = $3, code = NULL, "
        "code_expires_at = NULL WHERE channel_id = $1 AND code = $2 "
        "AND code_expires_at > now() AND approved_at IS NULL RETURNING sender_id",
        channel_id,
        normalized,
        by,
    )
    if sender is None:
        raise NotFound("no pending pairing with that code (wrong, used or expired)", param="code")
    return str(sender)


# --- the outbox -------------------------------------------------------------------------------


async def add_delivery(
    pool: Pool, run_id: UUID, channel_id: UUID, target: Mapping[str, Any]
) -> None:
    """What the run owes the chat; written once (a re-read update finds it there)."""
    await pool.execute(
        "INSERT INTO channel_deliveries (run_id, channel_id, target) VALUES ($1, $2, $3::jsonb) "
        "ON CONFLICT (run_id) DO NOTHING",
        run_id,
        channel_id,
        dict(target),
    )


@dataclass(frozen=True)
class Delivery:
    run_id: UUID
    channel_id: UUID
    target: dict[str, Any]
    chunks_sent: int
    sending_chunk: int | None  # a chunk a crashed sender may or may not have sent
    attempts: int
    run_status: str
    text: str | None  # the run's answer (None unless it completed)
    error: dict[str, Any] | None


# Deliveries of one channel whose run has ended, unclaimed or with an expired claim.
_CLAIM = """
WITH due AS (
    SELECT d.run_id FROM channel_deliveries d JOIN runs r ON r.id = d.run_id
    WHERE d.channel_id = $1 AND d.state IN ('pending', 'sending')
      AND r.status IN ('completed', 'failed', 'aborted')
      AND (d.claim_until IS NULL OR d.claim_until < now())
      AND ($4::uuid IS NULL OR d.run_id = $4)
    ORDER BY d.created_at
    LIMIT $5
    FOR UPDATE OF d SKIP LOCKED
)
UPDATE channel_deliveries d SET claimed_by = $2, state = 'sending', attempts = attempts + 1,
    claim_until = now() + make_interval(secs => $3), updated_at = now()
FROM due WHERE d.run_id = due.run_id
RETURNING d.run_id, d.channel_id, d.target, d.chunks_sent, d.sending_chunk, d.attempts
"""

_ANSWERS = """
SELECT r.id, r.status, r.error,
       (SELECT m.content FROM messages m WHERE m.run_id = r.id AND m.role = 'assistant'
          AND m.kind = 'message' ORDER BY m.id DESC LIMIT 1) AS text
FROM runs r WHERE r.id = ANY($1::uuid[])
"""


async def claim_deliveries(
    pool: Pool,
    channel_id: UUID,
    owner: str,
    *,
    lease_s: float,
    run_id: UUID | None = None,
    limit: int = 16,
) -> list[Delivery]:
    """Take what the channel owes (one run's, or the oldest due), for `lease_s`."""
    rows = await pool.fetch(_CLAIM, channel_id, owner, lease_s, run_id, limit)
    if not rows:
        return []
    answers = {r["id"]: r for r in await pool.fetch(_ANSWERS, [row["run_id"] for row in rows])}
    out = []
    for row in rows:
        answer = answers[row["run_id"]]
        out.append(
            Delivery(
                run_id=row["run_id"],
                channel_id=row["channel_id"],
                target=dict(row["target"]),
                chunks_sent=row["chunks_sent"],
                sending_chunk=row["sending_chunk"],
                attempts=row["attempts"],
                run_status=answer["status"],
                text=answer["text"] if answer["status"] == "completed" else None,
                error=answer["error"],
            )
        )
    return out


async def sending(pool: Pool, run_id: UUID, owner: str, chunk: int, *, lease_s: float) -> bool:
    """Record the chunk about to be sent (and extend the claim); False if the claim is lost."""
    done = await pool.fetchval(
        "UPDATE channel_deliveries SET sending_chunk = $3, "
        "claim_until = now() + make_interval(secs => $4), updated_at = now() "
        "WHERE run_id = $1 AND claimed_by = $2 AND state = 'sending' RETURNING 1",
        run_id,
        owner,
        chunk,
        lease_s,
    )
    return done is not None


async def sent(pool: Pool, run_id: UUID, owner: str, chunk: int, platform_id: str) -> None:
    """Record a chunk sent (and count it on its channel)."""
    async with pool.acquire() as conn, conn.transaction():
        channel_id = await conn.fetchval(
            "UPDATE channel_deliveries SET chunks_sent = $3 + 1, sending_chunk = NULL, "
            "platform_ids = platform_ids || $4::text, updated_at = now() "
            "WHERE run_id = $1 AND claimed_by = $2 RETURNING channel_id",
            run_id,
            owner,
            chunk,
            platform_id,
        )
        if channel_id is not None:
            await conn.execute(
                "UPDATE channels SET messages_sent = messages_sent + 1 WHERE id = $1", channel_id
            )


async def finish_delivery(
    pool: Pool, run_id: UUID, owner: str, *, failed: str | None = None
) -> None:
    await pool.execute(
        "UPDATE channel_deliveries SET state = $3, last_error = $4, claim_until = NULL, "
        "updated_at = now() WHERE run_id = $1 AND claimed_by = $2",
        run_id,
        owner,
        "failed" if failed else "sent",
        failed,
    )


async def release_delivery(pool: Pool, run_id: UUID, owner: str, error: str) -> None:
    """Give the delivery back (a send failed and may succeed later): due again at once."""
    await pool.execute(
        "UPDATE channel_deliveries SET claim_until = now(), last_error = $3, updated_at = now() "
        "WHERE run_id = $1 AND claimed_by = $2",
        run_id,
        owner,
        error[:MAX_STATUS_REASON],
    )
