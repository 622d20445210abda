"""The SSRF guard: address classification, allow-list entries, URL checks, resolution."""

from __future__ import annotations

import asyncio
import socket
from ipaddress import ip_address
from typing import Any

import pytest
from clawbus_core.netguard import (
    CheckedResolver,
    DestinationRefused,
    NetPolicy,
    check_address,
    check_url,
    ip_literal,
    refusal_reason,
    resolve_checked,
)
from clawbus_protocol.errors import ErrorCode, Forbidden, InvalidRequest

OPEN = NetPolicy()


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        # loopback
        ("127.0.0.1", "a loopback address"),
        ("127.255.255.254", "a loopback address"),
        ("::1", "a loopback address"),
        # private
        ("10.0.0.1", "a private address"),
        ("10.255.255.255", "a private address"),
        ("172.16.0.1", "a private address"),
        ("172.31.255.255", "a private address"),
        ("192.168.1.1", "a private address"),
        ("fc00::1", "a private (unique local) address"),
        ("fd12:3456::1", "a private (unique local) address"),
        # link-local
        ("169.254.0.1", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("fe80::1%eth0", "a link-local address"),
        # CGNAT
        ("100.64.0.1", "a shared (CGNAT) address"),
        ("100.127.255.255", "a shared (CGNAT) address"),
        # cloud metadata, before the ranges that contain them
        ("169.254.169.254", "a cloud metadata address"),
        ("fd00:ec2::254", "a cloud metadata address"),
        ("100.100.100.200", "a cloud metadata address"),
        # unspecified
        ("0.0.0.0", "the unspecified address"),
        ("::", "the unspecified address"),
        ("0.1.2.3", "a reserved address ('this network')"),
        # multicast
        ("224.0.0.1", "a multicast address"),
        ("239.255.255.250", "a multicast address"),
        ("ff02::1", "a multicast address"),
        # reserved and special-purpose
        ("240.0.0.1", "a reserved address"),
        ("255.255.255.254", "a reserved address"),
        ("255.255.255.255", "the broadcast address"),
        ("192.0.0.8", "an IETF protocol address"),
        ("192.0.2.1", "a documentation (TEST-NET) address"),
        ("198.51.100.7", "a documentation (TEST-NET) address"),
        ("203.0.113.9", "a documentation (TEST-NET) address"),
        ("198.18.0.1", "a benchmarking address"),
        ("198.19.255.255", "a benchmarking address"),
        ("2001:db8::1", "a documentation address"),
        ("2001::1", "a Teredo address"),
        ("100::1", "a reserved (discard) address"),
        ("::7f00:1", "a reserved address"),  # deprecated IPv4-compatible ::127.0.0.1
        ("fec0::1", "a site-local address"),
        ("4000::1", "a reserved address"),  # outside 2000::/3 global unicast
    ],
)
def test_refused_ranges(address: str, reason: str) -> None:
    assert refusal_reason(ip_address(address)) == reason


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("::ffff:127.0.0.1", "an IPv4-mapped form of 127.0.0.1, a loopback address"),
        ("::ffff:169.254.169.254", "an IPv4-mapped form of 169.254.169.254, a cloud metadata"),
        ("::ffff:10.1.2.3", "an IPv4-mapped form of 10.1.2.3, a private address"),
        ("64:ff9b::7f00:1", "a NAT64 form of 127.0.0.1, a loopback address"),
        ("64:ff9b::192.168.0.1", "a NAT64 form of 192.168.0.1, a private address"),
        ("64:ff9b:1::1", "a local-use NAT64 address"),
        ("2002:7f00:1::", "a 6to4 form of 127.0.0.1, a loopback address"),
        ("2002:a9fe:a9fe::1", "a 6to4 form of 169.254.169.254, a cloud metadata"),
    ],
)
def test_embedded_ipv4_is_judged_by_the_ipv4(address: str, reason: str) -> None:
    found = refusal_reason(ip_address(address))
    assert found is not None
    assert found.startswith(reason)


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "1.1.1.1",
        "93.184.216.34",
        "172.32.0.1",  # just past 172.16/12
        "100.128.0.1",  # just past 100.64/10
        "198.20.0.1",  # just past 198.18/15
        "2606:4700:4700::1111",
        "2a00:1450:4001::200e",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",
        "2002:808:808::1",
    ],
)
def test_public_addresses_pass(address: str) -> None:
    assert refusal_reason(ip_address(address)) is None
    check_address(address, ip_address(address), 443, OPEN)


