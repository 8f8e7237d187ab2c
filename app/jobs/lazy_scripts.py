"""Lua scripts a job-store part registers on the store's Redis client on first use (app/jobs/*_store.py)."""

from __future__ import annotations

from types import ModuleType
from typing import Any


def lazy_script(store: Any, module: ModuleType, name: str) -> Any:
    """``module.<name>`` (Lua source) registered on ``store._r`` once, the first time it is asked for."""
    registered: dict[tuple[str, str], Any] = store.__dict__.setdefault("_lazy_scripts", {})
    key = (module.__name__, name)
    if key not in registered:
        registered[key] = store._r.register_script(getattr(module, name))
    return registered[key]
