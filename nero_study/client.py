"""A small HTTP client for the nero-study API, and the logic of the CLI's ``submit`` and ``status`` commands.

Example::

    from nero_study.client import NeroStudyClient

    with NeroStudyClient("http://127.0.0.1:8000", token="...") as client:
        sweep = client.submit({"tasks": ["digits-mlp"], "optimizers": ["nero", "adam"], "lrs": [0.01, 0.1]})
        sweep = client.wait(sweep["id"], timeout=600)
        print(client.analysis(sweep["id"])["per_optimizer"])

Every method returns the API's JSON (dicts); errors raise :class:`ApiError` with the API's message (a 422
names the field and the valid values). The library never imports the server: this module needs only httpx.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from nero_study.vocabulary import SWEEP_FINISHED, TRIAL_FINISHED

DEFAULT_URL = "http://127.0.0.1:8000"
#: Sweep statuses after which nothing changes any more.


class ApiError(RuntimeError):
    """The API answered with an error: ``status_code`` and its ``detail`` message (and ``errors`` on 422)."""

    def __init__(self, status_code: int, detail: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(f"HTTP {status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail
        self.errors = errors or []


class NeroStudyClient:
    """Talks to a nero-study API at ``url``; ``token`` is sent as a bearer token (needed for writes).

    ``http_client`` replaces the underlying :class:`httpx.Client` (tests pass FastAPI's ``TestClient``).
    ``timeout`` is the per-request timeout in seconds.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        http_client: httpx.Client | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._owns_client = http_client is None
        self._http = http_client or httpx.Client(base_url=self.url, timeout=timeout)
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}

    # -- plumbing --------------------------------------------------------------------------------------

    def close(self) -> None:
        if self._owns_client:
            self._http.close()

    def __enter__(self) -> NeroStudyClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**self._headers, **kwargs.pop("headers", {})}
        response = self._http.request(method, path, headers=headers, **kwargs)
        if response.status_code >= 400:
            raise _api_error(response)
        return response

    # -- endpoints -------------------------------------------------------------------------------------

    def submit(self, spec: Mapping[str, Any] | Any, idempotency_key: str | None = None) -> dict[str, Any]:
        """Submit a sweep spec (a dict, or a ``SweepSpec``); returns the queued sweep.

        With ``idempotency_key``, submitting again returns the same sweep instead of a second one.
        """
        body = _spec_body(spec)
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._request("POST", "/api/sweeps", json=body, headers=headers).json()

    def import_results(self, results: str | Path, *, name: str = "imported") -> dict[str, Any]:
        """Store results computed elsewhere (a CSV's text, or a path to one) as a finished sweep; returns it.

        A file with a bad row stores nothing: the :class:`ApiError` names every bad row and column.
        """
        text = Path(results).read_text() if isinstance(results, Path) else results
        headers = {"Content-Type": "text/csv"}
        return self._request("POST", "/api/sweeps/import", content=text, params={"name": name}, headers=headers).json()

    def get_sweep(self, sweep_id: str) -> dict[str, Any]:
        """The sweep: spec, status, trial counts by status, timestamps, error."""
        return self._request("GET", f"/api/sweeps/{sweep_id}").json()

    def list_sweeps(self, *, status: str | None = None, offset: int = 0, limit: int = 50) -> dict[str, Any]:
        """A page of sweeps (``data``, ``total``, ``offset``, ``limit``), newest first."""
        params = _params(status=status, offset=offset, limit=limit)
        return self._request("GET", "/api/sweeps", params=params).json()

    def wait(
        self,
        sweep_id: str,
        timeout: float = 3600.0,
        poll: float = 0.5,
        *,
        on_update: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll every ``poll`` seconds until the sweep has finished; raises :class:`TimeoutError` after ``timeout``.

        Every half second by default: one indexed read a poll on the server, and a short sweep is seen to end
        within half a second of ending.

        ``on_update`` is called with the sweep after each poll (for progress output).
        """
        deadline = time.monotonic() + timeout
        while True:
            sweep = self.get_sweep(sweep_id)
            if on_update is not None:
                on_update(sweep)
            if sweep["status"] in SWEEP_FINISHED:
                return sweep
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"Sweep {sweep_id} is still {sweep['status']} after {timeout:g} s ({progress_line(sweep)})"
                )
            time.sleep(min(poll, remaining))

    def list_trials(
        self,
        sweep_id: str,
        *,
        status: str | None = None,
        task: str | None = None,
        label: str | None = None,
        optimizer: str | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> dict[str, Any]:
        """A page of the sweep's trials (``data``, ``total``), filtered by status, task, label or optimizer."""
        params = _params(status=status, task=task, label=label, optimizer=optimizer, offset=offset, limit=limit)
        return self._request("GET", f"/api/sweeps/{sweep_id}/trials", params=params).json()

    def get_trial(self, trial_id: int) -> dict[str, Any]:
        """One trial with its learning curve."""
        return self._request("GET", f"/api/trials/{trial_id}").json()

    def analysis(self, sweep_id: str) -> dict[str, Any]:
        """The robustness metrics of the sweep's finished trials."""
        return self._request("GET", f"/api/sweeps/{sweep_id}/analysis").json()

    def cancel(self, sweep_id: str) -> dict[str, Any]:
        """Ask the sweep to stop; returns the sweep (``cancelled`` at once if it was still queued)."""
        return self._request("POST", f"/api/sweeps/{sweep_id}/cancel").json()

    def export(self, sweep_id: str, path: str | Path, format: str = "csv") -> Path:
        """Download the sweep's trials as ``csv`` or ``parquet`` to ``path``; returns the path."""
        if format not in ("csv", "parquet"):
            raise ValueError(f"Invalid format {format!r}; valid: csv, parquet")
        response = self._request("GET", f"/api/sweeps/{sweep_id}/export.{format}")
        path = Path(path)
        path.write_bytes(response.content)
        return path

    def tasks(self) -> list[dict[str, Any]]:
        return self._request("GET", "/api/tasks").json()

    def optimizers(self) -> list[dict[str, Any]]:
        return self._request("GET", "/api/optimizers").json()

    def health(self) -> dict[str, Any]:
        return self._request("GET", "/healthz").json()


def _params(**values: Any) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


def _spec_body(spec: Mapping[str, Any] | Any) -> dict[str, Any]:
    if isinstance(spec, Mapping):
        return dict(spec)
    if hasattr(spec, "model_dump"):
        # Only what was set: defaults (the trial limit above all) are the server's to fill in.
        return spec.model_dump(mode="json", exclude_unset=True)
    raise TypeError(f"Invalid spec of type {type(spec).__name__}; give a dict or a SweepSpec")


def _api_error(response: httpx.Response) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        return ApiError(response.status_code, response.text[:500] or response.reason_phrase)
    if isinstance(body, dict):
        detail = body.get("detail")
        errors = body.get("errors") if isinstance(body.get("errors"), list) else None
        if isinstance(detail, str):
            return ApiError(response.status_code, detail, errors)
        return ApiError(response.status_code, str(detail if detail is not None else body), errors)
    return ApiError(response.status_code, str(body))


# --- the CLI's commands ----------------------------------------------------------------------------------


def default_url() -> str:
    """``NERO_STUDY_URL`` if set, else the embedded service's address."""
    return os.environ.get("NERO_STUDY_URL", DEFAULT_URL)


def default_token() -> str | None:
    """``NERO_STUDY_TOKEN`` if set, else the first of ``NERO_STUDY_API_TOKENS`` (same machine), else none."""
    token = os.environ.get("NERO_STUDY_TOKEN")
    if token:
        return token
    tokens = [t.strip() for t in os.environ.get("NERO_STUDY_API_TOKENS", "").split(",") if t.strip()]
    return tokens[0] if tokens else None


def load_spec_file(path: str | Path) -> dict[str, Any]:
    """Read a ``.yaml``/``.yml``/``.json`` spec, validate it locally (same messages as the server) and
    return it as written (the server fills in its own defaults and limit)."""
    import json

    import yaml

    from nero_study.study.spec import SweepSpec

    path = Path(path)
    SweepSpec.from_file(path)  # fails early, naming the field and the valid values
    text = path.read_text(encoding="utf-8")
    data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    return dict(data)


def progress_line(sweep: Mapping[str, Any]) -> str:
    """One line: ``running  12/40 done (10 succeeded, 2 diverged, 0 failed), 4 running``."""
    counts = sweep.get("counts") or {}
    done = sum(counts.get(name, 0) for name in TRIAL_FINISHED)
    planned = sweep.get("planned_trials") or sweep.get("trials_total") or 0
    text = (
        f"{sweep.get('status')}  {done}/{planned} done ({counts.get('succeeded', 0)} succeeded, "
        f"{counts.get('diverged', 0)} diverged, {counts.get('failed', 0)} failed), {counts.get('running', 0)} running"
    )
    if counts.get("cancelled"):
        text += f", {counts['cancelled']} cancelled"
    if sweep.get("slot_utilisation") is not None:
        text += f"; slot use {100 * sweep['slot_utilisation']:.0f}%"
    if sweep.get("error"):
        text += f"; error: {sweep['error']}"
    return text


def submit(
    spec_path: str | Path,
    *,
    url: str | None = None,
    token: str | None = None,
    idempotency_key: str | None = None,
    wait: bool = False,
    timeout: float = 3600.0,
    poll: float = 0.5,
    on_update: Callable[[dict[str, Any]], None] | None = None,
    http_client: httpx.Client | None = None,
) -> dict[str, Any]:
    """``nero-study submit SPEC``: validate the spec file, submit it, optionally wait; returns the sweep."""
    spec = load_spec_file(spec_path)
    with NeroStudyClient(url or default_url(), token or default_token(), http_client=http_client) as client:
        sweep = client.submit(spec, idempotency_key=idempotency_key)
        if wait:
            sweep = client.wait(sweep["id"], timeout=timeout, poll=poll, on_update=on_update)
        return sweep


def status(
    sweep_id: str | None = None,
    *,
    url: str | None = None,
    token: str | None = None,
    limit: int = 20,
    http_client: httpx.Client | None = None,
) -> list[dict[str, Any]]:
    """``nero-study status [SWEEP_ID]``: that sweep, or the ``limit`` newest sweeps."""
    with NeroStudyClient(url or default_url(), token or default_token(), http_client=http_client) as client:
        if sweep_id:
            return [client.get_sweep(sweep_id)]
        return list(client.list_sweeps(limit=limit)["data"])


__all__ = [
    "ApiError",
    "DEFAULT_URL",
    "NeroStudyClient",
    "default_token",
    "default_url",
    "load_spec_file",
    "progress_line",
    "status",
    "submit",
]