def test_a_refusal_is_forbidden_and_names_host_and_reason() -> None:
    with pytest.raises(DestinationRefused) as caught:
        check_address("127.0.0.1", ip_address("127.0.0.1"), 80, OPEN)
    assert isinstance(caught.value, Forbidden)
    assert caught.value.info.code is ErrorCode.FORBIDDEN
    assert str(caught.value).startswith("127.0.0.1 is a loopback address")
    assert caught.value.info.details["reason"] == "a loopback address"

    with pytest.raises(DestinationRefused, match=r"^internal\.test \(10\.0\.0\.1\) is a private"):
        check_address("internal.test", ip_address("10.0.0.1"), 80, OPEN)


# --- allow-list -----------------------------------------------------------------------------


def _allowed(policy: NetPolicy, host: str, port: int = 80, address: str | None = None) -> bool:
    return policy.allows(host, ip_address(address or host), port)


def test_allow_list_cidr_and_ip_entries_open_exactly_what_they_name() -> None:
    policy = NetPolicy(allow=("10.1.0.0/16", "192.168.1.5", "fd00:1::/32", "::1"))
    assert _allowed(policy, "10.1.2.3")
    assert _allowed(policy, "10.1.255.255", port=8443)
    assert not _allowed(policy, "10.2.0.1")
    assert _allowed(policy, "192.168.1.5")
    assert not _allowed(policy, "192.168.1.6")
    assert _allowed(policy, "fd00:1::5")
    assert not _allowed(policy, "fd00:2::5")
    assert _allowed(policy, "::1")
    assert not _allowed(policy, "127.0.0.1")
    # An allowed IPv4 address does not open its IPv6 spellings: the entry names one address.
    assert not _allowed(policy, "::ffff:192.168.1.5")
    check_address("10.1.2.3", ip_address("10.1.2.3"), 80, policy)
    with pytest.raises(DestinationRefused):
        check_address("10.2.0.1", ip_address("10.2.0.1"), 80, policy)


def test_allow_list_port_entries_open_only_that_port() -> None:
    policy = NetPolicy(allow=("127.0.0.1:8080", "[::1]:9090", "10.9.0.0/16:443"))
    assert _allowed(policy, "127.0.0.1", 8080)
    assert not _allowed(policy, "127.0.0.1", 8081)
    assert not _allowed(policy, "127.0.0.2", 8080)
    assert _allowed(policy, "::1", 9090)
    assert not _allowed(policy, "::1", 8080)
    assert _allowed(policy, "10.9.1.1", 443)
    assert not _allowed(policy, "10.9.1.1", 80)


def test_allow_list_hostname_entries_match_the_name_not_its_neighbours() -> None:
    policy = NetPolicy(allow=("Wiki.Internal", "metrics.internal:9100"))
    assert _allowed(policy, "wiki.internal", 80, address="10.0.0.7")
    assert _allowed(policy, "WIKI.internal.", 443, address="10.0.0.7")
    assert not _allowed(policy, "evil.wiki.internal", 80, address="10.0.0.7")
    assert not _allowed(policy, "10.0.0.7", 80)  # the name, not the address it resolves to
    assert _allowed(policy, "metrics.internal", 9100, address="10.0.0.8")
    assert not _allowed(policy, "metrics.internal", 80, address="10.0.0.8")


def test_policy_is_frozen_and_compares_by_entries() -> None:
    assert NetPolicy() == NetPolicy(allow=())
    assert NetPolicy.from_entries(["10.0.0.0/8"]) == NetPolicy(allow=("10.0.0.0/8",))
    with pytest.raises(AttributeError):
        NetPolicy().allow = ("x",)  # type: ignore[misc]


