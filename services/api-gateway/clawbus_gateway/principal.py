"""Who is calling: the principal the auth middleware attaches to every request.

Routes never look at credentials; they read `principal(request)` for the tenant to scope
queries to, and call `require(request, permission)` for what the route needs. The gateway
token is the operator: every permission, on the default tenant. Routes about the whole
deployment rather than one tenant's data (its configuration, its logs) call
`require_operator`: the permission, held by a credential of the default tenant.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal
from uuid import UUID

from aiohttp import web
from clawbus_core.store.runs import DEFAULT_TENANT
from clawbus_protocol.errors import Forbidden, Unauthorized

# Permissions as 002 names them ("chat", "sessions", ...), plus the ones the other documents'
# routes need. `admin` implies all of them.
Permission = Literal["chat", "sessions", "channels", "tools", "cron", "config", "browser", "admin"]
ALL_PERMISSIONS: frozenset[Permission] = frozenset(
    ("chat", "sessions", "channels", "tools", "cron", "config", "browser", "admin")
)

CredentialKind = Literal["gateway_token", "password", "api_token", "api_key", "public"]


@dataclass(frozen=True)
class Principal:
    kind: CredentialKind
    tenant_id: UUID = DEFAULT_TENANT
    permissions: frozenset[Permission] = field(default_factory=lambda: ALL_PERMISSIONS)
    # The API key's or token's id/name, for logs and audit; never the secret.
    name: str = ""

    def allows(self, permission: Permission) -> bool:
        return "admin" in self.permissions or permission in self.permissions


OPERATOR = Principal(kind="gateway_token", name="gateway-token")

PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal", Principal)


def principal(request: web.Request) -> Principal:
    if PRINCIPAL not in request:
        raise Unauthorized("this route needs credentials")
    return request[PRINCIPAL]


def require(request: web.Request, permission: Permission) -> Principal:
    """The caller, if it holds `permission`; 403 naming the permission otherwise."""
    who = principal(request)
    if not who.allows(permission):
        raise Forbidden(
            f"this credential lacks the {permission!r} permission", permission=permission
        )
    return who


def require_operator(request: web.Request, permission: Permission) -> Principal:
    """`require`, for a route about the whole deployment (every tenant's): only credentials
    of the deployment's own (default) tenant may use it; another tenant's key gets 403,
    whatever its scopes."""
    who = require(request, permission)
    if who.tenant_id != DEFAULT_TENANT:
        raise Forbidden(
            "this route concerns the whole deployment (every tenant): only the operator's "
            "credentials (the default tenant's) may use it",
            permission=permission,
        )
    return who
