"""The sweeps table as a work queue: atomic claims, leases, takeover after a crash, cancellation."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections import Counter
from datetime import timedelta

import pytest

from nero_study.store import repo
from nero_study.store.models import utc_now

SPEC = {"tasks": ["mlp"], "optimizers": ["nero"]}


def make_sweeps(session, count: int) -> list[str]:
    return [repo.create_sweep(session, spec=SPEC, name=f"s{i}")[0].id for i in range(count)]


def test_claim_takes_the_oldest_queued_sweep_once(session):
    first, second = make_sweeps(session, 2)
    claimed = repo.claim_next_sweep(session, owner="w1", lease_seconds=30, execution="ray")
    assert claimed.id == first
    assert (claimed.status, claimed.lease_owner, claimed.attempts, claimed.execution) == ("running", "w1", 1, "ray")
    assert claimed.started_at is not None and claimed.lease_expires_at > claimed.started_at
    assert repo.claim_next_sweep(session, owner="w2", lease_seconds=30).id == second
    assert repo.claim_next_sweep(session, owner="w3", lease_seconds=30) is None


def test_live_lease_is_kept_and_expired_lease_is_taken_over(session):
    (sweep_id,) = make_sweeps(session, 1)
    start = utc_now()
    assert repo.claim_next_sweep(session, owner="a", lease_seconds=30, now=start).id == sweep_id
    assert repo.claim_next_sweep(session, owner="b", lease_seconds=30, now=start + timedelta(seconds=10)) is None
    assert repo.renew_lease(session, sweep_id=sweep_id, owner="a", lease_seconds=30,
                            now=start + timedelta(seconds=20))
    # still alive thanks to the heartbeat (expires at start + 50 s)
    assert repo.claim_next_sweep(session, owner="b", lease_seconds=30, now=start + timedelta(seconds=45)) is None
    # worker a died: its lease runs out and b takes the sweep over
    taken = repo.claim_next_sweep(session, owner="b", lease_seconds=30, now=start + timedelta(seconds=51))
    assert taken is not None and taken.id == sweep_id
    assert (taken.lease_owner, taken.attempts, taken.status) == ("b", 2, "running")
    assert taken.started_at == start  # the first start is kept
    # a's late heartbeat and finish are refused
    assert not repo.renew_lease(session, sweep_id=sweep_id, owner="a", lease_seconds=30)
    assert not repo.finish_sweep(session, sweep_id=sweep_id, owner="a", status="failed", error="late")
    assert repo.finish_sweep(session, sweep_id=sweep_id, owner="b", status="succeeded")
    done = repo.get_sweep(session, sweep_id=sweep_id)
    assert (done.status, done.error, done.lease_expires_at) == ("succeeded", None, None)
    assert done.finished_at is not None
    assert not repo.renew_lease(session, sweep_id=sweep_id, owner="b", lease_seconds=30)
    assert repo.claim_next_sweep(session, owner="c", lease_seconds=30, now=start + timedelta(days=1)) is None


def test_takeover_keeps_finished_trials_and_reruns_the_rest(session):
    (sweep_id,) = make_sweeps(session, 1)
    start = utc_now()
    first = repo.claim_next_sweep(session, owner="a", lease_seconds=5, now=start)
    trials = repo.add_trials(
        session, sweep_id=sweep_id, trials=[{"task": "mlp", "optimizer": "nero", "lr": lr} for lr in (0.01, 0.1, 1.0)]
    )
    for trial in trials[:2]:
        repo.mark_trial_running(session, trial_id=trial.id, attempt=first.attempts)
    repo.finish_trial(session, trial_id=trials[0].id, status="succeeded", metric=0.9, attempt=first.attempts)
    second = repo.claim_next_sweep(session, owner="b", lease_seconds=5, now=start + timedelta(seconds=6))
    assert second.attempts == 2
    # planning again inserts nothing; what is left is the running (orphaned) and the pending trial
    assert [t.id for t in repo.add_trials(session, sweep_id=sweep_id, trials=[
        {"task": "mlp", "optimizer": "nero", "lr": lr} for lr in (0.01, 0.1, 1.0)])] == [t.id for t in trials]
    assert [t.id for t in repo.pending_trials(session, sweep_id=sweep_id)] == [trials[1].id, trials[2].id]


def test_release_puts_a_sweep_back_in_the_queue(session):
    (sweep_id,) = make_sweeps(session, 1)
    repo.claim_next_sweep(session, owner="a", lease_seconds=30)
    assert not repo.release_sweep(session, sweep_id=sweep_id, owner="b")
    assert repo.release_sweep(session, sweep_id=sweep_id, owner="a")
    again = repo.claim_next_sweep(session, owner="b", lease_seconds=30)
    assert again.id == sweep_id and again.attempts == 2


def test_slot_use_adds_up_over_the_attempts_that_report_it(session):
    (sweep_id,) = make_sweeps(session, 1)
    assert repo.get_sweep(session, sweep_id=sweep_id).slot_utilisation is None  # not measured yet
    repo.claim_next_sweep(session, owner="a", lease_seconds=30)
    assert repo.release_sweep(session, sweep_id=sweep_id, owner="a", slot_use=(3.0, 4.0))  # a shutdown mid-sweep
    repo.claim_next_sweep(session, owner="b", lease_seconds=30)
    assert not repo.finish_sweep(session, sweep_id=sweep_id, owner="a", status="succeeded", slot_use=(9.0, 9.0))
    assert repo.finish_sweep(session, sweep_id=sweep_id, owner="b", status="succeeded", slot_use=(6.0, 8.0))
    sweep = repo.get_sweep(session, sweep_id=sweep_id)
    # Sums of small integers: exact in binary floating point.
    assert (sweep.busy_slot_s, sweep.slot_s, sweep.slot_utilisation) == (9.0, 12.0, 0.75)


def test_a_run_that_had_no_slot_time_leaves_the_slot_use_as_it_was(session):
    (sweep_id,) = make_sweeps(session, 1)
    repo.claim_next_sweep(session, owner="a", lease_seconds=30)
    assert repo.finish_sweep(session, sweep_id=sweep_id, owner="a", status="succeeded", slot_use=(0.0, 0.0))
    sweep = repo.get_sweep(session, sweep_id=sweep_id)
    assert (sweep.busy_slot_s, sweep.slot_s, sweep.slot_utilisation) == (None, None, None)


def test_a_released_sweep_keeps_its_results_and_its_interrupted_trials_wait_again(session):
    (sweep_id,) = make_sweeps(session, 1)
    repo.claim_next_sweep(session, owner="a", lease_seconds=30)
    done, interrupted, waiting = repo.add_trials(
        session, sweep_id=sweep_id, trials=[{"task": "mlp", "optimizer": "nero", "lr": lr} for lr in (0.01, 0.1, 1.0)]
    )
    repo.mark_trial_running(session, trial_id=done.id, attempt=1)
    repo.finish_trial(session, trial_id=done.id, status="succeeded", metric=0.5, attempt=1)
    repo.mark_trial_running(session, trial_id=interrupted.id, attempt=1)
    assert repo.release_sweep(session, sweep_id=sweep_id, owner="a")
    assert repo.get_sweep(session, sweep_id=sweep_id).status == "queued"
    statuses = {trial.lr: trial.status for trial in repo.list_trials(session, sweep_id=sweep_id)[0]}
    assert statuses == {0.01: "succeeded", 0.1: "pending", 1.0: "pending"}  # a queued sweep runs nothing


def test_finish_sweep_rejects_an_unknown_status(session):
    with pytest.raises(ValueError, match="Invalid sweep status: 'done'"):
        repo.finish_sweep(session, sweep_id="x", owner="a", status="done")


def test_cancelling_a_queued_sweep_cancels_it_at_once(session):
    sweep_id, other = make_sweeps(session, 2)
    repo.add_trials(session, sweep_id=sweep_id, trials=[{"task": "mlp", "optimizer": "nero", "lr": 0.1}])
    cancelled = repo.request_cancel(session, sweep_id=sweep_id)
    assert (cancelled.status, cancelled.cancel_requested) == ("cancelled", True)
    assert cancelled.finished_at is not None
    assert repo.sweep_counts(session, sweep_id=sweep_id)["cancelled"] == 1
    assert repo.claim_next_sweep(session, owner="w", lease_seconds=30).id == other
    assert repo.request_cancel(session, sweep_id="no-such-sweep") is None


def test_cancelling_a_running_sweep_is_seen_by_its_worker(session, session_maker):
    (sweep_id,) = make_sweeps(session, 1)
    repo.claim_next_sweep(session, owner="w", lease_seconds=30)
    trials = repo.add_trials(
        session, sweep_id=sweep_id, trials=[{"task": "mlp", "optimizer": "nero", "lr": lr} for lr in (0.01, 0.1, 1.0)]
    )
    repo.mark_trial_running(session, trial_id=trials[1].id, attempt=1)
    repo.finish_trial(session, trial_id=trials[0].id, status="succeeded", metric=0.5)
    assert not repo.is_cancel_requested(session, sweep_id=sweep_id)
    with session_maker() as api_session:  # the request comes from another connection
        running = repo.request_cancel(api_session, sweep_id=sweep_id)
        assert (running.status, running.cancel_requested) == ("running", True)
    assert repo.is_cancel_requested(session, sweep_id=sweep_id)
    assert repo.cancel_pending_trials(session, sweep_id=sweep_id) == 2
    assert repo.finish_sweep(session, sweep_id=sweep_id, owner="w", status="cancelled")
    counts = repo.sweep_counts(session, sweep_id=sweep_id)
    assert (counts["succeeded"], counts["cancelled"], counts["pending"], counts["running"]) == (1, 2, 0, 0)
    finished = repo.request_cancel(session, sweep_id=sweep_id)  # cancelling a finished sweep changes nothing
    assert finished.status == "cancelled"
    assert repo.is_cancel_requested(session, sweep_id="no-such-sweep")


def test_cancelling_a_sweep_whose_lease_expired_ends_it_at_once(session, session_maker):
    """Its worker is gone (no renewal): the cancel does not wait for a claimer; judged at a given ``now``."""
    (sweep_id,) = make_sweeps(session, 1)
    start = utc_now()
    repo.claim_next_sweep(session, owner="dead", lease_seconds=30, now=start)
    trials = repo.add_trials(
        session, sweep_id=sweep_id, trials=[{"task": "mlp", "optimizer": "nero", "lr": lr} for lr in (0.01, 0.1, 1.0)]
    )
    repo.finish_trial(session, trial_id=trials[0].id, status="succeeded", metric=0.5)
    repo.mark_trial_running(session, trial_id=trials[1].id, attempt=1)
    with session_maker() as api_session:
        live = repo.request_cancel(api_session, sweep_id=sweep_id, now=start + timedelta(seconds=29))
        assert (live.status, live.lease_owner) == ("running", "dead")  # within the lease: cooperative
        gone = repo.request_cancel(api_session, sweep_id=sweep_id, now=start + timedelta(seconds=31))
        assert (gone.status, gone.lease_owner, gone.lease_expires_at) == ("cancelled", None, None)
    counts = repo.sweep_counts(session, sweep_id=sweep_id)
    assert (counts["succeeded"], counts["cancelled"], counts["pending"], counts["running"]) == (1, 2, 0, 0)
    assert not repo.renew_lease(session, sweep_id=sweep_id, owner="dead", lease_seconds=30)  # a late worker: lost
    assert repo.claim_next_sweep(session, owner="w2", lease_seconds=30, now=start + timedelta(seconds=60)) is None


def test_concurrent_claimers_never_share_a_sweep(session, session_maker):
    """Several workers, each on its own connection, claim at the same moment: every sweep goes to one."""
    sweep_ids = make_sweeps(session, 12)
    workers = 6
    barrier = threading.Barrier(workers)
    claims: list[tuple[str, str]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(owner: str) -> None:
        try:
            with session_maker() as own:
                barrier.wait(timeout=30)
                while (sweep := repo.claim_next_sweep(own, owner=owner, lease_seconds=60)) is not None:
                    with lock:
                        claims.append((sweep.id, owner))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    counts = Counter(sweep_id for sweep_id, _ in claims)
    assert sorted(counts) == sorted(sweep_ids)
    assert set(counts.values()) == {1}
    owners = {sweep.id: sweep.lease_owner for sweep in repo.list_sweeps(session, limit=100)[0]}
    assert owners == dict(claims)


CLAIM_SCRIPT = """
import json, sys
from nero_study.store import db, repo
engine = db.make_engine(sys.argv[1])
Session = db.session_factory(engine)
sys.stdout.write("ready\\n"); sys.stdout.flush()
sys.stdin.readline()
claimed = []
with Session() as session:
    while (sweep := repo.claim_next_sweep(session, owner=sys.argv[2], lease_seconds=60)) is not None:
        claimed.append(sweep.id)