@pytest.mark.parametrize(
    "entry",
    ["10.1.2.0/16", "10.0.0.1:0", "10.0.0.1:99999", "host:port", "[::1", "[::1]x", "2130706433",
     "0x7f.1", "bad host", "a..b", ""],
)  # fmt: skip
def test_bad_allow_list_entries_fail_at_construction(entry: str) -> None:
    with pytest.raises(ValueError, match="allow-list entry"):
        NetPolicy(allow=(entry,))


# --- IP literals and URLs -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "address", "canonical"),
    [
        ("127.0.0.1", "127.0.0.1", True),
        ("::1", "::1", True),
        ("2130706433", "127.0.0.1", False),
        ("0177.0.0.1", "127.0.0.1", False),
        ("0x7f.1", "127.0.0.1", False),
        ("0x7F.0.0.1", "127.0.0.1", False),
        ("127.1", "127.0.0.1", False),
        ("127.0.0.1.", "127.0.0.1", False),
        ("0xa9fea9fe", "169.254.169.254", False),
    ],
)
def test_ip_literal_normalises_legacy_spellings(host: str, address: str, canonical: bool) -> None:
    assert ip_literal(host) == (ip_address(address), canonical)


@pytest.mark.parametrize("host", ["example.com", "08.1", "1.2.3.4.5", "0x7f.example", "localhost"])
def test_ip_literal_leaves_names_alone(host: str) -> None:
    assert ip_literal(host) is None


def test_check_url_accepts_public_http_and_https() -> None:
    assert str(check_url("https://example.com/a?b=1", OPEN)) == "https://example.com/a?b=1"
    assert check_url("http://8.8.8.8:8080/", OPEN).port == 8080
    # A hostname passes here: its addresses are checked when it is resolved.
    assert check_url("http://localhost/", OPEN).host == "localhost"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1/", "127.0.0.1 is a loopback address"),
        ("http://[::1]:8080/", "::1 is a loopback address"),
        ("http://[::ffff:127.0.0.1]/", "IPv4-mapped form of 127.0.0.1, a loopback address"),
        ("http://169.254.169.254/latest/meta-data", "169.254.169.254 is a cloud metadata"),
        ("http://[fd00:ec2::254]/", "fd00:ec2::254 is a cloud metadata address"),
        ("http://10.0.0.1/", "10.0.0.1 is a private address"),
        ("http://0.0.0.0:8000/", "0.0.0.0 is the unspecified address"),
        ("http://2130706433/", r"2130706433 \(127.0.0.1\) is a loopback address"),
        ("http://0177.0.0.1/", r"0177.0.0.1 \(127.0.0.1\) is a loopback address"),
        ("http://0x7f.1/", r"0x7f.1 \(127.0.0.1\) is a loopback address"),
        ("http://134744072/", "134744072 is a non-standard spelling of the IP address 8.8.8.8"),
        ("ftp://example.com/", "only http and https URLs may be fetched"),
        ("file:///etc/passwd", "only http and https URLs may be fetched"),
        ("javascript:alert(1)", "only http and https URLs may be fetched"),
        ("/relative/path", "only http and https URLs may be fetched"),
        ("http://user:pw@example.com/", "contains credentials"),
        ("http://example.com@127.0.0.1/", "contains credentials"),
        ("http://:pw@example.com/", "contains credentials"),
    ],
)
def test_check_url_refuses(url: str, message: str) -> None:
    with pytest.raises(DestinationRefused, match=message):
        check_url(url, OPEN)


def test_check_url_does_not_echo_credentials() -> None:
    with pytest.raises(DestinationRefused) as caught:
        check_url("http://user:hunter2@example.com/", OPEN)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize("url", ["http:///path", "http://:80/", "http://a.com:99999/"])
def test_check_url_rejects_malformed_urls(url: str) -> None:
    with pytest.raises(InvalidRequest):
        check_url(url, OPEN)


