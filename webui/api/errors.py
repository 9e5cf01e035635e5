"""A1111's error bodies ({error, detail, body, errors}) and statuses for everything a route can raise, and the
`--api-log` line per request. A route class, not app-level handlers: the routes carry their error handling with
them, whether mounted on the UI's running gradio app or served alone. No traceback ever reaches a client; an
unexpected error is logged with its traceback here and answered 500 with its one-line message."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from ..engine.errors import UserError
from ..engine.fields import InvalidParams
from ..engine.models.checkpoints import CheckpointError
from ..engine.samplers import UnknownSampler
from ..engine.tasks import QueueFull
from .requests import NotAvailable

log = logging.getLogger("webui.api")
_BODY_ECHO_LIMIT = 200  # characters of each string echoed back in a 422: a base64 image stays out of the reply


def _shorten(value):
    if isinstance(value, str) and len(value) > _BODY_ECHO_LIMIT:
        return value[:_BODY_ECHO_LIMIT] + "…"
    if isinstance(value, dict):
        return {k: _shorten(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shorten(v) for v in value]
    return value


def error_response(status: int, error: str, detail, body="", errors: str = "", headers: dict | None = None):
    return JSONResponse({"error": error, "detail": detail, "body": _shorten(body), "errors": errors},
                        status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for item in exc.errors():
        where = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
        parts.append(f"{where}: {item.get('msg', 'invalid')}" if where else item.get("msg", "invalid"))
    return "; ".join(parts) or "invalid request"


def _status_of(e: UserError) -> int:
    if isinstance(e, QueueFull):
        return 503
    if isinstance(e, NotAvailable):
        return 501
    if isinstance(e, UnknownSampler):
        return 400  # A1111 1.10
    if isinstance(e, CheckpointError) and "not found" in str(e).lower():
        return 404
    if isinstance(e, InvalidParams):
        return 422
    return 400


def to_response(e: Exception) -> JSONResponse:
    if isinstance(e, RequestValidationError):
        return error_response(422, "RequestValidationError", _validation_message(e), e.body, str(e.errors()))
    if isinstance(e, HTTPException):
        return error_response(e.status_code, "HTTPException", e.detail, errors=str(e.detail),
                              headers=getattr(e, "headers", None))
    if isinstance(e, UserError):
        headers = {"Retry-After": str(e.retry_after)} if isinstance(e, QueueFull) else None
        return error_response(_status_of(e), type(e).__name__, str(e), errors=str(e), headers=headers)
    log.exception("API error")  # a bug: the traceback goes to the server log, one line to the client
    first = (str(e).strip().splitlines() or [""])[0][:300]
    return error_response(500, type(e).__name__, first, errors=first)


def make_route_class(api_log: Callable[[], bool]) -> type[APIRoute]:
    class A1111Route(APIRoute):
        def get_route_handler(self):
            handler = super().get_route_handler()

            async def handle(request: Request):
                started = time.perf_counter()
                try:
                    response = await handler(request)
                except Exception as e:  # noqa: BLE001 - every error becomes an A1111 error body
                    response = to_response(e)
                if api_log():
                    log.info("API %s %s %s %.3fs", request.method, request.url.path, response.status_code,
                             time.perf_counter() - started)
                return response
            return handle
    return A1111Route
