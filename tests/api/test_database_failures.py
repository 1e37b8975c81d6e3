"""A transient database failure (issue 19, defect 5): writes are tried again with backoff, a failure that
outlasts the retries answers 503 (not 500), and /healthz says when the database cannot write."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from nero_study.store import repo

AUTH = {"Authorization": "Bearer test-token"}
QUICK_SPEC: dict[str, Any] = {"tasks": ["digits-mlp"], "optimizers": ["nero"], "lrs": [0.01], "budget": "smoke"}


class FailingStatements:
    """Makes the next ``failures`` statements starting with ``prefix`` fail as SQLite's disk I/O error does."""

    def __init__(self, prefix: str, failures: int) -> None:
        self.prefix = prefix.upper()
        self.remaining = failures
        self.failed = 0

    def __call__(self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if self.remaining > 0 and statement.lstrip().upper().startswith(self.prefix):
            self.remaining -= 1
            self.failed += 1
            raise sa.exc.OperationalError(statement, parameters, sqlite3.OperationalError("disk I/O error"))


@pytest.fixture
def failing(app: FastAPI, client: TestClient) -> Iterator[Any]:
    engine = app.state.session_factory.kw["bind"]
    hooks: list[FailingStatements] = []

    def install(prefix: str, failures: int) -> FailingStatements:
        hook = FailingStatements(prefix, failures)
        sa.event.listen(engine, "before_cursor_execute", hook)
        hooks.append(hook)
        return hook

    yield install
    for hook in hooks:
        sa.event.remove(engine, "before_cursor_execute", hook)


def test_a_write_that_fails_transiently_is_tried_again(client: TestClient, failing: Any) -> None:
    hook = failing("INSERT INTO sweeps", 2)

    response = client.post("/api/sweeps", json=QUICK_SPEC, headers=AUTH)

    assert response.status_code == 201, response.text
    assert hook.failed == 2
    assert client.get("/api/sweeps").json()["total"] == 1


def test_a_failure_that_outlasts_the_retries_is_503_and_stores_nothing(client: TestClient, failing: Any) -> None:
    hook = failing("INSERT INTO sweeps", repo.WRITE_ATTEMPTS)

    response = client.post("/api/sweeps", json=QUICK_SPEC, headers=AUTH)

    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "5" and "database is unavailable" in response.json()["detail"]
    assert hook.failed == repo.WRITE_ATTEMPTS
    assert client.get("/api/sweeps").json()["total"] == 0


def test_healthz_is_503_when_the_database_cannot_write(client: TestClient, failing: Any) -> None:
    assert client.get("/healthz").status_code == 200
    failing("UPDATE", 1)

    response = client.get("/healthz")

    assert response.status_code == 503
    assert response.json()["status"] == "error" and response.json()["database"] == "not writable (OperationalError)"
    assert client.get("/healthz").status_code == 200  # the write works again
