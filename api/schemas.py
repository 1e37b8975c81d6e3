"""Request and response bodies of the HTTP API (pydantic), named as in the FastAPI full-stack template.

Floats that can be NaN or infinite in the store (a diverged trial's metric) are written to JSON as ``null``
(:data:`JSONFloat`): plain JSON has no NaN, and a client should never fail to parse a response.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

from nero_study.json_safe import finite_or_none
from nero_study.study.spec import SweepSpec
from nero_study.vocabulary import SweepStatus, TrialStatus

#: A float that is ``null`` in JSON when it is NaN or infinite.
JSONFloat = Annotated[float | None, PlainSerializer(finite_or_none, return_type=float | None)]


#: The example on the POST /api/sweeps body in /docs: a sweep that finishes in about a minute on a CPU.
QUICK_SWEEP_EXAMPLE: dict[str, Any] = {
    "name": "quick: digits-mlp, nero vs adam",
    "tasks": ["digits-mlp"],
    "optimizers": ["nero", "adam"],
    "lrs": {"min": 0.001, "max": 0.1, "points_per_decade": 1},
    "seeds": [0],
    "protocol": "grid",
    "budget": "smoke",
}

PAPER_SWEEP_EXAMPLE: dict[str, Any] = {
    "name": "paper protocol on two proxies",
    "tasks": ["digits-mlp", "text-lm"],
    "optimizers": ["nero", "sgd", "adam", "lamb"],
    "lrs": {"min": 0.0001, "max": 1.0, "points_per_decade": 1},
    "seeds": [0, 1, 2],
    "protocol": "paper",
    "budget": "proxy",
}


class SweepCreate(SweepSpec):
    """The body of ``POST /api/sweeps``: a sweep specification (see ``nero_study.study.spec.SweepSpec``)."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        title="SweepCreate",
        json_schema_extra={"examples": [QUICK_SWEEP_EXAMPLE]},
    )


class FieldErrorPublic(BaseModel):
    """One problem with the input: the field it is in (``tasks[0]``, ``status``; empty for the whole body)."""

    field: str = Field(description="Where the problem is, e.g. 'tasks[0]' or 'optimizers[1].name'")
    location: Literal["body", "query", "path", "header", "cookie", ""] = ""
    message: str = Field(description="What is wrong and, where there is a closed set, the valid values")
    type: str = ""


class ErrorPublic(BaseModel):
    """Every 4xx/5xx answer: ``detail`` for people, ``errors`` (on 422) for programs."""

    detail: str
    errors: list[FieldErrorPublic] = Field(default_factory=list)


class SweepLinks(BaseModel):
    """Where to find the sweep's trials, analysis and exports."""

    self: str
    trials: str
    analysis: str
    export_csv: str
    export_parquet: str


