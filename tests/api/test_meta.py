"""Tasks and optimisers listings, /healthz, the OpenAPI document, and no connection at import or app creation."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from nero_study.optim.registry import OPTIMIZERS
from nero_study.settings import Settings
from nero_study.tasks.registry import TASKS
from nero_study.vocabulary import SWEEP_STATUSES, TRIAL_STATUSES


def test_tasks_lists_every_registered_task(client: TestClient) -> None:
    response = client.get("/api/tasks")

    assert response.status_code == 200
    tasks = {task["name"]: task for task in response.json()}
    assert list(tasks) == list(TASKS)
    mlp = tasks["digits-mlp"]
    assert mlp["available"] is True
    assert mlp["metric_name"] == "test_error" and mlp["lower_is_better"] is True
    assert mlp["budgets"] == ["smoke", "proxy", "paper"]


def test_optimizers_lists_defaults_and_presets(client: TestClient) -> None:
    response = client.get("/api/optimizers")

    assert response.status_code == 200
    optimizers = {item["name"]: item for item in response.json()}
    assert set(optimizers) == set(OPTIMIZERS)
    for name, info in OPTIMIZERS.items():
        assert optimizers[name]["default_lr"] == info.default_lr
    assert optimizers["adam"]["presets"]["paper"]["betas"] == [0.0, 0.999]
    assert "beta" in optimizers["nero"]["hyperparameters"]


def test_tasks_show_the_settings_trials_use_with_each_tasks_paper_overrides(client: TestClient) -> None:
    from nero_study.tasks.base import optimizer_settings, settings_as_json
    from nero_study.tasks.registry import get_task

    tasks = {task["name"]: task for task in client.get("/api/tasks").json()}
    for name, task in tasks.items():
        for preset, per_optimizer in task["optimizer_settings"].items():
            for optimizer, per_network in per_optimizer.items():
                assert per_network == settings_as_json(optimizer_settings(get_task(name), optimizer, preset))
    gan = tasks["cifar10-cgan"]
    assert gan["networks"] == ["generator", "discriminator"]
    assert gan["optimizer_settings"]["paper"]["adam"]["discriminator"]["betas"] == [0.9, 0.999]
    assert gan["optimizer_settings"]["paper"]["adam"]["generator"]["betas"] == [0.0, 0.999]
    assert gan["paper_overrides"] == {"discriminator": {"adam": {"betas": [0.9, 0.999]}}}
    assert "cGAN/main.py" in gan["paper_settings_source"]
    assert tasks["ppo-pong"]["optimizer_settings"]["paper"]["lamb"]["model"] == {"betas": [0.0, 0.999], "eps": 1e-5}
    assert tasks["ppo-cartpole"]["caveat"] and tasks["digits-mlp"]["caveat"] == ""


def test_optimizers_say_where_their_default_lr_comes_from_and_which_tasks_override_them(client: TestClient) -> None:
    optimizers = {item["name"]: item for item in client.get("/api/optimizers").json()}
    assert all(item["default_lr_source"] for item in optimizers.values())
    assert "out-of-the-box" in optimizers["nero"]["default_lr_source"]
    assert optimizers["adam"]["task_overrides"]["mnist-mlp100"] == {"model": {"betas": [0.9, 0.999]}}
    assert optimizers["adam"]["task_overrides"]["cifar10-cgan"] == {"discriminator": {"betas": [0.9, 0.999]}}
    imagenet_sgd = {"momentum": 0.9, "weight_decay": 1e-4}
    assert optimizers["sgd"]["task_overrides"] == {"imagenet-resnet50": {"model": imagenet_sgd}}
    assert all("constraints" in optimizers[name]["hyperparameters"] for name in ("lamb", "madam"))


def test_healthz_checks_the_database(client: TestClient) -> None:
    response = client.get("/healthz")

    assert response.status_code == 200
    health = response.json()
    assert health["status"] == "ok"
    assert health["revision"] is not None and health["revision"] == health["head"]


def test_app_creation_connects_nowhere_and_healthz_reports_a_dead_database() -> None:
    # Nothing listens on port 9: creating the app must still work; the health check then says 503.
    app = create_app(Settings(database_url="postgresql://nobody:secret@127.0.0.1:9/none"))
    with TestClient(app) as client:
        response = client.get("/healthz")
        assert client.get("/api/optimizers").status_code == 200

    assert response.status_code == 503
    assert response.json()["status"] == "error"
    assert "secret" not in response.text


def test_creating_the_app_opens_no_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("create_app opened a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)

    app = create_app(Settings(database_url="postgresql://u:p@db.invalid:5432/x"))

    assert app.title == "nero-study"


@pytest.mark.slow
def test_importing_the_api_connects_nowhere() -> None:
    code = (
        "import socket\n"
        "def refuse(*args, **kwargs): raise AssertionError('connected at import')\n"
        "socket.socket.connect = refuse\n"
        "import api, api.main, api.routes.sweeps\n"
        "from nero_study.settings import Settings\n"
        "api.create_app(Settings(database_url='postgresql://u:p@db.invalid:5432/x'))\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_migrations_run_at_startup_when_asked(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    with TestClient(create_app(Settings(database_url=url, health_min_workers=0), migrate=True)) as client:
        assert client.get("/api/sweeps").json()["total"] == 0
        assert client.get("/healthz").json()["revision"] is not None


def test_openapi_documents_the_body_with_a_quick_example_and_bearer_auth(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()

    post = schema["paths"]["/api/sweeps"]["post"]
    body = post["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/SweepCreate"}
    quick = body["examples"]["quick"]["value"]
    assert quick["budget"] == "smoke" and quick["tasks"] == ["digits-mlp"]
    spec_schema = schema["components"]["schemas"]["SweepCreate"]
    assert {"tasks", "optimizers", "lrs"} <= set(spec_schema["required"])
    assert {"201", "200", "401", "409", "413", "422"} <= set(post["responses"])
    assert post["security"] == [{"HTTPBearer": []}]
    assert "security" not in schema["paths"]["/api/sweeps"]["get"]
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert client.get("/docs").status_code == 200


def test_the_quick_example_is_a_valid_sweep(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    example = schema["paths"]["/api/sweeps"]["post"]["requestBody"]["content"]["application/json"]["examples"]

    for name in ("quick", "paper"):
        response = client.post(
            "/api/sweeps", json=example[name]["value"], headers={"Authorization": "Bearer test-token"}
        )
        assert response.status_code == 201, (name, response.text)


def test_status_filters_offer_exactly_the_store_statuses(database_url: str) -> None:
    schema = create_app(Settings(database_url=database_url)).openapi()

    def status_values(path: str) -> tuple[str, ...]:
        (parameter,) = [p for p in schema["paths"][path]["get"]["parameters"] if p["name"] == "status"]
        (choice,) = [option for option in parameter["schema"]["anyOf"] if "enum" in option]
        return tuple(choice["enum"])

    assert status_values("/api/sweeps") == SWEEP_STATUSES
    assert status_values("/api/sweeps/{sweep_id}/trials") == TRIAL_STATUSES


def test_openapi_lists_401_on_reads_only_when_reads_need_a_token(database_url: str) -> None:
    open_schema = create_app(Settings(database_url=database_url)).openapi()
    closed_schema = create_app(Settings(database_url=database_url, require_token_for_reads=True)).openapi()

    assert "401" not in open_schema["paths"]["/api/tasks"]["get"]["responses"]
    assert "401" in closed_schema["paths"]["/api/tasks"]["get"]["responses"]
    assert closed_schema["paths"]["/api/sweeps"]["get"]["security"] == [{"HTTPBearer": []}]


def test_app_start_up_loads_what_requests_need_and_freezes_it(database_url: str) -> None:
    # In a fresh process: after start-up, torch's lazily imported parts are loaded and the long-lived
    # objects are frozen, so the first submission and later full GC passes do not pause requests.
    code = (
        "import gc, sys\n"
        "from fastapi.testclient import TestClient\n"
        "from api.main import create_app\n"
        "from nero_study.settings import Settings\n"
        f"app = create_app(Settings(database_url={database_url!r}, health_min_workers=0), migrate=True)\n"
        "before = 'torch._dynamo' in sys.modules, gc.get_freeze_count()\n"
        "with TestClient(app) as client:\n"
        "    assert client.get('/healthz').status_code == 200\n"
        "    print(before, 'torch._dynamo' in sys.modules, gc.get_freeze_count() > 100_000)\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip().splitlines()[-1] == "(False, 0) True True"
