"""The body of ``POST /api/sweeps``: read with a size limit, parsed as strict JSON, validated as a spec.

FastAPI's typed body parameters cannot bound the bytes read or pass this service's trial limit into validation,
so the route reads the body through :func:`read_sweep_spec` and documents it with :data:`SWEEP_BODY_OPENAPI`.
"""

from __future__ import annotations

import json
import math
from typing import Any

from fastapi import HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from api.deps import SettingsDep
from api.schemas import PAPER_SWEEP_EXAMPLE, QUICK_SWEEP_EXAMPLE, SweepCreate

SWEEP_BODY_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "A sweep spec (JSON). Each optimiser's default lr is added to its grid.",
        "content": {
            "application/json": {
                "schema": {"$ref": "#/components/schemas/SweepCreate"},
                "examples": {
                    "quick": {"summary": "A quick sweep (about a minute on a CPU)", "value": QUICK_SWEEP_EXAMPLE},
                    "paper": {"summary": "The paper's protocol on two proxy tasks", "value": PAPER_SWEEP_EXAMPLE},
                },
            }
        },
    }
}


def _too_large(limit: int) -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_413_CONTENT_TOO_LARGE,
        detail=f"The sweep spec is larger than the limit of {limit} bytes (max_spec_bytes)",
    )


def _body_error(message: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("body",), "msg": message, "type": "json_invalid"}])


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows; use a finite number")


def parse_json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object; NaN, Infinity and out-of-range numbers are refused (422)."""
    if not body.strip():
        raise _body_error("A sweep spec (a JSON object) is required; the body is empty")
    try:
        data = json.loads(body, parse_float=_finite_float, parse_constant=_reject_constant)
    except RecursionError:
        raise _body_error("Invalid JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, NaN/Infinity, huge integers
        raise _body_error(f"Invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _body_error(f"A sweep spec must be a JSON object of fields; got {type(data).__name__}")
    bad_text = _first_unstorable_text(data)
    if bad_text is not None:
        raise _body_error(f"Invalid text {bad_text!r}: NUL characters and unpaired surrogates cannot be stored")
    return data


def _first_unstorable_text(value: Any) -> str | None:
    """The first string (key or value, at any depth) that a database cannot store as text, if any."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            if "\x00" in item:
                return item[:40]
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return item.encode("utf-8", "backslashreplace").decode("ascii")[:40]
    return None


async def read_sweep_spec(request: Request, settings: SettingsDep) -> SweepCreate:
    """The validated spec from the request body; 413 past ``max_spec_bytes``, 422 naming the field if invalid.

    The body is read here rather than by FastAPI so that the size limit holds while reading and the spec is
    validated against this service's ``max_trials_per_sweep``.
    """
    limit = settings.max_spec_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    data = parse_json_object(b"".join(chunks))
    try:
        # Off the event loop: validation builds each optimiser once to check its settings.
        return await run_in_threadpool(SweepCreate.model_validate, data, context=settings.spec_context())
    except ValidationError as exc:
        errors = [
            {"loc": ("body", *error["loc"]), "msg": error["msg"], "type": error["type"]}
            for error in exc.errors(include_url=False, include_input=False)
        ]
        raise RequestValidationError(errors) from None


