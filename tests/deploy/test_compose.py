"""docker-compose.yml checked by a real compose implementation (Debian's ``docker-compose``; ``config`` needs no
daemon): the file is valid, the Ray token is required and reaches every Ray process and driver. That each
service's command is one the local cluster ran is checked beside the cluster (tests/deploy/test_cluster.py).

Without ``docker-compose`` these tests skip, except under CI (``CI=true``, where .ci/run installs it): they fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"


@pytest.fixture(scope="module")
def docker_compose() -> str:
    path = shutil.which("docker-compose")
    if path is None:
        message = "docker-compose is not installed (apt-get install docker-compose; .ci/run does)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def compose_config(
    docker_compose: str, compose_file: Path, tmp_path: Path, env: dict[str, str]
) -> subprocess.CompletedProcess:
    """``docker-compose config`` on the file with only ``env`` (an empty env file: a user's .env plays no part)."""
    env_file = tmp_path / "empty.env"
    env_file.write_text("")
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    return subprocess.run(
        [docker_compose, "--env-file", str(env_file), "-f", str(compose_file), "config"],
        capture_output=True,
        text=True,
        env={**base, **env},
        cwd=tmp_path,
    )


def test_compose_accepts_the_file_and_gives_every_ray_process_the_shared_token(
    docker_compose: str, tmp_path: Path
) -> None:
    result = compose_config(docker_compose, COMPOSE_FILE, tmp_path, {"RAY_AUTH_TOKEN": "the-shared-secret"})
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    ray_processes = {
        name
        for name, service in services.items()
        if (service.get("command") or [None])[0] == "ray" or "RAY_ADDRESS" in (service.get("environment") or {})
    }
    assert ray_processes == {"ray-head", "ray-gpu-worker", "worker"}
    for name in ray_processes:
        environment = services[name]["environment"]
        assert environment["RAY_AUTH_MODE"] == "token", name
        assert environment["RAY_AUTH_TOKEN"] == "the-shared-secret", name
    # The token is a secret: it is never written into the file.
    assert "the-shared-secret" not in COMPOSE_FILE.read_text()


def test_compose_refuses_to_start_without_the_ray_token(docker_compose: str, tmp_path: Path) -> None:
    result = compose_config(docker_compose, COMPOSE_FILE, tmp_path, {})
    assert result.returncode != 0
    assert "RAY_AUTH_TOKEN is not set" in result.stderr and ".env" in result.stderr


def test_compose_rejects_an_invalid_file(docker_compose: str, tmp_path: Path) -> None:
    """The validator validates: the same file with a misspelt service option is refused, naming it."""
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    compose["services"]["worker"]["comand"] = compose["services"]["worker"].pop("command")
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(yaml.safe_dump(compose))
    result = compose_config(docker_compose, broken, tmp_path, {"RAY_AUTH_TOKEN": "x"})
    assert result.returncode != 0
    assert "comand" in result.stderr


def test_dockerfile_installs_the_torch_that_pyproject_pins() -> None:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    torch_pin = next(dependency for dependency in dependencies if dependency.startswith("torch=="))
    assert f'ARG TORCH_SPEC="{torch_pin}"' in (ROOT / "Dockerfile").read_text()
