"""Bearer-token checks: tokens from settings (``NERO_STUDY_API_TOKENS``) or created tokens stored hashed.

Settings tokens are compared in constant time (:func:`hmac.compare_digest`), every one of them, so the
time taken does not tell which prefix matched. Database tokens are looked up by their SHA-256 digest in
``nero_study.store.repo.verify_token``. A token itself is never logged, stored or put in an error message.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from fastapi import HTTPException, status
from sqlalchemy.orm import Session

from nero_study.settings import Settings

logger = logging.getLogger(__name__)

#: The ``WWW-Authenticate`` challenge sent with every 401 (RFC 6750).
BEARER_CHALLENGE = 'Bearer realm="nero-study"'
#: Longest token accepted before any comparison (bytes); longer ones are rejected as invalid at once.
MAX_TOKEN_BYTES = 512


@dataclass(frozen=True)
class Principal:
    """Who made an authenticated request: a settings token (by position) or a stored token (by name)."""

    name: str
    source: Literal["settings", "database"]


def match_settings_token(presented: str, tokens: Sequence[str]) -> int | None:
    """The index of ``presented`` in ``tokens`` (constant time per token, all compared), or ``None``."""
    presented_bytes = presented.encode("utf-8")
    match: int | None = None
    for index, token in enumerate(tokens):
        if hmac.compare_digest(presented_bytes, token.encode("utf-8")) and match is None:
            match = index
    return match


def authenticate(presented: str, *, settings: Settings, session: Session) -> Principal | None:
    """The principal for a presented bearer token, or ``None`` when it is not a valid token."""
    if not presented or len(presented.encode("utf-8")) > MAX_TOKEN_BYTES:
        return None
    index = match_settings_token(presented, settings.token_list())
    if index is not None:
        return Principal(name=f"settings-token-{index}", source="settings")
    from nero_study.store import repo

    if not repo.verify_token(session, token=presented):
        return None
    return Principal(name="stored-token", source="database")


def unauthorized(detail: str, *, invalid_token: bool = False) -> HTTPException:
    """A 401 with the Bearer challenge (RFC 6750); ``detail`` must not contain the token."""
    challenge = f'{BEARER_CHALLENGE}, error="invalid_token"' if invalid_token else BEARER_CHALLENGE
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail=detail,
        headers={"WWW-Authenticate": challenge},
    )
