"""The OpenAPI document: valid 3.1, in step with the app's routes both ways, and saying the
same as the code about credentials, permissions and error envelopes."""

from __future__ import annotations

import re
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from clawbus_gateway.app import create_app
from clawbus_gateway.openapi import EXCLUDED, OPERATIONS, build, document_json
from clawbus_gateway.principal import ALL_PERMISSIONS
from clawbus_gateway.routes import docs
from clawbus_gateway.settings import GatewaySettings
from openapi_spec_validator import validate

HTTP_METHODS = ("get", "put", "post", "delete", "patch")


def routes_of(app: web.Application) -> set[tuple[str, str]]:
    """(METHOD, path) of every route; the HEAD aiohttp adds beside each GET goes with it."""
    found = set()
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        found.add((route.method, path))
    return {(m, p) for m, p in found if not (m == "HEAD" and ("GET", p) in found)}


def documented(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


def undocumented(app: web.Application, document: dict[str, Any]) -> set[tuple[str, str]]:
    excluded = {(method, path) for method, path, _ in EXCLUDED}
    return routes_of(app) - documented(document) - excluded


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return build()


@pytest.fixture
def app() -> web.Application:
    return create_app(GatewaySettings(gateway_token="gateway-token-0123456789"))


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, op)
        for path, item in document["paths"].items()
        for method, op in item.items()
    ]


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1.")
    validate(document)  # raises on an invalid document


def test_every_route_of_the_app_is_documented(
    app: web.Application, document: dict[str, Any]
) -> None:
    assert undocumented(app, document) == set()


def test_every_documented_operation_is_a_route_of_the_app(
    app: web.Application, document: dict[str, Any]
) -> None:
    assert documented(document) - routes_of(app) == set()


def test_exclusions_are_routes_of_the_app_and_say_why(app: web.Application) -> None:
    for method, path, reason in EXCLUDED:
        assert (method, path) in routes_of(app), (method, path)
        assert reason.strip()


def test_a_route_added_without_documentation_is_caught(
    app: web.Application, document: dict[str, Any]
) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response()

    app.router.add_post("/v1/undocumented/{thing}", handler)
    assert undocumented(app, document) == {("POST", "/v1/undocumented/{thing}")}


def test_operation_ids_are_unique_and_tags_declared(document: dict[str, Any]) -> None:
    ids = [op["operationId"] for _, _, op in operations(document)]
    assert len(ids) == len(set(ids))
    declared = {tag["name"] for tag in document["tags"]}
    assert {t for _, _, op in operations(document) for t in op["tags"]} <= declared


def test_path_parameters_are_documented_for_every_template(document: dict[str, Any]) -> None:
    for method, path, op in operations(document):
        in_path = set(re.findall(r"{(\w+)}", path))
        params = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
        assert params == in_path, (method, path)


def test_security_and_permission_of_every_operation(document: dict[str, Any]) -> None:
    schemes = set(document["components"]["securitySchemes"])
    assert schemes == {"bearer", "basic", "password"}
    assert document["components"]["securitySchemes"]["password"]["name"] == "X-OpenClaw-Password"
    for method, path, op in operations(document):
        permission = op["x-clawbus-permission"]
        assert permission is None or permission == "public" or permission in ALL_PERMISSIONS
        if permission == "public":
            assert op["security"] == [], (method, path)
            # Only a request signed by its caller (a webhook) can be refused as unsigned.
            assert ("401" in op["responses"]) == (path == "/v1/webhooks/{channel_id}")
        else:
            assert op["security"] == [{"bearer": []}, {"basic": []}, {"password": []}]
            assert "401" in op["responses"], (method, path)
        assert ("403" in op["responses"]) == (permission not in (None, "public")) or path in (
            "/",
            "/ws",  # the WebSocket refuses a foreign Origin with 403
        ), (method, path)


def test_the_routes_read_as_the_code_says(document: dict[str, Any]) -> None:
    def permission(method: str, path: str) -> object:
        return document["paths"][path][method]["x-clawbus-permission"]

    assert permission("get", "/health") == "public"
    assert permission("get", "/docs/openapi.json") == "public"
    assert permission("get", "/v1/models") is None
    assert permission("post", "/v1/chat/completions") == "chat"
    assert permission("delete", "/api/v1/sessions/{session_key}") == "sessions"
    assert permission("get", "/api/v1/status") is None
    assert permission("patch", "/api/config") == "config"


def _envelope_ref(op: dict[str, Any], status: str) -> str:
    ref: str = op["responses"][status]["content"]["application/json"]["schema"]["$ref"]
    return ref.rsplit("/", 1)[1]


def test_errors_are_documented_in_the_envelope_of_the_path(document: dict[str, Any]) -> None:
    for method, path, op in operations(document):
        if path.startswith("/api/v1/"):
            expected = "openclaw_v1.ErrorEnvelope"
        elif path.startswith("/api/"):
            expected = "openclaw_api.ErrorEnvelope"
        else:
            expected = "errors.ErrorEnvelope"
        assert _envelope_ref(op, "5XX") == expected, (method, path)
        for status in op["responses"]:
            if status.startswith("4"):
                assert _envelope_ref(op, status) == expected, (method, path, status)


def test_every_body_taking_operation_documents_400_and_413(document: dict[str, Any]) -> None:
    for method, path, op in operations(document):
        if "requestBody" in op:
            assert {"400", "413"} <= op["responses"].keys(), (method, path)
            assert op["requestBody"]["content"]["application/json"]["examples"]["minimal"], (
                method,
                path,
            )


def test_camel_case_documents_keep_their_wire_names(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert "sessionKey" in schemas["ChatResponse"]["properties"]  # 002
    assert "sessionKey" in schemas["AgentRunRequest"]["properties"]  # 000, a request
    assert "runIds" in schemas["AbortResult"]["properties"]
    assert "_meta" in schemas["ConfigDocument"]["properties"]


def test_streams_describe_each_event(document: dict[str, Any]) -> None:
    answer = document["paths"]["/api/v1/chat/stream"]["post"]["responses"]["200"]["content"]
    events = answer["text/event-stream"]["schema"]["anyOf"]
    names = [e["properties"]["event"]["enum"] for e in events]
    assert names == [["start"], ["delta"], ["done"], ["error"]]
    error = events[3]["properties"]["data"]
    assert error["contentMediaType"] == "application/json"
    assert error["contentSchema"] == {"$ref": "#/components/schemas/openclaw_v1.ErrorEnvelope"}


def test_the_table_holds_one_entry_per_method_and_path() -> None:
    keys = [(op.method, op.path) for op in OPERATIONS]
    assert len(keys) == len(set(keys))


async def test_docs_routes_serve_the_document_and_swagger_ui_from_the_package() -> None:
    app = web.Application()
    app.add_routes(docs.routes)
    async with TestClient(TestServer(app)) as client:
        served = await client.get("/docs/openapi.json")
        assert served.status == 200
        assert served.content_type == "application/json"
        assert await served.read() == document_json()
        page = await client.get("/docs")
        assert page.status == 200
        assert page.content_type == "text/html"
        html = await page.text()
        assert "docs/openapi.json" in html
        assert "http" not in html.replace("http-equiv", "")  # nothing from elsewhere
        assets = re.findall(r'(?:src|href)="(docs/static/[^"]+)"', html)
        assert len(assets) >= 3
        for asset in assets:
            answer = await client.get(f"/{asset}")
            assert answer.status == 200, asset
            assert len(await answer.read()) > 0
