"""A SOCKS5 proxy on loopback that every connection Chromium makes goes through.

Chromium is launched with this proxy and with its own DNS disabled (Playwright does both for
a socks5 proxy, loopback included), so it hands every host name here. The proxy resolves the
name once, refuses it if any address is one the policy refuses, and connects to the checked
addresses and nowhere else: the last word on where a page's traffic goes, whatever the route
handlers saw (redirect hops, WebSockets, DNS answers that change between two lookups).

Only CONNECT without authentication is spoken; the proxy listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from ipaddress import IPv4Address, IPv6Address
from types import TracebackType

from clawbus_core.netguard import DestinationRefused, NetPolicy, resolve_checked

log = logging.getLogger(__name__)

_VERSION = 5
_NO_AUTH, _NO_ACCEPTABLE_METHOD = 0x00, 0xFF
_CONNECT = 0x01
_IPV4, _DOMAIN, _IPV6 = 0x01, 0x03, 0x04
# Reply codes (RFC 1928 section 6).
_SUCCEEDED, _FAILURE, _NOT_ALLOWED, _HOST_UNREACHABLE, _REFUSED = 0, 1, 2, 4, 5
_COMMAND_NOT_SUPPORTED, _ADDRESS_NOT_SUPPORTED = 7, 8
_CHUNK = 64 * 1024


class _Reply(Exception):
    """End the handshake with this SOCKS reply code."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class SocksProxy:
    """`async with SocksProxy(policy) as proxy:` then launch Chromium with `proxy.url`."""

    def __init__(
        self,
        policy: NetPolicy,
        *,
        connect_timeout_s: float = 15.0,
        handshake_timeout_s: float = 10.0,
    ) -> None:
        self.policy = policy
        self.connect_timeout_s = connect_timeout_s
        self.handshake_timeout_s = handshake_timeout_s
        self.url = ""
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> SocksProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"socks5://127.0.0.1:{port}"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        upstream: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(self.handshake_timeout_s):
                host, port = await self._request(reader, writer)
            up_reader, upstream = await self._connect(host, port)
            writer.write(bytes([_VERSION, _SUCCEEDED, 0, _IPV4, 0, 0, 0, 0, 0, 0]))
            await writer.drain()
            await asyncio.gather(_pipe(reader, upstream), _pipe(up_reader, writer))
        except _Reply as reply:
            with contextlib.suppress(OSError):
                writer.write(bytes([_VERSION, reply.code, 0, _IPV4, 0, 0, 0, 0, 0, 0]))
                await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            return  # the browser went away mid-handshake, or took too long: nothing to answer
        finally:
            self._connections.discard(task)
            for w in (writer, upstream):
                if w is not None:
                    w.close()

    async def _request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[str, int]:
        version, n_methods = await reader.readexactly(2)
        methods = await reader.readexactly(n_methods)
        if version != _VERSION or _NO_AUTH not in methods:
            writer.write(bytes([_VERSION, _NO_ACCEPTABLE_METHOD]))
            raise _Reply(_FAILURE)
        writer.write(bytes([_VERSION, _NO_AUTH]))
        await writer.drain()
        version, command, _, kind = await reader.readexactly(4)
        if kind == _IPV4:
            host = str(IPv4Address(await reader.readexactly(4)))
        elif kind == _IPV6:
            host = str(IPv6Address(await reader.readexactly(16)))
        elif kind == _DOMAIN:
            length = (await reader.readexactly(1))[0]
            host = (await reader.readexactly(length)).decode("ascii", "replace")
        else:
            raise _Reply(_ADDRESS_NOT_SUPPORTED)
        port = int.from_bytes(await reader.readexactly(2), "big")
        if version != _VERSION or command != _CONNECT:
            raise _Reply(_COMMAND_NOT_SUPPORTED)
        return host, port

    async def _connect(
        self, host: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                addresses = await resolve_checked(host, port, self.policy)
        except DestinationRefused as exc:
            log.info("proxy refused %s:%d: %s", host, port, exc)
            raise _Reply(_NOT_ALLOWED) from None
        except (OSError, UnicodeError, TimeoutError):
            raise _Reply(_HOST_UNREACHABLE) from None
        for address in addresses:  # the checked addresses, and no others
            try:
                async with asyncio.timeout(self.connect_timeout_s):
                    return await asyncio.open_connection(address, port)
            except (OSError, TimeoutError):
                continue
        raise _Reply(_REFUSED)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until end of stream, then pass the end on (half-close)."""
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        writer.close()
