"""The API under uvicorn in a subprocess, for the benchmarks that load it over HTTP (api_load, dashboard_load)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
#: The write token the benchmarks' servers accept.
TOKEN = "load-test-token"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(url: str, port: int) -> subprocess.Popen[bytes]:
    """``uvicorn --factory api.main:create_app`` on 127.0.0.1:``port`` over the store at ``url``."""
    # The API alone (no worker): its health judges the database only.
    env = {**os.environ, "NERO_STUDY_DATABASE_URL": url, "NERO_STUDY_API_TOKENS": TOKEN}
    env["NERO_STUDY_HEALTH_MIN_WORKERS"] = "0"
    command = [
        sys.executable, "-m", "uvicorn", "--factory", "api.main:create_app",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    return subprocess.Popen(command, cwd=ROOT, env=env)


def wait_healthy(base_url: str, server: subprocess.Popen[bytes], timeout: float = 180.0) -> None:
    """Wait until the server answers ``/healthz`` (a failsafe ``timeout``, not a measurement)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with code {server.returncode}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"the server did not answer /healthz within {timeout:.0f} s")


def stop_server(server: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds."""
    server.terminate()
    try:
        server.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
