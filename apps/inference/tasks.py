"""Background work of the inference app: thin functions that take ids."""
from __future__ import annotations

from . import gallery, services
from .models import ModelVersion


def model_version_runtime_choose(version_id: int) -> str:
    """Measure which runtime serves a newly registered version on this (the worker's) kind of machine."""
    return services.model_version_runtime_choose(version_id, where="registration")["chosen"]


def gallery_refresh(version_id: int | None = None) -> dict:
    """Rebuild the galleries of the versions an alias points at (or of one version) after curation changed;
    a version whose curation state is unchanged since its last build costs three queries."""
    versions = [ModelVersion.objects.get(pk=version_id)] if version_id else gallery.serving_versions()
    done = {}
    for version in versions:
        for _ in range(3):  # curation that changed while it was built is taken in now, not at the next change
            built = gallery.gallery_refresh(version=version)
            if built.fingerprint == gallery.curation_fingerprint():
                break
        done[version.name] = built.generation
    return done
