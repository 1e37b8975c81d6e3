"""What a sweep's pages and ``/analysis`` computed, kept per sweep version and shared by every viewer.

A sweep's ``version`` (``Sweep.version`` in the store) goes up in the same transaction as every write that
changes what the sweep shows, so one number says whether anything changed:

- :func:`etag` makes a strong validator from (sweep, version, representation, its parameters, this code), and
  a request whose ``If-None-Match`` holds it gets ``304 Not Modified`` after one indexed read;
- :class:`SweepViewCache` keeps, per sweep, the newest snapshot (trials, analysis, curves) and the figures
  built from it, and per representation the newest answer, so that the page, ``figures.json``, ``/analysis``
  and the report of one version are computed once, whoever asks, however many ask at once. An entry is
  used only for a version at least as new as the one the request read from the store (a write always makes
  a newer version, so nothing stale is served); older versions of a sweep are dropped as newer ones arrive,
  and the whole cache is bounded by a number of snapshots and a number of answer bytes (least recently used
  out first);
- :func:`findings_answer` serves ``/findings`` and ``/api/findings`` the same way across sweeps: what each
  finished sweep contributes (its verdict) is kept per (sweep, version), and an answer is keyed on the set of
  (sweep id, version) pairs of the finished sweeps, read in one query, so a request recomputes only the sweeps
  that changed since (none, once they have finished).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

from fastapi import Request, Response

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

T = TypeVar("T")

#: Snapshots of this many sweeps at most (a 10,000-trial sweep's snapshot is tens of MB).
MAX_SNAPSHOTS = 4
#: Answer bytes kept at most (a report inlines plotly.js: about 5 MB each).
MAX_ANSWER_BYTES = 64 * 2**20
#: Finished sweeps whose findings (a verdict per task and optimiser, a few KB each) are kept at most.
MAX_FINDINGS_SWEEPS = 10_000
#: What makes browsers ask again each time, with the validator they hold (never a stale page).
REVALIDATE = "no-cache"

_BUILD_LOCKS = 64

_ROOT = Path(__file__).resolve().parents[1]
_CODE_GLOBS = ("api/**/*.py", "dashboards/**/*.py", "dashboards/templates/*", "dashboards/static/*")


def _code_fingerprint() -> str:
    """A digest of the code that renders a sweep (api, dashboards, their templates and scripts, the analysis).

    Part of every ETag, so that a browser holding a page rendered by another release of the code asks again.
    Every process running the same code computes the same digest (several workers agree on validators).
    """
    digest = hashlib.sha256()
    files = sorted({path for pattern in _CODE_GLOBS for path in _ROOT.glob(pattern) if path.is_file()})
    files.extend(_ROOT / "nero_study" / "study" / name for name in ("analysis.py", "verdict.py", "findings.py"))
    for path in files:
        digest.update(str(path.relative_to(_ROOT)).encode())
        digest.update(path.read_bytes() if path.is_file() else b"")
    return digest.hexdigest()[:16]


CODE_FINGERPRINT = _code_fingerprint()


def etag(sweep_id: str, version: int, representation: str, params: Sequence[Any] = (), *, weak: bool = False) -> str:
    """The validator of one representation of one sweep version, e.g. ``"3f2a...-v17-9c0d..."``.

    ``params``: whatever else the bytes depend on (the root path, the page's refresh interval). ``weak`` for
    answers whose bytes differ between renders of the same data (the report's generation time).
    """
    detail = hashlib.sha256(repr((representation, tuple(params), CODE_FINGERPRINT)).encode()).hexdigest()[:16]
    tag = f'"{sweep_id}-v{int(version)}-{detail}"'
    return f"W/{tag}" if weak else tag


def matches(if_none_match: str | None, tag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``tag`` (weak comparison, as RFC 9110 asks for this header)."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    wanted = tag.removeprefix("W/")
    return any(part.strip().removeprefix("W/") == wanted for part in if_none_match.split(","))


class Answer(NamedTuple):
    """A rendered answer: its bytes, media type, validator and the sweep version it shows."""

    body: bytes
    media_type: str
    etag: str
    version: int


class _Entry(NamedTuple):
    version: int
    value: Any
    size: int


class _NewestPerKey(Generic[T]):
    """Per key, the newest value (by version) and one builder at a time; least recently used out first."""

    def __init__(self, *, max_items: int | None = None, max_size: int | None = None) -> None:
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        # One builder at a time per key, from a fixed set of locks (keys come from requests: no lock per key).
        self._building = tuple(threading.Lock() for _ in range(_BUILD_LOCKS))
        self._max_items = max_items
        self._max_size = max_size
        self._size = 0
        self.builds = 0

    def latest(self, key: Hashable) -> Any:
        """The newest value kept for ``key`` whatever its version (``None`` when there is none)."""
        with self._lock:
            entry = self._entries.get(key)
            return None if entry is None else entry.value

    def _fresh(self, key: Hashable, version: int) -> Any:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.version < version:
                return None
            self._entries.move_to_end(key)
            return entry.value

    def get(
        self,
        key: Hashable,
        version: int,
        build: Callable[[], T],
        *,
        version_of: Callable[[T], int],
        size: Callable[[T], int],
    ) -> T:
        """The value for ``key`` at ``version`` or newer; built (once, whoever waits) when there is none."""
        found = self._fresh(key, version)
        if found is not None:
            return found
        with self._building[hash(key) % _BUILD_LOCKS]:
            found = self._fresh(key, version)  # another viewer may have built it meanwhile
            if found is not None:
                return found
            value = build()
            self.builds += 1
            self._put(key, _Entry(version_of(value), value, size(value)))
            return value

    def _put(self, key: Hashable, entry: _Entry) -> None:
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None and old.version > entry.version:
                entry = old  # a newer one arrived meanwhile: keep it
            self._size += entry.size - (old.size if old is not None else 0)
            self._entries[key] = entry
            while self._entries and (
                (self._max_items is not None and len(self._entries) > self._max_items)
                or (self._max_size is not None and self._size > self._max_size and len(self._entries) > 1)
            ):
                _, dropped = self._entries.popitem(last=False)
                self._size -= dropped.size

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._size = 0


class SweepViewCache:
    """Snapshots and rendered answers of sweeps, per sweep version, shared by all viewers (thread-safe)."""

    def __init__(
        self,
        *,
        max_snapshots: int = MAX_SNAPSHOTS,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
        max_findings: int = MAX_FINDINGS_SWEEPS,
    ) -> None:
        self.snapshots: _NewestPerKey[Any] = _NewestPerKey(max_items=max_snapshots)
        self.answers: _NewestPerKey[Answer] = _NewestPerKey(max_size=max_answer_bytes)
        self.figures: _NewestPerKey[Any] = _NewestPerKey(max_items=max_snapshots)
        self.findings: _NewestPerKey[Any] = _NewestPerKey(max_items=max_findings)

    def snapshot(self, sweep_id: str, version: int, load: Callable[[Any], Any]) -> Any:
        """The sweep's snapshot at ``version`` or newer; ``load(previous)`` reads one (``None``: no such sweep),
        given the newest snapshot kept of the sweep (``None`` when there is none) to take over what is current."""

        def build() -> _Loaded:
            previous = self.snapshots.latest(sweep_id)
            return _Loaded(load(None if previous is None else previous.snapshot))

        found = self.snapshots.get(
            sweep_id,
            version,
            build,
            version_of=lambda loaded: -1 if loaded.snapshot is None else loaded.snapshot.store_version,
            size=lambda loaded: 1,
        )
        return found.snapshot

    def figures_of(self, snapshot: Any, build: Callable[[Any, Any], Any]) -> Any:
        """The figures of ``snapshot``, built once per sweep version by ``build(snapshot, previous)``, where
        ``previous`` is the newest snapshot whose figures are kept, and its figures (or ``None``)."""
        version = snapshot.store_version

        def make() -> tuple[int, Any, Any]:
            kept = self.figures.latest(snapshot.id)
            previous = None if kept is None else (kept[1], kept[2])
            return version, snapshot, build(snapshot, previous)

        return self.figures.get(snapshot.id, version, make, version_of=lambda item: item[0], size=lambda item: 1)[2]

    def findings_of(self, sweep_id: str, version: int, load: Callable[[Any], Any]) -> Any:
        """What one finished sweep contributes to the findings at ``version`` or newer, built once per version
        by ``load(snapshot)``: ``snapshot`` is the sweep's kept snapshot when it is that new (its analysis is
        reused, not recomputed), else ``None``. ``load`` returns ``(store version, findings or None)``."""

        def build() -> tuple[int, Any]:
            kept = self.snapshots.latest(sweep_id)
            snapshot = None if kept is None else kept.snapshot
            fresh = snapshot is not None and snapshot.store_version >= version
            return load(snapshot if fresh else None)

        found = self.findings.get(sweep_id, version, build, version_of=lambda item: item[0], size=lambda item: 1)
        return found[1]

    def answer(self, key: Hashable, version: int, build: Callable[[], Answer]) -> Answer:
        """The answer for ``key`` (a sweep id, a representation and its parameters) at ``version`` or newer."""
        return self.answers.get(
            key, version, build, version_of=lambda answer: answer.version, size=lambda a: len(a.body)
        )


class _Loaded(NamedTuple):
    snapshot: Any


def sweep_answer(
    request: Request,
    session: Session,
    *,
    sweep_id: str,
    representation: str,
    render: Callable[[Any], bytes],
    media_type: str,
    params: Sequence[Any] = (),
    weak: bool = False,
    headers: dict[str, str] | None = None,
) -> Response | None:
    """One representation of a sweep, answered from its version: ``304`` when ``If-None-Match`` names the
    current validator (one indexed read), else the answer cached for this version, else ``render(snapshot)``
    of the (cached) snapshot. ``None`` when there is no such sweep. Every answer carries ``ETag`` and
    ``Cache-Control: no-cache`` (browsers keep it but ask again, sending the validator)."""
    from dashboards.snapshot import load_sweep_snapshot
    from nero_study.store import repo

    cache: SweepViewCache = request.app.state.sweep_view_cache
    version = repo.get_sweep_version(session, sweep_id=sweep_id)
    if version is None:
        return None
    common = {"Cache-Control": REVALIDATE, **(headers or {})}
    if_none_match = request.headers.get("if-none-match")
    current = etag(sweep_id, version, representation, params, weak=weak)
    if matches(if_none_match, current):
        return Response(status_code=304, headers={"ETag": current, **common})

    def build() -> Answer:
        snapshot = cache.snapshot(
            sweep_id, version, lambda previous: load_sweep_snapshot(session, sweep_id=sweep_id, previous=previous)
        )
        if snapshot is None:
            raise _SweepGone
        tag = etag(sweep_id, snapshot.store_version, representation, params, weak=weak)
        return Answer(render(snapshot), media_type, tag, snapshot.store_version)

    try:
        answer = cache.answer((sweep_id, representation, tuple(params)), version, build)
    except _SweepGone:
        return None
    if matches(if_none_match, answer.etag):
        return Response(status_code=304, headers={"ETag": answer.etag, **common})
    return Response(answer.body, media_type=answer.media_type, headers={"ETag": answer.etag, **common})


def finished_findings(request: Request, session: Session) -> tuple[str, list[Any]]:
    """The findings of every finished sweep (``SweepFindings``, :mod:`nero_study.study.findings`) and a digest of
    the (sweep id, version) pairs they were read at. One query for the pairs; a sweep is analysed only when
    its version is not cached yet (its snapshot's analysis reused when the sweep's page already loaded it)."""
    from dashboards.snapshot import load_sweep_snapshot
    from nero_study.store import repo
    from nero_study.study.findings import FINDINGS_STATUSES, sweep_findings

    cache: SweepViewCache = request.app.state.sweep_view_cache
    pairs = repo.sweep_versions(session, status=FINDINGS_STATUSES)
    found = []
    for sweep_id, version in pairs:

        def load(snapshot: Any, sweep_id: str = sweep_id, version: int = version) -> tuple[int, Any]:
            if snapshot is None:
                snapshot = load_sweep_snapshot(session, sweep_id=sweep_id, with_curves=False)
            if snapshot is None:  # deleted in between
                return version, None
            findings = sweep_findings(
                sweep_id=snapshot.id,
                name=snapshot.name,
                status=snapshot.status,
                spec=snapshot.spec,
                trials=snapshot.trials,
                analysis=snapshot.analysis,
                analysis_error=snapshot.analysis_error,
                finished_at=snapshot.finished_at,
            )
            return snapshot.store_version, findings

        item = cache.findings_of(sweep_id, version, load)
        if item is not None:
            found.append(item)
    digest = hashlib.sha256(repr((pairs, CODE_FINGERPRINT)).encode()).hexdigest()[:24]
    return digest, found


def findings_answer(
    request: Request,
    session: Session,
    *,
    representation: str,
    render: Callable[[list[Any]], bytes],
    media_type: str,
    params: Sequence[Any] = (),
) -> Response:
    """One representation of the findings (``render(findings of every finished sweep)``), answered from the set
    of (sweep id, version) pairs: ``304`` when ``If-None-Match`` names its validator, else the answer kept for
    that set, else rendered. Carries ``ETag`` and ``Cache-Control: no-cache`` as :func:`sweep_answer` does."""
    cache: SweepViewCache = request.app.state.sweep_view_cache
    digest, found = finished_findings(request, session)
    detail = hashlib.sha256(repr((digest, representation, tuple(params))).encode()).hexdigest()[:16]
    tag = f'"findings-{digest}-{detail}"'
    headers = {"ETag": tag, "Cache-Control": REVALIDATE}
    if matches(request.headers.get("if-none-match"), tag):
        return Response(status_code=304, headers=headers)

    def build() -> Answer:
        return Answer(render(found), media_type, tag, 0)

    answer = cache.answer(("findings", digest, representation, tuple(params)), 0, build)
    return Response(answer.body, media_type=answer.media_type, headers=headers)


class _SweepGone(LookupError):
    """The sweep was deleted between reading its version and reading its snapshot."""


__all__ = [
    "CODE_FINGERPRINT",
    "REVALIDATE",
    "Answer",
    "SweepViewCache",
    "etag",
    "findings_answer",
    "finished_findings",
    "matches",
    "sweep_answer",
]
