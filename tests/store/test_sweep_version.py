"""A sweep's version, and the validators and cache built on it, on SQLite and PostgreSQL.

The version goes up with every write that changes what the sweep shows and with nothing else; the sweep page,
``figures.json``, ``/analysis`` and the report carry an ``ETag`` made from it, answer ``304`` with no body to
``If-None-Match`` while it holds, and never answer from what was computed for an older version. The HTTP tests
live here, beside the store tests, because they run the real app on both databases (the store fixtures).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from api.main import create_app
from dashboards import pages
from dashboards.snapshot import load_sweep_snapshot
from nero_study.settings import Settings
from nero_study.store import repo

SPEC = {
    "name": "versioned",
    "tasks": ["digits-mlp"],
    "optimizers": ["nero", "adam"],
    "lrs": [0.001, 0.01, 0.1],
    "seeds": [0],
    "budget": "smoke",
}
OWNER = "tests"


def _trial(optimizer: str, lr: float) -> dict:
    return {"task": "digits-mlp", "optimizer": optimizer, "label": optimizer, "lr": lr, "seed": 0, "budget": "smoke"}


def _running_sweep(session: Session) -> str:
    sweep, _ = repo.create_sweep(session, spec=SPEC, name="versioned", planned_trials=6)
    assert repo.claim_sweep(session, sweep_id=sweep.id, owner=OWNER, lease_seconds=3600) is not None
    return sweep.id


def _finish(session: Session, trial_id: int, metric: float) -> bool:
    return repo.finish_trial(
        session,
        trial_id=trial_id,
        status="succeeded",
        metric=metric,
        best_metric=metric,
        initial_metric=0.9,
        metric_name="test_error",
        lower_is_better=True,
        curve=[{"step": 10, "metric": 0.5, "train_loss": 1.0}, {"step": 20, "metric": metric, "train_loss": 0.5}],
    )


def _succeeded_shown(html: str) -> int:
    """The number of succeeded trials a sweep page's summary shows."""
    found = re.search(r"count-succeeded\".*?<b>(\d+)</b>", html, flags=re.S)
    assert found is not None
    return int(found.group(1))


def _version(session: Session, sweep_id: str) -> int:
    version = repo.get_sweep_version(session, sweep_id=sweep_id)
    assert version is not None
    return version


# --------------------------------------------------------------------------------------------- the store


def test_every_change_raises_the_version_and_nothing_else_does(session: Session) -> None:
    sweep_id = _running_sweep(session)
    seen = [_version(session, sweep_id)]
    trials_seen = [repo.get_sweep(session, sweep_id=sweep_id).trials_version]

    def changed(*, trials: bool = True) -> None:
        seen.append(_version(session, sweep_id))
        assert seen[-1] > seen[-2]
        assert (repo.get_sweep(session, sweep_id=sweep_id).trials_version > trials_seen[-1]) is trials
        trials_seen.append(repo.get_sweep(session, sweep_id=sweep_id).trials_version)

    def unchanged() -> None:
        assert _version(session, sweep_id) == seen[-1]

    (first, _) = repo.add_trials(session, sweep_id=sweep_id, trials=[_trial("nero", 0.01), _trial("adam", 0.01)])
    changed()  # trials added
    repo.add_trials(session, sweep_id=sweep_id, trials=[_trial("nero", 0.01)])
    unchanged()  # the same trial again: nothing inserted
    assert repo.mark_trial_running(session, trial_id=first.id, attempt=1)
    changed()  # a trial started
    assert repo.mark_trial_running(session, trial_id=first.id, attempt=1)
    unchanged()  # started again under the same attempt: a no-op
    assert repo.add_metric_points(session, trial_id=first.id, points=[{"step": 5, "metric": 0.7}], attempt=1) == 1
    changed(trials=False)  # a curve point added: the trial rows are as they were
    assert repo.add_metric_points(session, trial_id=first.id, points=[{"step": 6, "metric": 0.6}], attempt=0) == 0
    unchanged()  # a point of a superseded attempt is ignored
    assert _finish(session, first.id, 0.2)
    changed()  # a trial finished
    assert not _finish(session, first.id, 0.1)
    unchanged()  # finishing twice is not applied
    assert repo.renew_lease(session, sweep_id=sweep_id, owner=OWNER, lease_seconds=60)
    unchanged()  # a lease renewal changes nothing shown
    repo.get_sweep(session, sweep_id=sweep_id)
    repo.trials_frame(session, sweep_id=sweep_id)
    unchanged()  # reads
    assert repo.request_cancel(session, sweep_id=sweep_id) is not None
    changed(trials=False)  # a cancel request (the sweep's own row)
    repo.request_cancel(session, sweep_id=sweep_id)
    unchanged()  # asked again: nothing new
    assert repo.cancel_pending_trials(session, sweep_id=sweep_id) == 1
    changed()  # the pending trial cancelled
    assert repo.cancel_pending_trials(session, sweep_id=sweep_id) == 0
    unchanged()
    assert repo.finish_sweep(session, sweep_id=sweep_id, owner=OWNER, status="cancelled")
    changed(trials=False)  # the sweep ended
    assert repo.get_sweep_version(session, sweep_id="no-such-sweep") is None


