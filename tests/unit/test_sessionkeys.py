"""Session keys: every OpenClaw shape formed, parsed back, and every malformed key refused."""

from __future__ import annotations

import pytest
from clawbus_core import sessionkeys as sk
from clawbus_protocol.errors import InvalidRequest


def test_main_key() -> None:
    assert sk.main_key("main") == "agent:main:main"
    assert sk.main_key("Ops", main_key="Home") == "agent:ops:home"
    parsed = sk.parse("agent:ops:home")
    assert (parsed.kind, parsed.agent, parsed.main_key, parsed.dm_scope) == (
        "main",
        "ops",
        "home",
        "main",
    )


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        ("main", "agent:main:main"),
        ("per-peer", "agent:main:direct:u123"),
        ("per-channel-peer", "agent:main:telegram:direct:u123"),
        ("per-account-channel-peer", "agent:main:telegram:default:direct:u123"),
    ],
)
def test_direct_keys_by_scope(scope: sk.DmScope, expected: str) -> None:
    assert sk.direct_key("main", "U123", dm_scope=scope, channel="Telegram") == expected
    assert sk.resolve("main", channel="telegram", peer="U123", dm_scope=scope) == expected
    parsed = sk.parse(expected)
    if scope == "main":
        assert parsed.kind == "main"
    else:
        assert (parsed.kind, parsed.peer, parsed.dm_scope) == ("direct", "u123", scope)


def test_direct_key_parts() -> None:
    key = sk.direct_key(
        "main",
        "+15551234567",
        dm_scope="per-account-channel-peer",
        channel="whatsapp",
        account="biz",
    )
    assert key == "agent:main:whatsapp:biz:direct:+15551234567"
    parsed = sk.parse(key)
    assert (parsed.channel, parsed.account, parsed.peer) == ("whatsapp", "biz", "+15551234567")
    assert sk.parse("agent:main:discord:direct:u1").channel == "discord"


def test_legacy_dm_spelling_is_read() -> None:
    for key, scope in [
        ("agent:main:dm:alice", "per-peer"),
        ("agent:main:telegram:dm:123456", "per-channel-peer"),
        ("agent:main:telegram:acct:dm:123456", "per-account-channel-peer"),
    ]:
        parsed = sk.parse(key)
        assert parsed.kind == "direct"
        assert parsed.dm_scope == scope
        assert parsed.key == key  # kept as given: it names an existing session


def test_per_channel_scopes_need_a_channel() -> None:
    with pytest.raises(InvalidRequest):
        sk.direct_key("main", "u1", dm_scope="per-channel-peer")


def test_group_and_channel_keys() -> None:
    assert sk.group_key("main", "telegram", "-1001234567890") == (
        "agent:main:telegram:group:-1001234567890"
    )
    assert sk.group_key("main", "discord", "123456", kind="channel") == (
        "agent:main:discord:channel:123456"
    )
    parsed = sk.parse("agent:main:discord:channel:123456")
    assert (parsed.kind, parsed.channel, parsed.group) == ("channel", "discord", "123456")
    # A group message gets the group's key whatever the DM scope and sender.
    assert sk.resolve(
        "main", channel="slack", peer="u1", group="C001", group_kind="channel", dm_scope="per-peer"
    ) == ("agent:main:slack:channel:c001")


def test_threads_and_topics() -> None:
    assert sk.resolve(
        "main", channel="discord", group="123456", group_kind="channel", thread="987654"
    ) == ("agent:main:discord:channel:123456:thread:987654")
    topic = sk.resolve("main", channel="telegram", group="-1001234567890", thread="42")
    assert topic == "agent:main:telegram:group:-1001234567890:topic:42"
    parsed = sk.parse(topic)
    assert (parsed.kind, parsed.group, parsed.thread, parsed.thread_marker) == (
        "group",
        "-1001234567890",
        "42",
        "topic",
    )
    assert parsed.parent == "agent:main:telegram:group:-1001234567890"
    slack = sk.parse("agent:main:slack:channel:c123:thread:1710000000.9999")
    assert (slack.thread, slack.parent) == ("1710000000.9999", "agent:main:slack:channel:c123")
    assert sk.parse("agent:main:main:thread:t1").kind == "main"
    assert sk.parse("agent:main:main").parent is None
    # A DM peer literally named "thread:x" is a peer, not a thread.
    odd = sk.parse("agent:main:direct:thread:x")
    assert (odd.kind, odd.peer, odd.thread) == ("direct", "thread:x", None)