def test_check_url_honours_the_allow_list_with_its_port() -> None:
    policy = NetPolicy(allow=("127.0.0.1:8080",))
    check_url("http://127.0.0.1:8080/x", policy)
    with pytest.raises(DestinationRefused, match="loopback"):
        check_url("http://127.0.0.1:8081/x", policy)
    with pytest.raises(DestinationRefused, match="loopback"):
        check_url("http://127.0.0.1/x", policy)  # port 80
    # Allowed, but spelled so that other parsers may read it differently: still refused.
    with pytest.raises(DestinationRefused, match="non-standard spelling"):
        check_url("http://2130706433:8080/", policy)


# --- resolution ------------------------------------------------------------------------------


async def test_resolve_checked_refuses_what_a_name_resolves_to() -> None:
    # `localhost` is not an IP literal: the refusal comes from getaddrinfo's answer.
    with pytest.raises(
        DestinationRefused, match=r"^localhost \((127\.0\.0\.1|::1)\) is a loopback"
    ):
        await resolve_checked("localhost", 80, OPEN)


@pytest.mark.parametrize("host", ["2130706433", "0177.0.0.1", "0x7f.1", "127.1"])
async def test_resolve_checked_judges_getaddrinfo_answer_for_encoded_ips(host: str) -> None:
    with pytest.raises(DestinationRefused, match=r"\(127\.0\.0\.1\) is a loopback address"):
        await resolve_checked(host, 80, OPEN)


async def test_resolve_checked_returns_the_addresses_to_pin() -> None:
    assert await resolve_checked("127.0.0.1", 8080, NetPolicy(allow=("127.0.0.1:8080",))) == [
        "127.0.0.1"
    ]
    pinned = await resolve_checked(
        "localhost", 8080, NetPolicy(allow=("localhost:8080",)), family=socket.AF_INET
    )
    assert pinned == ["127.0.0.1"]
    assert await resolve_checked("8.8.8.8", 53, OPEN) == ["8.8.8.8"]


class _DnsLoop(asyncio.SelectorEventLoop):
    """A loop whose getaddrinfo answers from a table, as a DNS server we do not run would."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        super().__init__()
        self._answers = answers

    async def getaddrinfo(  # type: ignore[override]
        self, host: str, port: int, **kwargs: Any
    ) -> list[tuple[Any, ...]]:
        if host not in self._answers:
            return await super().getaddrinfo(host, port, **kwargs)
        return [
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (a, port, 0, 0))
            if ":" in a
            else (socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in self._answers[host]
        ]


def test_resolve_checked_refuses_if_any_address_is_refused() -> None:
    answers = {"mixed.test": ["93.184.216.34", "10.0.0.9"], "public.test": ["93.184.216.34"]}
    with asyncio.Runner(loop_factory=lambda: _DnsLoop(answers)) as runner:
        # One private answer among public ones refuses the host: a client tries them all.
        with pytest.raises(DestinationRefused, match=r"^mixed\.test \(10\.0\.0\.9\) is a private"):
            runner.run(resolve_checked("mixed.test", 80, OPEN))
        allowed = NetPolicy(allow=("mixed.test",))
        assert runner.run(resolve_checked("mixed.test", 80, allowed)) == [
            "93.184.216.34",
            "10.0.0.9",
        ]
        assert runner.run(resolve_checked("public.test", 80, OPEN)) == ["93.184.216.34"]


async def test_resolve_checked_lets_resolution_failures_through() -> None:
    with pytest.raises(socket.gaierror):
        await resolve_checked("no-such-host.invalid", 80, OPEN)


async def test_checked_resolver_pins_the_checked_addresses() -> None:
    resolver = CheckedResolver(NetPolicy(allow=("localhost",)))
    results = await resolver.resolve("localhost", 8080, family=socket.AF_INET)
    assert [(r["hostname"], r["host"], r["port"], r["family"]) for r in results] == [
        ("localhost", "127.0.0.1", 8080, socket.AF_INET)
    ]
    with pytest.raises(DestinationRefused):
        await CheckedResolver(OPEN).resolve("localhost", 8080)
    await resolver.close()
