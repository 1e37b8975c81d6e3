"""JSON that every parser reads: NaN and +/-inf become ``null``, numpy scalars become Python numbers.

Python's ``json`` writes ``NaN``/``Infinity`` by default, which is not JSON (jq, JavaScript's ``JSON.parse`` and
most parsers reject it). Everything the project writes as JSON (CLI ``--json``, reports, API bodies) goes through
:func:`json_safe` or :func:`dumps`; a ``null`` number means "not available" (no finite value: not measured, a
diverged run's metric, a ratio that is unbounded), and each schema says which.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any


def finite_or_none(value: float | None) -> float | None:
    """``value`` as a float if it is finite, else ``None``."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


#: Deepest nesting :func:`json_safe` keeps when asked to bound it (serialisers refuse a few hundred levels).
MAX_SHOWN_DEPTH = 32


def json_safe(value: Any, max_depth: int | None = None) -> Any:
    """``value`` with every NaN/inf float (at any depth) replaced by ``None``; tuples become lists.

    ``max_depth``: mappings and lists nested deeper than this are replaced by a note saying so, so that a
    stored value of any depth can always be written out (the API's listings use :data:`MAX_SHOWN_DEPTH`).
    """
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping | list | tuple) and max_depth is not None and max_depth <= 0:
        return "(nested too deeply to show)"
    inner = None if max_depth is None else max_depth - 1
    if isinstance(value, Mapping):
        return {str(key): json_safe(item, inner) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item, inner) for item in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "shape", None) == ():
        return json_safe(value.item())  # numpy / torch scalars
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`json_safe` ``(value)``; refuses (``ValueError``) anything still not JSON."""
    kwargs.setdefault("default", _default)
    return json.dumps(json_safe(value), allow_nan=False, **kwargs)


def _default(value: Any) -> Any:
    return str(value)
