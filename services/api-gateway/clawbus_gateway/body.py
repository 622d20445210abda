"""Reading request bodies into protocol models, with clear 4xx errors."""

from __future__ import annotations

from typing import TypeVar

from aiohttp import web
from clawbus_protocol.errors import InvalidRequest
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


def _describe(exc: ValidationError) -> tuple[str, str | None, list[dict[str, str]]]:
    errors = exc.errors(include_url=False, include_input=False)
    problems = [
        {"field": ".".join(str(p) for p in e["loc"]) or "(body)", "problem": e["msg"]}
        for e in errors
    ]
    first = problems[0]
    param = first["field"] if first["field"] != "(body)" else None
    return f"invalid request body: {first['field']}: {first['problem']}", param, problems


async def read_model(request: web.Request, model: type[M]) -> M:
    raw = await request.read()  # aiohttp enforces client_max_size (413)
    if not raw.strip():
        raise InvalidRequest("request body is empty; send a JSON object")
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise InvalidRequest("request body is not valid JSON") from None
        message, param, problems = _describe(exc)
        raise InvalidRequest(message, param=param, errors=problems) from None
