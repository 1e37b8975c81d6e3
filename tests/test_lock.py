"""The locked install: requirements.lock pins exactly the closure of pyproject.toml's dependencies, and this
environment holds exactly those versions (so a fresh machine tests what CI tested)."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
#: Installed by `make` before the project (build tools), so locked although no dependency names them.
BUILD_TOOLS = {"pip", "setuptools", "wheel"}


def _locked() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in LOCK.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        assert match, f"requirements.lock: {line!r} is not an exact pin 'name==version'"
        pins[canonicalize_name(match[1])] = Version(match[2])
    return pins


def _project_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(text) for text in project["dependencies"] + project["optional-dependencies"]["test"]]


def _applies(requirement: Requirement, extras: set[str]) -> bool:
    if requirement.marker is None:
        return True
    environment = default_environment()
    return any(requirement.marker.evaluate({**environment, "extra": extra}) for extra in extras | {""})


def _closure(requirements: list[Requirement]) -> set[str]:
    """Every distribution the requirements pull in here, following installed metadata (markers evaluated)."""
    seen: set[str] = set()
    todo = [(requirement, set(requirement.extras)) for requirement in requirements if _applies(requirement, set())]
    while todo:
        requirement, extras = todo.pop()
        name = canonicalize_name(requirement.name)
        key = f"{name}[{','.join(sorted(extras))}]"
        if key in seen:
            continue
        seen.add(key)
        for text in metadata.requires(name) or []:
            child = Requirement(text)
            if _applies(child, extras):
                todo.append((child, set(child.extras)))
    return {key.split("[")[0] for key in seen}


def test_every_direct_requirement_is_locked_within_its_range() -> None:
    locked = _locked()
    for requirement in _project_requirements():
        if not _applies(requirement, set()):
            continue
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement} is in pyproject.toml but not in requirements.lock: run `make lock`"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"requirements.lock pins {name}=={locked[name]}, outside pyproject.toml's {requirement}: run `make lock`"
        )


def test_the_lock_is_exactly_the_dependency_closure() -> None:
    locked = set(_locked())
    closure = _closure(_project_requirements()) - {"nero-study"}
    assert not closure - locked, f"needed but not locked (run `make lock`): {sorted(closure - locked)}"
    stale = locked - closure - BUILD_TOOLS
    assert not stale, f"locked but no longer needed (run `make lock`): {sorted(stale)}"


def test_this_environment_holds_the_locked_versions() -> None:
    mismatched = {}
    for name, version in _locked().items():
        installed = Version(metadata.version(name))
        # torch's local build tag (+cpu, +cu128) is not part of the pin: `torch==2.13.0` admits either.
        if Version(installed.base_version if installed.local else str(installed)) != version:
            mismatched[name] = (str(version), str(installed))
    assert not mismatched, f"installed versions differ from requirements.lock (locked, installed): {mismatched}"
