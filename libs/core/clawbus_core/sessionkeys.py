"""Session keys: the one place that forms and parses them, in OpenClaw's shapes.

A session key names a conversation bucket (its history and its run lane). Keys are
lower-cased, as OpenClaw does, so `Agent:Main:Main` and `agent:main:main` are one session.

    agent:<agent>:<mainKey>                               every DM, dmScope "main" (default)
    agent:<agent>:direct:<peer>                           dmScope "per-peer"
    agent:<agent>:<channel>:direct:<peer>                 dmScope "per-channel-peer"
    agent:<agent>:<channel>:<account>:direct:<peer>       dmScope "per-account-channel-peer"
    agent:<agent>:<channel>:group:<id>                    a group chat
    agent:<agent>:<channel>:channel:<id>                  a channel or room
    <any of the above>:thread:<threadId>                  a Slack/Discord/... thread
    agent:<agent>:<channel>:group:<id>:topic:<topicId>    a Telegram forum topic
    cron:<jobId>            agent:<agent>:cron:<jobId>    a cron job's session
    hook:<uuid>             agent:<agent>:hook:<uuid>     a webhook's session

OpenClaw writes direct-message keys with `direct` and still reads the legacy `dm` spelling
(`agent:<agent>:<channel>:dm:<peer>`, which its docs still show): both parse here, and new
keys use `direct`. A key of any other shape (an API client's own `x-openclaw-session-key`)
is valid as long as it passes the checks below; it parses as kind "other".

Every key is refused with InvalidRequest when it is empty, longer than 256 characters,
contains whitespace or control characters, or has an empty `:`-separated part; an
`agent:` key must also name a valid agent id.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from dataclasses import dataclass, replace
from typing import Literal

from clawbus_protocol.errors import InvalidRequest

MAX_KEY_CHARS = 256
DEFAULT_MAIN_KEY = "main"
DEFAULT_ACCOUNT = "default"

# Agent ids (agents.key): path- and shell-safe, as OpenClaw's isValidAgentId.
AGENT_ID_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")

DmScope = Literal["main", "per-peer", "per-channel-peer", "per-account-channel-peer"]
GroupKind = Literal["group", "channel"]
ThreadMarker = Literal["thread", "topic"]
Kind = Literal["main", "direct", "group", "channel", "cron", "hook", "subagent", "other"]

DM_SCOPES: tuple[DmScope, ...] = (
    "main",
    "per-peer",
    "per-channel-peer",
    "per-account-channel-peer",
)
DIRECT = "direct"
_DIRECT_MARKERS = frozenset({"direct", "dm"})  # "dm": legacy spelling, still read
_GROUP_MARKERS = frozenset({"group", "channel"})
_THREAD_MARKERS: tuple[ThreadMarker, ...] = ("thread", "topic")
_KIND_MARKERS = _DIRECT_MARKERS | _GROUP_MARKERS | {"cron", "hook", "subagent"}
# Channels whose threads are forum topics (OpenClaw: `:topic:<id>` in the group key).
_TOPIC_CHANNELS = frozenset({"telegram"})


@dataclass(frozen=True)
class SessionKey:
    """A parsed key. `key` is the normalised key itself (what sessions.session_key holds)."""

    key: str
    kind: Kind
    agent: str | None = None  # None for bare `cron:`/`hook:` keys and other non-agent keys
    main_key: str | None = None  # kind "main"
    channel: str | None = None
    account: str | None = None
    peer: str | None = None  # kind "direct": the other side of the DM
    group: str | None = None  # kind "group"/"channel": the group, channel or room id
    source_id: str | None = None  # kind "cron"/"hook"/"subagent": the job, hook or child id
    thread: str | None = None
    thread_marker: ThreadMarker | None = None
    dm_scope: DmScope | None = None  # kind "direct"/"main": the scope that forms this shape

    @property
    def parent(self) -> str | None:
        """The key without its thread/topic suffix; None when it has none."""
        if self.thread is None or self.thread_marker is None:
            return None
        return self.key[: -len(f":{self.thread_marker}:{self.thread}")]

    def __str__(self) -> str:
        return self.key


def _check_chars(value: str, what: str, param: str) -> None:
    for ch in value:
        if ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf"):
            raise InvalidRequest(
                f"{what} must not contain whitespace or control characters", param=param
            )


def normalize(key: str) -> str:
    """The canonical form of `key` (trimmed, lower-cased), or InvalidRequest."""
    value = key.strip().lower()
    if not value:
        raise InvalidRequest("session key must not be empty", param="session_key")
    if len(value) > MAX_KEY_CHARS:
        raise InvalidRequest(
            f"session key is longer than {MAX_KEY_CHARS} characters",
            param="session_key",
            length=len(value),
        )
    _check_chars(value, "session key", "session_key")
    if "" in value.split(":"):
        raise InvalidRequest(
            "session key must not have an empty part (leading, trailing or doubled ':')",
            param="session_key",
        )
    return value


def normalize_agent_id(agent: str) -> str:
    value = agent.strip().lower()
    if not AGENT_ID_RE.fullmatch(value):
        raise InvalidRequest(
            f"invalid agent id {agent!r}: 1-64 characters of a-z, 0-9, '_' and '-', "
            "starting with a letter or digit",
            param="agent",
        )
    return value


def _part(value: str, what: str, *, colons: bool = False) -> str:
    """One caller-supplied part of a key: trimmed, lower-cased and checked."""
    part = value.strip().lower()
    if not part:
        raise InvalidRequest(f"{what} must not be empty", param=what)
    _check_chars(part, what, what)
    if not colons and ":" in part:
        raise InvalidRequest(f"{what} must not contain ':'", param=what)
    return part


def _join(*parts: str) -> str:
    return normalize(":".join(parts))


def _main(agent: str, main: str) -> str:
    return _join("agent", normalize_agent_id(agent), _part(main, "main_key"))


def main_key(agent: str, main_key: str = DEFAULT_MAIN_KEY) -> str:
    """`agent:<agent>:main`: the agent's main session (all DMs with dmScope "main")."""
    return _main(agent, main_key)


