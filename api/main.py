"""The app factory: ``create_app(settings)`` builds the FastAPI app; nothing connects at import time.

The engine and session factory are made here from ``settings.database_url`` (creating an engine does not
connect); the first connection is made by the first request, or by the migration at startup when asked
for. The API never runs training: it writes queued sweeps that workers claim (docs/architecture.md).

Run it with ``uvicorn --factory api.main:create_app``.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.routing import Match

from api.cache import SweepViewCache
from api.deps import require_token
from api.docs_ui import swagger_ui_response
from api.errors import install_error_handlers
from api.routes import findings, meta, pages, sweeps, trials
from api.schemas import ErrorPublic, SweepCreate
from nero_study import __version__
from nero_study.settings import Settings
from nero_study.store import db

logger = logging.getLogger(__name__)

DESCRIPTION = """\
Hyperparameter-robustness studies of optimisers: submit learning-rate sweeps of Nero against SGD, Adam
and LAMB, follow their trials, and read the robustness metrics (out-of-the-box regret, lr sensitivity,
good-lr window, performance profiles) or export every trial as CSV or Parquet.

Writes need `Authorization: Bearer <token>`. Errors are `{"detail": "...", "errors": [...]}`; a 422 names
the field and the valid values. NaN or infinite numbers (diverged trials) are `null` in JSON.
"""

OPENAPI_TAGS = [
    {"name": "sweeps", "description": "Submit, list, follow, cancel and analyse sweeps"},
    {"name": "trials", "description": "One trial and its learning curve"},
    {"name": "findings", "description": "Every finished sweep's verdicts in one table, across sweeps"},
    {"name": "meta", "description": "The tasks and optimisers a sweep may use"},
    {"name": "health", "description": "Liveness and database check"},
]


def _should_migrate(settings: Settings, migrate: bool | None) -> bool:
    if migrate is not None:
        return migrate
    return bool(getattr(settings, "migrate_on_startup", False))


_frozen = False


def freeze_long_lived_objects() -> None:
    """Load what requests will need, then move every object so far out of the garbage collector's way.

    Validating a spec builds each optimiser, and the first optimiser built imports torch's lazy parts
    (dynamo, sympy: about 800 modules, a second of CPU) that would otherwise land on the first
    submission. Those objects, torch's and the registries', live as long as the process; once frozen,
    the collector's full passes skip them. Without this, full passes paused all requests for 50-270 ms
    at a time (benchmarks/api_load.py). Once per process (several apps may share one, as in the tests).
    """
    global _frozen
    if _frozen:
        return
    from nero_study.study.spec import demo_spec

    demo_spec()
    gc.collect()
    gc.freeze()
    _frozen = True


def create_app(settings: Settings | None = None, *, migrate: bool | None = None) -> FastAPI:
    """The nero-study API for ``settings`` (from the environment when ``None``).

    ``migrate``: run the packaged Alembic migrations at startup (idempotent). ``None`` follows
    ``settings.migrate_on_startup`` when that setting exists, else does not migrate.
    """
    settings = settings or Settings()
    engine = db.make_engine(settings.database_url)
    session_factory = db.session_factory(engine)
    run_migrations = _should_migrate(settings, migrate)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if run_migrations:
            logger.info("migrating the database to the newest revision")
            await run_in_threadpool(db.upgrade, engine)
        await run_in_threadpool(freeze_long_lived_objects)
        try:
            yield
        finally:
            engine.dispose()

    app = FastAPI(
        title="nero-study",
        version=__version__,
        description=DESCRIPTION,
        openapi_tags=OPENAPI_TAGS,
        lifespan=lifespan,
        # Served below under the read guard; /docs with integrity-checked Swagger UI (api/docs_ui.py), no ReDoc.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = session_factory
    app.state.sweep_view_cache = SweepViewCache()  # per app: each app has its own database
    install_error_handlers(app)

    @app.middleware("http")
    async def allowed_methods(request: Request, call_next: Any) -> Any:
        # OPTIONS names every method the path has (a route answers one method; Starlette's 405 named one route's).
        if request.method != "OPTIONS":
            return await call_next(request)
        methods = path_methods(app, request.scope)
        if not methods:
            return await call_next(request)  # no such path: 404 as for any method
        return Response(status_code=204, headers={"Allow": ", ".join(methods)})

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    # Reads are open unless settings say otherwise; then the same token check guards them as well.
    read_guard = [Depends(require_token)] if settings.require_token_for_reads else []
    guarded: dict[int | str, dict[str, Any]] = (
        {401: {"model": ErrorPublic, "description": "Missing or invalid bearer token"}} if read_guard else {}
    )
    app.include_router(sweeps.router, dependencies=read_guard, responses=guarded)
    app.include_router(trials.router, dependencies=read_guard, responses=guarded)
    app.include_router(findings.router, dependencies=read_guard, responses=guarded)
    app.include_router(meta.router, dependencies=read_guard, responses=guarded)
    app.include_router(meta.health_router)
    # HTML dashboards: under the same read guard, so a service that requires tokens for reads keeps its
    # pages private too (browsers send no bearer token: such a deployment reads through the API).
    app.include_router(pages.router, dependencies=read_guard)
    # The schema and its reference page: closed with the reads, like everything else that describes the service.
    app.include_router(reference_router(), dependencies=read_guard)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


#: Sent with every response that sets none of its own: no framing by other sites, no MIME sniffing, no plugins or
#: foreign base URLs, no referrer beyond this origin. Scripts are not restricted here: the pages draw with inline
#: Plotly code. /docs sends a stricter policy of its own (its scripts by URL and hash: api/docs_ui.py).
SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": "frame-ancestors 'none'; object-src 'none'; base-uri 'self'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


#: The methods an OPTIONS answer may name.
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def path_methods(app: FastAPI, scope: dict[str, Any]) -> list[str]:
    """The HTTP methods some route answers for ``scope``'s path (HEAD with GET, and OPTIONS), sorted."""
    methods = {
        method
        for method in HTTP_METHODS
        if any(route.matches({**scope, "method": method})[0] == Match.FULL for route in app.router.routes)
    }
    if methods:
        methods |= {"OPTIONS", *(("HEAD",) if "GET" in methods else ())}
    return sorted(methods)


