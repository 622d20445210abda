"""How every fake serves: an aiohttp app on a socket bound first, and `async with` support."""

from __future__ import annotations

import socket
from abc import ABC, abstractmethod
from types import TracebackType
from typing import Any, Self

from aiohttp import web


def http_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def serve(
    app: web.Application, host: str, port: int, **options: Any
) -> tuple[web.AppRunner, int]:
    """Serve `app` on `host`:`port` (0: any free port); the runner and the port it got.

    The socket is bound first (it may fail: port in use), so nothing is left to clean up if it
    does. No access log and a short shutdown grace: these are test doubles and latency
    baselines. `options` go to the AppRunner."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family)
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, shutdown_timeout=0.5, **options
    )
    try:
        await runner.setup()
        await web.SockSite(runner, sock).start()
    except BaseException:
        sock.close()
        await runner.cleanup()
        raise
    return runner, sock.getsockname()[1]


class Served(ABC):
    """`async with Fake() as fake:` starts and stops it."""

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def stop(self) -> None: ...

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
