"""Gateway overhead benchmark: the same fake model called directly and through clawbus.

    python -m bench.run [--requests 300] [--concurrent-requests 2000]

Starts embedded NATS/Postgres/Redis (or uses CLAWBUS_*_URL), the fake model server, one
api-gateway and one agent-runner as separate processes, then measures, for each of
"direct" (client -> fake model) and "clawbus" (client -> gateway -> NATS -> runner -> fake
model -> Redis -> gateway -> client):

* non-streaming latency (request to full response),
* streaming time to first content token,

at concurrency 1 and 64, plus throughput at 64. Prints p50/p99, the added latency
(clawbus minus direct) and the ratio, and writes bench/results/latest.json. Both paths are
measured in the same run, so the ratios hold on a noisy machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
from clawbus_core.config import Endpoints
from clawbus_core.db import migrate

RESULTS = Path(__file__).parent / "results"
PROMPT = [{"role": "user", "content": "benchmark prompt with a handful of words in it"}]
PLAIN_AGENT = "bench-plain"


async def _plain_agent(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            """INSERT INTO agents (id, tenant_id, key, name, system_prompt, tool_policy)
               VALUES (gen_random_uuid(), '00000000-0000-0000-0000-000000000001', $1, $1, '',
                       '{"only": []}')
               ON CONFLICT (tenant_id, key) DO NOTHING""",
            PLAIN_AGENT,
        )
    finally:
        await conn.close()


@dataclass
class Target:
    name: str
    url: str
    token: str
    model: str
    headers: dict[str, str] = field(default_factory=dict)


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


async def _one(http: aiohttp.ClientSession, target: Target, *, stream: bool) -> float:
    body = {"model": target.model, "messages": PROMPT, "stream": stream}
    headers = {"Authorization": f"Bearer {target.token}", **target.headers}
    started = time.perf_counter()
    async with http.post(f"{target.url}/v1/chat/completions", json=body, headers=headers) as r:
        if r.status != 200:
            raise RuntimeError(f"{target.name}: HTTP {r.status}: {await r.text()}")
        if not stream:
            await r.read()
            return time.perf_counter() - started
        first: float | None = None
        async for line in r.content:
            if first is None and line.startswith(b"data: {"):
                chunk = json.loads(line[6:])
                if chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                    first = time.perf_counter() - started
        if first is None:
            raise RuntimeError(f"{target.name}: stream had no content")
        return first


async def _measure(
    target: Target, *, stream: bool, concurrency: int, requests: int
) -> tuple[list[float], float]:
    connector = aiohttp.TCPConnector(limit=concurrency * 2)
    async with aiohttp.ClientSession(connector=connector) as http:
        for _ in range(min(50, requests)):  # warm-up: connections, statement caches, JIT-less paths
            await _one(http, target, stream=stream)
        samples: list[float] = []
        queue = iter(range(requests))

        async def worker() -> None:
            for _ in queue:
                sample = await _one(http, target, stream=stream)
                samples.append(sample)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return samples, requests / elapsed


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        args, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


async def _wait_http(url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            try:
                async with http.get(url) as r:
                    if r.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout_s}s")


def _endpoints(stack: ExitStack, workdir: Path) -> Endpoints:
    urls = [os.environ.get(f"CLAWBUS_{n}_URL") for n in ("NATS", "DATABASE", "REDIS")]
    if all(urls):
        return Endpoints(*urls)  # type: ignore[arg-type]
    from clawbus_core.infra import EmbeddedInfra

    infra = EmbeddedInfra(workdir / "infra", fast=True)
    found = infra.start()
    stack.callback(infra.stop)
    return Endpoints(found.nats_url, found.database_url, found.redis_url)


async def _run(
    args: argparse.Namespace, endpoints: Endpoints, workdir: Path, stack: ExitStack
) -> dict[str, object]:
    fake = _spawn(
        [sys.executable, "-m", "clawbus_fakes.models", "--port", "0"],
        dict(os.environ),
        workdir / "fake.log",
    )
    stack.callback(_stop, fake)
    deadline = time.monotonic() + 30
    fake_url = ""
    while not fake_url and time.monotonic() < deadline:
        text = (workdir / "fake.log").read_text()
        fake_url = next(
            (ln.split("=", 1)[1] for ln in text.splitlines() if ln.startswith("FAKE_MODEL_URL=")),
            "",
        )
        await asyncio.sleep(0.05)
    if not fake_url:
        raise RuntimeError("the fake model server did not start")
    token = secrets.token_urlsafe(24)
    port = args.port
    env = dict(os.environ) | {
        "CLAWBUS_NATS_URL": endpoints.nats_url,
        "CLAWBUS_DATABASE_URL": endpoints.database_url,
        "CLAWBUS_REDIS_URL": endpoints.redis_url,
        "CLAWBUS_NAMESPACE": f"bench{secrets.token_hex(3)}",
        "CLAWBUS_DATA_DIR": str(workdir),
        "CLAWBUS_GATEWAY_TOKEN": token,
        "CLAWBUS_GATEWAY_PORT": str(port),
        "CLAWBUS_OPENAI_API_KEY": "sk-bench",
        "CLAWBUS_OPENAI_BASE_URL": f"{fake_url}/v1",
        "CLAWBUS_LOG_LEVEL": "WARNING",
        # The benchmark is one client sending thousands of requests: no per-client limits.
        "CLAWBUS_GATEWAY_RATE_LIMITS": '{"default": 0, "chat": 0, "sessions": 0, "tools": 0}',
        "CLAWBUS_GATEWAY_MAX_CONNECTIONS_PER_CLIENT": "4096",
    }
    cli = [sys.executable, "-m", "clawbus_core.cli"]
    for name in ("gateway", "agent-runner"):
        proc = _spawn([*cli, name], env, workdir / f"{name}.log")
        stack.callback(_stop, proc)
    await _wait_http(f"http://127.0.0.1:{port}/health")
    direct = Target("direct", fake_url, "x", "bench")
    # The plumbing's overhead is measured with an agent that adds nothing to the model call
    # (no tools, no workspace files), so both paths send the model the same request; the
    # default agent (tools + bootstrap prompt) is measured too, at concurrency 1.
    await _plain_agent(endpoints.database_url)
    gateway = Target(
        "clawbus",
        f"http://127.0.0.1:{port}",
        token,
        "openai/bench",
        headers={"x-openclaw-agent-id": PLAIN_AGENT},
    )
    main_agent = Target("clawbus-main-agent", f"http://127.0.0.1:{port}", token, "openai/bench")
    # The runner must be consuming before we measure (its first fetch after start).
    async with aiohttp.ClientSession() as http:
        await asyncio.wait_for(_one(http, gateway, stream=False), timeout=60)

    results: dict[str, object] = {}
    rows = []
    plan = [
        (1, args.requests, gateway),
        (1, args.requests, main_agent),
        (64, args.concurrent_requests, gateway),
    ]
    for concurrency, requests, via in plan:
        for stream in (False, True):
            kind = "ttft" if stream else "latency"
            measured = {}
            for target in (direct, via):
                samples, throughput = await _measure(
                    target, stream=stream, concurrency=concurrency, requests=requests
                )
                measured[target.name] = {
                    "p50_ms": statistics.median(samples) * 1000,
                    "p99_ms": _percentile(samples, 99) * 1000,
                    "throughput_rps": throughput,
                    "n": len(samples),
                }
            d, g = measured["direct"], measured[via.name]
            row = {
                "metric": kind,
                "concurrency": concurrency,
                "via": via.name,
                **{f"direct_{k}": v for k, v in d.items()},
                **{f"clawbus_{k}": v for k, v in g.items()},
                "added_p50_ms": g["p50_ms"] - d["p50_ms"],
                "added_p99_ms": g["p99_ms"] - d["p99_ms"],
                "ratio_p50": g["p50_ms"] / d["p50_ms"],
                "throughput_ratio": g["throughput_rps"] / d["throughput_rps"],
            }
            rows.append(row)
            print(
                f"{kind:<8} c={concurrency:<3} {via.name:<18} "
                f"direct p50 {d['p50_ms']:7.2f} p99 {d['p99_ms']:7.2f} | "
                f"clawbus p50 {g['p50_ms']:7.2f} p99 {g['p99_ms']:7.2f} | "
                f"added p50 {row['added_p50_ms']:6.2f} p99 {row['added_p99_ms']:6.2f} ms | "
                f"x{row['ratio_p50']:.2f} | {g['throughput_rps']:7.1f} rps "
                f"({row['throughput_ratio']:.2f} of direct)",
                flush=True,
            )
    results["rows"] = rows
    results["targets"] = {
        "added_latency_c1_p50_ms": 4,
        "added_latency_c1_p99_ms": 15,
        "ttft_overhead_c1_p50_ms": 4,
    }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=300, help="requests at concurrency 1")
    parser.add_argument(
        "--concurrent-requests", type=int, default=2000, help="requests at concurrency 64"
    )
    parser.add_argument("--port", type=int, default=18790)
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C, so every process and server the bench started is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = Path(tempfile.mkdtemp(prefix="clawbus-bench-"))
    os.chmod(workdir, 0o755)
    with ExitStack() as stack:
        endpoints = _endpoints(stack, workdir)
        migrate(endpoints.database_url)  # blocking, before the event loop starts
        results = asyncio.run(_run(args, endpoints, workdir, stack))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "latest.json"
    results["when"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
