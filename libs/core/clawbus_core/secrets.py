"""The gateway token: from config, else generated once and kept (mode 0600) in the data dir."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

TOKEN_FILE = "gateway.token"  # noqa: S105 (a file name)
PLACEHOLDERS = frozenset({"changeme", "change-me", "secret", "token", "your-token", "password"})


def load_or_create_token(data_dir: Path) -> str:
    path = data_dir / TOKEN_FILE
    if path.exists():
        token = path.read_text().strip()
        if token:
            return token
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = secrets.token_urlsafe(32)
    # Created with 0600 from the start: never readable by others, not even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token
