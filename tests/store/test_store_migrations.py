"""The schema comes only from the packaged Alembic migrations, and it matches the models."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from nero_study.store import db, repo
from nero_study.store.models import Base, MetricPoint, Trial, utc_now

TABLES = {"sweeps", "trials", "metric_points", "api_tokens", "workers"}


def test_upgrade_from_empty_creates_the_tables_at_head(empty_db_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the packaged migrations are found from any working directory
    engine = db.make_engine(empty_db_url)
    try:
        assert db.current_revision(engine) is None
        assert TABLES.isdisjoint(sa.inspect(engine).get_table_names())
        db.upgrade(empty_db_url)
        assert TABLES <= set(sa.inspect(engine).get_table_names())
        assert db.current_revision(engine) == db.head_revision() == "0008"
        db.upgrade(empty_db_url)  # a second upgrade is a no-op
        assert db.current_revision(engine) == "0008"
    finally:
        engine.dispose()


def test_migrated_schema_matches_the_models(empty_db_url):
    db.upgrade(empty_db_url)
    engine = db.make_engine(empty_db_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert differences == []


def test_upgrade_from_0001_keeps_sweeps_and_leaves_their_planned_count_unknown(empty_db_url):
    engine = db.make_engine(empty_db_url)
    try:
        with engine.begin() as connection:
            config = db.alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "0001")
            connection.exec_driver_sql(
                "INSERT INTO sweeps (id, name, spec, status, created_at, updated_at, cancel_requested, attempts) "
                "VALUES ('a' , 'before 0002', '{}', 'queued', '2026-11-01 00:00:00', '2026-11-01 00:00:00', false, 0)"
            )
        db.upgrade(empty_db_url)
        factory = db.session_factory(engine)
        with factory() as session:
            sweep = repo.get_sweep(session, sweep_id="a")
            assert (sweep.name, sweep.planned_trials) == ("before 0002", None)
            new = repo.create_sweep(session, spec={}, name="after", planned_trials=12)[0]
            assert repo.get_sweep(session, sweep_id=new.id).planned_trials == 12
    finally:
        engine.dispose()


def test_upgrade_from_0003_starts_stored_sweeps_at_version_0_and_writes_raise_it(empty_db_url):
    engine = db.make_engine(empty_db_url)
    try:
        with engine.begin() as connection:
            config = db.alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "0003")
            connection.exec_driver_sql(
                "INSERT INTO sweeps (id, name, spec, status, created_at, updated_at, cancel_requested, attempts) "
                "VALUES ('v', 'before 0004', '{}', 'queued', '2026-11-01 00:00:00', '2026-11-01 00:00:00', false, 0)"
            )
        db.upgrade(empty_db_url)
        factory = db.session_factory(engine)
        with factory() as session:
            assert repo.get_sweep_version(session, sweep_id="v") == 0
            repo.add_trials(session, sweep_id="v", trials=[{"task": "digits-mlp", "optimizer": "adam", "lr": 0.01}])
            assert repo.get_sweep_version(session, sweep_id="v") == 1
    finally:
        engine.dispose()


def test_upgrade_from_0002_keeps_trials_and_new_trials_record_the_settings_they_run_with(empty_db_url):
    engine = db.make_engine(empty_db_url)
    try:
        with engine.begin() as connection:
            config = db.alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "0002")
            connection.exec_driver_sql(
                "INSERT INTO sweeps (id, name, spec, status, created_at, updated_at, cancel_requested, attempts) "
                "VALUES ('s', 'before 0003', '{}', 'queued', '2026-11-01 00:00:00', '2026-11-01 00:00:00', false, 0)"
            )
            connection.exec_driver_sql(
                "INSERT INTO trials (sweep_id, task, optimizer, label, lr, seed, budget, preset, hyperparameters, "
                "task_options, params_key, phase, status, attempt, created_at) VALUES ('s', 'mnist-mlp100', "
                "'adam', 'adam', 0.001, 0, 'paper', 'paper', '{}', '{}', 'k', 'grid', 'pending', 0, "
                "'2026-11-01 00:00:00')"
            )
        db.upgrade(empty_db_url)
        factory = db.session_factory(engine)
        with factory() as session:
            ((old,), _) = repo.list_trials(session, sweep_id="s")
            assert (old.task, old.settings) == ("mnist-mlp100", None)
            new = repo.add_trials(
                session,
                sweep_id="s",
                trials=[
                    {"task": "mnist-mlp100", "optimizer": "adam", "lr": 0.01, "preset": "paper"},
                    {"task": "cifar10-cgan", "optimizer": "adam", "lr": 0.01, "hyperparameters": {"eps": 1e-6}},
                    {"task": "not-a-task", "optimizer": "adam", "lr": 0.01},
                ],
            )
            assert new[0].settings == {"model": {"betas": [0.9, 0.999], "eps": 1e-08}}
            assert new[1].settings == {
                "generator": {"betas": [0.0, 0.999], "eps": 1e-06},
                "discriminator": {"betas": [0.9, 0.999], "eps": 1e-06},
            }
            assert new[2].settings is None  # stored all the same; this installation cannot build it
            assert new[0].hyperparameters == {}  # what the spec set explicitly stays apart
    finally:
        engine.dispose()


def test_unique_key_and_indexes_exist(db_url):
    engine = db.make_engine(db_url)
    try:
        inspector = sa.inspect(engine)
        unique_keys = [set(u["column_names"]) for u in inspector.get_unique_constraints("trials")]
        indexes = {i["name"]: i["column_names"] for i in inspector.get_indexes("trials")}
        foreign_keys = inspector.get_foreign_keys("metric_points")
    finally:
        engine.dispose()
    assert {"sweep_id", "task", "label", "lr", "seed", "params_key"} in unique_keys
    assert indexes["ix_trials_sweep_id_status"] == ["sweep_id", "status"]
    assert indexes["ix_trials_sweep_id_changed_version"] == ["sweep_id", "changed_version"]
    assert foreign_keys[0]["referred_table"] == "trials"
    assert foreign_keys[0]["options"].get("ondelete") == "CASCADE"


def test_downgrade_to_base_removes_everything(empty_db_url):
    db.upgrade(empty_db_url)
    engine = db.make_engine(empty_db_url)
    try:
        with engine.begin() as connection:
            config = db.alembic_config()
            config.attributes["connection"] = connection
            command.downgrade(config, "base")
        assert TABLES.isdisjoint(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_deleting_a_sweep_cascades_to_trials_and_points(session, db_url):
    sweep = repo.create_sweep(session, spec={}, name="cascade")[0]
    (trial,) = repo.add_trials(session, sweep_id=sweep.id, trials=[{"task": "t", "optimizer": "sgd", "lr": 0.1}])
    repo.add_metric_points(
        session, trial_id=trial.id, points=[{"step": 0, "epoch": 0.0, "train_loss": 1.0, "metric": 0.5}]
    )
    session.delete(repo.get_sweep(session, sweep_id=sweep.id))
    session.commit()
    assert session.scalar(sa.select(sa.func.count()).select_from(Trial)) == 0
    assert session.scalar(sa.select(sa.func.count()).select_from(MetricPoint)) == 0


def test_sqlite_engine_prepares_a_shareable_file(tmp_path):
    path = tmp_path / "nested" / "dir" / "store.db"
    engine = db.make_engine(f"sqlite:///{path}")
    try:
        assert path.parent.is_dir()
        assert not path.exists()  # making the engine does not connect
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 10_000
    finally:
        engine.dispose()


def test_postgresql_url_without_driver_uses_psycopg():
    assert db.normalize_url("postgresql://u@h/d").drivername == "postgresql+psycopg"
    assert db.normalize_url("sqlite:///x.db").drivername == "sqlite"


@pytest.mark.slow  # starts a Python process
def test_alembic_command_line_uses_the_packaged_ini(tmp_path):
    ini = Path(db.MIGRATIONS_DIR) / "alembic.ini"
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    env = {**os.environ, "NERO_STUDY_DATABASE_URL": url}
    completed = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ini), "upgrade", "head"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    engine = db.make_engine(url)
    try:
        assert db.current_revision(engine) == "0008"
    finally:
        engine.dispose()


def _insert_sweep(connection, sweep_id: str, status: str) -> None:
    connection.exec_driver_sql(
        "INSERT INTO sweeps (id, name, spec, status, created_at, updated_at, cancel_requested, attempts) "
        f"VALUES ('{sweep_id}', 'n', '{{}}', '{status}', '2026-11-01 00:00:00', '2026-11-01 00:00:00', false, 0)"
    )


def test_0005_admits_trials_failed_and_its_downgrade_stores_them_as_succeeded(empty_db_url):
    engine = db.make_engine(empty_db_url)
    config = db.alembic_config()
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "0003")
            _insert_sweep(connection, "old", "succeeded")
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as connection:
            _insert_sweep(connection, "early", "trials_failed")  # not a status before 0005
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "0005")
            _insert_sweep(connection, "partly", "trials_failed")
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as connection:
            _insert_sweep(connection, "bad", "half-done")  # the check still holds
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0003")
            statuses = dict(connection.exec_driver_sql("SELECT id, status FROM sweeps").all())
        assert statuses == {"old": "succeeded", "partly": "succeeded"}
    finally:
        engine.dispose()


def test_0005_keeps_every_trial_and_curve_point(empty_db_url):
    engine = db.make_engine(empty_db_url)
    config = db.alembic_config()
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "0003")
            _insert_sweep(connection, "s", "succeeded")
            connection.exec_driver_sql(
                "INSERT INTO trials (sweep_id, task, optimizer, label, lr, seed, budget, preset, hyperparameters, "
                "task_options, params_key, phase, status, attempt, created_at) VALUES ('s', 'digits-mlp', "
                "'adam', 'adam', 0.001, 0, 'smoke', 'paper', '{}', '{}', 'k', 'grid', 'failed', 0, "
                "'2026-11-01 00:00:00')"
            )
            trial_id = connection.exec_driver_sql("SELECT id FROM trials").scalar_one()
            connection.exec_driver_sql(
                f"INSERT INTO metric_points (trial_id, step, name, value) VALUES ({trial_id}, 3, 'metric', 0.5)"
            )
        db.upgrade(empty_db_url)
        with engine.connect() as connection:
            assert connection.exec_driver_sql("SELECT id, status FROM trials").all() == [(trial_id, "failed")]
            assert connection.exec_driver_sql("SELECT trial_id, step, name, value FROM metric_points").all() == [
                (trial_id, 3, "metric", 0.5)
            ]
    finally:
        engine.dispose()


def test_downgrades_keep_every_trial_and_curve_point(empty_db_url):
    """Each downgrade that drops a column keeps the rows hanging off that table (SQLite: no table copy that would
    cascade), and upgrading again finds them."""
    db.upgrade(empty_db_url)
    factory = db.session_factory(db.make_engine(empty_db_url))
    with factory() as session:
        sweep = repo.create_sweep(session, spec={}, name="kept")[0]
        (trial,) = repo.add_trials(session, sweep_id=sweep.id, trials=[{"task": "t", "optimizer": "sgd", "lr": 0.1}])
        repo.add_metric_points(
            session, trial_id=trial.id, points=[{"step": 0, "epoch": 0.0, "train_loss": 1.0, "metric": 0.5}]
        )
    engine = db.make_engine(empty_db_url)
    config = db.alembic_config()

    def counts() -> tuple[int, int, int]:
        with engine.connect() as connection:
            return tuple(
                connection.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one()
                for table in ("sweeps", "trials", "metric_points")
            )

    try:
        before = counts()
        assert before[1] == 1 and before[2] >= 1
        for revision in ("0007", "0006", "0005", "0004", "0003", "0002", "0001"):
            with engine.begin() as connection:
                config.attributes["connection"] = connection
                command.downgrade(config, revision)
            assert counts() == before, revision
        db.upgrade(empty_db_url)
        assert counts() == before
    finally:
        engine.dispose()


def test_0006_adds_the_workers_table_and_its_downgrade_drops_only_it(empty_db_url):
    db.upgrade(empty_db_url)
    engine = db.make_engine(empty_db_url)
    factory = db.session_factory(engine)
    config = db.alembic_config()
    try:
        with factory() as session:
            sweep = repo.create_sweep(session, spec={}, name="kept")[0]
            repo.record_worker(session, worker_id="w", host="h", pid=1, started_at=utc_now(), current_sweep=sweep.id)
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0005")
        tables = set(sa.inspect(engine).get_table_names())
        assert "workers" not in tables and {"sweeps", "trials", "metric_points", "api_tokens"} <= tables
        with engine.connect() as connection:
            assert connection.exec_driver_sql("SELECT count(*) FROM sweeps").scalar_one() == 1
        db.upgrade(empty_db_url)
        with factory() as session:
            assert repo.list_workers(session) == []  # a new, empty table
            repo.record_worker(session, worker_id="w", host="h", pid=2, started_at=utc_now(), current_sweep=None)
            repo.record_worker(session, worker_id="w", host="h", pid=3, started_at=utc_now(), current_sweep=None)
            (worker,) = repo.list_workers(session)  # an upsert: one row per worker
            assert worker.pid == 3
    finally:
        engine.dispose()
