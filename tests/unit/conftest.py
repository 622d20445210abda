"""Unit tests see no operator configuration from the environment."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith(("CLAWBUS_", "OPENAI_", "ANTHROPIC_")):
            monkeypatch.delenv(key)
