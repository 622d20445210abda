"""The running gateway against its own OpenAPI document: schemathesis loads
/docs/openapi.json over HTTP, sends the documented examples, boundary cases (coverage) and a
bounded number of generated requests, valid and invalid, to every operation, and checks that
no answer is a 5xx and that every answer is documented: status, content type and body
(server-sent events included, event by event).

The run is schemathesis's own CLI in a subprocess, so the gateway keeps serving in this
test's event loop; its NDJSON report is read back here for the assertions. It runs as an
admin API key of a tenant made for the test (with a `main` agent), so the sessions, runs and
configuration it creates or deletes are its own and go with the tenant.

Bounds: at most `MAX_EXAMPLES` generated requests per operation and phase, `RUN_EXAMPLES`
for the operations that start runs (every one is a real run of the offline echo model).
schemathesis_hooks.py keeps generated requests away from known bugs (each with its
reproducer below) and from PATCHing the rate limits back on mid-run.

GET /docs/openapi.json itself is not called by schemathesis (it leaves out the operation
serving the document it loaded); the test compares the served document with the table's.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from clawbus_core.config import Endpoints
from clawbus_core.store import agents, api_keys
from clawbus_fakes.models import FakeModelServer
from clawbus_gateway.openapi import build
from clawbus_gateway.principal import ALL_PERMISSIONS

from tests.system import System, start_system

HOOKS = Path(__file__).with_name("schemathesis_hooks.py")
SCHEMA_DOCUMENT = "GET /docs/openapi.json"
MAX_EXAMPLES = 10
RUN_EXAMPLES = 5
# Wall-clock bound on the schemathesis process (it needs ~20 s on this machine).
PROCESS_TIMEOUT_S = 150
# A fixed seed keeps the suite reproducible; CLAWBUS_SCHEMATHESIS_SEED=random (or another
# number) explores other inputs.
SEED = os.environ.get("CLAWBUS_SCHEMATHESIS_SEED", "20261122")
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "unsupported_method",  # 405 with an Allow header for a method a path does not take
)
NO_LIMITS = {
    "CLAWBUS_GATEWAY_RATE_LIMITS": json.dumps(
        dict.fromkeys(("default", "chat", "tools", "sessions", "config"), 0)
    ),
    "CLAWBUS_GATEWAY_MAX_CONNECTIONS_PER_CLIENT": "1000",
    "CLAWBUS_GATEWAY_AUTH_FAILURES_PER_MINUTE": "100000",
}
# Channel operations that leave the channel in place: sent to the test's channel, so their
# answers (and their refusals of bad bodies) are the channel's, not 404s for unknown ids.
ON_THE_CHANNEL = [
    "enableChannel",
    "disableChannel",
    "getChannelStatus",
    "listPairings",
    "approvePairing",
]
# Answered by the browser-worker, which this system does not run (503 by design).
BROWSER_OPERATIONS = ("getBrowserStatus", "takeScreenshot", "navigateBrowser")
# Operations that answer no 2xx here, although they document one, and why.
NO_SUCCESS_EXPECTED = {
    "openControlChannel": "a WebSocket upgrade; schemathesis speaks plain HTTP (see test_ws)",
    "openWebSocket": "a WebSocket upgrade; schemathesis speaks plain HTTP (see test_ws)",
    "tailLogs": "a WebSocket upgrade; schemathesis speaks plain HTTP (see test_logs_api)",
    "abortRun": "needs the id of a live run; generated ids name none",
    "invokeTool": "generated tool names and params rarely name a tool that runs",
    "deleteSession": "a session deletes once: whichever DELETE comes first gets the 204",
    "deleteSessionV1": "a session deletes once: whichever DELETE comes first gets the 204",
    "deleteApiSession": "a session deletes once: whichever DELETE comes first gets the 204",
    "deleteChannelInstance": "generated ids name no channel, the example's may be deleted",
    "listCronJobs": "generated ?id= values name no job (the plain list: test_scheduler)",
    "runCronJob": "generated ids name no job; the example's exists only if created first",
    "receiveWebhook": "no channel-bridge runs here: 503, as documented (test_channel_webhook)",
    "approvePairing": "needs the code a sender was just given; no sender writes here",
    "getMedia": "generated ids name no media of the tenant (test_browser_surfaces serves one)",
    **dict.fromkeys(
        BROWSER_OPERATIONS, "no browser-worker runs here: 503 as documented (test_browser_surfaces)"
    ),
}


@dataclass
class Tenant:
    id: uuid.UUID
    key: str  # an admin API key of the tenant


@pytest.fixture
async def tenant(endpoints: Endpoints) -> AsyncIterator[Tenant]:
    async with asyncpg.create_pool(endpoints.database_url, min_size=1, max_size=2) as pool:
        tenant_id = uuid.uuid4()
        await pool.execute(
            "INSERT INTO tenants (id, slug, name) VALUES ($1, $2, 'OpenAPI')",
            tenant_id,
            f"openapi-{tenant_id.hex}",
        )
        try:
            await agents.create_agent(pool, tenant_id, "main", "Main")
            _, key = await api_keys.create_key(
                pool, tenant_id, "schemathesis", ["admin"], known_scopes=ALL_PERMISSIONS
            )
            yield Tenant(tenant_id, key)
        finally:
            await pool.execute("DELETE FROM tenants WHERE id = $1", tenant_id)


@pytest.fixture
async def running(
    endpoints: Endpoints, namespace: str, fake_models: FakeModelServer, tmp_path: Path
) -> AsyncIterator[System]:
    async with start_system(
        endpoints, namespace, fake_models, tmp_path, overrides=NO_LIMITS
    ) as system:
        yield system


def operation_ids(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, op in item.items():
            yield f"{method.upper()} {path}", op["operationId"], op


def succeeds(op: dict[str, Any]) -> bool:
    return any(status.startswith(("1", "2")) for status in op["responses"])


# Routes about the whole deployment: only the operator's credentials (the default tenant's)
# may use them, so they are called with the gateway token, the rest with the tenant's key.
OPERATOR_ONLY = ["getConfig", "patchConfig", "getRecentLogs"]


def config_toml(document: dict[str, Any], *, tenant_key: str, operator_token: str) -> str:
    """Checks for every operation; no server-error check for the routes whose service is not
    deployed (they answer 503 by design); fewer examples for the routes that start runs; the
    test's channel for the channel operations that keep it; the operator's token for the
    deployment-wide routes, the tenant's key for every other."""
    ops = list(operation_ids(document))
    # Answered by a service this system does not run (503 by design): no server-error check.
    not_deployed = [op_id for _, op_id, op in ops if not succeeds(op)]
    not_deployed += ["receiveWebhook", *BROWSER_OPERATIONS]
    runs = [op_id for _, op_id, op in ops if op["x-clawbus-permission"] == "chat"]
    return "\n".join(
        [
            f"hooks = {json.dumps(str(HOOKS))}",
            f"headers = {{ Authorization = {json.dumps(f'Bearer {tenant_key}')} }}",
            "[generation]",
            f"max-examples = {MAX_EXAMPLES}",
            "[checks]",
            "enabled = false",
            *(f"{check}.enabled = true" for check in CHECKS),
            "[[operations]]",
            f"include-operation-id = {json.dumps(not_deployed)}",
            "checks.not_a_server_error.enabled = false",
            "[[operations]]",
            f"include-operation-id = {json.dumps(runs)}",
            f"generation.max-examples = {RUN_EXAMPLES}",
            "[[operations]]",
            f"include-operation-id = {json.dumps(ON_THE_CHANNEL)}",
            'parameters = { "path.id" = "telegram" }',
            "[[operations]]",
            f"include-operation-id = {json.dumps(OPERATOR_ONLY)}",
            f"headers = {{ Authorization = {json.dumps(f'Bearer {operator_token}')} }}",
        ]
    )


