"""Which browser-worker holds a target's page, so every call for a target reaches it.

Callers ask any replica (one queue group). A page lives in one replica's Chromium, so the
replica that receives a call for a target another live replica holds forwards the call to
that replica's own subject (`Names.browser_worker_subject`) and relays the answer.

Who holds what is one Redis key per target (`Names.browser_holder_key`): the holder's worker
id, claimed by the first replica to serve the target, renewed by every call, released when
its context closes, and expiring well after the context would have been evicted as idle. A
holder that no longer answers at all (no subscriber on its subject: it died or was
restarted) loses the target to the replica that asked, which opens the context afresh (a
profile's cookies come back from Postgres; a session's open page is gone with its worker).
"""

from __future__ import annotations

import redis.asyncio as aioredis
from clawbus_protocol.names import Names

# Claim the key unless another worker holds it; answer the holder. ARGV: me, ttl ms.
_CLAIM = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
return holder
"""

# Take the key from a holder that did not answer (unless a third worker already has).
_TAKE_OVER = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[2] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
  return ARGV[1]
end
return holder
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class Holders:
    def __init__(self, redis: aioredis.Redis, names: Names, worker_id: str, ttl_s: float) -> None:
        self.redis = redis
        self.names = names
        self.worker_id = worker_id
        self.ttl_ms = int(ttl_s * 1000)

    async def claim(self, target_key: str) -> str:
        """The worker holding the target: this one if none did (the claim is renewed)."""
        holder = await self.redis.eval(
            _CLAIM, 1, self.names.browser_holder_key(target_key), self.worker_id, self.ttl_ms
        )
        return _text(holder)

    async def take_over(self, target_key: str, gone: str) -> str:
        """Hold the target instead of `gone`; the worker now holding it."""
        holder = await self.redis.eval(
            _TAKE_OVER,
            1,
            self.names.browser_holder_key(target_key),
            self.worker_id,
            gone,
            self.ttl_ms,
        )
        return _text(holder)

    async def release(self, target_key: str) -> None:
        await self.redis.eval(
            _RELEASE, 1, self.names.browser_holder_key(target_key), self.worker_id
        )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
