"""The SSRF guard: which network destinations an outbound fetch may reach.

Anything that fetches a URL on an agent's behalf (the `web_fetch` tool, the browser worker)
must not become a way into the machine it runs on or the network behind it. By default every
non-public address is refused: loopback, private, link-local, CGNAT, cloud metadata,
unspecified, multicast and the reserved or special-purpose ranges; IPv6 forms that embed an
IPv4 address (IPv4-mapped, NAT64, 6to4) are judged by the address they embed. An operator
opens exactly what a deployment needs with an allow-list (`NetPolicy`).

A hostname is resolved once and every address it resolves to is checked; the connection must
then go to those checked addresses and nowhere else (`CheckedResolver` does that for aiohttp),
so a DNS answer that changes between the check and the connect cannot redirect it.

    clawbus_protocol.errors.Forbidden
    └── DestinationRefused       a scheme, URL form or address the policy does not allow
    clawbus_protocol.errors.InvalidRequest   a URL that cannot be parsed or has no host
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_address,
    ip_network,
)

from aiohttp.abc import AbstractResolver, ResolveResult
from clawbus_protocol.errors import Forbidden, InvalidRequest
from yarl import URL

__all__ = [
    "ALLOWED_SCHEMES",
    "CheckedResolver",
    "DestinationRefused",
    "IPAddress",
    "NetPolicy",
    "check_address",
    "check_url",
    "ip_literal",
    "refusal_reason",
    "resolve_checked",
]

IPAddress = IPv4Address | IPv6Address

ALLOWED_SCHEMES = frozenset({"http", "https"})


class DestinationRefused(Forbidden):
    """A destination the network policy does not allow; the message says which and why."""


# The first match decides, so the narrow ranges come before the ranges that contain them
# (169.254.169.254 is reported as metadata, not as link-local).
_IPV4_RANGES: tuple[tuple[IPv4Network, str], ...] = tuple(
    (IPv4Network(net), reason)
    for net, reason in (
        ("169.254.169.254/32", "a cloud metadata address"),
        ("100.100.100.200/32", "a cloud metadata address"),
        ("0.0.0.0/32", "the unspecified address"),
        ("255.255.255.255/32", "the broadcast address"),
        ("0.0.0.0/8", "a reserved address ('this network')"),
        ("127.0.0.0/8", "a loopback address"),
        ("10.0.0.0/8", "a private address"),
        ("172.16.0.0/12", "a private address"),
        ("192.168.0.0/16", "a private address"),
        ("169.254.0.0/16", "a link-local address"),
        ("100.64.0.0/10", "a shared (CGNAT) address"),
        ("192.0.0.0/24", "an IETF protocol address"),
        ("192.0.2.0/24", "a documentation (TEST-NET) address"),
        ("198.51.100.0/24", "a documentation (TEST-NET) address"),
        ("203.0.113.0/24", "a documentation (TEST-NET) address"),
        ("192.88.99.0/24", "a reserved address (6to4 relay)"),
        ("198.18.0.0/15", "a benchmarking address"),
        ("224.0.0.0/4", "a multicast address"),
        ("240.0.0.0/4", "a reserved address"),
    )
)

_IPV6_RANGES: tuple[tuple[IPv6Network, str], ...] = tuple(
    (IPv6Network(net), reason)
    for net, reason in (
        ("fd00:ec2::254/128", "a cloud metadata address"),
        ("::/128", "the unspecified address"),
        ("::1/128", "a loopback address"),
        ("64:ff9b:1::/48", "a local-use NAT64 address"),
        ("::/8", "a reserved address"),  # includes the deprecated IPv4-compatible ::/96
        ("100::/64", "a reserved (discard) address"),
        ("2001::/32", "a Teredo address"),
        ("2001:db8::/32", "a documentation address"),
        ("3fff::/20", "a documentation address"),
        ("2001::/23", "an IETF protocol address"),
        ("fc00::/7", "a private (unique local) address"),
        ("fe80::/10", "a link-local address"),
        ("fec0::/10", "a site-local address"),
        ("ff00::/8", "a multicast address"),
    )
)

# Only 2000::/3 is allocated as global unicast; everything outside it is refused.
_IPV6_GLOBAL_UNICAST = IPv6Network("2000::/3")
_NAT64 = IPv6Network("64:ff9b::/96")

# A host made only of numbers in decimal, octal or hex, one to four dot-separated parts:
# the legacy IPv4 spellings (`2130706433`, `0177.0.0.1`, `0x7f.1`) that inet_aton accepts.
_LEGACY_IPV4 = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+)){0,3}\.?", re.I)


def _embedded_ipv4(address: IPv6Address) -> tuple[str, IPv4Address] | None:
    """The IPv4 address an IPv6 form carries, and the name of the form."""
    if address.ipv4_mapped is not None:
        return "an IPv4-mapped form", address.ipv4_mapped
    if address in _NAT64:
        return "a NAT64 form", IPv4Address(int(address) & 0xFFFF_FFFF)
    if address.sixtofour is not None:
        return "a 6to4 form", address.sixtofour
    return None


def refusal_reason(address: IPAddress) -> str | None:
    """Why `address` is refused by default ("a loopback address"), or None if it is public."""
    if isinstance(address, IPv4Address):
        return next((reason for net, reason in _IPV4_RANGES if address in net), None)
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        form, inner = embedded
        inner_reason = refusal_reason(inner)
        return None if inner_reason is None else f"{form} of {inner}, {inner_reason}"
    for net, reason in _IPV6_RANGES:
        if address in net:
            return reason
    return None if address in _IPV6_GLOBAL_UNICAST else "a reserved address"


def ip_literal(host: str) -> tuple[IPAddress, bool] | None:
    """The address `host` spells if it is an IP literal, and whether the spelling is canonical.

    `2130706433`, `0177.0.0.1`, `0x7f.1` and `127.0.0.1.` are non-canonical spellings of
    127.0.0.1: socket functions accept them, `ipaddress` does not.
    """
    try:
        return ip_address(host), True
    except ValueError:
        pass
    if _LEGACY_IPV4.fullmatch(host):
        try:
            return IPv4Address(socket.inet_aton(host.removesuffix("."))), False
        except OSError:  # not a valid number after all, e.g. 08 or an overflowing part
            return None
    return None


@dataclass(frozen=True)
class _Rule:
    network: IPv4Network | IPv6Network | None
    hostname: str | None
    port: int | None

    def matches(self, host: str, address: IPAddress, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.network is not None:
            return address in self.network
        return _normal_host(host) == self.hostname


def _normal_host(host: str) -> str:
    return host.lower().removesuffix(".")


_HOSTNAME = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*")


def _parse_rule(entry: str) -> _Rule:
    text = entry.strip().lower()
    port: int | None = None
    if text.startswith("["):  # [v6] or [v6]:port
        inside, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"allow-list entry {entry!r} is not a valid [IPv6]:port")
        text, port_text = inside, rest[1:]
        port = _parse_port(entry, port_text) if rest else None
    elif text.count(":") == 1:  # host:port or ip:port; more colons is a bare IPv6 address
        text, _, port_text = text.partition(":")
        port = _parse_port(entry, port_text)
    try:
        return _Rule(network=ip_network(text), hostname=None, port=port)
    except ValueError as exc:
        if "/" in text or ":" in text:
            raise ValueError(f"allow-list entry {entry!r}: {exc}") from None
    if ip_literal(text) is not None:
        raise ValueError(f"allow-list entry {entry!r}: write IPv4 addresses as a.b.c.d")
    host = text.removesuffix(".")
    if not _HOSTNAME.fullmatch(host):
        raise ValueError(f"allow-list entry {entry!r} is not a CIDR, an IP or a hostname")
    return _Rule(network=None, hostname=host, port=port)


def _parse_port(entry: str, text: str) -> int:
    if not text.isascii() or not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"allow-list entry {entry!r} has an invalid port")
    return int(text)


@dataclass(frozen=True)
class NetPolicy:
    """Exceptions to the default refusals, each opening exactly what it names.

    An entry is a CIDR (`10.1.0.0/16`), an IP (`10.1.2.3`, `::1`), a hostname
    (`wiki.internal`, any address it resolves to) or any of those with a port
    (`127.0.0.1:8080`, `[::1]:8080`, `wiki.internal:443`) to open only that port.
    Public addresses need no entry. Entries are validated here: a typo fails at start-up.
    """

    allow: tuple[str, ...] = ()
    _rules: tuple[_Rule, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_rules", tuple(_parse_rule(e) for e in self.allow))

    @classmethod
    def from_entries(cls, entries: Iterable[str]) -> NetPolicy:
        return cls(allow=tuple(entries))

    def allows(self, host: str, address: IPAddress, port: int) -> bool:
        """Whether an entry opens `address` (reached as `host`, on `port`)."""
        return any(rule.matches(host, address, port) for rule in self._rules)


def check_address(host: str, address: IPAddress, port: int, policy: NetPolicy) -> None:
    """Raise DestinationRefused unless `address` is public or the policy allows it."""
    reason = refusal_reason(address)
    if reason is None or policy.allows(host, address, port):
        return
    subject = str(address) if host == str(address) else f"{host} ({address})"
    raise DestinationRefused(
        f"{subject} is {reason}; the network policy does not allow it",
        host=host,
        address=str(address),
        port=port,
        reason=reason,
    )


def check_url(url: str | URL, policy: NetPolicy) -> URL:
    """The parsed URL, if it may be fetched: http(s), no credentials, no refused IP literal.

    A hostname passes here; its addresses are checked when it is resolved (`resolve_checked`).
    """
    try:
        parsed = url if isinstance(url, URL) else URL(url)
    except (ValueError, TypeError) as exc:
        raise InvalidRequest(f"{url!s} is not a valid URL: {exc}") from None
    if parsed.scheme not in ALLOWED_SCHEMES:
        raise DestinationRefused(
            f"{parsed}: only http and https URLs may be fetched", url=str(parsed)
        )
    if parsed.raw_user is not None or parsed.raw_password is not None:
        # Credentials in a URL are a classic way to disguise the real host (http://ok@evil/).
        raise DestinationRefused(
            f"{parsed.with_user(None)} contains credentials (user@host), which are not allowed",
            url=str(parsed.with_user(None)),
        )
    host, port = parsed.raw_host, parsed.port
    if not host or port is None:
        raise InvalidRequest(f"{parsed} has no host", url=str(parsed))
    literal = ip_literal(host)
    if literal is not None:
        address, canonical = literal
        check_address(host, address, port, policy)
        if not canonical:
            raise DestinationRefused(
                f"{host} is a non-standard spelling of the IP address {address}; write it as"
                f" {address}",
                url=str(parsed),
            )
    return parsed


async def resolve_checked(
    host: str, port: int, policy: NetPolicy, *, family: int = socket.AF_UNSPEC
) -> list[str]:
    """Resolve `host` once and return its addresses, to connect to and nothing else.

    Raises DestinationRefused if any address is refused (one bad answer refuses the host: a
    client may try them all), and socket.gaierror if the name does not resolve.
    """
    literal = ip_literal(host)
    if literal is not None and literal[1]:
        check_address(host, literal[0], port, policy)
        return [str(literal[0])]
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM)
    # What getaddrinfo returns is what a socket would connect to, whatever spelling `host` used.
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise socket.gaierror(socket.EAI_NONAME, f"{host} has no addresses")
    for address in addresses:
        check_address(host, ip_address(address), port, policy)
    return addresses


class CheckedResolver(AbstractResolver):
    """An aiohttp resolver that connects only to addresses `resolve_checked` allowed.

    The connection goes to the checked IP while the Host header and TLS SNI stay the
    hostname. aiohttp skips the resolver for IP-literal hosts: pass every URL through
    `check_url` first, which judges those.
    """

    def __init__(self, policy: NetPolicy) -> None:
        self._policy = policy

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = await resolve_checked(host, port, self._policy, family=family)
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            )
            for address in addresses
        ]

    async def close(self) -> None:
        """Nothing to release: resolution uses the loop's getaddrinfo."""
