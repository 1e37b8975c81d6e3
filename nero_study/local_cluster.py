"""A local nero-study cluster on one machine, started from the commands ``docker-compose.yml`` runs.

The processes are those of the compose file: a PostgreSQL (here a fresh ``initdb`` in a temporary directory, with the
machine's PostgreSQL binaries, instead of the ``postgres`` image), the ``api`` service's command, the ``ray-head``
service's ``ray start --head``, the ``ray-gpu-worker`` service's ``ray start --address=...`` (a second Ray node) and
``worker`` services' ``nero-study worker`` (two by default). Each command is the compose ``command`` with only what
differs on one machine rewritten (:func:`localize`): host names and fixed ports become loopback addresses and free
ports, and the Ray nodes get fixed, small resource counts (a stand-in GPU on the second node, so that a trial
asking for a GPU is placed there) and ports of their own (two Ray nodes share one host). Every Ray process and every
driver gets one shared token (``RAY_AUTH_MODE=token``, ``RAY_AUTH_TOKEN``), as compose gives them from ``.env``.

Ray itself moves a node's address off loopback (it resolves ``127.0.0.1`` to the host's address), so the Ray
processes listen on the host's address; everything else listens on 127.0.0.1 only. Every process is started in a
session of its own and ended by its process group at :meth:`LocalCluster.stop` (``ray start --block`` ends its node's
processes on SIGTERM; whatever is left in the group is then killed).

``python -m nero_study.local_cluster`` (``make cluster``) starts one for a user and stops it on Ctrl-C.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

#: Services of ``docker-compose.yml`` that the local cluster starts with their ``command`` (postgres runs the image's
#: entrypoint, replaced here by a PostgreSQL of the machine).
COMMAND_SERVICES = ("api", "ray-head", "ray-gpu-worker", "worker")
#: Flags the local cluster may add to a compose ``ray start`` command, with a value of its own: resource counts and
#: the ports and directories two Ray nodes on one host must not share.
ADDED_RAY_FLAGS = frozenset(
    {
        "--num-cpus",
        "--num-gpus",
        "--dashboard-port",
        "--dashboard-agent-listen-port",
        "--metrics-export-port",
        "--runtime-env-agent-port",
        "--temp-dir",
        "--disable-usage-stats",
    }
)
COMPOSE_RAY_PORT = 6379
COMPOSE_API_PORT = 8000


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def compose_commands(compose_file: str | Path) -> dict[str, list[str]]:
    """Each service's ``command`` in the compose file (a list, as written there), for the services that have one."""
    services = yaml.safe_load(Path(compose_file).read_text())["services"]
    commands: dict[str, list[str]] = {}
    for name, service in services.items():
        command = service.get("command")
        if command is None:
            continue
        if not isinstance(command, list):
            raise ValueError(f"service {name}: command must be a list (exec form), got {command!r}")
        commands[name] = [str(part) for part in command]
    return commands


@dataclass(frozen=True)
class Ports:
    """The local cluster's ports (all chosen free at start)."""

    postgres: int
    api: int
    ray: int
    dashboard: int
    head_agent: int
    node_agent: int
    head_metrics: int
    node_metrics: int

    @classmethod
    def pick(cls) -> Ports:
        return cls(**{name: free_port() for name in cls.__dataclass_fields__})


def _replace_flag(command: list[str], flag: str, value: str) -> list[str]:
    """``command`` with ``flag=...`` set to ``value`` (added at the end, before ``--block``, when absent)."""
    out = [part for part in command if not part.startswith(flag + "=")]
    position = out.index("--block") if "--block" in out else len(out)
    out.insert(position, f"{flag}={value}")
    return out


def localize(
    service: str,
    command: list[str],
    ports: Ports,
    *,
    temp_dir: Path,
    head_cpus: int = 1,
    node_cpus: int = 1,
    node_gpus: int = 1,
) -> list[str]:
    """A compose service's ``command`` as it runs on one machine: addresses and ports rewritten (see module doc)."""
    ray_address = f"127.0.0.1:{ports.ray}"
    if service == "api":
        shell = command[-1]
        for old, new in (("--host 0.0.0.0", "--host 127.0.0.1"), (f"--port {COMPOSE_API_PORT}", f"--port {ports.api}")):
            if old not in shell:
                raise ValueError(f"service api: expected {old!r} in its command {shell!r}")
            shell = shell.replace(old, new)
        return [*command[:-1], shell]
    if service == "worker":
        return list(command)
    if service == "ray-head":
        out = [part.replace(f"--port={COMPOSE_RAY_PORT}", f"--port={ports.ray}") for part in command]
        out = [part.replace("--dashboard-host=0.0.0.0", "--dashboard-host=127.0.0.1") for part in out]
        for flag, value in (
            ("--num-cpus", head_cpus),
            ("--num-gpus", 0),
            ("--dashboard-port", ports.dashboard),
            ("--dashboard-agent-listen-port", ports.head_agent),
            ("--metrics-export-port", ports.head_metrics),
            ("--temp-dir", temp_dir),
        ):
            out = _replace_flag(out, flag, str(value))
        return out
    if service == "ray-gpu-worker":
        out = [part.replace(f"ray-head:{COMPOSE_RAY_PORT}", ray_address) for part in command]
        for flag, value in (
            ("--num-cpus", node_cpus),
            ("--num-gpus", node_gpus),
            ("--dashboard-agent-listen-port", ports.node_agent),
            ("--metrics-export-port", ports.node_metrics),
        ):
            out = _replace_flag(out, flag, str(value))
        return out
    raise ValueError(f"unknown service {service!r}; the local cluster runs {', '.join(COMMAND_SERVICES)}")


