"""Every state change of the inference app."""
from __future__ import annotations

import hashlib
from pathlib import Path

from django.conf import settings
from django.db import transaction

from apps.core.api import ServiceError

from .models import ModelVersion


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@transaction.atomic
def model_version_register(
    *,
    name: str,
    architecture: str,
    labels: list[str],
    input_size: int,
    normalization: dict,
    artifact: Path,
    parameters: int = 0,
    metrics: dict | None = None,
    dataset_version=None,
    training_job_id: int | None = None,
    notes: str = "",
) -> ModelVersion:
    """Register a serving artifact (which must live under KYARA_DATA_DIR/artifacts) as a model version."""
    artifact = Path(artifact).resolve()
    root = Path(settings.ARTIFACTS_DIR).resolve()
    if not artifact.is_file():
        raise ServiceError("artifact_missing", f"No artifact at {artifact}.")
    try:
        relative = artifact.relative_to(root)
    except ValueError:
        raise ServiceError("artifact_outside", f"The artifact must live under {root}.") from None
    if not labels:
        raise ServiceError("no_labels", "A model version needs its class labels.")
    return ModelVersion.objects.create(
        name=name,
        architecture=architecture,
        labels=list(labels),
        input_size=input_size,
        normalization=normalization,
        artifact=relative.as_posix(),
        artifact_sha256=file_sha256(artifact),
        size_bytes=artifact.stat().st_size,
        parameters=parameters,
        metrics=metrics or {},
        dataset_version=dataset_version,
        training_job_id=training_job_id,
        notes=notes,
    )
