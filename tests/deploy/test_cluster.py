"""The cluster path on one machine: the commands docker-compose.yml runs, as real processes (nero_study.local_cluster).

A PostgreSQL of its own, a Ray head and a second Ray node joined with the shared token (the second node holds a
stand-in GPU), the API with its migrations and two ``nero-study worker`` drivers with ``RAY_ADDRESS``. A proxy sweep
and a sweep asking for a GPU go in through the API; the tests wait on the sweeps' statuses in the store (through the
API), with a generous failsafe deadline, and check what the store holds and where Ray placed the GPU trial.

Needs the machine's PostgreSQL server binaries (initdb); without them these tests skip, except under CI (fail).
About four minutes on two shared cores, most of it Ray and worker start-up.
"""

from __future__ import annotations

import json
import os
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


def sweep_spec(name: str, lrs: list[float], resources: dict[str, float]) -> dict:
    return {
        "name": name,
        "tasks": ["digits-mlp"],
        "optimizers": ["adam"],
        "lrs": lrs,
        "seeds": [0],
        "protocol": "grid",
        "budget": "smoke",
        "resources": resources,
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
