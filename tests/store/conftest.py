"""Store fixtures: every store test runs on a SQLite file and on PostgreSQL (marked ``postgres``).

PostgreSQL: ``NERO_STUDY_TEST_POSTGRES_URL`` (default: user ``postgres`` at 127.0.0.1:5432, database
``test``). Tests that migrate get a freshly created schema (dropped afterwards); the others share one
schema migrated once per session, emptied before each test. The schema is selected through the
connection's ``search_path``. When the server cannot be reached the PostgreSQL variants are skipped
with the reason, except under CI (``CI=true``), where they fail. SQLite tests get a copy of a file
migrated once.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.schema import CreateSchema, DropSchema

from nero_study.store import db
from nero_study.store.models import Base

POSTGRES_URL = os.environ.get(
    "NERO_STUDY_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[Engine]:
    """An engine on the test database, or a skip (a failure under CI) when PostgreSQL is unreachable."""
    engine = db.make_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect():
            pass
    except OperationalError as exc:
        engine.dispose()
        where = make_url(POSTGRES_URL).render_as_string(hide_password=True)
        message = f"PostgreSQL is not reachable at {where} (set NERO_STUDY_TEST_POSTGRES_URL): {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    yield engine
    engine.dispose()


def postgres_schema_url(schema: str) -> str:
    """The test database URL with ``schema`` first on the search path (tables land there)."""
    url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False)


@contextmanager
def postgres_schema(admin: Engine) -> Iterator[str]:
    """A new, empty PostgreSQL schema (dropped afterwards); yields a URL that uses it."""
    schema = f"nero_study_test_{uuid.uuid4().hex[:12]}"
    with admin.begin() as connection:
        connection.execute(CreateSchema(schema))
    try:
        yield postgres_schema_url(schema)
    finally:
        with admin.begin() as connection:
            connection.execute(DropSchema(schema, cascade=True))


@pytest.fixture(params=BACKENDS)
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database: a new SQLite file, or a new PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'db' / 'store.db'}"
        return
    with postgres_schema(request.getfixturevalue("postgres_admin")) as url:
        yield url


@pytest.fixture(scope="session")
def migrated_sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once per test session, copied for each test (faster than migrating)."""
    path = tmp_path_factory.mktemp("template") / "store.db"
    db.upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def migrated_postgres_url(postgres_admin: Engine) -> Iterator[str]:
    """A PostgreSQL schema migrated once per test session; tests empty its tables first."""
    with postgres_schema(postgres_admin) as url:
        db.upgrade(url)
        yield url


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a database at the newest migration, with no rows in it."""
    if request.param == "sqlite":
        path = tmp_path / "store.db"
        shutil.copyfile(request.getfixturevalue("migrated_sqlite_template"), path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("migrated_postgres_url")
    engine = db.make_engine(url)
    try:
        with engine.begin() as connection:
            for table in reversed(Base.metadata.sorted_tables):
                connection.execute(table.delete())
    finally:
        engine.dispose()
    return url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = db.make_engine(db_url, pool_size=10, max_overflow=5)
    yield engine
    engine.dispose()


@pytest.fixture
def session_maker(engine: Engine) -> sa.orm.sessionmaker[Session]:
    return db.session_factory(engine)


@pytest.fixture
def session(session_maker: sa.orm.sessionmaker[Session]) -> Iterator[Session]:
    with session_maker() as session:
        yield session
