"""FastAPI dependencies as ``Annotated`` aliases: ``SettingsDep``, ``SessionDep``, ``TokenDep``.

The settings and the session factory live on ``app.state`` (set by :func:`api.main.create_app`), so
several apps with different settings can live in one process (the tests make one per test).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Annotated, TypeVar

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.auth import Principal, authenticate, unauthorized
from nero_study.settings import Settings

logger = logging.getLogger(__name__)

bearer_scheme = HTTPBearer(
    auto_error=False,
    description=(
        "A token from NERO_STUDY_API_TOKENS (comma separated) or one created with `create_token` "
        "(stored hashed). Needed for every write; for reads too when NERO_STUDY_REQUIRE_TOKEN_FOR_READS is set."
    ),
)


T = TypeVar("T")


async def get_settings(request: Request) -> Settings:
    """The app's settings (``async``: a plain attribute read needs no worker thread)."""
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    """One database session per request, closed (and rolled back unless committed) at the end."""
    with request.app.state.session_factory() as session:
        yield session


async def in_session(request: Request, work: Callable[[Session], T]) -> T:
    """``work(session)`` in one worker thread with its own session, closed afterwards.

    For the hot read endpoints (listings): an ``async`` endpoint that calls this crosses to a worker thread
    once, where a sync endpoint with ``SessionDep`` crosses for the session, the endpoint and the response
    validation. Exceptions (an ``HTTPException`` for a 404) propagate to the caller.
    """

    def call() -> T:
        with request.app.state.session_factory() as session:
            return work(session)

    return await run_in_threadpool(call)


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]


def require_token(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)],
    session: SessionDep,
    settings: SettingsDep,
) -> Principal:
    """The caller's principal from ``Authorization: Bearer <token>``; 401 with ``WWW-Authenticate`` if not."""
    if credentials is None:
        raise unauthorized("Missing bearer token; send the header 'Authorization: Bearer <token>'")
    principal = authenticate(credentials.credentials, settings=settings, session=session)
    if principal is None:
        logger.info("rejected a request with an invalid bearer token")
        raise unauthorized("Invalid bearer token", invalid_token=True)
    return principal


TokenDep = Annotated[Principal, Depends(require_token)]


def read_allowed(request: Request, session: SessionDep, settings: SettingsDep) -> bool:
    """Whether this caller may read what the read guard protects: reads are open, or it sent a valid token.
    Never a 401 (for answers that give every caller something, and the rest only to readers: ``/healthz``); the
    header is read here, not declared, so the schema does not mark the operation as needing a token."""
    if not settings.require_token_for_reads:
        return True
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    return authenticate(token.strip(), settings=settings, session=session) is not None


ReaderDep = Annotated[bool, Depends(read_allowed)]