def direct_key(
    agent: str,
    peer: str,
    *,
    dm_scope: DmScope,
    channel: str | None = None,
    account: str | None = None,
    main_key: str = DEFAULT_MAIN_KEY,
) -> str:
    """The key of a direct message from `peer`, as `dm_scope` groups DMs."""
    if dm_scope not in DM_SCOPES:
        raise InvalidRequest(f"unknown dm_scope {dm_scope!r}", param="dm_scope")
    agent_id = normalize_agent_id(agent)
    if dm_scope == "main":
        return _main(agent_id, main_key)
    peer_id = _part(peer, "peer", colons=True)
    if dm_scope == "per-peer":
        return _join("agent", agent_id, DIRECT, peer_id)
    if channel is None:
        raise InvalidRequest(f"dm_scope {dm_scope!r} needs a channel", param="channel")
    chan = _part(channel, "channel")
    if dm_scope == "per-channel-peer":
        return _join("agent", agent_id, chan, DIRECT, peer_id)
    acct = _part(account, "account") if account else DEFAULT_ACCOUNT
    return _join("agent", agent_id, chan, acct, DIRECT, peer_id)


def group_key(agent: str, channel: str, group: str, *, kind: GroupKind = "group") -> str:
    """`agent:<agent>:<channel>:group:<id>` (or `:channel:<id>` for channels and rooms)."""
    if kind not in _GROUP_MARKERS:
        raise InvalidRequest(f"unknown group kind {kind!r}", param="kind")
    return _join(
        "agent",
        normalize_agent_id(agent),
        _part(channel, "channel"),
        kind,
        _part(group, "group", colons=True),
    )


def thread_key(base: str, thread: str, *, marker: ThreadMarker = "thread") -> str:
    """`<base>:thread:<threadId>` (or `:topic:` for forum topics)."""
    if marker not in _THREAD_MARKERS:
        raise InvalidRequest(f"unknown thread marker {marker!r}", param="thread")
    return _join(normalize(base), marker, _part(thread, "thread"))


def thread_marker_for(channel: str) -> ThreadMarker:
    return "topic" if channel.strip().lower() in _TOPIC_CHANNELS else "thread"


def cron_key(job_id: str, *, agent: str | None = None) -> str:
    """`cron:<jobId>`, or `agent:<agent>:cron:<jobId>` (OpenClaw's stored form) with an agent."""
    job = _part(job_id, "job_id")
    if agent is None:
        return _join("cron", job)
    return _join("agent", normalize_agent_id(agent), "cron", job)


def hook_key(hook_id: str | None = None, *, agent: str | None = None) -> str:
    """`hook:<uuid>` (a fresh uuid unless given), agent-qualified with an agent."""
    ident = _part(hook_id, "hook_id") if hook_id else str(uuid.uuid4())
    if agent is None:
        return _join("hook", ident)
    return _join("agent", normalize_agent_id(agent), "hook", ident)


