"""Sweeps, trials, curves and tokens through nero_study.store.repo, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import math
from datetime import UTC

import pytest
import sqlalchemy as sa

from nero_study.store import repo
from nero_study.store.models import ApiToken, MetricPoint, Trial
from nero_study.tasks.base import EvalPoint, TrialResult, TrialSpec

SPEC = {"tasks": ["mlp"], "optimizers": ["nero", "adam"], "lr_grid": [0.01, 0.1], "seeds": [0]}


def trial_dicts(**overrides):
    """Four trial specs (two optimisers x two lrs) as the planner would hand them over."""
    trials = []
    for optimizer in ("nero", "adam"):
        for lr in (0.01, 0.1):
            spec = TrialSpec(task="mlp", optimizer=optimizer, lr=lr, hyperparameters={"beta": 0.999})
            trials.append({**spec.to_dict(), "phase": "grid", **overrides})
    return trials


# ------------------------------------------------------------------------------------------------ sweeps


def test_create_sweep_stores_spec_and_utc_timestamps(session, session_maker):
    sweep = repo.create_sweep(session, spec=SPEC, name="first")[0]
    with session_maker() as other:
        stored = repo.get_sweep(other, sweep_id=sweep.id)
    assert stored is not None
    assert (stored.name, stored.spec, stored.status, stored.attempts) == ("first", SPEC, "queued", 0)
    assert stored.cancel_requested is False
    assert len(stored.id) == 32
    assert stored.created_at.tzinfo is not None and stored.created_at.utcoffset().total_seconds() == 0
    assert stored.created_at.tzinfo == UTC


def test_same_idempotency_key_returns_the_existing_sweep(session):
    first = repo.create_sweep(session, spec=SPEC, name="s", idempotency_key="key-1")[0]
    again = repo.create_sweep(session, spec=dict(SPEC), name="s", idempotency_key="key-1")[0]
    other = repo.create_sweep(session, spec=SPEC, name="s", idempotency_key="key-2")[0]
    assert again.id == first.id
    assert other.id != first.id
    assert repo.list_sweeps(session)[1] == 2


def test_reusing_an_idempotency_key_for_another_sweep_is_refused(session):
    first = repo.create_sweep(session, spec=SPEC, name="s", idempotency_key="key")[0]
    with pytest.raises(repo.IdempotencyKeyReused) as info:
        repo.create_sweep(session, spec={**SPEC, "seeds": [0, 1]}, name="s", idempotency_key="key")[0]
    assert info.value.existing.id == first.id
    assert repo.list_sweeps(session)[1] == 1


def test_list_sweeps_pages_newest_first_and_filters_by_status(session):
    ids = [repo.create_sweep(session, spec=SPEC, name=f"s{i}")[0].id for i in range(5)]
    repo.request_cancel(session, sweep_id=ids[0])
    page, total = repo.list_sweeps(session, offset=1, limit=2)
    assert total == 5
    assert [s.id for s in page] == [ids[3], ids[2]]
    queued, queued_total = repo.list_sweeps(session, status="queued")
    assert queued_total == 4 and ids[0] not in {s.id for s in queued}
    assert [s.id for s in repo.list_sweeps(session, status=["cancelled"])[0]] == [ids[0]]


# ------------------------------------------------------------------------------------------------ trials


def test_add_trials_is_idempotent(session):
    sweep = repo.create_sweep(session, spec=SPEC, name="s")[0]
    first = repo.add_trials(session, sweep_id=sweep.id, trials=trial_dicts())
    # a restarted worker plans again, now with one more lr: only the new trial is inserted
    extra = {**TrialSpec(task="mlp", optimizer="nero", lr=1.0, hyperparameters={"beta": 0.999}).to_dict()}
    second = repo.add_trials(session, sweep_id=sweep.id, trials=[*trial_dicts(), extra, trial_dicts()[0]])
    assert len(first) == 4
    assert [t.id for t in second[:4]] == [t.id for t in first]
    assert len(second) == 5  # the repeated input row is returned once
    assert session.scalar(sa.select(sa.func.count()).select_from(Trial)) == 5
    assert repo.sweep_counts(session, sweep_id=sweep.id) == {
        "pending": 5, "running": 0, "succeeded": 0, "diverged": 0, "failed": 0, "cancelled": 0,
    }


def test_add_trials_fills_label_phase_and_key(session):
    sweep = repo.create_sweep(session, spec=SPEC, name="s")[0]
    plain, variant = repo.add_trials(
        session,
        sweep_id=sweep.id,
        trials=[
            {"task": "mlp", "optimizer": "nero", "lr": 0.01},
            {"task": "mlp", "optimizer": "nero", "lr": 0.01, "label": "nero-no-bias", "phase": "seeds",
             "hyperparameters": {"constraints": False}},
        ],
    )
    assert (plain.label, plain.phase, plain.seed, plain.status) == ("nero", "grid", 0, "pending")
    assert (variant.label, variant.phase, variant.hyperparameters) == ("nero-no-bias", "seeds",
                                                                        {"constraints": False})
    assert plain.params_key == repo.params_key({}, {})
    assert variant.params_key == repo.params_key({"constraints": False}, {})


def test_params_key_ignores_key_order_but_not_values():
    assert repo.params_key({"a": 1, "b": 2}, {"x": 3}) == repo.params_key({"b": 2, "a": 1}, {"x": 3})
    assert repo.params_key({"a": 1}, {}) != repo.params_key({"a": 2}, {})
    assert repo.params_key({"a": 1}, {}) != repo.params_key({}, {"a": 1})


def test_trials_differing_only_in_settings_are_distinct(session):
    sweep = repo.create_sweep(session, spec=SPEC, name="s")[0]
    rows = repo.add_trials(
        session,
        sweep_id=sweep.id,
        trials=[{"task": "mlp", "optimizer": "nero", "lr": 0.1, "task_options": {"width": w}} for w in (8, 16)],
    )
    assert len({t.id for t in rows}) == 2


def test_add_trials_rejects_an_unknown_phase(session):
    sweep = repo.create_sweep(session, spec=SPEC, name="s")[0]
    with pytest.raises(ValueError, match="Invalid trial phase: 'random'"):
        repo.add_trials(
            session, sweep_id=sweep.id, trials=[{"task": "mlp", "optimizer": "nero", "lr": 0.1, "phase": "random"}]
        )


def test_finish_trial_twice_counts_once(session):
    sweep = repo.create_sweep(session, spec=SPEC, name="s")[0]
    trial = repo.add_trials(session, sweep_id=sweep.id, trials=trial_dicts())[0]
    assert repo.mark_trial_running(session, trial_id=trial.id, attempt=1)
    assert repo.finish_trial(session, trial_id=trial.id, status="succeeded", metric=0.9, best_metric=0.95,
                             wall_s=1.5, device="cpu", steps=10, attempt=1)
    assert not repo.finish_trial(session, trial_id=trial.id, status="failed", metric=0.1, error="late")
    stored = repo.get_trial(session, trial_id=trial.id)
    assert (stored.status, stored.metric, stored.error, stored.steps) == ("succeeded", 0.9, None, 10)
    counts = repo.sweep_counts(session, sweep_id=sweep.id)
    assert counts["succeeded"] == 1 and counts["failed"] == 0 and counts["pending"] == 3
    assert [t.id for t in repo.pending_trials(session, sweep_id=sweep.id)] == [
        t.id for t in repo.list_trials(session, sweep_id=sweep.id)[0][1:]
    ]


def test_finish_trial_rejects_an_unknown_status(session):
    with pytest.raises(ValueError, match="Invalid trial status: 'done'"):
        repo.finish_trial(session, trial_id=1, status="done")


def test_results_of_a_superseded_attempt_are_ignored(session):
    sweep = repo.create_sweep(session, spec=SPEC, name="s")[0]
    trial = repo.add_trials(session, sweep_id=sweep.id, trials=trial_dicts())[0]
    point = {"step": 0, "epoch": 0.0, "train_loss": 2.0, "metric": 0.1}
    assert repo.mark_trial_running(session, trial_id=trial.id, attempt=1)
    assert repo.add_metric_points(session, trial_id=trial.id, points=[point], attempt=1) == 3
    # the worker died; the sweep was taken over (attempt 2), which restarts the trial and its curve
    assert repo.mark_trial_running(session, trial_id=trial.id, attempt=2)
    assert repo.trial_curve(session, trial_id=trial.id) == []
    assert not repo.mark_trial_running(session, trial_id=trial.id, attempt=1)
    assert repo.add_metric_points(session, trial_id=trial.id, points=[point], attempt=1) == 0
    assert not repo.finish_trial(session, trial_id=trial.id, status="succeeded", metric=0.5, attempt=1)
    # repeating "running" for the live attempt keeps its curve
    assert repo.add_metric_points(session, trial_id=trial.id, points=[{**point, "metric": 0.2}], attempt=2) == 3
    assert repo.mark_trial_running(session, trial_id=trial.id, attempt=2)
    assert repo.trial_curve(session, trial_id=trial.id)[0]["metric"] == 0.2
    assert repo.finish_trial(session, trial_id=trial.id, status="succeeded", metric=0.7, attempt=2)
    stored = repo.get_trial(session, trial_id=trial.id)
    assert (stored.status, stored.metric, stored.attempt) == ("succeeded", 0.7, 2)
    assert not repo.mark_trial_running(session, trial_id=trial.id, attempt=3)  # a result is kept


def test_metric_points_are_idempotent_and_read_back_as_a_curve(session):
    sweep = repo.create_sweep(session, spec=SPEC, name="s")[0]
    trial = repo.add_trials(session, sweep_id=sweep.id, trials=trial_dicts())[0]
    curve = [EvalPoint(step=0, epoch=0.0, train_loss=2.3, metric=0.1),
             EvalPoint(step=50, epoch=0.5, train_loss=1.1, metric=0.6)]
    repo.add_metric_points(session, trial_id=trial.id, points=curve)
    repo.add_metric_points(session, trial_id=trial.id, points=curve)  # the stream repeats itself
    repo.add_metric_points(
        session, trial_id=trial.id, points=[{"step": 50, "epoch": 0.5, "train_loss": 1.0, "metric": 0.65}]
    )
    assert session.scalar(sa.select(sa.func.count()).select_from(MetricPoint)) == 6
    found, points = repo.get_trial_with_curve(session, trial_id=trial.id)
    assert found.id == trial.id
    assert points == [
        {"step": 0, "epoch": 0.0, "train_loss": 2.3, "metric": 0.1},
        {"step": 50, "epoch": 0.5, "train_loss": 1.0, "metric": 0.65},
    ]
    assert repo.get_trial_with_curve(session, trial_id=10_000) is None


def test_record_trial_result_stores_a_trial_result_with_its_curve(session):
    sweep = repo.create_sweep(session, spec=SPEC, name="s")[0]
    trial = repo.add_trials(session, sweep_id=sweep.id, trials=trial_dicts())[0]
    spec = TrialSpec(task="mlp", optimizer="nero", lr=0.01)
    result = TrialResult(
        spec=spec, status="diverged", metric=math.nan, best_metric=0.3, initial_metric=0.1,
        metric_name="accuracy", lower_is_better=False,
        curve=[EvalPoint(0, 0.0, 2.3, 0.1), EvalPoint(10, 0.1, math.inf, math.nan)],
        wall_s=0.25, device="cpu", steps=10, error="training loss became inf at step 10",
    )
    repo.mark_trial_running(session, trial_id=trial.id, attempt=1)
    assert repo.record_trial_result(session, trial_id=trial.id, result=result, attempt=1)
    stored, curve = repo.get_trial_with_curve(session, trial_id=trial.id)
    assert stored.status == "diverged" and math.isnan(stored.metric) and stored.best_metric == 0.3
    assert (stored.metric_name, stored.lower_is_better, stored.wall_s, stored.device) == (
        "accuracy", False, 0.25, "cpu")
    assert curve[1]["train_loss"] == math.inf and math.isnan(curve[1]["metric"])


SPECIAL_VALUES = [math.nan, math.inf, -math.inf, None, 0.0, -1.5, 1e308, 5e-324]


def test_nan_and_infinities_round_trip(session, session_maker):
    sweep = repo.create_sweep(session, spec=SPEC, name="s")[0]
    rows = repo.add_trials(
        session,
        sweep_id=sweep.id,
        trials=[{"task": "mlp", "optimizer": "sgd", "lr": 0.1, "seed": i} for i in range(len(SPECIAL_VALUES))],
    )
    for trial, value in zip(rows, SPECIAL_VALUES, strict=True):
        repo.finish_trial(session, trial_id=trial.id, status="diverged", metric=value, best_metric=value,
                          initial_metric=value)
        repo.add_metric_points(session, trial_id=trial.id,
                               points=[{"step": 1, "epoch": 1.0, "train_loss": value, "metric": value}])

    def same(a, b):
        return (a is None and b is None) or (a is not None and b is not None and (a == b or (a != a and b != b)))

    with session_maker() as fresh:
        for trial, value in zip(rows, SPECIAL_VALUES, strict=True):
            stored, curve = repo.get_trial_with_curve(fresh, trial_id=trial.id)
            for got in (stored.metric, stored.best_metric, stored.initial_metric,
                        curve[0]["metric"], curve[0]["train_loss"]):
                assert same(got, value), (value, got)
        # both databases order NaN after +inf and compare it as larger than any number
        ordered = fresh.scalars(
            sa.select(Trial.metric).where(Trial.metric.is_not(None)).order_by(Trial.metric)
        ).all()
        assert ordered[:-1] == [-math.inf, -1.5, 0.0, 5e-324, 1e308, math.inf]
        assert math.isnan(ordered[-1])
        large = fresh.scalars(sa.select(Trial.seed).where(Trial.metric > 1e300).order_by(Trial.seed)).all()
        assert large == [0, 1, 6]


def test_trials_frame_has_one_row_per_trial_with_faithful_floats(session):
    sweep = repo.create_sweep(session, spec=SPEC, name="s")[0]
    empty = repo.trials_frame(session, sweep_id=sweep.id)
    assert list(empty.columns) == list(repo.TRIAL_FRAME_COLUMNS) and len(empty) == 0
    rows = repo.add_trials(session, sweep_id=sweep.id, trials=trial_dicts())
    repo.finish_trial(session, trial_id=rows[0].id, status="diverged", metric=math.inf, best_metric=math.nan)
    repo.finish_trial(session, trial_id=rows[1].id, status="succeeded", metric=0.8, best_metric=0.9)
    frame = repo.trials_frame(session, sweep_id=sweep.id)
    assert list(frame["id"]) == [t.id for t in rows]
    assert list(frame["status"]) == ["diverged", "succeeded", "pending", "pending"]
    assert frame["metric"].dtype == "float64"
    assert frame["metric"].iloc[0] == math.inf and math.isnan(frame["best_metric"].iloc[0])
    assert frame["lr"].tolist() == [0.01, 0.1, 0.01, 0.1]
    assert frame["hyperparameters"].iloc[0] == {"beta": 0.999}


def _frame_through_types(session, sweep_id):
    """The trials frame as read through every column's type (each value by the ORM, one row at a time): the
    reference that ``repo.trials_frame`` must equal."""
    import pandas as pd

    columns = [getattr(Trial, name) for name in repo.TRIAL_FRAME_COLUMNS]
    session.rollback()
    rows = session.execute(sa.select(*columns).where(Trial.sweep_id == sweep_id).order_by(Trial.id)).all()
    session.rollback()
    frame = pd.DataFrame([tuple(row) for row in rows], columns=list(repo.TRIAL_FRAME_COLUMNS))
    for name in ("lr", "metric", "best_metric", "initial_metric", "wall_s"):
        frame[name] = frame[name].astype("float64")
    return frame


def _assert_same_frame(frame, reference):
    import pandas as pd

    pd.testing.assert_frame_equal(frame, reference, check_exact=True)
    assert frame.dtypes.to_dict() == reference.dtypes.to_dict()
    for name in reference.columns:  # the same values of the same types, cell by cell (NaN as NaN)
        got, want = frame[name].tolist(), reference[name].tolist()
        assert [type(value) for value in got] == [type(value) for value in want], name
        assert repr(got) == repr(want), name


def test_trials_frame_equals_reading_each_value_through_its_type(session):
    sweep = repo.create_sweep(session, spec=SPEC, name="s")[0]
    _assert_same_frame(repo.trials_frame(session, sweep_id=sweep.id), _frame_through_types(session, sweep.id))
    rows = repo.add_trials(session, sweep_id=sweep.id, trials=trial_dicts())
    # Only pending trials: no start or finish times, no metrics (columns of None).
    _assert_same_frame(repo.trials_frame(session, sweep_id=sweep.id), _frame_through_types(session, sweep.id))
    repo.mark_trial_running(session, trial_id=rows[0].id, attempt=1)
    repo.finish_trial(
        session, trial_id=rows[0].id, status="diverged", metric=math.nan, best_metric=-math.inf, initial_metric=2.5,
        metric_name="loss", lower_is_better=True, wall_s=1.25, steps=7, device="cpu",
    )  # fmt: skip
    repo.finish_trial(
        session, trial_id=rows[1].id, status="succeeded", metric=5e-324, best_metric=math.inf,
        metric_name="return", lower_is_better=False, error="a note",
    )  # fmt: skip
    repo.finish_trial(session, trial_id=rows[2].id, status="failed", error="out of memory")
    _assert_same_frame(repo.trials_frame(session, sweep_id=sweep.id), _frame_through_types(session, sweep.id))


def test_list_trials_filters_and_pages(session):
    sweep = repo.create_sweep(session, spec=SPEC, name="s")[0]
    rows = repo.add_trials(session, sweep_id=sweep.id, trials=trial_dicts())
    repo.finish_trial(session, trial_id=rows[2].id, status="succeeded", metric=0.5)
    adam, total = repo.list_trials(session, sweep_id=sweep.id, optimizer="adam")
    assert total == 2 and {t.optimizer for t in adam} == {"adam"}
    done, total = repo.list_trials(session, sweep_id=sweep.id, status="succeeded")
    assert total == 1 and done[0].id == rows[2].id
    page, total = repo.list_trials(session, sweep_id=sweep.id, offset=1, limit=2)
    assert total == 4 and [t.id for t in page] == [rows[1].id, rows[2].id]
    assert repo.list_trials(session, sweep_id=sweep.id, label="nero", task="other") == ([], 0)


# ------------------------------------------------------------------------------------------------ tokens


def test_tokens_are_stored_hashed_and_verified(session):
    token, clear = repo.create_token(session, name="ci")
    assert len(clear) >= 32
    assert token.token_hash == hashlib.sha256(clear.encode()).hexdigest()
    stored_values = [str(v) for row in session.execute(sa.select(ApiToken.__table__)).all() for v in row]
    assert not any(clear in value for value in stored_values)
    assert repo.verify_token(session, token=clear)
    assert repo.list_tokens(session)[0].last_used_at is not None
    assert not repo.verify_token(session, token=clear + "x")
    assert not repo.verify_token(session, token="")
    assert not repo.verify_token(session, token=token.token_hash)  # the digest is not a token
    assert repo.revoke_token(session, token_id=token.id)
    assert not repo.verify_token(session, token=clear)
    _, second = repo.create_token(session, name="other")
    assert second != clear and repo.verify_token(session, token=second)


def test_mean_trial_seconds_counts_succeeded_trials_of_the_task_and_budget(session):
    """What the scheduler orders bundles by: per task, the mean wall time of its succeeded trials at one budget,
    over every sweep; diverged and failed trials (which end early) and other budgets do not count."""
    rows = [
        ("a", "smoke", "succeeded", 1.0),
        ("a", "smoke", "succeeded", 3.0),
        ("a", "smoke", "diverged", 100.0),
        ("a", "proxy", "succeeded", 50.0),
        ("b", "smoke", "failed", 7.0),
        ("c", "smoke", "succeeded", 0.5),
    ]
    for index, (task, budget, status, wall_s) in enumerate(rows):
        sweep = repo.create_sweep(session, spec=SPEC, name=f"s{index}")[0]
        (trial,) = repo.add_trials(
            session, sweep_id=sweep.id, trials=[{"task": task, "optimizer": "sgd", "lr": 0.1, "budget": budget}]
        )
        repo.finish_trial(session, trial_id=trial.id, status=status, metric=0.5, wall_s=wall_s, attempt=1)
    # Means of small binary fractions: exact in floating point.
    assert repo.mean_trial_seconds(session, tasks=["a", "b", "c"], budget="smoke") == {"a": 2.0, "c": 0.5}
    assert repo.mean_trial_seconds(session, tasks=["a"], budget="proxy") == {"a": 50.0}
    assert repo.mean_trial_seconds(session, tasks=[], budget="smoke") == {}
