"""The SSRF guard applied to a browser: what a page may load, and why it may not.

Two layers, both judged by the deployment's `NetPolicy` (clawbus_core.netguard):

* every request a context makes passes its route handler (`NetGuard.route`): only http(s)
  (and the browser-local about:, data:, blob:), no refused address, before Chromium sends
  anything. Playwright does not show a navigation's redirect hops to route handlers, and a
  DNS answer may change between this check and Chromium's own lookup, so:
* Chromium resolves nothing itself and connects only through the worker's SOCKS proxy
  (clawbus_browser.socks), which resolves each host once, checks every address and connects
  to exactly those. Redirects, WebSockets and rebinding DNS answers all end there.

A refused navigation reaches the caller as `DestinationRefused` (403) naming the address and
the reason: `refusal_for` judges the URL a failed navigation was going to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

from clawbus_core.netguard import DestinationRefused, NetPolicy, check_url, resolve_checked
from clawbus_protocol.errors import ClawbusError
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Route

log = logging.getLogger(__name__)

RESOLVE_TIMEOUT_S = 10.0

# Schemes that never leave the browser process.
LOCAL_SCHEMES = frozenset({"about", "data", "blob"})


class NetGuard:
    def __init__(self, policy: NetPolicy) -> None:
        self.policy = policy

    async def check(self, url: str) -> None:
        """Raise DestinationRefused (or InvalidRequest for a malformed URL) unless `url` may
        be loaded; socket.gaierror if its host does not resolve, TimeoutError if slowly."""
        parsed = check_url(url, self.policy)
        host, port = parsed.raw_host, parsed.port
        assert host is not None  # check_url refuses URLs without a host or port
        assert port is not None
        async with asyncio.timeout(RESOLVE_TIMEOUT_S):
            await resolve_checked(host, port, self.policy)

    async def refusal_for(self, url: str) -> DestinationRefused | None:
        """Why `url` is refused, if it is (a failed navigation's explanation)."""
        try:
            await self.check(url)
        except DestinationRefused as exc:
            return exc
        except (ClawbusError, OSError):
            return None
        return None

    async def route(self, route: Route) -> None:
        """The context's handler for every request (`context.route("**/*", guard.route)`)."""
        request = route.request
        url = request.url
        if url.partition(":")[0].lower() in LOCAL_SCHEMES:
            await _settle(route.continue_())
            return
        try:
            await self.check(url)
        except socket.gaierror:
            await _settle(route.abort("namenotresolved"))
        except TimeoutError:
            await _settle(route.abort("timedout"))
        except (ClawbusError, OSError) as exc:
            log.info("blocked %s request to %s: %s", request.resource_type, url[:200], exc)
            await _settle(route.abort("blockedbyclient"))
        else:
            await _settle(route.continue_())


async def _settle(outcome: object) -> None:
    """Await a route's continue/abort; the page may have gone meanwhile."""
    with contextlib.suppress(PlaywrightError):
        await outcome  # type: ignore[misc]
