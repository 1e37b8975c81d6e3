"""The docker-compose cluster file: services, commands, health checks and wiring (no engine runs here)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_services_present(compose: dict) -> None:
    assert set(compose["services"]) == {"postgres", "api", "worker", "ray-head", "ray-gpu-worker"}
    assert "pgdata" in compose["volumes"]
    assert any(v.startswith("pgdata:") for v in compose["services"]["postgres"]["volumes"])


def test_api_migrates_then_serves_the_app_factory(compose: dict) -> None:
    command = " ".join(compose["services"]["api"]["command"])
    assert command.index("nero-study db upgrade") < command.index("uvicorn")
    assert "api.main:create_app --factory" in command
    import api.main

    assert callable(api.main.create_app)
    assert compose["services"]["api"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_every_long_running_service_has_a_health_check_or_waits_on_one(compose: dict) -> None:
    services = compose["services"]
    for name in ("postgres", "api", "ray-head"):
        assert "healthcheck" in services[name], name
    for name, service in services.items():
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert dependency in services, (name, dependency)
            assert condition["condition"] in {"service_healthy", "service_started"}


def test_worker_is_the_ray_driver_on_the_head(compose: dict) -> None:
    worker = compose["services"]["worker"]
    assert worker["command"] == ["nero-study", "worker"]
    assert worker["environment"]["RAY_ADDRESS"] == "ray-head:6379"
    head_command = " ".join(compose["services"]["ray-head"]["command"])
    assert "--head" in head_command and "--port=6379" in head_command
    gpu_command = " ".join(compose["services"]["ray-gpu-worker"]["command"])
    assert "--address=ray-head:6379" in gpu_command


def test_database_url_is_shared_and_points_at_postgres(compose: dict) -> None:
    urls = {
        name: service["environment"]["NERO_STUDY_DATABASE_URL"]
        for name, service in compose["services"].items()
        if "environment" in service and "NERO_STUDY_DATABASE_URL" in service["environment"]
    }
    assert {"api", "worker"} <= set(urls)
    assert len(set(urls.values())) == 1
    url = next(iter(urls.values()))
    assert url.startswith("postgresql+psycopg://") and "@postgres:5432/" in url
    pg_env = compose["services"]["postgres"]["environment"]
    assert f"{pg_env['POSTGRES_USER']}:{pg_env['POSTGRES_PASSWORD']}@" in url
    assert url.endswith("/" + pg_env["POSTGRES_DB"])


def test_gpu_worker_reserves_an_nvidia_device_and_scales_by_replicas(compose: dict) -> None:
    deploy = compose["services"]["ray-gpu-worker"]["deploy"]
    device = deploy["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert deploy["replicas"] >= 1


def test_dockerfile_installs_the_project_with_pinned_torch() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "torch==2.13.0" in text
    for path in ("nero_study", "api", "workers", "dashboards"):
        assert f"COPY {path} ./{path}" in text


@pytest.mark.skipif(
    shutil.which("docker") is None
    or subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0,
    reason="the docker compose plugin is not installed on this machine (only the docker client is)",
)
def test_docker_compose_config_accepts_the_file() -> None:
    result = subprocess.run(
        ["docker", "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
