"""A zip uploaded from the browser, imported through ``images_import`` as a job (the lifecycle of apps.core.jobs).

The upload is checked before anything is kept (a readable zip whose entries all stay inside it), stored under
``KYARA_IMPORTS_DIR``, then imported: a small one within the request, a big one by a worker. The archive is
removed once its import succeeded; a failed, cancelled or lost import keeps it for a retry.
"""
from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction

from apps.core.api import ServiceError
from apps.core.jobs import JobWatcher, job_cancel, job_claim, job_finish, job_requeue
from apps.core.queue import enqueue

from ..models import ImportJob
from .imports import archive_check, images_import

logger = logging.getLogger(__name__)

IMPORT_TASK = "apps.characters.tasks.run_import_job"


def _keep_upload(upload: UploadedFile) -> Path:
    """Write the upload under a fresh name in ``KYARA_IMPORTS_DIR`` (whole, or not at all)."""
    folder = Path(settings.KYARA_IMPORTS_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{uuid.uuid4().hex}.zip"
    partial = path.with_suffix(".part")
    try:
        with open(partial, "wb") as handle:
            for chunk in upload.chunks():
                handle.write(chunk)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path


def import_job_start(*, upload: UploadedFile, image_status: str = ImportJob.ImageStatus.APPROVED,
                     created_by: AbstractBaseUser | None = None) -> ImportJob:
    """Check and keep an uploaded zip, then import it: here and now when it is at most
    ``KYARA_IMPORT_INLINE_MAX_BYTES``, else in a worker. A refused zip leaves nothing behind."""
    if upload.size > settings.KYARA_IMPORT_MAX_BYTES:
        raise ServiceError("too_large", f"{upload.name} is {upload.size:,} bytes; the import page takes zips of at most "
                           f"{settings.KYARA_IMPORT_MAX_BYTES:,} bytes (import bigger ones on the server with "
                           "manage.py import_images).", status_code=413)
    if image_status not in ImportJob.ImageStatus.values:
        raise ServiceError("invalid_status", f"New images are approved or pending, not {image_status!r}.")
    path = _keep_upload(upload)
    try:
        files = archive_check(path)
        with transaction.atomic():
            job = ImportJob.objects.create(
                archive=str(path), original_name=(upload.name or "upload.zip")[:255], size_bytes=upload.size,
                files=files, image_status=image_status,
                created_by=created_by if created_by is not None and created_by.is_authenticated else None)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    if upload.size <= settings.KYARA_IMPORT_INLINE_MAX_BYTES:
        return import_job_run(job_id=job.pk) or job
    _enqueue(job)
    return job


def _enqueue(job: ImportJob) -> None:
    transaction.on_commit(lambda: enqueue(IMPORT_TASK, job.pk, group=f"import-{job.pk}"))


def import_job_run(*, job_id: int) -> ImportJob | None:
    """Import a queued job's zip here and now; a job already taken or finished is left alone (``None``).
    A failure ends the job as failed with the reason (the archive stays for a retry)."""
    job = job_claim(ImportJob, job_id)
    if job is None:
        logger.warning("Import %s not run: missing, or no longer queued", job_id)
        return None
    with JobWatcher(job) as watcher:
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            watcher.progress = done / max(job.files, 1)

        try:
            summary = images_import(path=job.archive, status=job.image_status, progress=advance,
                                    stop=watcher.stop.is_set)
        except Exception as exc:  # noqa: BLE001 - the job records every failure
            message = exc.message if isinstance(exc, ServiceError) else f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, ServiceError):
                logger.exception("Import %s failed", job.pk)
            job_finish(job, status=ImportJob.Status.FAILED, error=message)
            return job
    if summary.stopped:  # cancelled (or taken over: then job_finish writes nothing); the zip stays for a retry
        job_finish(job, status=ImportJob.Status.CANCELLED, stop_reason="cancelled", summary=summary.as_dict(),
                   progress=watcher.progress or 0.0)  # None when it stopped before the first file
        return job
    if job_finish(job, status=ImportJob.Status.SUCCEEDED, summary=summary.as_dict(), progress=1.0):
        Path(job.archive).unlink(missing_ok=True)
    return job


def _archive_kept(job: ImportJob) -> None:
    if not Path(job.archive).is_file():
        raise ServiceError("archive_gone", f"The zip of import {job.pk} is no longer on the server; upload it again.",
                           status_code=409)


def import_job_cancel(*, job: ImportJob) -> ImportJob:
    """Stop an import: a queued one ends at once, a running one after the file it is importing (what it
    imported stays; the zip is kept, so a retry adds the rest)."""
    return job_cancel(job)


@transaction.atomic
def import_job_retry(*, job: ImportJob) -> ImportJob:
    """Queue a failed (or lost) import again, from the zip it kept."""
    job = job_requeue(job, refused_code="not_retryable", check=_archive_kept)
    _enqueue(job)
    return job
