"""Schemathesis hooks of test_openapi_schemathesis: generated requests stay away from changes
that would alter the rest of the run."""

from __future__ import annotations

from typing import Any

import schemathesis


def _patches_the_gateway(context: schemathesis.HookContext, body: dict[str, Any]) -> bool:
    """A PATCH /api/config of `gateway` could turn the rate limits back on for the rest of
    the run (the test turns them off to reach every operation)."""
    operation = context.operation
    return (
        operation is not None
        and (operation.method.upper(), operation.path) == ("PATCH", "/api/config")
        and "gateway" in body
    )


@schemathesis.hook
def filter_body(context: schemathesis.HookContext, body: Any) -> bool:
    if not isinstance(body, dict):
        return True
    return not _patches_the_gateway(context, body)
