"""One place that maps errors to HTTP: status codes and the two body shapes.

The actuator answers ``{"message": ...}`` (Spring Boot actuator, REFERENCE.md §1); the REST API
answers Problem Details (``type``, ``title``, ``status``, ``detail``, ``instance``). Handlers
raise :class:`ZeebeSimError` subclasses and never build error responses themselves.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from gateway.client import NoLeader
from zeebe_sim.ground import errors

log = logging.getLogger(__name__)


class UnsupportedMediaType(errors.InvalidArgument):
    """The body's media type or charset is not one the endpoint reads (HTTP 415)."""


class PayloadTooLarge(errors.InvalidArgument):
    """The request is larger than a named limit (HTTP 413)."""


STATUS_BY_ERROR: dict[type[errors.ZeebeSimError], int] = {
    errors.InvalidArgument: 400,
    UnsupportedMediaType: 415,
    PayloadTooLarge: 413,
    errors.MalformedRequest: 400,
    errors.NotFound: 404,
    errors.AlreadyExists: 409,
    errors.InvalidState: 409,
    errors.ResourceExhausted: 503,
    errors.BrokerUnavailable: 502,
    errors.PartitionLeaderMismatch: 502,
    errors.RequestTimeout: 504,
    errors.BackupNotConfigured: 400,
    errors.UnsupportedMessage: 400,  # Zeebe's UNSUPPORTED_MESSAGE (reference A.6)
    # The Backup API waits for a leader until the request timeout and then answers 504
    # (REFERENCE.md §1, Zeebe's BackupErrorResponseTest).
    NoLeader: 504,
}
# The REST API answers 503 (Service Unavailable: try again) while a partition has no leader or
# its broker cannot be reached, as Camunda's REST gateway does; never 500 for a failover.
REST_STATUS_BY_ERROR = {
    **STATUS_BY_ERROR,
    errors.BrokerUnavailable: 503,
    errors.PartitionLeaderMismatch: 503,
    NoLeader: 503,
}

# Rejection types written by the engine -> the error they are reported as.
ERROR_BY_REJECTION: dict[str, type[errors.ZeebeSimError]] = {
    "INVALID_ARGUMENT": errors.InvalidArgument,
    "NOT_FOUND": errors.NotFound,
    "ALREADY_EXISTS": errors.AlreadyExists,
    "INVALID_STATE": errors.InvalidState,
    "PROCESSING_ERROR": errors.InternalError,
}


def status_of(
    error: errors.ZeebeSimError,
    statuses: dict[type[errors.ZeebeSimError], int] = STATUS_BY_ERROR,
) -> int:
    for cls in type(error).__mro__:
        status = statuses.get(cls)
        if status is not None:
            return status
    return 500


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Body = Callable[[web.Request, int, str, str], dict[str, object]]


def _middleware(
    body: Body, content_type: str, statuses: dict[type[errors.ZeebeSimError], int]
) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        headers: dict[str, str] = {}
        try:
            return await handler(request)
        except errors.ZeebeSimError as exc:
            status, title, detail = status_of(exc, statuses), exc.code, exc.message
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            status, title, detail = exc.status, exc.reason, exc.text or exc.reason
            if detail.startswith(f"{exc.status}: "):
                detail = detail[len(f"{exc.status}: ") :]
            # e.g. Allow on a 405; the body and its type are ours
            headers = {
                k: v
                for k, v in exc.headers.items()
                if k.lower() not in ("content-type", "content-length")
            }
        except Exception:
            log.exception("request %s %s failed", request.method, request.path)
            status, title, detail = 500, "INTERNAL_ERROR", "Unexpected error in the gateway"
        return web.Response(
            status=status,
            text=json.dumps(body(request, status, title, detail)),
            content_type=content_type,
            headers=headers,
        )

    return middleware


actuator_errors = _middleware(
    lambda request, status, title, detail: {"message": detail},
    "application/json",
    STATUS_BY_ERROR,
)
problem_details = _middleware(
    lambda request, status, title, detail: {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.path,
    },
    "application/problem+json",
    REST_STATUS_BY_ERROR,
)