def reference_router() -> APIRouter:
    """``/openapi.json`` and ``/docs`` (Swagger UI), left out of the schema itself."""
    router = APIRouter(include_in_schema=False)

    @router.get("/openapi.json")
    async def openapi_schema(request: Request) -> JSONResponse:
        return JSONResponse(request.app.openapi())

    @router.get("/docs")
    async def swagger_ui(request: Request) -> HTMLResponse:
        return swagger_ui_response(title=request.app.title, openapi_url="/openapi.json")

    return router


def build_openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema plus the ``SweepCreate`` body, which the POST route validates itself."""
    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        tags=app.openapi_tags,
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    body_schema = SweepCreate.model_json_schema(ref_template="#/components/schemas/{model}", mode="validation")
    for name, definition in body_schema.pop("$defs", {}).items():
        components.setdefault(name, definition)
    components["SweepCreate"] = body_schema
    document_valid_values(components)
    return schema


def document_valid_values(components: dict[str, Any]) -> None:
    """Write the spec's closed sets into its JSON schema, so /docs shows the valid values.

    Task and optimiser names (from the registries) become enums, optimisers may be plain names, tasks and
    seeds are unique, seeds >= 0 and learning rates > 0: the rules ``SweepSpec`` checks, as far as JSON
    Schema can say them (the trial limit and the optimisers' settings are checked only by the server).
    """
    from nero_study.optim.registry import OPTIMIZERS
    from nero_study.tasks.registry import TASKS

    body = components.get("SweepCreate", {}).get("properties", {})
    optimizer_names = {"type": "string", "enum": list(OPTIMIZERS)}
    if "tasks" in body:
        body["tasks"]["items"] = {"type": "string", "enum": list(TASKS)}
        body["tasks"]["uniqueItems"] = True
    if "seeds" in body:
        body["seeds"]["items"] = {"type": "integer", "minimum": 0}
        body["seeds"]["uniqueItems"] = True
    if "optimizers" in body and "$ref" in body["optimizers"].get("items", {}):
        body["optimizers"]["items"] = {"anyOf": [optimizer_names, body["optimizers"]["items"]]}
    variant = components.get("OptimizerVariant", {}).get("properties", {})
    if "name" in variant:
        variant["name"] = {**variant["name"], **optimizer_names}
    for option in body.get("lrs", {}).get("oneOf", body.get("lrs", {}).get("anyOf", [])):
        if option.get("type") == "array":
            option["items"] = {"type": "number", "exclusiveMinimum": 0}
            option["minItems"] = 1
    grid = components.get("LogGrid", {}).get("properties", {})
    for bound in ("min", "max"):
        if bound in grid:
            grid[bound] = {**grid[bound], "exclusiveMinimum": 0}
