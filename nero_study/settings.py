"""One settings object for the whole service (environment prefix ``NERO_STUDY_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The service's default cap on the trials one sweep may plan (``NERO_STUDY_MAX_TRIALS_PER_SWEEP`` sets another).
DEFAULT_MAX_TRIALS_PER_SWEEP = 5000
#: The browser that renders figures as SVG/PDF (Debian's Chromium; ``NERO_STUDY_CHROMIUM_PATH`` names another).
DEFAULT_CHROMIUM_PATH = Path("/usr/bin/chromium")


def default_database_url() -> str:
    """SQLite file under ``~/.nero-study`` (created on first use)."""
    home = Path.home() / ".nero-study"
    return f"sqlite:///{home / 'nero-study.db'}"


class Settings(BaseSettings):
    """Service settings; every field can be set as ``NERO_STUDY_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="NERO_STUDY_", extra="ignore")

    database_url: str = Field(default_factory=default_database_url)
    data_dir: Path | None = None
    api_tokens: str = ""  # comma-separated bearer tokens accepted for writes
    require_token_for_reads: bool = False
    max_trials_per_sweep: int = Field(default=DEFAULT_MAX_TRIALS_PER_SWEEP, ge=1)
    max_spec_bytes: int = 256_000
    host: str = "127.0.0.1"
    port: int = 8000
    lease_seconds: float = 30.0
    heartbeat_seconds: float = 5.0
    poll_seconds: float = 1.0
    # A worker on a Ray cluster (RAY_ADDRESS=host:port) that gets no answer from the Ray head for this long gives
    # its sweep back to the queue and exits (status 3) for its supervisor to restart it. Under Ray's own limit:
    # Ray ends a driver whose head is silent for 60 s, from inside a Ray call, with nothing said to the store.
    ray_lost_seconds: float = Field(default=10.0, gt=0, lt=60)
    # Workers keep their Tune trial processes warm between sweeps (nero_study.study.pool). On a shared
    # Ray cluster (RAY_ADDRESS) they let them go after this many idle seconds, giving the slots back;
    # on a local Ray of their own they keep them. 0 turns warm runners off.
    warm_pool_idle_seconds: float = Field(default=120.0, ge=0)
    # A worker writes its row in the ``workers`` table every heartbeat; it counts as alive while its row is younger
    # than this (s). /healthz answers 503 while fewer than ``health_min_workers`` are alive (0: it ignores workers).
    worker_alive_seconds: float = Field(default=30.0, gt=0)
    health_min_workers: int = Field(default=1, ge=0)
    # A running sweep whose worker writes no trial event or result for this many seconds is failed ("no progress
    # for N s") and its lease released: a hung trial cannot hold a worker and its sweep for ever. 0 turns it off.
    stall_seconds: float = Field(default=1800.0, ge=0)
    seed_demo: bool = True
    migrate_on_startup: bool = False  # the API runs the packaged migrations when it starts
    chromium_path: Path = DEFAULT_CHROMIUM_PATH  # renders figures as SVG/PDF (dashboards.figure_export)

    def spec_context(self) -> dict[str, int]:
        """The validation context of a spec submitted to this service (its trial limit)."""
        return {"max_trials_per_sweep": self.max_trials_per_sweep}

    def token_list(self) -> list[str]:
        return [token.strip() for token in self.api_tokens.split(",") if token.strip()]