@dataclass
class Report:
    """What the NDJSON report says, per operation label ("GET /v1/models")."""

    statuses: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    failures: list[str] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> Report:
        report = cls()
        for line in path.read_text().splitlines():
            event = json.loads(line)
            finished = event.get("ScenarioFinished")
            if finished is None:
                continue
            recorder = finished["recorder"]
            label = recorder["label"]
            for case_id, interaction in recorder.get("interactions", {}).items():
                request, response = interaction["request"], interaction.get("response")
                if response is not None and request["method"] == label.split()[0]:
                    report.statuses[label][response["status_code"]] += 1
                for check in recorder["checks"].get(case_id, []):
                    if check["status"] == "failure":
                        report.failures.append(_describe(label, check, interaction))
        return report


def _describe(label: str, check: dict[str, Any], interaction: dict[str, Any]) -> str:
    response = interaction.get("response") or {}
    body = base64.b64decode(response.get("content", {}).get("$base64", "")).decode(errors="replace")
    request = interaction["request"]
    return (
        f"{label}: {check['name']} failed: {request['method']} {request['uri']} -> "
        f"{response.get('status_code')} {body[:300]}"
    )


async def test_every_answer_is_the_documented_one(
    running: System, tenant: Tenant, tmp_path: Path
) -> None:
    headers = {"Authorization": f"Bearer {tenant.key}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        served = await (await http.get(f"{running.url}/docs/openapi.json")).json()
        assert served == build()  # the served document is the table's
        # A session to list, so the list answers are checked with entries in them.
        async with http.post(
            f"{running.url}/v1/agent/run",
            json={"message": "hello", "sessionKey": "agent:main:openapi"},
        ) as r:
            assert r.status == 200, await r.text()
        # The channel the path examples name (`telegram`), disabled: no bridge runs here.
        async with http.post(
            f"{running.url}/v1/channel-instances",
            json={"name": "telegram", "channel_type": "telegram", "enabled": False},
        ) as r:
            assert r.status == 201, await r.text()

    config = tmp_path / "schemathesis.toml"
    config.write_text(config_toml(served, tenant_key=tenant.key, operator_token=running.token))
    report_path = tmp_path / "report.ndjson"
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run"),
        f"{running.url}/docs/openapi.json",
        *("--phases", "examples,coverage,fuzzing"),
        *(("--seed", SEED) if SEED != "random" else ()),
        *("--request-timeout", "30", "--no-color"),
        *("--report", "ndjson", "--report-ndjson-path", str(report_path)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=tmp_path,  # where it keeps its crash files
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), PROCESS_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    printed = output.decode(errors="replace")

    report = Report.read(report_path)
    assert report.failures == [], "\n".join(report.failures[:20]) + "\n" + printed[-4000:]
    assert process.returncode == 0, printed[-6000:]

    ops = list(operation_ids(served))
    untested = {label for label, _, _ in ops} - report.statuses.keys()
    assert untested == {SCHEMA_DOCUMENT}, printed[-3000:]
    for label, op_id, op in ops:
        if label == SCHEMA_DOCUMENT:
            continue
        seen = report.statuses[label]
        if "requestBody" in op:  # invalid bodies were sent and refused, as documented
            assert seen[400] > 0, (label, dict(seen))
        if succeeds(op) and op_id not in NO_SUCCESS_EXPECTED:
            assert any(200 <= s < 300 for s in seen), (label, dict(seen))


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/agent/run", {"message": "hi", "sessionKey": "a\nb"}),
        ("/v1/agent/run/stream", {"message": "hi", "sessionKey": "a\nb"}),
        ("/api/v1/chat", {"message": "hi", "sessionKey": "a\nb"}),
        ("/v1/responses", {"model": "clawbus/echo", "input": "hi", "user": "a\nb"}),
        (
            "/v1/chat/completions",
            {
                "model": "clawbus/echo",
                "messages": [{"role": "user", "content": "hi"}],
                "user": "a\nb",
            },
        ),
    ],
)
async def test_a_session_key_with_a_control_character_is_refused(
    running: System, path: str, body: dict[str, Any]
) -> None:
    headers = {"Authorization": f"Bearer {running.token}"}
    async with (
        aiohttp.ClientSession(headers=headers) as http,
        http.post(f"{running.url}{path}", json=body) as r,
    ):
        # Refused before anything is stored: HTTP cannot echo such a key in a header.
        assert r.status == 400, await r.text()
        assert "control characters" in await r.text()
