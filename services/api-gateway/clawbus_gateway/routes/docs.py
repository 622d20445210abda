"""The API's documentation, public: GET /docs/openapi.json (the OpenAPI 3.1 document, see
clawbus_gateway.openapi) and GET /docs (Swagger UI).

Swagger UI's files come from the swagger_ui_bundle package, served under /docs/static/, so
the page works with no internet access; it fetches nothing from elsewhere (`validatorUrl`
is off, which would otherwise load a badge from swagger.io).
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

from clawbus_gateway.openapi import DOCUMENT_PATH, document_json

routes = web.RouteTableDef()

STATIC_PREFIX = "/docs/static"

# Relative URLs, so the page also works behind a proxy that mounts the gateway under a prefix.
_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>clawbus gateway API</title>
  <link rel="stylesheet" href="docs/static/swagger-ui.css">
  <link rel="icon" type="image/png" href="docs/static/favicon-32x32.png" sizes="32x32">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="docs/static/swagger-ui-bundle.js"></script>
  <script src="docs/static/swagger-ui-standalone-preset.js"></script>
  <script>
    window.ui = SwaggerUIBundle({
      url: "docs/openapi.json",
      dom_id: "#swagger-ui",
      deepLinking: true,
      validatorUrl: null,
      presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
      layout: "StandaloneLayout",
    });
  </script>
</body>
</html>
"""


@routes.get(DOCUMENT_PATH)
async def openapi_document(request: web.Request) -> web.Response:
    return web.Response(body=document_json(), content_type="application/json")


@routes.get("/docs")
async def swagger_ui(request: web.Request) -> web.Response:
    return web.Response(text=_PAGE, content_type="text/html")


routes.static(STATIC_PREFIX, Path(str(swagger_ui_path)))