def test_queue_transitions_raise_the_version(session: Session) -> None:
    sweep, _ = repo.create_sweep(session, spec=SPEC, name="queued")
    before = _version(session, sweep.id)
    claimed = repo.claim_next_sweep(session, owner=OWNER, lease_seconds=3600)
    assert claimed is not None and claimed.id == sweep.id and claimed.version > before
    assert repo.release_sweep(session, sweep_id=sweep.id, owner=OWNER)
    assert _version(session, sweep.id) > claimed.version
    queued_again = _version(session, sweep.id)
    other, _ = repo.create_sweep(session, spec=SPEC, name="cancelled while queued")
    assert repo.request_cancel(session, sweep_id=other.id).status == "cancelled"
    assert _version(session, other.id) > 0
    assert _version(session, sweep.id) == queued_again  # another sweep's writes leave this one alone


def test_sweep_versions_lists_the_sweeps_in_a_status_with_their_versions(session: Session) -> None:
    """What ``/findings`` is keyed on: (id, version) of every sweep in the given statuses, by id."""
    done = _running_sweep(session)
    assert repo.finish_sweep(session, sweep_id=done, owner=OWNER, status="succeeded")
    running = _running_sweep(session)
    queued, _ = repo.create_sweep(session, spec=SPEC, name="queued")
    assert repo.sweep_versions(session, status=("succeeded", "trials_failed")) == [(done, _version(session, done))]
    everything = repo.sweep_versions(session, status=("succeeded", "running", "queued"))
    assert everything == sorted((sweep_id, _version(session, sweep_id)) for sweep_id in (done, running, queued.id))
    (row,) = repo.add_trials(session, sweep_id=running, trials=[_trial("nero", 0.01)])
    assert _finish(session, row.id, 0.2)
    assert dict(repo.sweep_versions(session, status=("running",)))[running] == _version(session, running)
    assert repo.sweep_versions(session, status=("failed",)) == []


# ------------------------------------------------------------------------------------------------ HTTP


@pytest.fixture
def client(db_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(database_url=db_url, api_tokens="t"))) as test_client:
        yield test_client


REPRESENTATIONS = ("/sweeps/{id}", "/sweeps/{id}/figures.json", "/api/sweeps/{id}/analysis", "/sweeps/{id}/report.html")