def postgres_bin_dir() -> Path:
    """The newest PostgreSQL server binaries on this machine (Debian's ``/usr/lib/postgresql/<major>/bin``)."""
    found = sorted(
        (Path(path) for path in glob.glob("/usr/lib/postgresql/*/bin") if (Path(path) / "initdb").exists()),
        key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1]
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise FileNotFoundError("no PostgreSQL server binaries (initdb) under /usr/lib/postgresql/*/bin or on PATH")


@dataclass
class Started:
    """One process the cluster started: its service, the command line, its process and log file."""

    service: str
    argv: list[str]
    process: subprocess.Popen
    log: Path


@dataclass
class LocalCluster:
    """PostgreSQL, two Ray nodes, the API and sweep workers on this machine; :meth:`start`, then :meth:`stop`."""

    compose_file: Path
    workers: int = 2
    head_cpus: int = 1
    node_cpus: int = 1
    node_gpus: int = 1
    worker_env: Mapping[str, str] = field(default_factory=dict)
    root: Path | None = None
    ports: Ports = field(default_factory=Ports.pick)
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    api_token: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    started: list[Started] = field(default_factory=list)
    #: Remove the temporary directory (data, logs) at :meth:`stop` when this cluster made it.
    remove_root: bool = True
    _made_root: bool = False

    # -- addresses --------------------------------------------------------------------------------------
    @property
    def database_url(self) -> str:
        return f"postgresql+psycopg://nero@127.0.0.1:{self.ports.postgres}/nero_study"

    @property
    def ray_address(self) -> str:
        return f"127.0.0.1:{self.ports.ray}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.api}"

    def ray_env(self) -> dict[str, str]:
        """The environment every Ray process and driver gets: the shared token, no usage reporting."""
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token, "RAY_USAGE_STATS_ENABLED": "0"}

    def commands(self) -> dict[str, list[str]]:
        """The compose commands as this cluster runs them (one entry per service)."""
        assert self.root is not None, "start() first"
        compose = compose_commands(self.compose_file)
        missing = set(COMMAND_SERVICES) - set(compose)
        if missing:
            raise ValueError(f"{self.compose_file}: services without a command: {sorted(missing)}")
        return {
            service: localize(
                service,
                compose[service],
                self.ports,
                temp_dir=self.root / "ray",
                head_cpus=self.head_cpus,
                node_cpus=self.node_cpus,
                node_gpus=self.node_gpus,
            )
            for service in COMMAND_SERVICES
        }

    # -- processes --------------------------------------------------------------------------------------
    def _env(self, extra: Mapping[str, str]) -> dict[str, str]:
        assert self.root is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "NERO_STUDY_"))}
        bin_dir = str(Path(sys.executable).parent)
        env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
        env["HOME"] = str(self.root / "home")  # no ~/.ray/auth_token of the user's: the token comes from the env
        env.update(extra)
        return env

    def _spawn(self, service: str, argv: list[str], env: Mapping[str, str], **kwargs: Any) -> Started:
        assert self.root is not None
        log = self.root / "logs" / f"{service}-{len(self.started)}.log"
        handle = log.open("wb")
        try:
            process = subprocess.Popen(
                argv, env=self._env(env), stdout=handle, stderr=subprocess.STDOUT, start_new_session=True, **kwargs
            )
        finally:
            handle.close()
        started = Started(service, list(argv), process, log)
        self.started.append(started)
        return started

    def _wait(self, what: str, ready: Any, process: Started | None, deadline_s: float = 180.0) -> None:
        """Wait until ``ready()`` is true: a readiness check on what the process serves (failsafe deadline)."""
        deadline = time.monotonic() + deadline_s
        while not ready():
            if process is not None and process.process.poll() is not None:
                raise RuntimeError(f"{what} exited with {process.process.returncode}:\n{self.tail(process)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not ready after {deadline_s:g} s")
            time.sleep(0.2)

    @staticmethod
    def tail(started: Started, lines: int = 30) -> str:
        return "\n".join(started.log.read_text(errors="replace").splitlines()[-lines:])

    def start(self) -> LocalCluster:
        if self.root is None:
            self.root, self._made_root = Path(tempfile.mkdtemp(prefix="nero-cluster-")), True
        for sub in ("logs", "home", "ray"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        try:
            self.start_postgres()
            commands = self.commands()
            self.start_ray_head(commands["ray-head"])
            self.start_ray_node(commands["ray-gpu-worker"])
            self.start_api(commands["api"])
            for _ in range(self.workers):
                self.start_worker(commands["worker"])
        except BaseException:
            self.stop()
            raise
        return self

    def start_postgres(self) -> Started:
        assert self.root is not None
        bin_dir = postgres_bin_dir()
        data = self.root / "pgdata"
        as_user: dict[str, Any] = {}
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root: run it as the postgres user
            as_user = {"user": "postgres", "group": "postgres"}
            shutil.chown(self.root, "postgres", "postgres")
        if not data.exists():
            subprocess.run(
                [str(bin_dir / "initdb"), "-D", str(data), "-U", "nero", "--auth=trust", "-E", "UTF8"],
                check=True,
                capture_output=True,
                env=self._env({}),
                **as_user,
            )
        started = self._spawn(
            "postgres",
            [
                str(bin_dir / "postgres"),
                "-D",
                str(data),
                "-p",
                str(self.ports.postgres),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"unix_socket_directories={data}",
            ],
            {},
            **as_user,
        )

        def accepting() -> bool:
            ready = [str(bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.ports.postgres), "-U", "nero", "-q"]
            result = subprocess.run(ready, check=False)
            return result.returncode == 0

        self._wait("PostgreSQL", accepting, started)
        subprocess.run(
            [str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(self.ports.postgres), "-U", "nero", "nero_study"],
            check=False,  # already there when PostgreSQL was restarted on the same data directory
            capture_output=True,
        )
        return started

    def _gcs_ready(self) -> bool:
        with socket.socket() as sock:
            sock.settimeout(1)
            return sock.connect_ex(("127.0.0.1", self.ports.ray)) == 0

    def start_ray_head(self, argv: list[str]) -> Started:
        started = self._spawn("ray-head", argv, self.ray_env())
        self._wait("the Ray head", lambda: b"--block" in started.log.read_bytes() and self._gcs_ready(), started)
        return started

    def start_ray_node(self, argv: list[str]) -> Started:
        started = self._spawn("ray-gpu-worker", argv, self.ray_env())
        self._wait("the second Ray node", lambda: b"--block" in started.log.read_bytes(), started)
        return started

    def start_api(self, argv: list[str]) -> Started:
        import httpx

        started = self._spawn(
            "api",
            argv,
            # As docker-compose.yml: the API is healthy before any worker starts.
            {
                "NERO_STUDY_DATABASE_URL": self.database_url,
                "NERO_STUDY_API_TOKENS": self.api_token,
                "NERO_STUDY_HEALTH_MIN_WORKERS": "0",
            },
        )

        def healthy() -> bool:
            try:
                return httpx.get(f"{self.api_url}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        self._wait("the API", healthy, started)
        return started

    def start_worker(self, argv: list[str]) -> Started:
        env = {"NERO_STUDY_DATABASE_URL": self.database_url, "RAY_ADDRESS": self.ray_address, **self.ray_env()}
        return self._spawn("worker", argv, {**env, **self.worker_env})

    def processes(self, service: str) -> list[Started]:
        """The live processes of a service (started and not yet ended)."""
        return [s for s in self.started if s.service == service and s.process.poll() is None]

    def end(self, started: Started, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        """End one process: ``sig`` to it, then SIGKILL to its whole process group (its session) after ``timeout``."""
        process = started.process
        if process.poll() is None:
            try:
                os.kill(process.pid, sig)
                process.wait(timeout=timeout)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        try:
            os.killpg(process.pid, signal.SIGKILL)  # the group is the session start_new_session gave it
        except (ProcessLookupError, PermissionError):
            pass
        process.wait()

    def stop(self) -> None:
        """End every process, workers and API first, the Ray nodes, then PostgreSQL; each by its PID."""
        order = {"worker": 0, "api": 1, "ray-gpu-worker": 2, "ray-head": 3, "postgres": 4}
        for started in sorted(self.started, key=lambda s: order.get(s.service, 5)):
            self.end(started, signal.SIGINT if started.service == "postgres" else signal.SIGTERM)
        if self._made_root and self.remove_root and self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)


def main() -> None:
    """``make cluster``: start the local cluster, print where everything is, stop on Ctrl-C."""
    compose_file = Path(sys.argv[1] if len(sys.argv) > 1 else "docker-compose.yml")
    cluster = LocalCluster(compose_file=compose_file, remove_root=False)
    print(f"starting a local cluster from {compose_file} (logs under the temporary directory below) ...", flush=True)
    cluster.start()
    print(f"root        {cluster.root}   (data and logs; kept after stop)")
    print(f"API         {cluster.api_url}   (write token: {cluster.api_token})")
    print(f"database    {cluster.database_url}")
    print(f"Ray         {cluster.ray_address}   (RAY_AUTH_MODE=token RAY_AUTH_TOKEN={cluster.token})")
    for started in cluster.started:
        print(f"  pid {started.process.pid:>7}  {started.service:<15} {' '.join(started.argv)}")
    print(f"submit with: NERO_STUDY_URL={cluster.api_url} NERO_STUDY_TOKEN={cluster.api_token} nero-study submit SPEC")
    print("Ctrl-C stops every process above")
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
