"""The cluster path on one machine: the commands docker-compose.yml runs, as real processes (nero_study.local_cluster).

A PostgreSQL of its own, a Ray head and a second Ray node joined with the shared token (the second node holds a
stand-in GPU), the API with its migrations and two ``nero-study worker`` drivers with ``RAY_ADDRESS``. A proxy sweep
and a sweep asking for a GPU go in through the API; the tests wait on the sweeps' statuses in the store (through the
API), with a generous failsafe deadline, and check what the store holds and where Ray placed the GPU trial.

Needs the machine's PostgreSQL server binaries (initdb); without them these tests skip, except under CI (fail).
The fault tests (below) inject one fault each into the same cluster and check what the store holds afterwards.
The module took 345 s on two shared cores (cluster start-up 18-50 s, each test 20-200 s).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from nero_study.client import NeroStudyClient
from nero_study.local_cluster import LocalCluster, postgres_bin_dir

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
#: Failsafe deadline for a sweep to finish (the tests wait on its status, not on this).
SWEEP_DEADLINE_S = 600.0
#: Flags the local cluster may add to a compose command (resource counts and what two Ray nodes on one host
#: must not share), written out here independently of nero_study.local_cluster.
LOCAL_ONLY_FLAGS = {
    "--num-cpus",
    "--num-gpus",
    "--dashboard-port",
    "--dashboard-agent-listen-port",
    "--metrics-export-port",
    "--temp-dir",
}


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    try:
        postgres_bin_dir()
    except FileNotFoundError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    # Two drivers share three CPUs here: an idle worker's warm runners go after 3 s (compose's default is 120 s,
    # during which the other worker's sweep would wait for those slots).
    local = LocalCluster(compose_file=COMPOSE_FILE, worker_env={"NERO_STUDY_WARM_POOL_IDLE_SECONDS": "3"})
    local.start()
    try:
        yield local
    finally:
        local.stop()
        leftovers = [s.service for s in local.started if s.process.poll() is None]
        assert not leftovers, f"still running after stop: {leftovers}"


@pytest.fixture(scope="module")
def client(cluster: LocalCluster) -> Iterator[NeroStudyClient]:
    with NeroStudyClient(cluster.api_url, cluster.api_token) as api:
        yield api


def sweep_spec(
    name: str,
    lrs: list[float],
    resources: dict[str, float],
    budget: str = "smoke",
    optimizers: tuple = ("adam",),
    execution: str = "auto",
) -> dict:
    return {
        "name": name,
        "tasks": ["digits-mlp"],
        "optimizers": list(optimizers),
        "lrs": lrs,
        "seeds": [0],
        "protocol": "grid",
        "budget": budget,
        "resources": resources,
        "execution": execution,
    }


def _flags(argv: list[str]) -> dict[str, str]:
    return dict(part.split("=", 1) if "=" in part else (part, "") for part in argv)


def test_each_compose_command_is_one_the_cluster_ran(cluster: LocalCluster) -> None:
    """Every service command in docker-compose.yml ran here, changed only where one machine differs from compose."""
    compose = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    ran = {s.service: s.argv for s in cluster.started}
    for service, definition in compose.items():
        if "command" not in definition:
            assert service == "postgres"  # the image's own entrypoint; here the machine's PostgreSQL
            continue
        command, argv = definition["command"], ran[service]
        if service == "api":
            assert argv[:2] == command[:2] == ["sh", "-c"]
            expected = command[2].replace("0.0.0.0", "127.0.0.1").replace("--port 8000", f"--port {cluster.ports.api}")
            assert argv[2] == expected
        elif service == "worker":
            assert argv == command
        else:
            assert argv[:2] == command[:2] == ["ray", "start"] and argv[-1] == command[-1] == "--block"
            want, got = _flags(command[2:]), _flags(argv[2:])
            for flag, value in want.items():
                if flag in LOCAL_ONLY_FLAGS:
                    continue
                if flag == "--port":
                    value = str(cluster.ports.ray)
                elif flag == "--address":
                    value = f"127.0.0.1:{cluster.ports.ray}"
                elif flag == "--dashboard-host":
                    value = "127.0.0.1"
                assert got.get(flag) == value, (service, flag)
            assert set(got) - set(want) <= LOCAL_ONLY_FLAGS, service
    assert sorted(s.service for s in cluster.started if s.service == "worker") == ["worker", "worker"]


def test_a_driver_without_the_shared_token_is_refused(cluster: LocalCluster) -> None:
    probe = f"import ray; ray.init(address='{cluster.ray_address}', log_to_driver=False); print('connected')"
    env = {**os.environ, **cluster.ray_env(), "RAY_AUTH_TOKEN": "not-the-token", "HOME": str(cluster.root / "home")}
    result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "connected" not in result.stdout
    assert "Failed to connect to Ray cluster" in result.stderr


HEAD_AFFINITY_PROBE = """
import json, ray
from nero_study.study.cluster import head_node_scheduling
ray.init(address=%r, log_to_driver=False)
head = [node["NodeID"] for node in ray.nodes() if node["Alive"] and "node:__internal_head__" in node["Resources"]]