@pytest.mark.parametrize("path", REPRESENTATIONS)
def test_an_unchanged_sweep_answers_304_with_no_body_and_a_changed_one_the_new_state(
    client: TestClient, session: Session, path: str
) -> None:
    sweep_id = _running_sweep(session)
    (first, second) = repo.add_trials(session, sweep_id=sweep_id, trials=[_trial("nero", 0.01), _trial("adam", 0.1)])
    assert _finish(session, first.id, 0.2)
    url = path.format(id=sweep_id)

    answer = client.get(url)
    assert answer.status_code == 200
    tag = answer.headers["etag"]
    assert answer.headers["cache-control"] == "no-cache"
    again = client.get(url, headers={"If-None-Match": tag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == tag
    assert client.get(url, headers={"If-None-Match": '"something-else"'}).status_code == 200

    assert _finish(session, second.id, 0.3)  # a write: the next answer must show it
    fresh = client.get(url, headers={"If-None-Match": tag})
    assert fresh.status_code == 200 and fresh.headers["etag"] != tag
    if path.endswith("analysis"):
        assert (answer.json()["finished_trials"], fresh.json()["finished_trials"]) == (1, 2)
    elif path.endswith("figures.json"):
        assert (answer.json()["counts"]["succeeded"], fresh.json()["counts"]["succeeded"]) == (1, 2)
    else:
        assert (_succeeded_shown(answer.text), _succeeded_shown(fresh.text)) == (1, 2)
    assert client.get(url, headers={"If-None-Match": fresh.headers["etag"]}).status_code == 304


def test_a_curve_point_changes_the_etag_and_the_analysis_is_computed_once_per_version(
    client: TestClient, session: Session
) -> None:
    sweep_id = _running_sweep(session)
    (trial,) = repo.add_trials(session, sweep_id=sweep_id, trials=[_trial("nero", 0.01)])
    assert _finish(session, trial.id, 0.2)
    cache = client.app.state.sweep_view_cache
    builds = cache.snapshots.builds

    page = client.get(f"/sweeps/{sweep_id}")
    figures = client.get(f"/sweeps/{sweep_id}/figures.json")
    analysis = client.get(f"/api/sweeps/{sweep_id}/analysis")
    client.get(f"/sweeps/{sweep_id}/figures.json")  # a second viewer, no validator
    assert {page.status_code, figures.status_code, analysis.status_code} == {200}
    assert cache.snapshots.builds == builds + 1  # one read and analysis of the sweep for all of them

    repo.add_metric_points(session, trial_id=trial.id, points=[{"step": 30, "metric": 0.15, "train_loss": 0.25}])
    after = client.get(f"/sweeps/{sweep_id}/figures.json", headers={"If-None-Match": figures.headers["etag"]})
    assert after.status_code == 200 and after.headers["etag"] != figures.headers["etag"]
    assert cache.snapshots.builds == builds + 2
    traces = after.json()["figures"]["curves"]["data"]
    assert traces and all(30 in trace["x"] for trace in traces if trace.get("x"))  # the new point is drawn
    # Only the curves were drawn again; every figure is what drawing them all from the store gives.
    snapshot = load_sweep_snapshot(session, sweep_id=sweep_id)
    assert after.json()["figures"] == json.loads(JSONResponse(pages.sweep_figures(snapshot)).body)


def test_the_live_page_carries_the_validator_of_its_poll(client: TestClient, session: Session) -> None:
    sweep_id = _running_sweep(session)
    (trial,) = repo.add_trials(session, sweep_id=sweep_id, trials=[_trial("nero", 0.01)])
    page = client.get(f"/sweeps/{sweep_id}")
    live = page.text.split('id="page-live">', 1)[1].split("</script>", 1)[0]
    poll = client.get(f"/sweeps/{sweep_id}/figures.json")
    assert poll.headers["etag"] in live.replace("\\u0022", '"').replace('\\"', '"')
    assert _finish(session, trial.id, 0.4)
    assert (
        client.get(f"/sweeps/{sweep_id}/figures.json", headers={"If-None-Match": poll.headers["etag"]}).status_code
        == 200
    )
    # A report is stamped with the time it was generated: its validator is weak.
    report = client.get(f"/sweeps/{sweep_id}/report.html")
    assert report.headers["etag"].startswith("W/")
    assert client.get("/sweeps/nope/figures.json", headers={"If-None-Match": "*"}).status_code == 404


def test_a_frame_read_since_a_version_equals_a_full_read_after_every_kind_of_write(session: Session) -> None:
    """``trials_frame(previous=, as_of=)`` reads only the rows changed since ``as_of`` (``Trial.changed_version``)
    and gives the frame a full read gives: the same values and dtypes, after each write that changes trial rows
    (added, started, finished in each way, given back, cancelled) and through the columns whose dtype pandas
    infers from the rows (steps, lower_is_better, error, device, the times) changing from all missing to some
    to none. Rows no write changed since ``as_of`` come from ``previous``: a mark left in them stays."""
    import math

    import pandas as pd

    sweep_id = _running_sweep(session)
    mark = -12345.0  # in ``wall_s`` of every previous row: the rows read again lose it
    state: dict = {"frame": None, "as_of": None}

    def check(what: str, *, changed_ids: set[int] | None = None) -> None:
        as_of = repo.get_sweep(session, sweep_id=sweep_id).trials_version
        full = repo.trials_frame(session, sweep_id=sweep_id)
        if state["frame"] is not None:
            previous = state["frame"].assign(wall_s=mark)
            since = repo.trials_frame(session, sweep_id=sweep_id, previous=previous, as_of=state["as_of"])
            read_again = set(since.loc[since["wall_s"] != mark, "id"])
            if changed_ids is not None:
                assert read_again == changed_ids, what
            expected = full.copy()
            unchanged = ~expected["id"].isin(read_again)
            expected.loc[unchanged, "wall_s"] = mark
            pd.testing.assert_frame_equal(since, expected, check_exact=True, obj=what)
            assert list(since.dtypes) == list(full.dtypes), what
        state["frame"], state["as_of"] = full, as_of
        for name in ("steps", "lower_is_better", "started_at", "error"):
            state.setdefault("dtypes", {}).setdefault(name, set()).add(str(full[name].dtype))

    check("empty")
    trials = repo.add_trials(session, sweep_id=sweep_id, trials=[_trial("nero", lr) for lr in (0.001, 0.01, 0.1)])
    ids = [trial.id for trial in trials]
    check("trials added")  # from an empty frame: read in full
    assert repo.mark_trial_running(session, trial_id=ids[0], attempt=1)
    check("one started", changed_ids={ids[0]})
    assert repo.add_metric_points(session, trial_id=ids[0], points=[{"step": 5, "metric": 0.7}], attempt=1) == 1
    check("a curve point", changed_ids=set())
    assert repo.finish_trial(session, trial_id=ids[0], status="succeeded", metric=0.2, lower_is_better=True, steps=2)
    check("one finished", changed_ids={ids[0]})
    assert repo.mark_trial_running(session, trial_id=ids[1], attempt=1)
    assert repo.finish_trial(
        session,
        trial_id=ids[1],
        status="failed",
        error="RuntimeError: boom",
        device="cpu",
        wall_s=1.5,
        steps=7,
        lower_is_better=True,
    )
    check("one failed (a first error and device)", changed_ids={ids[1]})
    assert repo.mark_trial_running(session, trial_id=ids[2], attempt=1)
    check("the last started")
    more = repo.add_trials(session, sweep_id=sweep_id, trials=[_trial("adam", lr) for lr in (0.01, 0.1)])
    check("trials added to a read frame", changed_ids={trial.id for trial in more})
    assert repo.release_sweep(session, sweep_id=sweep_id, owner=OWNER)
    check("given back: running trials pending again", changed_ids={ids[2]})
    assert repo.claim_sweep(session, sweep_id=sweep_id, owner=OWNER, lease_seconds=3600) is not None
    for trial_id in (ids[2], more[0].id):
        assert repo.mark_trial_running(session, trial_id=trial_id, attempt=2)
    check("two started again", changed_ids={ids[2], more[0].id})
    assert repo.finish_trial(
        session, trial_id=ids[2], status="diverged", metric=math.nan, lower_is_better=True, steps=3, attempt=2
    )
    assert repo.finish_trial(
        session,
        trial_id=more[0].id,
        status="succeeded",
        metric=0.1,
        steps=5,
        attempt=2,
        lower_is_better=True,
    )
    check("diverged (NaN) and succeeded", changed_ids={ids[2], more[0].id})
    assert repo.cancel_pending_trials(session, sweep_id=sweep_id) == 1
    check("the pending one cancelled", changed_ids={more[1].id})
    assert repo.mark_trial_running(session, trial_id=more[1].id, attempt=3)
    assert repo.finish_trial(
        session, trial_id=more[1].id, status="succeeded", metric=0.3, steps=4, lower_is_better=True
    )
    check("the cancelled one run again", changed_ids={more[1].id})
    (last,) = repo.add_trials(session, sweep_id=sweep_id, trials=[_trial("adam", 0.001)])
    check("a trial added to a finished grid", changed_ids={last.id})
    assert repo.finish_sweep(session, sweep_id=sweep_id, owner=OWNER, status="failed", error="stopped")
    check("the sweep failed: its pending trial cancelled", changed_ids={last.id})
    assert repo.claim_sweep(session, sweep_id=sweep_id, owner=OWNER, lease_seconds=3600) is not None
    check("run again: no trial row changes", changed_ids=set())
    assert repo.mark_trial_running(session, trial_id=last.id, attempt=4)
    assert repo.finish_trial(session, trial_id=last.id, status="succeeded", metric=0.5, steps=1, lower_is_better=True)
    check("the cancelled one finished", changed_ids={last.id})
    seen = state["dtypes"]
    assert {"object", "float64", "int64"} <= seen["steps"] and {"object", "bool"} <= seen["lower_is_better"], seen
    assert {"object"} < seen["started_at"] and {"object"} < seen["error"], seen
