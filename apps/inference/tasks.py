"""Background work of the inference app: thin functions that take ids."""
from __future__ import annotations

from . import services


def model_version_runtime_choose(version_id: int) -> str:
    """Measure which runtime serves a newly registered version on this (the worker's) kind of machine."""
    return services.model_version_runtime_choose(version_id, where="registration")["chosen"]
