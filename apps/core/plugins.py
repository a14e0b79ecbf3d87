"""Plugin discovery through entry points. A broken plugin is recorded and logged, never fatal."""
from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass
from importlib.metadata import entry_points

from .registry import Registry

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PluginFailure:
    group: str
    name: str
    target: str
    error: str
    traceback: str


_failures: list[PluginFailure] = []


def plugin_failures() -> list[PluginFailure]:
    """Plugins that failed to load in this process (shown in the admin)."""
    return list(_failures)


def load_entry_points(group: str, registry: Registry) -> list[str]:
    """Load every entry point of ``group`` into ``registry``; return the names loaded.

    An entry point's object is registered under the entry point's name. Any exception while
    importing or registering one plugin is caught, logged and recorded; the others still load.
    """
    loaded: list[str] = []
    for ep in entry_points(group=group):
        try:
            obj = ep.load()
            registry.register(ep.name, obj, origin=f"plugin {ep.value}")
        except Exception as exc:  # noqa: BLE001 - a plugin may fail in any way; we must boot anyway
            failure = PluginFailure(group, ep.name, ep.value, f"{type(exc).__name__}: {exc}", traceback.format_exc())
            if failure not in _failures:
                _failures.append(failure)
            logger.error("Plugin %s (%s) in group %s failed to load: %s", ep.name, ep.value, group, failure.error)
            continue
        loaded.append(ep.name)
    return loaded
