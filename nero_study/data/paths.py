"""Where the paper tasks' data sets live: ``NERO_STUDY_DATA_DIR``, read when asked (never at import).

Loaders never download: each data set must already sit under the data directory in its standard on-disk
format (``nero-study data fetch``, :mod:`nero_study.datasets`, puts it there), and a missing file fails at
once with the file expected and where (:func:`require_file`).
"""

from __future__ import annotations

from pathlib import Path

from nero_study.errors import TaskConfigError

DATA_DIR_ENV = "NERO_STUDY_DATA_DIR"


def data_dir(what: str = "the data sets") -> Path:
    """The data directory from :class:`nero_study.settings.Settings` (env ``NERO_STUDY_DATA_DIR``).

    Read at call time so that a changed environment is seen; ``what`` names the data the caller wants,
    for the message when the variable is not set.
    """
    from nero_study.settings import Settings

    directory = Settings().data_dir
    if directory is None:
        raise TaskConfigError(f"{DATA_DIR_ENV} is not set; expected {what} under the folder it names")
    return Path(directory).expanduser()


def require_file(path: Path, what: str) -> Path:
    """``path`` if it is an existing file, else :class:`TaskConfigError` naming ``what`` and ``path``."""
    if not Path(path).is_file():
        raise TaskConfigError(f"expected {what} at {path} (set {DATA_DIR_ENV})")
    return Path(path)


def require_dir(path: Path, what: str) -> Path:
    """``path`` if it is an existing folder, else :class:`TaskConfigError` naming ``what`` and ``path``."""
    if not Path(path).is_dir():
        raise TaskConfigError(f"expected {what} at {path} (set {DATA_DIR_ENV})")
    return Path(path)
