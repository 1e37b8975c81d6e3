"""Numbers for people (CLI tables, pages, reports): one formatter, so every view writes a value the same way."""

from __future__ import annotations

import math
from typing import Any

MISSING = "—"


def format_number(value: Any, spec: str = ".4g") -> str:
    """``value`` formatted with ``spec``; ``—`` when missing (None or NaN), ``∞``/``−∞`` for infinities."""
    if value is None:
        return MISSING
    if isinstance(value, float):
        if math.isnan(value):
            return MISSING
        if math.isinf(value):
            return "∞" if value > 0 else "−∞"
    return format(value, spec)
