"""The browser-worker's parts that need no browser: the SOCKS proxy's policy, image sizes,
target keys, settings."""

from __future__ import annotations

import asyncio
import struct
import uuid
from collections.abc import AsyncIterator

import pytest
from clawbus_browser.ops import image_size
from clawbus_browser.pool import target_key
from clawbus_browser.settings import BrowserSettings
from clawbus_browser.socks import SocksProxy
from clawbus_core.netguard import NetPolicy
from clawbus_protocol.browser import BrowserTarget
from pydantic import ValidationError


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    """A TCP server on loopback that answers each line with the line upper-cased."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write((await reader.readline()).upper())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def socks_connect(proxy: SocksProxy, host: bytes, port: int) -> tuple[int, bytes]:
    """CONNECT through the proxy by name; the reply code, and what `hello` comes back as."""
    proxy_port = int(proxy.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port)
    try:
        writer.write(b"\x05\x01\x00")
        assert await reader.readexactly(2) == b"\x05\x00"
        writer.write(b"\x05\x01\x00\x03" + bytes([len(host)]) + host + struct.pack(">H", port))
        reply = await reader.readexactly(10)
        if reply[1] != 0:
            return reply[1], b""
        writer.write(b"hello\n")
        return 0, await reader.readline()
    finally:
        writer.close()


async def test_socks_proxy_connects_only_where_the_policy_allows(echo_port: int) -> None:
    async with SocksProxy(NetPolicy()) as strict:
        assert await socks_connect(strict, b"127.0.0.1", echo_port) == (2, b"")
        assert await socks_connect(strict, b"localhost", echo_port) == (2, b"")
        assert await socks_connect(strict, b"169.254.169.254", 80) == (2, b"")
    async with SocksProxy(NetPolicy.from_entries([f"127.0.0.1:{echo_port}"])) as opened:
        assert await socks_connect(opened, b"127.0.0.1", echo_port) == (0, b"HELLO\n")
        assert await socks_connect(opened, b"127.0.0.1", 9) == (2, b""), "another port"


def test_image_size_reads_png_and_jpeg_headers() -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + struct.pack(">II", 640, 480) + b"\x08\x02"
    assert image_size(png) == (640, 480)
    app0 = b"\xff\xe0\x00\x10" + b"JFIF\x00" + b"\x00" * 9
    sof = b"\xff\xc0\x00\x11\x08" + struct.pack(">HH", 200, 300) + b"\x03" + b"\x00" * 9
    assert image_size(b"\xff\xd8" + app0 + sof) == (300, 200)
    assert image_size(b"GIF89a") is None


def test_targets_are_keyed_by_tenant_and_profile_else_session() -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    keys = {
        target_key(BrowserTarget(tenant_id=a, session_key="s1")),
        target_key(BrowserTarget(tenant_id=a, session_key="s2")),
        target_key(BrowserTarget(tenant_id=b, session_key="s1")),
        target_key(BrowserTarget(tenant_id=a, session_key="s1", profile="work")),
        target_key(BrowserTarget(tenant_id=b, session_key="s1", profile="work")),
    }
    assert len(keys) == 5
    # A profile is shared by the tenant's sessions.
    assert target_key(BrowserTarget(tenant_id=a, session_key="x", profile="work")) == target_key(
        BrowserTarget(tenant_id=a, session_key="y", profile="work")
    )


def test_worker_ids_are_subject_safe() -> None:
    assert BrowserSettings(browser_worker_id="w-1").browser_worker_id == "w-1"
    with pytest.raises(ValidationError):
        BrowserSettings(browser_worker_id="a.b")
    assert "." not in BrowserSettings().browser_worker_id