class SweepPublic(BaseModel):
    """A sweep as the API shows it: its spec, status, progress counts and timestamps (UTC)."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    status: SweepStatus
    spec: dict[str, Any]
    counts: dict[str, int] = Field(description="Trials by status (pending, running, succeeded, diverged, ...)")
    trials_total: int = Field(description="Trials stored so far")
    planned_trials: int | None = Field(
        description="Trials the sweep will run in total (tpe and paper protocols add trials as they go; bracket: "
        "its worst case until it has finished, then the count it ran)"
    )
    cancel_requested: bool
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    execution: str | None = Field(description="How trials were executed: separate, packed, batched")
    attempts: int = Field(description="How many times a worker has claimed the sweep")
    busy_slot_seconds: float | None = Field(
        None, description="Slot-seconds in which a slot ran one of the sweep's bundles (summed over attempts)"
    )
    slot_seconds: float | None = Field(
        None, description="Slot-seconds the sweep had: its slots (trials at once) x the time its trials ran"
    )
    slot_utilisation: float | None = Field(
        None, description="busy_slot_seconds / slot_seconds (0..1); null until an attempt has run trials"
    )
    links: SweepLinks


class SweepsPublic(BaseModel):
    """One page of sweeps, newest first; ``total`` counts all sweeps matching the filter."""

    data: list[SweepPublic]
    total: int
    offset: int
    limit: int


class TrialPublic(BaseModel):
    """One trial: (task, optimiser variant, lr, seed, settings) and its outcome. NaN/inf metrics are null."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    sweep_id: str
    task: str
    optimizer: str
    label: str
    lr: float
    seed: int
    budget: str
    preset: str
    hyperparameters: dict[str, Any]
    settings: dict[str, dict[str, Any]] | None = Field(
        default=None,
        description=(
            "The optimiser settings per network the trial runs with: the preset, the task's own paper "
            "overrides and the explicit hyperparameters (null for trials stored before they were recorded)"
        ),
    )
    task_options: dict[str, Any]
    phase: str
    status: TrialStatus
    metric: JSONFloat = Field(description="Final metric (null if none, NaN or infinite)")
    best_metric: JSONFloat
    initial_metric: JSONFloat
    metric_name: str | None
    lower_is_better: bool | None
    attempt: int
    wall_s: JSONFloat = Field(description="Training wall time in seconds")
    device: str | None
    steps: int | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class TrialsPublic(BaseModel):
    """One page of a sweep's trials; ``total`` counts all trials matching the filters."""

    data: list[TrialPublic]
    total: int
    offset: int
    limit: int


class CurvePointPublic(BaseModel):
    """One evaluation on a learning curve; ``step`` counts optimiser steps. NaN/inf values are null."""

    step: int
    epoch: JSONFloat = None
    train_loss: JSONFloat = None
    metric: JSONFloat = None


class TrialDetailPublic(TrialPublic):
    """A trial with its learning curve, ordered by step."""

    curve: list[CurvePointPublic]


class TaskPublic(BaseModel):
    """A benchmark task; ``available`` is false when its module cannot be loaded in this installation."""

    name: str
    available: bool
    description: str | None = None
    kind: str | None = None
    metric_name: str | None = None
    lower_is_better: bool | None = None
    chance_metric: JSONFloat = None
    budgets: list[str] = Field(default_factory=list)
    default_device: str | None = None
    curve_metric_name: str | None = Field(default=None, description="What the learning curve's metric is")
    caveat: str = Field(default="", description="A known limit of the task that its results carry")
    networks: list[str] = Field(default_factory=list, description="The networks trained, one optimiser each")
    paper_overrides: dict[str, dict[str, dict[str, Any]]] = Field(
        default_factory=dict,
        description="Per network and optimiser, the task's settings on top of the registry's paper preset",
    )
    paper_settings_source: str = Field(default="", description="The reference file and lines of those overrides")
    optimizer_settings: dict[str, dict[str, dict[str, dict[str, Any]]]] = Field(
        default_factory=dict,
        description="Per preset, optimiser and network: the settings a trial with no explicit settings uses",
    )
    error: str | None = None


class OptimizerPublic(BaseModel):
    """A registered optimiser: its default (out-of-the-box) learning rate, presets and settable settings."""

    name: str
    description: str
    default_lr: float
    default_lr_source: str = Field(default="", description="Where the default lr comes from")
    presets: dict[str, dict[str, Any]]
    hyperparameters: list[str]
    task_overrides: dict[str, dict[str, dict[str, Any]]] = Field(
        default_factory=dict,
        description="Per task and network, the settings the task gives this optimiser under the paper preset",
    )


class HealthPublic(BaseModel):
    """``/healthz``: ``ok`` when the database answers and writes and enough workers are alive; ``revision`` is the
    migration it is at."""

    status: Literal["ok", "error"]
    database: str
    revision: str | None = None
    head: str | None = None
    workers: dict[str, Any] | None = Field(
        default=None,
        description=(
            "Live workers (heartbeat within `window_s` seconds): `alive`, `required` (503 below it) and each one's id, "
            "host, pid, current sweep and last heartbeat; under `serve` also its worker processes `expected` and "
            "`running`, their `pids` and `restarts` (503 while one is down)"
        ),
    )


