"""Webhook delivery: POST a completed firing's answer to the job's URL, behind the SSRF guard
(the same `clawbus_core.netguard` checks web_fetch passes: private and internal addresses
are refused unless `net_allow` opens them)."""

from __future__ import annotations

import aiohttp
from clawbus_core.netguard import CheckedResolver, NetPolicy, check_url
from clawbus_protocol.cron import CronWebhook
from clawbus_protocol.errors import ClawbusError


class Webhooks:
    def __init__(self, policy: NetPolicy, timeout_s: float) -> None:
        self.policy = policy
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._http: aiohttp.ClientSession | None = None

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            connector = aiohttp.TCPConnector(resolver=CheckedResolver(self.policy))
            self._http = aiohttp.ClientSession(connector=connector, timeout=self.timeout)
        return self._http

    async def post(self, url: str, body: CronWebhook, idempotency_key: str) -> str | None:
        """Deliver; None when the receiver took it (2xx), else why not."""
        try:
            checked = check_url(url, self.policy)
            async with self._session().post(
                checked,
                data=body.model_dump_json(),
                headers={"Content-Type": "application/json", "Idempotency-Key": idempotency_key},
                allow_redirects=False,
            ) as answer:
                if answer.status >= 300:
                    return f"the webhook answered HTTP {answer.status}"
                return None
        except ClawbusError as exc:
            return exc.info.message
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return f"the webhook request failed: {type(exc).__name__}: {exc}"
