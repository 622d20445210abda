"""One Chromium per worker process, and a browser context per target in it.

A target is a tenant's named profile, else a tenant's session (`target_key`): two targets
never share a context, so never cookies, storage or cache. The pool keeps at most
`browser_max_contexts` contexts; a new target evicts the least recently used idle one, and is
refused with a retryable 503 when every context is in use. Contexts idle for
`browser_idle_s` are closed. A profile's storage state is loaded from Postgres when its
context opens, and saved after every call that changed it and when the context closes (a
`close` call, eviction, shutdown).

Operations on one target run one at a time (`BrowserPool.page` holds the target's lock), on
its current page: the newest page of the context, so a link that opens a new tab moves the
target to that tab.

When Chromium dies (a crash, the OOM killer), every context goes with it: the next call
launches a new browser and opens its target's context again, lazily; the calls in flight at
the time fail with a retryable 503. A profile loses at most what the calls in flight changed.

The pool keeps `BROWSER_CONTEXTS` (its open contexts, as `contexts` counts them),
`BROWSER_CONTEXTS_MAX` and `BROWSER_LAUNCHES` (clawbus_core.metrics) up to date.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from uuid import UUID

from asyncpg import PostgresError
from clawbus_core import metrics
from clawbus_protocol.browser import BrowserTarget
from clawbus_protocol.errors import ClawbusError, ServiceUnavailable
from playwright.async_api import (
    Browser,
    BrowserContext,
    Page,
    Playwright,
    StorageState,
    async_playwright,
)
from playwright.async_api import Error as PlaywrightError

from clawbus_browser.guard import NetGuard
from clawbus_browser.profiles import ProfileStore
from clawbus_browser.settings import BrowserSettings

log = logging.getLogger(__name__)

MAX_PAGES = 4  # per context; older tabs are closed past this

# Chromium switches on top of Playwright's own (which include --no-sandbox unless the sandbox
# is asked for). WebRTC is kept off raw UDP and QUIC off: nothing may bypass the SOCKS proxy.
_ARGS = (
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
    "--disable-background-networking",
)


def _digest(state: StorageState) -> str:
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()


def target_key(target: BrowserTarget) -> str:
    """The context a target uses: per tenant and profile, else per tenant and session."""
    if target.profile is not None:
        return f"{target.tenant_id}/profile/{target.profile}"
    return f"{target.tenant_id}/session/{target.session_key}"


@dataclass(eq=False)
class _Slot:
    key: str
    tenant_id: UUID
    profile: str | None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    context: BrowserContext | None = None
    page: Page | None = None
    users: int = 0  # operations holding or waiting for the lock
    last_used: float = field(default_factory=time.monotonic)
    retired: bool = False  # closed: whoever waited for its lock takes a new slot
    saved: str | None = None  # digest of the profile's storage state last saved or loaded


class BrowserPool:
    """`async with BrowserPool(...) as pool:` then `async with pool.page(target) as page:`."""

    def __init__(
        self,
        settings: BrowserSettings,
        *,
        guard: NetGuard,
        proxy_url: str,
        profiles: ProfileStore,
        on_retire: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self.settings = settings
        self.guard = guard
        self.proxy_url = proxy_url
        self.profiles = profiles
        self.on_retire = on_retire
        self.op_timeout_s = settings.browser_op_timeout_s
        self._slots: OrderedDict[str, _Slot] = OrderedDict()  # least recently used first
        self._retiring: dict[str, asyncio.Task[None]] = {}
        self._playwright: Playwright | None = None
        self._browser: Browser | None = None
        self._launch_lock = asyncio.Lock()
        self._evictor: asyncio.Task[None] | None = None
        self.launches = 0

    async def __aenter__(self) -> BrowserPool:
        metrics.BROWSER_CONTEXTS_MAX.set(self.settings.browser_max_contexts)
        self._playwright = await async_playwright().start()
        try:
            await self._browser_up()  # a Chromium that cannot start fails the worker's start
        except BaseException:
            await self._playwright.stop()
            raise
        self._evictor = asyncio.create_task(self._evict_idle(), name="browser-evictor")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._evictor is not None:
            self._evictor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._evictor
        for slot in list(self._slots.values()):
            with contextlib.suppress(Exception):
                await self._retire(slot)
        await asyncio.gather(*self._retiring.values(), return_exceptions=True)
        browser, self._browser = self._browser, None  # closing it is not a crash
        if browser is not None:
            with contextlib.suppress(PlaywrightError):
                await browser.close()
        if self._playwright is not None:
            await self._playwright.stop()
        metrics.BROWSER_CONTEXTS.set(0)

    # --- what status reports ------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._browser is not None and self._browser.is_connected()

    @property
    def browser_version(self) -> str | None:
        return self._browser.version if self.connected and self._browser else None

    @property
    def contexts(self) -> int:
        return sum(1 for slot in self._slots.values() if slot.context is not None)

    # --- using a target's page ----------------------------------------------------------

    @contextlib.asynccontextmanager
    async def page(self, target: BrowserTarget) -> AsyncIterator[Page]:
        """The target's current page, with the target's lock held."""
        while True:
            slot = await self._slot(target)
            slot.users += 1
            try:
                async with slot.lock:
                    if slot.retired:
                        continue  # closed while this call waited: open it again
                    page = await self._current_page(slot)
                    yield page
                    if slot.profile is not None and slot.context is not None:
                        # After every call, not only on close: a worker stopped by a signal
                        # to its process group loses its Chromium before it could save.
                        try:
                            await self._save_profile(slot, slot.context)
                        except (PlaywrightError, ClawbusError, OSError, PostgresError) as exc:
                            log.warning("saving browser profile %s failed: %s", slot.key, exc)
                    return
            finally:
                slot.users -= 1
                slot.last_used = time.monotonic()

    async def close(self, target: BrowserTarget) -> bool:
        """Close the target's context (saving a profile first); whether it was open."""
        slot = self._slots.get(target_key(target))
        if slot is None:
            return False
        await self._retire(slot)
        return True

    async def _slot(self, target: BrowserTarget) -> _Slot:
        key = target_key(target)
        slot = self._slots.get(key)
        if slot is not None:
            self._slots.move_to_end(key)
            return slot
        limit = self.settings.browser_max_contexts
        while len(self._slots) >= limit:
            idle = next((s for s in self._slots.values() if s.users == 0), None)
            if idle is None:
                raise ServiceUnavailable(
                    f"browser-worker {self.settings.browser_worker_id} has all its {limit} "
                    "browser contexts in use; retry shortly",
                    retry_after_ms=1000,
                    worker_id=self.settings.browser_worker_id,
                )
            try:
                await self._retire(idle)
            except Exception:
                log.exception("closing the idle browser context %s failed", idle.key)
        slot = self._slots.get(key)  # another call may have opened it meanwhile
        if slot is None:
            slot = _Slot(key=key, tenant_id=target.tenant_id, profile=target.profile)
            self._slots[key] = slot
        return slot

    async def _current_page(self, slot: _Slot) -> Page:
        if slot.context is None:
            slot.context = await self._open_context(slot)
            metrics.BROWSER_CONTEXTS.set(self.contexts)
        pages = [p for p in slot.context.pages if not p.is_closed()]
        for extra in pages[:-MAX_PAGES]:
            with contextlib.suppress(PlaywrightError):
                await extra.close()
        if slot.page is None or slot.page.is_closed():
            slot.page = pages[-1] if pages else await slot.context.new_page()
        return slot.page

    async def _open_context(self, slot: _Slot) -> BrowserContext:
        previous = self._retiring.get(slot.key)
        if previous is not None:  # the profile's last state is being saved: read it after
            await asyncio.wait([previous])
        browser = await self._browser_up()
        state = None
        if slot.profile is not None:
            state = await self.profiles.load(slot.tenant_id, slot.profile)
            slot.saved = _digest(state) if state is not None else None
        s = self.settings
        context = await browser.new_context(
            storage_state=state,
            accept_downloads=False,
            service_workers="block",  # their requests would not pass the route handler
            viewport={"width": s.browser_viewport_width, "height": s.browser_viewport_height},
        )
        try:
            context.set_default_timeout(self.op_timeout_s * 1000)
            await context.route("**/*", self.guard.route)
        except BaseException:
            with contextlib.suppress(PlaywrightError):
                await context.close()
            raise

        def adopt(page: Page) -> None:
            if slot.context is context:
                slot.page = page  # a new tab (window.open, target=_blank) becomes current

        context.on("page", adopt)
        log.info("opened browser context %s", slot.key)
        return context

    # --- closing --------------------------------------------------------------------------

    async def _retire(self, slot: _Slot) -> None:
        """Take the slot out of the pool now; close its context once its operation is done."""
        if self._slots.get(slot.key) is slot:
            del self._slots[slot.key]
            metrics.BROWSER_CONTEXTS.set(self.contexts)
        if slot.retired:
            return
        slot.retired = True
        task = asyncio.create_task(self._close_slot(slot), name=f"close {slot.key}")
        self._retiring[slot.key] = task
        task.add_done_callback(lambda t: self._forget(slot.key, t))
        # Shielded: a caller's timeout must not interrupt a profile's save half-way.
        await asyncio.shield(task)

    def _forget(self, key: str, task: asyncio.Task[None]) -> None:
        if self._retiring.get(key) is task:
            del self._retiring[key]

    async def _close_slot(self, slot: _Slot) -> None:
        async with slot.lock:
            context, slot.context, slot.page = slot.context, None, None
            try:
                if context is not None:
                    await self._save_and_close(slot, context)
            finally:
                if self.on_retire is not None:
                    with contextlib.suppress(Exception):
                        await self.on_retire(slot.key)

    async def _save_profile(self, slot: _Slot, context: BrowserContext) -> None:
        """Write the profile's storage state to Postgres, if it changed since last written."""
        if slot.profile is None or not self.connected:
            return
        async with asyncio.timeout(self.op_timeout_s):
            state = await context.storage_state()
        digest = _digest(state)
        if digest != slot.saved:
            await self.profiles.save(slot.tenant_id, slot.profile, state)
            slot.saved = digest

    async def _save_and_close(self, slot: _Slot, context: BrowserContext) -> None:
        try:
            await self._save_profile(slot, context)
        finally:
            with contextlib.suppress(PlaywrightError, TimeoutError):
                async with asyncio.timeout(self.op_timeout_s):
                    await context.close()
            log.info("closed browser context %s", slot.key)

    async def _evict_idle(self) -> None:
        idle_s = self.settings.browser_idle_s
        while True:
            await asyncio.sleep(min(idle_s / 2, 30.0))
            now = time.monotonic()
            for slot in list(self._slots.values()):
                if slot.users == 0 and now - slot.last_used > idle_s:
                    try:
                        await self._retire(slot)
                    except Exception:
                        log.exception("closing the idle browser context %s failed", slot.key)

    # --- the browser ----------------------------------------------------------------------

    async def _browser_up(self) -> Browser:
        async with self._launch_lock:
            if self._browser is None or not self._browser.is_connected():
                self._browser = await self._launch()
            return self._browser

    async def _launch(self) -> Browser:
        assert self._playwright is not None
        s = self.settings
        sandbox = s.browser_sandbox if s.browser_sandbox is not None else os.geteuid() != 0
        try:
            async with asyncio.timeout(60):
                browser = await self._playwright.chromium.launch(
                    executable_path=s.browser_chromium_path,
                    headless=True,
                    chromium_sandbox=sandbox,
                    proxy={"server": self.proxy_url},
                    args=[*_ARGS, *s.browser_args],
                    handle_sigint=False,
                    handle_sigterm=False,
                    handle_sighup=False,
                )
        except (PlaywrightError, TimeoutError) as exc:
            hint = " (no usable sandbox? CLAWBUS_BROWSER_SANDBOX=false)" if sandbox else ""
            raise ServiceUnavailable(
                f"Chromium at {s.browser_chromium_path} could not start{hint}: "
                f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}",
                worker_id=s.browser_worker_id,
            ) from None
        self.launches += 1
        metrics.BROWSER_LAUNCHES.inc()
        browser.on("disconnected", self._disconnected)
        log.info("Chromium %s started (launch %d)", browser.version, self.launches)
        return browser

    def _disconnected(self, browser: Browser) -> None:
        if browser is not self._browser:
            return
        log.warning("Chromium disconnected; its contexts are gone, the next call starts it again")
        self._browser = None
        for slot in self._slots.values():
            slot.context, slot.page = None, None
        metrics.BROWSER_CONTEXTS.set(0)