print(json.dumps(claimed))
"""


@pytest.mark.slow  # starts three Python processes: seconds each on a loaded machine
def test_processes_sharing_the_database_never_share_a_sweep(session, db_url):
    """Separate processes (as the API and workers are) claim from one database, SQLite file included."""
    sweep_ids = make_sweeps(session, 10)
    processes = [
        subprocess.Popen([sys.executable, "-c", CLAIM_SCRIPT, db_url, f"p{i}"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(3)
    ]
    for process in processes:  # wait until all are imported and connected-ready, then start together
        assert process.stdout.readline().strip() == "ready", process.stderr.read()
    for process in processes:
        process.stdin.write("go\n")
        process.stdin.flush()
    claimed: list[str] = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        claimed.extend(json.loads(out.strip().splitlines()[-1]))
    assert sorted(claimed) == sorted(sweep_ids)


def test_a_failed_sweep_cancels_its_unfinished_trials_and_keeps_the_finished_ones(session):
    (sweep_id,) = make_sweeps(session, 1)
    assert repo.claim_next_sweep(session, owner="w", lease_seconds=30).id == sweep_id
    done, running, pending = repo.add_trials(
        session, sweep_id=sweep_id, trials=[{"task": "mlp", "optimizer": "nero", "lr": lr} for lr in (0.1, 0.01, 1.0)]
    )
    repo.mark_trial_running(session, trial_id=done.id, attempt=1)
    repo.finish_trial(session, trial_id=done.id, status="succeeded", metric=0.2)
    repo.mark_trial_running(session, trial_id=running.id, attempt=1)
    assert repo.finish_sweep(session, sweep_id=sweep_id, owner="w", status="failed", error="the pool broke")
    statuses = {trial.lr: trial.status for trial in repo.list_trials(session, sweep_id=sweep_id)[0]}
    assert statuses == {0.1: "succeeded", 0.01: "cancelled", 1.0: "cancelled"}
    assert repo.get_sweep(session, sweep_id=sweep_id).status == "failed"
