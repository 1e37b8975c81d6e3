"""Stored tokens listed and revoked with the command line (issue 19): a revoked token is refused over HTTP on the
very next request, and no listing ever shows a token or its hash."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.main import create_app
from nero_study.cli import app as cli
from nero_study.settings import Settings
from nero_study.store import db, repo

runner = CliRunner()


def invoke(*args: str) -> Any:
    result = runner.invoke(cli, list(args))
    return result


def create(database_url: str, name: str) -> str:
    result = invoke("token", "create", "--name", name, "--db", database_url)
    assert result.exit_code == 0, result.output
    return result.stdout.strip().splitlines()[-1]


def test_token_list_shows_ids_names_and_use_but_never_the_token(
    database_url: str, quick_spec: dict[str, Any]
) -> None:
    laptop = create(database_url, "laptop")
    create(database_url, "ci")
    with TestClient(create_app(Settings(database_url=database_url, api_tokens=""))) as client:
        used = client.post("/api/sweeps", json=quick_spec, headers={"Authorization": f"Bearer {laptop}"})
        assert used.status_code == 201, used.text

    listed = invoke("token", "list", "--json", "--db", database_url)
    table = invoke("token", "list", "--db", database_url)

    assert listed.exit_code == 0 and table.exit_code == 0, listed.output + table.output
    rows = json.loads(listed.stdout)
    assert [(row["id"], row["name"], row["revoked"]) for row in rows] == [(1, "laptop", False), (2, "ci", False)]
    assert rows[0]["last_used_at"] is not None and rows[1]["last_used_at"] is None
    assert set(rows[0]) == {"id", "name", "created_at", "last_used_at", "revoked"}
    assert "laptop" in table.stdout and "never" in table.stdout
    for text in (listed.stdout, table.stdout):
        assert laptop not in text and repo.hash_token(laptop) not in text


def test_a_revoked_token_is_refused_at_once(database_url: str, quick_spec: dict[str, Any]) -> None:
    token = create(database_url, "laptop")
    other = create(database_url, "ci")
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(Settings(database_url=database_url, api_tokens=""))) as client:
        assert client.post("/api/sweeps", json=quick_spec, headers=headers).status_code == 201

        revoked = invoke("token", "revoke", "laptop", "--db", database_url)  # by name, while the app runs
        assert revoked.exit_code == 0, revoked.output
        assert "revoked token 1 (laptop)" in revoked.stdout

        refused = client.post("/api/sweeps", json=quick_spec, headers=headers)
        assert refused.status_code == 401 and refused.json()["detail"] == "Invalid bearer token"
        still = client.post("/api/sweeps", json=quick_spec, headers={"Authorization": f"Bearer {other}"})
        assert still.status_code == 201  # only that token

        by_id = invoke("token", "revoke", "2", "--db", database_url)
        assert by_id.exit_code == 0 and "revoked token 2 (ci)" in by_id.stdout
        assert client.post(
            "/api/sweeps", json=quick_spec, headers={"Authorization": f"Bearer {other}"}
        ).status_code == 401

    rows = json.loads(invoke("token", "list", "--json", "--db", database_url).stdout)
    assert [row["revoked"] for row in rows] == [True, True]
    again = invoke("token", "revoke", "1", "--db", database_url)
    assert again.exit_code == 0 and "already revoked" in again.stdout


def test_revoke_names_what_is_wrong(database_url: str) -> None:
    create(database_url, "twin")
    create(database_url, "twin")

    unknown = invoke("token", "revoke", "nobody", "--db", database_url)
    ambiguous = invoke("token", "revoke", "twin", "--db", database_url)

    assert unknown.exit_code == 2
    assert "No token with id or name 'nobody'; stored tokens: 1 (twin), 2 (twin)" in unknown.output
    assert ambiguous.exit_code == 2 and "2 tokens are named 'twin' (ids 1, 2); revoke one by its id" in ambiguous.output
    factory = db.session_factory(db.make_engine(database_url))
    with factory() as session:
        assert [t.revoked for t in repo.list_tokens(session)] == [False, False]
