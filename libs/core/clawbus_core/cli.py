"""The `clawbus` command: `up`, `migrate`, `gateway`, `agent-runner`, `channel-bridge`,
`browser-worker`, `status`, `apikey`."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import signal
import sys
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from clawbus_core.supervisor import ProcessSpec

SERVICES = ("gateway", "agent-runner", "channel-bridge", "browser-worker", "scheduler")


def _parse_replicas(values: Sequence[str]) -> dict[str, int]:
    replicas = dict.fromkeys(SERVICES, 1)
    for value in values:
        name, sep, count = value.partition("=")
        if not sep or name not in replicas or not count.isdigit() or int(count) < 1:
            raise SystemExit(
                f"--replicas {value!r}: expected SERVICE=N with SERVICE one of "
                f"{', '.join(SERVICES)} and N >= 1"
            )
        replicas[name] = int(count)
    return replicas


def _say(message: str) -> None:
    print(f"clawbus: {message}", flush=True)


def cmd_migrate(_: argparse.Namespace) -> int:
    from clawbus_protocol.settings import ClawbusSettings

    from clawbus_core.config import resolve_endpoints
    from clawbus_core.db import migrate

    endpoints = resolve_endpoints(ClawbusSettings())
    migrate(endpoints.database_url)
    _say("database is at the latest migration")
    return 0


def cmd_gateway(_: argparse.Namespace) -> int:
    from clawbus_gateway.main import main

    main()
    return 0


def cmd_agent_runner(_: argparse.Namespace) -> int:
    from clawbus_runner.main import main

    main()
    return 0


def cmd_channel_bridge(_: argparse.Namespace) -> int:
    from clawbus_bridge.main import main

    main()
    return 0


def cmd_scheduler(_: argparse.Namespace) -> int:
    from clawbus_scheduler.main import main

    main()
    return 0


def cmd_browser_worker(_: argparse.Namespace) -> int:
    if importlib.util.find_spec("playwright") is None:
        raise SystemExit(
            "clawbus: the browser-worker drives Chromium with Playwright, which is not "
            "installed: pip install 'clawbus[browser]'"
        )
    from clawbus_browser.main import main

    main()
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from clawbus_core.status import report

    return asyncio.run(report(timeout_s=args.timeout))


def cmd_apikey(args: argparse.Namespace) -> int:
    from clawbus_protocol.errors import ClawbusError

    try:
        return asyncio.run(_apikey(args))
    except ClawbusError as exc:
        raise SystemExit(f"clawbus: {exc}") from None


async def _apikey(args: argparse.Namespace) -> int:
    from clawbus_gateway.principal import ALL_PERMISSIONS
    from clawbus_protocol.settings import ClawbusSettings

    from clawbus_core.config import resolve_endpoints
    from clawbus_core.db import create_pool
    from clawbus_core.store import api_keys

    endpoints = resolve_endpoints(ClawbusSettings())
    pool = await create_pool(endpoints.database_url, min_size=1, max_size=1)
    try:
        tenant = await api_keys.resolve_tenant(pool, args.tenant) if args.tenant else None
        if args.action == "create":
            key, plaintext = await api_keys.create_key(
                pool,
                tenant or await api_keys.resolve_tenant(pool, "default"),
                args.name,
                args.scopes.split(","),
                known_scopes=ALL_PERMISSIONS,
            )
            _say(f"created API key {key.id} {key.name!r} (scopes: {','.join(key.scopes)})")
            _say("the key is shown only now; store it:")
            print(plaintext, flush=True)
        elif args.action == "list":
            for key in await api_keys.list_keys(pool, tenant):
                state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
                used = f"{key.last_used_at:%Y-%m-%d %H:%M}" if key.last_used_at else "never"
                print(
                    f"{key.id}  {key.masked}  {key.name!r}  tenant={key.tenant_id}  "
                    f"scopes={','.join(key.scopes) or '-'}  last_used={used}  {state}",
                    flush=True,
                )
        else:
            key = await api_keys.revoke_key(pool, args.id, tenant_id=tenant)
            _say(f"revoked API key {key.id} {key.name!r}")
    finally:
        await pool.close()
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from clawbus_gateway.settings import GatewaySettings

    from clawbus_core.db import migrate
    from clawbus_core.infra import EmbeddedInfra
    from clawbus_core.secrets import load_or_create_key
    from clawbus_core.supervisor import ProcessSpec

    replicas = _parse_replicas(args.replicas)
    settings = GatewaySettings()
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    infra: EmbeddedInfra | None = None
    env = dict(os.environ, CLAWBUS_DATA_DIR=str(data_dir))
    env.setdefault("CLAWBUS_LOG_FORMAT", "text")  # the children print to this terminal
    if not (settings.nats_url and settings.database_url and settings.redis_url):
        _say(f"starting embedded NATS, Postgres and Redis under {data_dir}")
        infra = EmbeddedInfra(data_dir, progress=_say)
        try:
            urls = infra.start()
        except RuntimeError as exc:
            raise SystemExit(f"clawbus: {exc}") from None
        env.setdefault("CLAWBUS_NATS_URL", settings.nats_url or urls.nats_url)
        env.setdefault("CLAWBUS_DATABASE_URL", settings.database_url or urls.database_url)
        env.setdefault("CLAWBUS_REDIS_URL", settings.redis_url or urls.redis_url)
    try:
        _say("applying database migrations")
        migrate(env["CLAWBUS_DATABASE_URL"])
        env["CLAWBUS_GATEWAY_TOKEN"] = settings.token()
        if settings.secret_key is None:
            load_or_create_key(data_dir)  # before the services start: they must share it
        cli = [sys.executable, "-m", "clawbus_core.cli"]
        specs = [ProcessSpec(name="gateway", argv=[*cli, "gateway"], env=env)]
        specs += [
            ProcessSpec(name=f"agent-runner-{i}", argv=[*cli, "agent-runner"], env=env)
            for i in range(1, replicas["agent-runner"] + 1)
        ]
        specs += [
            ProcessSpec(name=f"channel-bridge-{i}", argv=[*cli, "channel-bridge"], env=env)
            for i in range(1, replicas["channel-bridge"] + 1)
        ]
        specs += [
            ProcessSpec(name=f"scheduler-{i}", argv=[*cli, "scheduler"], env=env)
            for i in range(1, replicas["scheduler"] + 1)
        ]
        specs += _browser_workers(replicas["browser-worker"], cli, env)
        asyncio.run(_supervise(specs, settings.public_url, env["CLAWBUS_GATEWAY_TOKEN"]))
    finally:
        if infra is not None:
            _say("stopping embedded servers")
            infra.stop()
    _say("stopped")
    return 0


def _browser_workers(count: int, cli: list[str], env: dict[str, str]) -> list[ProcessSpec]:
    """The browser-workers, if Chromium is installed where they look for it."""
    from clawbus_browser.settings import BrowserSettings

    from clawbus_core.supervisor import ProcessSpec

    if importlib.util.find_spec("playwright") is None:
        _say("Playwright is not installed (clawbus[browser]): not starting the browser-worker")
        return []
    chromium = BrowserSettings().browser_chromium_path
    if not chromium.exists():
        _say(f"no Chromium at {chromium}: not starting the browser-worker (browser tools off)")
        return []
    return [
        ProcessSpec(name=f"browser-worker-{i}", argv=[*cli, "browser-worker"], env=env)
        for i in range(1, count + 1)
    ]


async def _supervise(specs: list[ProcessSpec], url: str, token: str) -> None:
    from clawbus_core.supervisor import Supervisor

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    supervisor = Supervisor(specs, log=_say)
    run = asyncio.create_task(supervisor.run(stop))
    if await _wait_healthy(url, stop, run):
        _say(f"up: {url}  (OpenAI base URL: {url}/v1)")
        _say(f"gateway token: {token}")
        _say("press Ctrl-C to stop")
    await run


async def _wait_healthy(url: str, stop: asyncio.Event, run: asyncio.Task[None]) -> bool:
    import aiohttp

    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline and not stop.is_set() and not run.done():
            try:
                async with http.get(f"{url}/health", timeout=aiohttp.ClientTimeout(total=2)) as r:
                    if r.status == 200:
                        return True
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.2)
    if not stop.is_set() and not run.done():
        _say(f"the gateway did not become healthy at {url} within 60s; see the log above")
    return False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clawbus", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="run the whole system (embedded servers unless URLs are set)")
    up.add_argument(
        "--replicas",
        action="append",
        default=[],
        metavar="SERVICE=N",
        help="replicas of a service, e.g. agent-runner=4 (repeatable)",
    )
    up.set_defaults(func=cmd_up)
    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=cmd_migrate)
    sub.add_parser("gateway", help="run one api-gateway").set_defaults(func=cmd_gateway)
    sub.add_parser("agent-runner", help="run one agent runner").set_defaults(func=cmd_agent_runner)
    sub.add_parser(
        "channel-bridge", help="run one channel-bridge (Telegram, Discord, webhooks)"
    ).set_defaults(func=cmd_channel_bridge)
    sub.add_parser(
        "scheduler", help="run one scheduler (cron jobs and heartbeats; one replica leads)"
    ).set_defaults(func=cmd_scheduler)
    sub.add_parser(
        "browser-worker", help="run one browser-worker (headless Chromium for agents)"
    ).set_defaults(func=cmd_browser_worker)
    status = sub.add_parser("status", help="check the gateway, bus, database and cache")
    status.add_argument("--timeout", type=float, default=5.0)
    status.set_defaults(func=cmd_status)
    apikey = sub.add_parser("apikey", help="create, list and revoke API keys (goclaw_...)")
    actions = apikey.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a key and print it (once)")
    create.add_argument("--name", required=True)
    create.add_argument(
        "--scopes", required=True, help="comma-separated permissions, e.g. chat,sessions"
    )
    create.add_argument("--tenant", help="tenant id or slug (default: the default tenant)")
    listing = actions.add_parser("list", help="list keys, masked")
    listing.add_argument("--tenant", help="only this tenant's keys (id or slug)")
    revoke = actions.add_parser("revoke", help="revoke a key; its next request fails")
    revoke.add_argument("id", type=uuid.UUID, metavar="ID")
    revoke.add_argument("--tenant", help="refuse unless the key is this tenant's (id or slug)")
    apikey.set_defaults(func=cmd_apikey)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    sys.exit(args.func(args))


if __name__ == "__main__":
    main()