@ray.remote(num_cpus=0)
class Where:
    def node(self):
        return ray.get_runtime_context().get_node_id()

print(json.dumps({"head": head, "nodes": [ray.get(Where.options(scheduling_strategy=head_node_scheduling())
                                                   .remote().node.remote()) for _ in range(12)]}))
"""


def test_helper_actors_asked_for_the_head_start_on_the_head(cluster: LocalCluster) -> None:
    """The warm pool's dispatcher is placed with ``head_node_scheduling``: every such actor is on the head, none
    on the second node (whose loss would take the dispatcher and every queued bundle with it)."""
    env = {**os.environ, **cluster.ray_env(), "HOME": str(cluster.root / "home")}
    probe = HEAD_AFFINITY_PROBE % cluster.ray_address
    result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    placed = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(placed["head"]) == 1 and len(placed["nodes"]) == 12
    assert set(placed["nodes"]) == set(placed["head"]), placed


PLACEMENT_PROBE = """
import json, ray
from ray._private import state
from ray.core.generated import gcs_pb2
ray.init(address=%r, log_to_driver=False)
gpus = {node["NodeID"]: node["Resources"].get("GPU", 0) for node in ray.nodes()}
head = [node["NodeID"] for node in ray.nodes() if "node:__internal_head__" in node["Resources"]]
actors = []
for raw in state.state._connect_and_get_accessor().get_actor_table(None, None):
    actor = gcs_pb2.ActorTableData.FromString(raw)
    node = actor.address.node_id.hex()
    # Tune places trials through placement groups: a trial's GPU shows as GPU_group_<id> (and GPU_group_<i>_<id>).
    gpu = max([v for k, v in actor.required_resources.items() if k == "GPU" or k.startswith("GPU_group_")] or [0])
    actors.append({"gpu": gpu, "node": node, "resources": dict(actor.required_resources), "on_head": node in head,
                   "node_gpus": gpus.get(node, 0)})
print(json.dumps(actors))
"""


def test_a_proxy_sweep_and_a_gpu_sweep_run_through_the_api_on_two_nodes(
    cluster: LocalCluster, client: NeroStudyClient
) -> None:
    cpu = client.submit(sweep_spec("cluster-cpu", [0.001, 0.01, 0.1], {"cpu": 1}))
    gpu = client.submit(sweep_spec("cluster-gpu", [0.01], {"cpu": 1, "gpu": 1}))
    for created in (cpu, gpu):
        sweep = client.wait(created["id"], timeout=SWEEP_DEADLINE_S, poll=1.0)
        assert sweep["status"] == "succeeded", sweep
        assert sweep["attempts"] == 1
        trials = client.list_trials(created["id"], limit=100)["data"]
        assert len(trials) == sweep["planned_trials"] == sweep["trials_total"]
        assert {trial["status"] for trial in trials} <= {"succeeded", "diverged"}
        assert all(trial["attempt"] == 1 for trial in trials)
        # Nothing stored twice: one row per planned (optimiser, lr, seed) point.
        assert len({(t["label"], t["lr"], t["seed"], t["phase"]) for t in trials}) == len(trials)
    # The GPU trial ran on the second node, the only one with a GPU (a stand-in: Ray counts it, torch runs on CPU).
    env = {**os.environ, **cluster.ray_env(), "HOME": str(cluster.root / "home")}
    probe = subprocess.run(
        [sys.executable, "-c", PLACEMENT_PROBE % cluster.ray_address],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert probe.returncode == 0, probe.stderr
    actors = json.loads(probe.stdout.strip().splitlines()[-1])
    gpu_actors = [actor for actor in actors if actor["gpu"] > 0]
    assert gpu_actors, actors
    assert all(not actor["on_head"] and actor["node_gpus"] >= 1 for actor in gpu_actors), gpu_actors


# -- faults ------------------------------------------------------------------------------------------------------
# Each injects one fault into the running cluster and checks what the store holds afterwards; each prints the
# store's counts and how long the sweep took to end after the fault (the figures of the closing note).

ALIVE_TRIAL_PROBE = """
import json, ray
from ray._private import state
from ray.core.generated import gcs_pb2
ray.init(address=%r, log_to_driver=False)
head = {node["NodeID"] for node in ray.nodes() if "node:__internal_head__" in node["Resources"]}
on_node = 0
for raw in state.state._connect_and_get_accessor().get_actor_table(None, "ALIVE"):
    actor = gcs_pb2.ActorTableData.FromString(raw)
    if actor.address.node_id.hex() not in head and any(k.startswith("CPU_group_") for k in actor.required_resources):
        on_node += 1