def to_store_key(agent: str, request_key: str | None, *, main_key: str = DEFAULT_MAIN_KEY) -> str:
    """The agent-qualified key for a key a client sent (OpenClaw's toAgentStoreSessionKey).

    Empty or `main` is the agent's main session; an `agent:` key is kept (normalised); any
    other key is placed under the agent: `cron:7` -> `agent:<agent>:cron:7`.
    """
    raw = (request_key or "").strip()
    if not raw or raw.lower() == DEFAULT_MAIN_KEY:
        return _main(agent, main_key)
    value = normalize(raw)
    if value.startswith("agent:"):
        return parse(value).key
    return _join("agent", normalize_agent_id(agent), value)


def resolve(
    agent: str,
    *,
    channel: str,
    peer: str | None = None,
    group: str | None = None,
    group_kind: GroupKind = "group",
    thread: str | None = None,
    dm_scope: DmScope = "main",
    account: str | None = None,
    main_key: str = DEFAULT_MAIN_KEY,
) -> str:
    """The session key for an inbound message (what a channel bridge calls).

    A message in a group (or channel/room) gets that group's key whoever sent it; a direct
    message gets the key `dm_scope` gives `peer` (the agent's main session without a peer).
    A thread id appends `:thread:<id>` (`:topic:<id>` on Telegram).
    """
    if dm_scope not in DM_SCOPES:
        raise InvalidRequest(f"unknown dm_scope {dm_scope!r}", param="dm_scope")
    if group is not None:
        base = group_key(agent, channel, group, kind=group_kind)
    elif peer is not None:
        base = direct_key(
            agent, peer, dm_scope=dm_scope, channel=channel, account=account, main_key=main_key
        )
    else:
        base = _main(agent, main_key)
    if thread is None:
        return base
    return thread_key(base, thread, marker=thread_marker_for(channel))


def _split_thread(parts: list[str]) -> tuple[list[str], str | None, ThreadMarker | None]:
    # The last `:thread:<id>` / `:topic:<id>` pair, if what precedes it is a whole key
    # (`agent:a:direct:thread:x` is the DM with peer "thread:x", not a thread).
    if len(parts) >= 3 and parts[-2] in _THREAD_MARKERS and parts[-3] not in _KIND_MARKERS:
        marker: ThreadMarker = "topic" if parts[-2] == "topic" else "thread"
        return parts[:-2], parts[-1], marker
    return parts, None, None


def _parse_rest(key: str, agent: str, rest: list[str]) -> SessionKey:
    """The part after `agent:<agent>:` (without any thread suffix)."""
    first, tail = rest[0], ":".join(rest[1:])
    if len(rest) == 1:
        return SessionKey(key, "main", agent, main_key=first, dm_scope="main")
    if first in _DIRECT_MARKERS:
        return SessionKey(key, "direct", agent, peer=tail, dm_scope="per-peer")
    if first == "cron":
        return SessionKey(key, "cron", agent, source_id=tail)
    if first == "hook":
        return SessionKey(key, "hook", agent, source_id=tail)
    if first == "subagent":
        return SessionKey(key, "subagent", agent, source_id=tail)
    if len(rest) >= 3 and rest[1] in _DIRECT_MARKERS:
        return SessionKey(
            key,
            "direct",
            agent,
            channel=first,
            peer=":".join(rest[2:]),
            dm_scope="per-channel-peer",
        )
    if len(rest) >= 3 and rest[1] in _GROUP_MARKERS:
        kind: Kind = "group" if rest[1] == "group" else "channel"
        return SessionKey(key, kind, agent, channel=first, group=":".join(rest[2:]))
    if len(rest) >= 4 and rest[2] in _DIRECT_MARKERS:
        return SessionKey(
            key,
            "direct",
            agent,
            channel=first,
            account=rest[1],
            peer=":".join(rest[3:]),
            dm_scope="per-account-channel-peer",
        )
    return SessionKey(key, "other", agent)


def parse(key: str) -> SessionKey:
    """Parse (and normalise) a key; InvalidRequest when it is malformed."""
    value = normalize(key)
    parts = value.split(":")
    head, tail = parts[0], ":".join(parts[1:])
    if head != "agent":
        if head == "cron" and tail:
            return SessionKey(value, "cron", source_id=tail)
        if head == "hook" and tail:
            return SessionKey(value, "hook", source_id=tail)
        if head == "group" and tail:  # legacy OpenClaw `group:<id>`
            return SessionKey(value, "group", group=tail)
        return SessionKey(value, "other")
    if len(parts) < 3:
        raise InvalidRequest(
            "a session key 'agent:<agentId>:...' needs an agent id and a rest",
            param="session_key",
        )
    agent = normalize_agent_id(parts[1])
    rest, thread, marker = _split_thread(parts[2:])
    parsed = _parse_rest(value, agent, rest)
    if thread is None:
        return parsed
    return replace(parsed, thread=thread, thread_marker=marker)
