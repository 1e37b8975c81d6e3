"""Property-based run of schemathesis against the OpenAPI document: no input makes the API answer 5xx.

Each operation gets a few generated requests that follow the schema (positive) and a few that break it
(negative), sent with a valid token so that writes reach validation. Bounded so that it stays in the
default test run.
"""

from __future__ import annotations

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from api.main import create_app
from nero_study.settings import Settings

AUTH = {"Authorization": "Bearer test-token"}  # the token of the ``settings`` fixture
EXAMPLES_PER_OPERATION = 12


def _operations() -> list[tuple[str, str]]:
    # Building the app and its schema connects nowhere, so the operations can be listed at collection.
    schema = create_app(Settings(database_url="sqlite:///:memory:")).openapi()
    operations = []
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                # An operation without parameters or body has no invalid input to generate.
                if mode is GenerationMode.NEGATIVE and not (
                    operation.get("parameters") or operation.get("requestBody")
                ):
                    continue
                operations.append(pytest.param(method.upper(), path, mode, id=f"{method.upper()} {path} {mode.value}"))
    return operations


@pytest.mark.parametrize(("method", "path", "mode"), _operations())
def test_no_input_gives_a_server_error(app: FastAPI, method: str, path: str, mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operation = schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    def check(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=AUTH, excluded_checks=excluded)

    # A schema-valid spec may still break rules JSON Schema cannot state (the trial limit, an optimiser's
    # settings), and a results CSV's rows cannot be stated in JSON Schema at all: those POST bodies are allowed
    # to be refused with a 422.
    refusable = {("POST", "/api/sweeps"), ("POST", "/api/sweeps/import")}
    excluded = [positive_data_acceptance] if (method, path) in refusable else []

    check()