print(json.dumps(on_node))
"""


def store_rows(cluster: LocalCluster, sweep_id: str) -> tuple[dict, list[dict]]:
    """The sweep row and its trial rows, read from the store itself (not through the API)."""
    import sqlalchemy as sa

    engine = sa.create_engine(cluster.database_url)
    try:
        with engine.connect() as connection:
            sweep = (
                connection.execute(sa.text("select * from sweeps where id = :id"), {"id": sweep_id}).mappings().one()
            )
            trials = (
                connection.execute(sa.text("select * from trials where sweep_id = :id"), {"id": sweep_id})
                .mappings()
                .all()
            )
            return dict(sweep), [dict(trial) for trial in trials]
    finally:
        engine.dispose()


def wait_for(what: str, condition, deadline_s: float = SWEEP_DEADLINE_S, poll: float = 0.5):
    """Poll ``condition()`` (a read of the store or the cluster) until it returns something truthy."""
    import time

    deadline = time.monotonic() + deadline_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"failsafe deadline: {what} not seen after {deadline_s:g} s")
        time.sleep(poll)


def summary(cluster: LocalCluster, sweep_id: str) -> dict:
    from collections import Counter

    sweep, trials = store_rows(cluster, sweep_id)
    return {
        "status": sweep["status"],
        "attempts": sweep["attempts"],
        "error": sweep["error"],
        "trials": len(trials),
        "planned": sweep["planned_trials"],
        "by_status": dict(Counter(trial["status"] for trial in trials)),
        "trial_attempts": dict(Counter(trial["attempt"] for trial in trials)),
    }


FAULT_LRS = [0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0]
# The fault sweeps run packed: trials one at a time on warm runners, so they end one by one and "mid-sweep" (some
# ended, some not) lasts most of the sweep. Under auto they would be batched, one stacked run per slot whose members
# all end together: the two slots' runs can end within one poll, and no mid-sweep moment is ever seen.
FAULT_EXECUTION = "packed"
ENDED = {"succeeded", "diverged", "failed", "cancelled"}


def mid_sweep(cluster: LocalCluster, sweep_id: str) -> bool:
    """The sweep is running, at least one trial has ended and at least one has not (read from the store)."""
    sweep, trials = store_rows(cluster, sweep_id)
    ended = sum(trial["status"] in ENDED for trial in trials)
    if sweep["status"] in ENDED:  # it can no longer be seen mid-sweep: say so now, not after the failsafe deadline
        raise AssertionError(f"sweep ended ({sweep['status']}) before it was seen mid-sweep: {ended} trials ended")
    return sweep["status"] == "running" and 0 < ended < len(trials)


def assert_nothing_stored_twice(trials: list[dict]) -> None:
    points = [(t["task"], t["label"], t["lr"], t["seed"], t["phase"]) for t in trials]
    assert len(set(points)) == len(points), points


def test_kill_9_a_worker_mid_sweep_the_other_takes_the_sweep_over(
    cluster: LocalCluster, client: NeroStudyClient
) -> None:
    import time

    created = client.submit(
        sweep_spec("fault-worker", FAULT_LRS, {"cpu": 1}, budget="proxy", execution=FAULT_EXECUTION)
    )
    sweep_id = created["id"]
    wait_for("a trial ended, others not", lambda: mid_sweep(cluster, sweep_id), poll=0.2)
    owner = store_rows(cluster, sweep_id)[0]["lease_owner"]
    pid = int(owner.split(":")[1])  # owner is host:pid:suffix (workers/worker.py)
    victim = next(s for s in cluster.processes("worker") if s.process.pid == pid)
    killed_at = time.monotonic()
    cluster.end(victim, signal.SIGKILL)
    sweep = client.wait(sweep_id, timeout=SWEEP_DEADLINE_S, poll=1.0)
    recovery = time.monotonic() - killed_at
    result = summary(cluster, sweep_id)
    print(f"\nkill -9 worker {pid}: sweep ended {recovery:.0f} s later; store: {result}")
    _, trials = store_rows(cluster, sweep_id)
    assert sweep["status"] == "succeeded", result
    assert result["attempts"] == 2  # claimed again by the other worker after the lease lapsed
    assert result["trials"] == result["planned"]
    assert set(result["by_status"]) <= {"succeeded", "diverged"}, result
    assert_nothing_stored_twice(trials)
    cluster.start_worker(cluster.commands()["worker"])  # back to two workers for the next fault


def test_kill_9_the_second_node_mid_sweep(cluster: LocalCluster, client: NeroStudyClient) -> None:
    import time

    env = {**os.environ, **cluster.ray_env(), "HOME": str(cluster.root / "home")}

    def trial_on_second_node() -> int:
        probe = subprocess.run(
            [sys.executable, "-c", ALIVE_TRIAL_PROBE % cluster.ray_address], env=env, capture_output=True, text=True
        )
        return int(probe.stdout.strip().splitlines()[-1]) if probe.returncode == 0 else 0

    # 24 trials in several bundles (one per optimiser), so that both nodes run some.
    optimizers = ("adam", "sgd", "nero", "lamb")
    created = client.submit(
        sweep_spec("fault-node", FAULT_LRS[:6], {"cpu": 1}, "proxy", optimizers, execution=FAULT_EXECUTION)
    )
    sweep_id = created["id"]
    wait_for("a trial ended, others not", lambda: mid_sweep(cluster, sweep_id), poll=0.2)
    wait_for("a trial process on the second node", trial_on_second_node, poll=0.0)
    assert mid_sweep(cluster, sweep_id)
    node = cluster.processes("ray-gpu-worker")[0]
    killed_at = time.monotonic()
    os.killpg(node.process.pid, signal.SIGKILL)  # the node's whole process group: raylet, agents, its workers
    node.process.wait()
    try:
        sweep = client.wait(sweep_id, timeout=SWEEP_DEADLINE_S, poll=1.0)
    except TimeoutError:
        print(
            f"\nkill -9 second node: sweep still not ended after {SWEEP_DEADLINE_S:g} s; store: "
            f"{summary(cluster, sweep_id)}"
        )
        raise
    finally:
        cluster.start_ray_node(cluster.commands()["ray-gpu-worker"])  # a fresh second node for what follows
    recovery = time.monotonic() - killed_at
    result = summary(cluster, sweep_id)
    print(f"\nkill -9 second node: sweep ended {recovery:.0f} s later; store: {result}")
    _, trials = store_rows(cluster, sweep_id)
    # The lost node's trials re-run on the head (succeeded), or the sweep fails them clearly; none left hanging.
    assert sweep["status"] in {"succeeded", "failed"}, result
    assert result["trials"] == result["planned"]
    assert not {"pending", "running"} & set(result["by_status"]), result
    assert_nothing_stored_twice(trials)
    if sweep["status"] == "failed":
        assert sweep["error"] or any(trial["error"] for trial in trials)


def test_restart_postgresql_mid_sweep(cluster: LocalCluster, client: NeroStudyClient) -> None:
    import time

    import httpx

    created = client.submit(
        sweep_spec("fault-postgres", FAULT_LRS, {"cpu": 1}, "proxy", ("adam", "sgd"), execution=FAULT_EXECUTION)
    )
    sweep_id = created["id"]
    wait_for("a trial ended, others not", lambda: mid_sweep(cluster, sweep_id), poll=0.2)
    database = cluster.processes("postgres")[0]
    stopped_at = time.monotonic()
    cluster.end(database, signal.SIGINT)  # fast shutdown: clients are disconnected
    down = httpx.get(f"{cluster.api_url}/healthz", timeout=30)
    assert down.status_code == 503 and down.json()["database"].startswith("unreachable"), down.text
    cluster.start_postgres()  # the same data directory, the same port
    try:
        # The sweep's end, or every worker gone (then nothing will end it): whichever the processes show first.
        wait_for(
            "the sweep ended or no worker left",
            lambda: client.get_sweep(sweep_id)["status"] in ENDED | {"succeeded"} or not cluster.processes("worker"),
        )
        workers_left = len(cluster.processes("worker"))
        print(f"\nPostgreSQL restarted: workers alive {workers_left}; store: {summary(cluster, sweep_id)}")
        assert workers_left == 2, "workers exited on the database restart"
    finally:
        for _ in range(2 - len(cluster.processes("worker"))):
            cluster.start_worker(cluster.commands()["worker"])
    sweep = client.wait(sweep_id, timeout=SWEEP_DEADLINE_S, poll=1.0)
    recovery = time.monotonic() - stopped_at
    result = summary(cluster, sweep_id)
    print(f"\nPostgreSQL restarted: sweep ended {recovery:.0f} s after the stop; store: {result}")
    _, trials = store_rows(cluster, sweep_id)
    assert httpx.get(f"{cluster.api_url}/healthz", timeout=30).status_code == 200
    assert httpx.get(f"{cluster.api_url}/api/sweeps", timeout=30).status_code == 200
    assert sweep["status"] == "succeeded", result
    assert result["trials"] == result["planned"]
    assert set(result["by_status"]) <= {"succeeded", "diverged"}, result
    assert_nothing_stored_twice(trials)


def test_kill_9_the_ray_head_mid_sweep(cluster: LocalCluster, client: NeroStudyClient) -> None:
    """The head (GCS) gone: each worker says so, gives its sweep back to the queue and exits with status 3 (what
    compose's ``restart:`` and ``serve`` restart); restarted, the workers wait for the head, and once a new head
    is up the sweep is taken up again and finishes, its finished trials kept. Runs last: it rebuilds the cluster."""
    import time

    from workers.worker import EXIT_CLUSTER_LOST

    created = client.submit(
        sweep_spec("fault-head", FAULT_LRS, {"cpu": 1}, "proxy", ("adam", "sgd"), execution=FAULT_EXECUTION)
    )
    sweep_id = created["id"]
    wait_for("a trial ended, others not", lambda: mid_sweep(cluster, sweep_id), poll=0.2)
    before = summary(cluster, sweep_id)
    workers = cluster.processes("worker")
    head = cluster.processes("ray-head")[0]
    killed_at = time.monotonic()
    os.killpg(head.process.pid, signal.SIGKILL)  # the head's whole process group: GCS, raylet, its workers
    head.process.wait()
    codes = [worker.process.wait(timeout=SWEEP_DEADLINE_S) for worker in workers]
    exited = time.monotonic() - killed_at
    released = summary(cluster, sweep_id)
    print(f"\nkill -9 Ray head: before {before}; workers exited {codes} after {exited:.0f} s; store: {released}")
    assert codes == [EXIT_CLUSTER_LOST] * len(workers), [cluster.tail(w) for w in workers]
    assert any("is gone" in w.log.read_text() for w in workers)
    assert released["status"] == "queued", released  # back in the queue, not failed
    assert released["attempts"] == before["attempts"], released  # no worker took it up while the head was away
    sweep_row, _ = store_rows(cluster, sweep_id)
    assert sweep_row["lease_owner"] is None
    ended_before = {k: v for k, v in before["by_status"].items() if k in ENDED}
    for status, count in ended_before.items():  # what had finished stays finished
        assert released["by_status"].get(status, 0) >= count, (before, released)

    # What compose's restart policy does: the workers come back first and wait for the head ...
    for node in cluster.processes("ray-gpu-worker"):
        cluster.end(node, signal.SIGKILL)  # the second node dies with its head (Ray ends it after 60 s anyway)
    for _ in workers:
        cluster.start_worker(cluster.commands()["worker"])
    for worker in cluster.processes("worker"):
        wait_for(
            "the restarted worker waiting for the head",
            lambda w=worker: b"waiting for the Ray cluster" in w.log.read_bytes(),
        )
    assert summary(cluster, sweep_id)["status"] == "queued"  # nothing claimed while the head is away
    # ... then a new head and second node; the sweep is taken up again and finishes.
    commands = cluster.commands()
    cluster.start_ray_head(commands["ray-head"])
    cluster.start_ray_node(commands["ray-gpu-worker"])
    sweep = client.wait(sweep_id, timeout=SWEEP_DEADLINE_S, poll=1.0)
    recovery = time.monotonic() - killed_at
    result = summary(cluster, sweep_id)
    print(f"kill -9 Ray head: sweep ended {recovery:.0f} s after the kill (head down for the test's restart); {result}")
    _, trials = store_rows(cluster, sweep_id)
    assert sweep["status"] == "succeeded", result
    assert result["attempts"] == 2, result
    assert result["trials"] == result["planned"]
    assert set(result["by_status"]) <= {"succeeded", "diverged"}, result
    assert_nothing_stored_twice(trials)
