"""Secrets a deployment generates for itself, kept (mode 0600) in the data dir unless
configured: the gateway token, and the data key that encrypts secrets at rest."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from clawbus_core.logs import register_secrets

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


# --- the data key: encrypts secrets at rest (channel credentials) ------------------------------

KEY_FILE = "secret.key"
_KEY_WAIT_S = 5.0


def load_or_create_key(data_dir: Path) -> bytes:
    """The deployment's Fernet key from `<data_dir>/secret.key`, created once (0600).

    Every process of one deployment must use the same key: the file is created exclusively,
    so two processes starting together agree on the first one written.
    """
    import time

    from cryptography.fernet import Fernet

    path = data_dir / KEY_FILE
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        deadline = time.monotonic() + _KEY_WAIT_S
        while not (key := path.read_bytes().strip()) and time.monotonic() < deadline:
            time.sleep(0.05)  # the creator is writing it
        if not key:
            raise RuntimeError(f"{path} is empty; delete it or set CLAWBUS_SECRET_KEY") from None
        return key
    key = Fernet.generate_key()
    with os.fdopen(fd, "wb") as f:
        f.write(key + b"\n")
    return key


class SecretBox:
    """Encrypts and decrypts small secrets (JSON credentials) with the deployment's key."""

    def __init__(self, key: bytes) -> None:
        from cryptography.fernet import Fernet

        try:
            self._fernet = Fernet(key)
        except ValueError as exc:
            raise ValueError(
                "CLAWBUS_SECRET_KEY must be a Fernet key (32 url-safe base64-encoded bytes; "
                "`python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'`)"
            ) from exc

    def seal(self, plaintext: bytes) -> bytes:
        return self._fernet.encrypt(plaintext)

    def open(self, token: bytes) -> bytes:
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.decrypt(token)
        except InvalidToken:
            raise ValueError(
                "stored secret cannot be decrypted with this deployment's key "
                "(CLAWBUS_SECRET_KEY or secret.key changed?)"
            ) from None


def secret_box(secret_key: str | None, data_dir: Path) -> SecretBox:
    """The deployment's SecretBox: the configured key, else the generated one."""
    key = secret_key.encode() if secret_key else load_or_create_key(data_dir)
    register_secrets(key.decode())  # never in a log line, generated or configured
    return SecretBox(key)
