"""The API reference and health with reads closed (issue 19): ``/docs`` and ``/openapi.json`` need the read token,
``/redoc`` is not served, ``/healthz`` tells a caller without a token only ``ok`` or ``error``; ``/docs`` loads
Swagger UI at a pinned version with integrity hashes under a CSP that allows exactly those files and its one
inline script."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.docs_ui import SWAGGER_CSS, SWAGGER_JS
from api.main import create_app
from nero_study.settings import Settings
from nero_study.store import db

AUTH = {"Authorization": "Bearer test-token"}


@pytest.fixture
def closed(database_url: str) -> Iterator[TestClient]:
    """A service whose reads need the token too."""
    settings = Settings(
        database_url=database_url, api_tokens="test-token", require_token_for_reads=True, health_min_workers=0
    )
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.mark.parametrize("path", ["/docs", "/openapi.json"])
def test_with_reads_closed_the_reference_needs_the_token(closed: TestClient, path: str) -> None:
    refused = closed.get(path)
    wrong = closed.get(path, headers={"Authorization": "Bearer nope"})
    allowed = closed.get(path, headers=AUTH)

    assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
    assert wrong.status_code == 401
    assert allowed.status_code == 200
    assert "nero-study" in allowed.text


def test_redoc_is_not_served(closed: TestClient, client: TestClient) -> None:
    assert closed.get("/redoc", headers=AUTH).status_code == 404
    assert client.get("/redoc").status_code == 404


def test_with_reads_open_the_reference_stays_open(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    assert client.get("/openapi.json").json()["info"]["title"] == "nero-study"


def test_with_reads_closed_health_tells_an_anonymous_probe_only_the_status(closed: TestClient) -> None:
    anonymous = closed.get("/healthz")
    reader = closed.get("/healthz", headers=AUTH)

    assert anonymous.status_code == 200
    assert anonymous.json() == {"status": "ok", "database": "ok", "revision": None, "head": None, "workers": None}
    assert reader.status_code == 200
    assert reader.json()["revision"] == db.head_revision() == reader.json()["head"]


def test_with_reads_closed_an_unhealthy_database_is_503_without_its_error(database_url: str) -> None:
    settings = Settings(
        database_url=database_url, api_tokens="test-token", require_token_for_reads=True, health_min_workers=0
    )
    app = create_app(settings)
    with TestClient(app) as client:
        with app.state.engine.begin() as connection:  # a store that can be read but not written to
            connection.exec_driver_sql("CREATE TRIGGER no_writes BEFORE UPDATE ON alembic_version "
                                       "BEGIN SELECT RAISE(ABORT, 'read-only disk'); END")
        anonymous = client.get("/healthz")
        reader = client.get("/healthz", headers=AUTH)

    assert anonymous.status_code == 503
    assert anonymous.json() == {"status": "error", "database": "error", "revision": None, "head": None,
                                "workers": None}
    assert reader.status_code == 503 and reader.json()["database"].startswith("not writable")


def test_docs_loads_pinned_swagger_ui_with_integrity_under_its_own_csp(client: TestClient) -> None:
    response = client.get("/docs")
    page = response.text
    csp = dict(part.strip().split(" ", 1) for part in response.headers["content-security-policy"].split(";"))

    for url, integrity in (SWAGGER_JS, SWAGGER_CSS):
        assert re.match(r"https://cdn\.jsdelivr\.net/npm/swagger-ui-dist@\d+\.\d+\.\d+/", url)  # an exact version
        assert re.match(r"sha384-[A-Za-z0-9+/]{64}$", integrity)
        assert f'"{url}" integrity="{integrity}" crossorigin="anonymous"' in page
    # Every script the page has: the pinned file, and one inline script whose hash the policy names.
    sources = re.findall(r"<script src=\"([^\"]+)\"", page)
    (inline,) = re.findall(r"<script>(.*?)</script>", page, flags=re.S)
    digest = base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()
    assert sources == [SWAGGER_JS[0]]
    assert csp["script-src"].split() == [SWAGGER_JS[0], f"'sha256-{digest}'"]
    assert csp["default-src"] == "'none'" and csp["connect-src"] == "'self'"
    assert csp["frame-ancestors"] == "'none'" and csp["style-src"].split()[0] == SWAGGER_CSS[0]
    assert "'unsafe-inline'" not in csp["script-src"] and "fastapi.tiangolo.com" not in page  # no foreign favicon
    assert response.headers["x-frame-options"] == "DENY"
