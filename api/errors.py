"""Error answers: every 4xx is ``{"detail": str, "errors": [...]}`` and a 422 names the field and valid values.

Pydantic's own messages already list the valid values (``Input should be 'grid', 'paper' or 'tpe'``) and the
spec's validators name them (``Unknown task 'x'; valid: ...``); here they get a readable field path
(``optimizers[1].name``) and lose pydantic's ``Value error,`` prefix.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.schemas import ErrorPublic, FieldErrorPublic

logger = logging.getLogger(__name__)

_LOCATIONS = {"body", "query", "path", "header", "cookie"}
_PREFIXES = ("Value error, ", "Assertion failed, ")


def field_path(loc: Sequence[int | str]) -> str:
    """``('optimizers', 1, 'name')`` -> ``'optimizers[1].name'``; pydantic's union-member tags are dropped."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif "[" in part or "(" in part:
            continue  # e.g. 'list[function-after[_check_lr(), float]]': which union member was tried
        else:
            path += f".{part}" if path else part
    return path


def clean_message(message: str) -> str:
    for prefix in _PREFIXES:
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message


def describe_errors(errors: Iterable[Any], *, location: str = "") -> list[FieldErrorPublic]:
    """Pydantic error dicts as :class:`FieldErrorPublic`; a leading ``body``/``query``/... sets the location."""
    described: list[FieldErrorPublic] = []
    seen: set[tuple[str, str]] = set()
    for error in errors:
        loc = list(error.get("loc", ()))
        where = location
        if loc and loc[0] in _LOCATIONS:
            where = str(loc.pop(0))
        field = field_path(loc)
        message = clean_message(str(error.get("msg", "")))
        if (field, message) in seen:
            continue
        seen.add((field, message))
        described.append(
            FieldErrorPublic(field=field, location=where, message=message, type=str(error.get("type", "")))
        )
    return described


def summary(errors: Sequence[FieldErrorPublic]) -> str:
    """One line for people: ``field: message; field: message``."""
    parts = [f"{error.field}: {error.message}" if error.field else error.message for error in errors]
    return "; ".join(parts) or "Invalid input"


def validation_response(errors: Sequence[FieldErrorPublic]) -> JSONResponse:
    body = ErrorPublic(detail=summary(errors), errors=list(errors))
    return JSONResponse(status_code=status.HTTP_422_UNPROCESSABLE_CONTENT, content=body.model_dump(mode="json"))


async def _request_validation_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
    return validation_response(describe_errors(exc.errors()))


async def _http_exception_handler(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if isinstance(exc.detail, dict) and "detail" in exc.detail:
        content = ErrorPublic.model_validate(exc.detail).model_dump(mode="json")
    else:
        content = ErrorPublic(detail=str(exc.detail)).model_dump(mode="json")
    return JSONResponse(status_code=exc.status_code, content=content, headers=getattr(exc, "headers", None))


async def _database_unavailable_handler(request: Request, exc: Exception) -> JSONResponse:
    # Reached only after the store's retries (nero_study.store.repo.retried) ran out, or on a read.
    logger.error("database unavailable on %s %s: %s", request.method, request.url.path, type(exc).__name__)
    return JSONResponse(
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        content=ErrorPublic(detail="The database is unavailable; try again shortly").model_dump(mode="json"),
        headers={"Retry-After": "5"},
    )


async def _unexpected_handler(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse(
        status_code=status.HTTP_500_INTERNAL_SERVER_ERROR,
        content=ErrorPublic(detail="Internal server error; see the service log").model_dump(mode="json"),
    )


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that give every error the :class:`ErrorPublic` shape."""
    app.add_exception_handler(RequestValidationError, _request_validation_handler)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_exception_handler)  # type: ignore[arg-type]
    app.add_exception_handler(sa.exc.OperationalError, _database_unavailable_handler)
    app.add_exception_handler(Exception, _unexpected_handler)


#: ``responses=`` for routers: the error shape of 4xx answers in OpenAPI (replaces FastAPI's 422 schema).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorPublic, "description": "Invalid input: the message names the field and the valid values"},
}
