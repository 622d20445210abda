"""Asking a browser-worker: one NATS request/reply on `Names.browser_subject`.

The one client of the browser service, used by the gateway's browser routes and by the
agent-runner's browser tools. Every failure leaves as the one error model:

    no browser-worker subscribed          ServiceUnavailable  (details.service = browser-worker)
    no answer within `timeout_s`          Timeout             (details.service = browser-worker)
    an answer in a shape we do not know   ServiceUnavailable
    the worker's error reply              the ClawbusError it carries (a refused URL, an
                                          unknown ref, ...), code and details as sent
"""

from __future__ import annotations

from typing import TypeVar

from clawbus_protocol.browser import BrowserCall, BrowserOp, BrowserReply
from clawbus_protocol.errors import ClawbusError, ServiceUnavailable, Timeout
from clawbus_protocol.names import Names
from nats.aio.client import Client as NatsClient
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from pydantic import BaseModel, ValidationError

from clawbus_core import tracing

__all__ = ["BROWSER_WORKER", "DEFAULT_TIMEOUT_S", "call_browser"]

BROWSER_WORKER = "browser-worker"
# Longer than the worker's own limits on a navigation (60 s at most from our callers), so
# the worker's error, not our timeout, is what a slow page produces.
DEFAULT_TIMEOUT_S = 90.0

R = TypeVar("R", bound=BaseModel)


async def call_browser(
    nc: NatsClient, names: Names, op: BrowserOp, *, timeout_s: float, expect: type[R]
) -> R:
    """Send `op` to any browser-worker and return its result, which must be an `expect`."""
    payload = BrowserCall(call=op).model_dump_json().encode()
    try:
        msg = await nc.request(
            names.browser_subject,
            payload,
            timeout=timeout_s,
            headers=tracing.inject_headers({}) or None,  # the worker continues this trace
        )
    except NoRespondersError:
        raise ServiceUnavailable(
            f"no {BROWSER_WORKER} is running to answer browser requests; start one "
            f"(`clawbus {BROWSER_WORKER}`) and retry",
            service=BROWSER_WORKER,
        ) from None
    except (TimeoutError, NatsTimeoutError):
        raise Timeout(
            f"the {BROWSER_WORKER} did not answer {op.op!r} within {timeout_s:g}s",
            service=BROWSER_WORKER,
        ) from None
    try:
        reply = BrowserReply.model_validate_json(msg.data)
    except ValidationError:
        raise _unknown_shape(op.op) from None
    if reply.error is not None:
        raise ClawbusError.from_info(reply.error)
    if not isinstance(reply.result, expect):
        raise _unknown_shape(op.op)
    return reply.result


def _unknown_shape(op: str) -> ServiceUnavailable:
    return ServiceUnavailable(
        f"a {BROWSER_WORKER} answered {op!r} in a shape this service does not know "
        "(are both the same version?)",
        service=BROWSER_WORKER,
    )