def test_cron_and_hook_keys() -> None:
    assert sk.cron_key("job-1") == "cron:job-1"
    assert sk.cron_key("job-1", agent="main") == "agent:main:cron:job-1"
    assert sk.parse("cron:job-1").source_id == "job-1"
    agent_cron = sk.parse("agent:main:cron:job-1")
    assert (agent_cron.kind, agent_cron.agent, agent_cron.source_id) == ("cron", "main", "job-1")
    hook = sk.hook_key()
    assert hook.startswith("hook:")
    assert len(hook) == len("hook:") + 36
    assert sk.parse(hook).kind == "hook"
    assert sk.hook_key("ABC", agent="main") == "agent:main:hook:abc"
    assert sk.parse("agent:main:subagent:worker").kind == "subagent"


def test_lower_case_normalisation() -> None:
    parsed = sk.parse("  AGENT:Main:Telegram:Group:-100ABC  ")
    assert parsed.key == "agent:main:telegram:group:-100abc"
    assert str(parsed) == parsed.key
    assert sk.parse("AGENT:Main:Hook:Webhook:42").key == "agent:main:hook:webhook:42"


def test_other_keys_are_valid() -> None:
    assert sk.parse("kill-9-abc").kind == "other"
    other = sk.parse("agent:main:openai:0b7c")
    assert (other.kind, other.agent) == ("other", "main")
    legacy = sk.parse("group:-100123")
    assert (legacy.kind, legacy.group) == ("group", "-100123")


def test_to_store_key() -> None:
    assert sk.to_store_key("main", None) == "agent:main:main"
    assert sk.to_store_key("main", " MAIN ") == "agent:main:main"
    assert sk.to_store_key("main", "agent:ops:main") == "agent:ops:main"
    assert sk.to_store_key("ops", "cron:7") == "agent:ops:cron:7"
    assert sk.to_store_key("ops", "My-Chat") == "agent:ops:my-chat"


@pytest.mark.parametrize(
    "key",
    [
        "",
        "   ",
        "agent:main:" + "x" * 300,
        "agent:main:a b",
        "agent:main:a\tb",
        "agent:main:a\x00b",
        "agent:main:a\u200bb",  # zero-width space (Cf)
        "agent::main",
        "agent:main:",
        ":agent:main:main",
        "agent:main:direct::x",
        "agent:main",
        "agent:bad/agent:main",
        "agent:-leading:main",
        "agent:" + "a" * 65 + ":main",
    ],
)
def test_malformed_keys_are_refused(key: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        sk.parse(key)
    assert err.value.info.http_status == 400


def test_max_length_is_256() -> None:
    key = "agent:main:" + "x" * (256 - len("agent:main:"))
    assert sk.parse(key).key == key
    with pytest.raises(InvalidRequest):
        sk.parse(key + "x")


@pytest.mark.parametrize(
    ("call", "param"),
    [
        (lambda: sk.main_key("bad agent"), "agent"),
        (lambda: sk.main_key("main", main_key=""), "main_key"),
        (lambda: sk.direct_key("main", " ", dm_scope="per-peer"), "peer"),
        (lambda: sk.direct_key("main", "u", dm_scope="per-channel-peer", channel="a:b"), "channel"),
        (lambda: sk.direct_key("main", "u", dm_scope="nope"), "dm_scope"),  # type: ignore[arg-type]
        (lambda: sk.group_key("main", "slack", "c1", kind="room"), "kind"),  # type: ignore[arg-type]
        (lambda: sk.thread_key("agent:main:main", "a b"), "thread"),
        (lambda: sk.resolve("main", channel="x", peer="u", dm_scope="all"), "dm_scope"),  # type: ignore[arg-type]
        (lambda: sk.cron_key(""), "job_id"),
    ],
)
def test_forming_refuses_bad_parts(call: object, param: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        call()  # type: ignore[operator]
    assert err.value.info.details["param"] == param


def test_resolve_without_peer_or_group_is_the_main_session() -> None:
    assert sk.resolve("main", channel="webchat") == "agent:main:main"
    assert sk.resolve("main", channel="slack", thread="t1") == "agent:main:main:thread:t1"
