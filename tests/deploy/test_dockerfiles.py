"""The Dockerfiles: hadolint finds nothing in any of them, and deploy/docker/Dockerfile has a
target per service whose command is that service's `clawbus` subcommand. (No image is built
here: the machine has no Docker engine.)"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from clawbus_core.cli import SERVICES, build_parser

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"
SKIPPED_DIRS = frozenset({".git", ".venv", "node_modules", ".clawbus"})


def dockerfiles() -> list[Path]:
    return sorted(
        path
        for path in ROOT.rglob("Dockerfile*")
        if not SKIPPED_DIRS & set(path.relative_to(ROOT).parts) and path.is_file()
    )


def stages(text: str) -> dict[str, list[str]]:
    """Each stage's name -> its instructions (continuation lines joined, comments dropped)."""
    found: dict[str, list[str]] = {}
    current: list[str] = []
    for raw in re.sub(r"\\\n", " ", text).splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"FROM\s+\S+(?:\s+AS\s+(\S+))?$", line, flags=re.IGNORECASE)
        if match:
            current = found.setdefault(match.group(1) or f"stage{len(found)}", [])
        current.append(line)
    return found


def test_dockerfiles_found() -> None:
    assert DOCKERFILE in dockerfiles()


@pytest.mark.parametrize("path", dockerfiles(), ids=lambda p: str(p.relative_to(ROOT)))
def test_hadolint_finds_nothing(path: Path) -> None:
    # The default failure threshold: info and style findings fail too.
    result = subprocess.run(
        [str(HADOLINT), "--no-color", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_target_per_service_running_its_command() -> None:
    found = stages(DOCKERFILE.read_text())
    parser = build_parser()
    for name in (*SERVICES, "migrate"):
        assert found[name][0].split()[1] == "runtime", name  # built on the shared runtime
        (cmd,) = [line for line in found[name] if line.startswith("CMD ")]
        command = json.loads(cmd.removeprefix("CMD "))
        assert command == ["clawbus", name]
        assert parser.parse_args(command[1:]).command == name


def test_runtime_is_unprivileged_and_checks_liveness() -> None:
    runtime = stages(DOCKERFILE.read_text())["runtime"]
    (user,) = [line for line in runtime if line.startswith("USER ")]
    uid = user.split()[1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    (healthcheck,) = [line for line in runtime if line.startswith("HEALTHCHECK ")]
    assert "/livez" in healthcheck and "CLAWBUS_OPS_PORT" in healthcheck
    assert "CLAWBUS_OPS_PORT=9100" in " ".join(runtime)
    # A stage that becomes root to install packages gives the user back.
    for name, instructions in stages(DOCKERFILE.read_text()).items():
        users = [line.split()[1] for line in instructions if line.startswith("USER ")]
        if users:
            assert users[-1] != "0" and users[-1] != "root", name