class FindingLinks(BaseModel):
    """Where a finding comes from: the sweep's page, the sweep and its analysis in the API."""

    page: str
    sweep: str
    analysis: str


class FindingEntryPublic(BaseModel):
    """One finished sweep's verdict on one (task, optimiser) (``nero_study.study.verdict``). NaN/inf are null."""

    sweep_id: str
    sweep_name: str
    sweep_status: SweepStatus
    budget: str | None
    preset: str | None
    optimizer: str = Field(description="The registry name of the optimiser behind the label")
    status: Literal["winner", "behind", "inconclusive"] = Field(
        description="winner: the default lr is within noise of the task's best tuned result; inconclusive: "
        "the claim is withheld, `reasons` says why"
    )
    default_lr: JSONFloat
    ootb: JSONFloat = Field(description="The mean metric at the default lr (out of the box)")
    ootb_regret: JSONFloat = Field(description="Normalised: 0 = the task's best tuned result, 1 = chance")
    ootb_seeds: int
    best: JSONFloat = Field(description="This optimiser's tuned best metric")
    eta_star: JSONFloat = Field(description="The lr of its tuned best")
    best_seeds: int
    tuned_gap: JSONFloat = Field(description="The normalised regret of its tuned best: 0 for the task's best")
    lr_factor: JSONFloat = Field(description="eta_star / default_lr")
    edge: Literal["low", "high", "only"] | None = Field(description="Its best lr at an edge of its grid")
    failed: int = Field(description="Its failed trials, left out of the metrics")
    reasons: list[str] = Field(description="Why the claim is withheld, or the caveats of a claim")
    caveats: list[str] = Field(description="The sweep's own caveats (failed trials, an analysis error)")
    links: FindingLinks


class FindingRowPublic(BaseModel):
    """One (task, optimiser label): one entry per finished sweep that ran it, newest first.

    ``overall``: ``winner`` when every conclusive entry (winner or behind) says winner, ``behind`` when every one
    says behind, ``mixed`` when they disagree, ``inconclusive`` when none is conclusive.
    """

    task: str
    label: str
    metric_name: str
    lower_is_better: bool
    overall: Literal["winner", "behind", "mixed", "inconclusive"]
    winner: int = Field(description="Entries whose verdict is winner")
    behind: int
    inconclusive: int
    entries: list[FindingEntryPublic]


class FindingTallyPublic(BaseModel):
    """One optimiser label over the tasks it ran: how many tasks have each overall answer."""

    label: str
    tasks: int
    winner: int
    behind: int
    mixed: int
    inconclusive: int


class FindingSweepPublic(BaseModel):
    """A finished sweep the table reads."""

    id: str
    name: str
    status: SweepStatus
    budget: str | None
    preset: str | None
    protocol: str | None
    seeds: list[int]
    tasks: list[str]
    finished_at: datetime | None
    failed_trials: int
    caveats: list[str]
    links: FindingLinks


class FindingFiltersPublic(BaseModel):
    """The filters the table was read with (``null``: any)."""

    budget: str | None = None
    preset: str | None = None
    task: str | None = None


class FindingsPublic(BaseModel):
    """Every finished sweep's per-task verdicts in one task x optimiser table (``nero_study.study.findings``).

    Finished = ``succeeded`` or ``trials_failed`` (failed trials left out, with a caveat); queued, running,
    failed and cancelled sweeps are not read. ``headline``: the plain Nero variant's out-of-the-box record.
    ``available_tasks``: the tasks of every finished sweep, whatever the filters; ``note``: why the table is empty.
    """

    headline: str
    filters: FindingFiltersPublic
    sweeps: list[FindingSweepPublic]
    rows: list[FindingRowPublic]
    tallies: list[FindingTallyPublic]
    available_tasks: list[str]
    note: str | None
