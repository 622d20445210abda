"""Credentials a process decrypts are redacted from its logs from then on, wherever they show
up (a bot token inside a library's error text, not only in a Bot API URL), and so is the
deployment's secret key, generated or configured."""

from __future__ import annotations

import secrets
import uuid
from pathlib import Path

from clawbus_core.config import Endpoints
from clawbus_core.db import Pool, create_pool
from clawbus_core.logs import redact
from clawbus_core.secrets import SecretBox, secret_box
from clawbus_core.store import channels as store
from clawbus_core.store.runs import DEFAULT_TENANT


async def test_decrypted_credentials_and_the_key_are_redacted(
    endpoints: Endpoints, agent: str, tmp_path: Path
) -> None:
    box = secret_box(None, tmp_path)  # generates the key into the data dir
    key = (tmp_path / "secret.key").read_text().strip()
    assert redact(f"key is {key}") == "key is <redacted>"

    pool = await create_pool(endpoints.database_url, min_size=1, max_size=2)
    try:
        await _check_credentials(pool, box, agent)
    finally:
        await pool.close()


async def _check_credentials(pool: Pool, box: SecretBox, agent: str) -> None:
    bot_secret = secrets.token_urlsafe(24)
    token = f"{secrets.randbelow(10**9)}:{bot_secret}"
    created = await store.create_channel(
        pool,
        box,
        f"n{uuid.uuid4().hex[:10]}",
        DEFAULT_TENANT,
        name="redacted",
        channel_type="telegram",
        agent_key=agent,
        credentials={"token": token},
    )
    bare = f"The token {token} was rejected by the server"
    assert token in redact(bare)  # not known to this process yet, and no `bot` before it
    assert await store.credentials(pool, box, created.id) == {"token": token}
    assert redact(bare) == "The token <redacted> was rejected by the server"
