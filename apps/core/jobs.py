"""One lifecycle for every background job: crawl jobs, training jobs, evaluation runs (and what comes next).

    queued ──job_claim──▶ running ──job_finish──▶ succeeded | failed | cancelled
      ▲                     │ job_heartbeat (from a JobWatcher thread, whatever the work is doing)
      └────job_requeue──────┤ jobs_mark_lost (the one scheduled sweep) ──▶ failed, stop reason "lost"
                            └ job_cancel: a queued job ends at once, a running one is asked to stop

``job_claim`` hands the process a fresh ``launch_token``. Every later write of that process is an UPDATE
filtered on the token and on the job still being active, so after a retry or a resume took the job over
(which clears the token), a process that is still alive cannot write to it any more and its watcher tells
it to stop. Nothing here runs on a GET request: lost jobs are found by ``sweep_lost_jobs``, a django-q
schedule that ``post_migrate`` keeps in place (``manage.py sweep_jobs`` runs it by hand).
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

from django.apps import apps
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from .api import ServiceError
from .models import Job, JobStatus

logger = logging.getLogger(__name__)

J = TypeVar("J", bound=Job)

SWEEP_SCHEDULE = "jobs: mark lost"
SWEEP_TASK = "apps.core.tasks.sweep_lost_jobs"
MAX_ERROR = 10_000

# What job_check tells the process running a job.
RUN = "run"  # it holds the job: go on
CANCEL = "cancel"  # someone asked it to stop
STOP = "stop"  # it no longer holds the job: taken over, marked lost or finished elsewhere
UNSEEN = "unseen"  # this connection cannot see the row (a test's uncommitted transaction): go on


def job_models() -> list[type[Job]]:
    """Every concrete job model; the sweep covers each without being told about it."""
    return [model for model in apps.get_models() if issubclass(model, Job)]


def _name(job: Job) -> str:
    return f"{job._meta.verbose_name.capitalize()} {job.pk}"


def _held(job: Job):
    """The job's row, only while the process holding ``job.launch_token`` may still write to it."""
    if not job.launch_token:
        raise ValueError(f"{_name(job)} has no launch token: only the process that claimed it writes to it")
    return type(job).objects.filter(pk=job.pk, launch_token=job.launch_token, status__in=Job.ACTIVE)


def process_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie answers signal 0 but is dead: a killed worker whose parent died too waits for an init to reap it,
    # and in a container the first process often never does.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc (not Linux): signal 0 is all there is
    return state not in ("Z", "X")


# --- Taking a job ---------------------------------------------------------------------------------

def job_launch(model: type[Job], job_id: int, **fields) -> str | None:
    """A launcher (a worker that starts the job's own process) reserves a queued job, once. Returns the
    token that process must present to ``job_claim``, or None when the job is not queued or is taken."""
    token = uuid.uuid4().hex
    reserved = model.objects.filter(pk=job_id, status=JobStatus.QUEUED, launch_token="").update(
        launch_token=token, updated_at=timezone.now(), **fields)
    return token if reserved else None


def job_claim(model: type[J], job_id: int, *, token: str = "") -> J | None:
    """queued → running, once, as one conditional UPDATE (no database lets two claims through).

    Returns the job holding its launch token (``token``, a launcher's reservation, or a fresh one), or
    None when there is nothing to claim: no such job, not queued, reserved under another token, or
    cancelled while it waited (it then ends as cancelled here).
    """
    now = timezone.now()
    waiting = model.objects.filter(pk=job_id, status=JobStatus.QUEUED)
    if token:
        waiting = waiting.filter(launch_token=token)  # reserved by a launcher for this very process
    claimed = waiting.filter(cancel_requested=False).update(
        status=JobStatus.RUNNING, launch_token=token or uuid.uuid4().hex, attempts=F("attempts") + 1, pid=os.getpid(),
        hostname=socket.gethostname()[:255], heartbeat_at=now, started_at=Coalesce("started_at", now),
        finished_at=None, updated_at=now)
    if not claimed:
        waiting.filter(cancel_requested=True).update(status=JobStatus.CANCELLED, stop_reason="cancelled",
                                                     finished_at=now, updated_at=now)
        return None
    return model.objects.get(pk=job_id)


# --- While it runs --------------------------------------------------------------------------------

def job_heartbeat(job: Job, *, progress: float | None = None, **fields) -> bool:
    """The guarded write of a running job: its heartbeat, its progress and any other fields, only while
    this process holds it. Returns False once it does not (the caller stops and writes nothing more).

    Inside a transaction it is also the lock: later writes of that transaction happen only if it held.
    """
    values = {"heartbeat_at": timezone.now(), **fields}
    if progress is not None:
        values["progress"] = min(max(float(progress), 0.0), 1.0)
    held = _held(job).filter(status=JobStatus.RUNNING).update(**values)
    if held:
        for name, value in values.items():
            if not hasattr(value, "resolve_expression"):
                setattr(job, name, value)
    return bool(held)


def job_check(job: Job) -> str:
    """Read-only: ``RUN``, ``CANCEL``, ``STOP`` or ``UNSEEN`` (see the constants) for the holder of ``job``."""
    row = type(job).objects.filter(pk=job.pk).values_list("status", "launch_token", "cancel_requested").first()
    if row is None:
        return UNSEEN
    status, token, cancel = row
    if status != JobStatus.RUNNING or token != job.launch_token:
        return STOP
    return CANCEL if cancel else RUN


class JobWatcher(threading.Thread):
    """Keeps a running job's heartbeat going from a thread of its own, whatever the work is doing (waiting
    out a 429's Retry-After, a long download, decoding a dataset), and sets ``stop`` when the job is
    cancelled or another process took it over. A job whose process is alive is therefore never lost.

    ``progress`` may be set by the work at any time; it goes out with the next heartbeat.
    """

    def __init__(self, job: Job, stop: threading.Event | None = None, *, poll: float | None = None,
                 heartbeat: float | None = None) -> None:
        super().__init__(name=f"{job._meta.model_name}-{job.pk}-watcher", daemon=True)
        self.job = job
        self.stop = stop or threading.Event()
        self.poll = settings.KYARA_JOB_POLL_SECONDS if poll is None else poll
        self.heartbeat = settings.KYARA_JOB_HEARTBEAT_SECONDS if heartbeat is None else heartbeat
        self.progress: float | None = None
        self.cancelled = False
        self.taken_over = False
        self.done = threading.Event()

    def __enter__(self) -> JobWatcher:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Stop watching (the work is over) and wait for the thread."""
        self.done.set()
        if self.is_alive():
            self.join(timeout=10)

    def run(self) -> None:
        last_beat = time.monotonic()
        try:
            while not self.done.wait(self.poll):
                try:
                    last_beat = self._tick(last_beat)
                except Exception:  # noqa: BLE001 - a busy database now and then must not end the watch
                    logger.exception("watching %s failed once; trying again", _name(self.job))
                if self.taken_over:
                    return
        finally:
            connection.close()

    def _tick(self, last_beat: float) -> float:
        state = job_check(self.job)
        if state == STOP:
            logger.warning("%s was taken over by another process or marked lost; this one stops", _name(self.job))
            self.taken_over = True
            self.stop.set()
            return last_beat
        if state == CANCEL and not self.cancelled:
            self.cancelled = True
            self.stop.set()
        now = time.monotonic()
        if state != UNSEEN and now - last_beat >= self.heartbeat:
            if not job_heartbeat(self.job, progress=self.progress):
                self.taken_over = True
                self.stop.set()
            return now
        return last_beat


# --- The end --------------------------------------------------------------------------------------

def job_finish(job: Job, *, status: str, error: str | None = None, stop_reason: str | None = None,
               **fields) -> bool:
    """End ``job`` as succeeded, failed or cancelled, with any last fields, if this process still holds it
    (the token, queued or running). Returns False, writing nothing, when another process took it over."""
    if status not in Job.FINISHED:
        raise ValueError(f"{status!r} is not a final status")
    now = timezone.now()
    values = {"status": status, "finished_at": now, "updated_at": now, **fields}
    if error is not None:
        values["error"] = error[:MAX_ERROR]
    if stop_reason is not None:
        values["stop_reason"] = stop_reason
    if not _held(job).update(**values):
        logger.warning("%s not marked %s: another process holds it now", _name(job), status)
        return False
    job.refresh_from_db()
    return True


def job_cancel(job: J, *, refused_code: str = "not_cancellable") -> J:
    """A queued job is cancelled at once; a running one is asked to stop (its watcher sees it within
    ``KYARA_JOB_POLL_SECONDS``). A finished job is refused with ``refused_code`` (409)."""
    model, now = type(job), timezone.now()
    if not model.objects.filter(pk=job.pk, status=JobStatus.QUEUED).update(
            status=JobStatus.CANCELLED, stop_reason="cancelled", cancel_requested=True, finished_at=now,
            updated_at=now):
        if not model.objects.filter(pk=job.pk, status=JobStatus.RUNNING).update(cancel_requested=True,
                                                                                 updated_at=now):
            status = model.objects.filter(pk=job.pk).values_list("status", flat=True).first()
            raise ServiceError(refused_code, f"{_name(job)} is {status}; only queued or running jobs can be "
                               "cancelled.", status_code=409)
    return model.objects.get(pk=job.pk)


def job_requeue(job: J, *, refused_code: str, verb: str = "retried", check: Callable[[J], None] | None = None,
                **fields) -> J:
    """A failed or cancelled job (or a running one whose process died: the sweep's rule is applied first)
    goes back to queued with no token, so whatever still runs under the old one can write no more.
    ``check`` may refuse with a ServiceError; ``fields`` are reset as well (the caller queues the work)."""
    jobs_mark_lost(jobs=[job])
    model = type(job)
    with transaction.atomic():
        job = model.objects.select_for_update().get(pk=job.pk)
        if job.status not in Job.RESUMABLE:
            raise ServiceError(refused_code, f"{_name(job)} is {job.status}; only failed or cancelled jobs (or "
                               f"running ones whose worker died) can be {verb}.", status_code=409)
        if check is not None:
            check(job)
        values = {"status": JobStatus.QUEUED, "cancel_requested": False, "stop_reason": "", "error": "",
                  "finished_at": None, "launch_token": "", "updated_at": timezone.now(), **fields}
        if not model.objects.filter(pk=job.pk, status=job.status, launch_token=job.launch_token).update(**values):
            raise ServiceError(refused_code, f"{_name(job)} changed meanwhile; try again.", status_code=409)
    return model.objects.get(pk=job.pk)


# --- Lost jobs: the one sweep ---------------------------------------------------------------------

def job_is_lost(job: Job, *, now=None) -> bool:
    """Running, and silent for ``KYARA_JOB_LOST_AFTER`` seconds or its process on this host is gone."""
    if job.status != JobStatus.RUNNING:
        return False
    if job.pid and job.hostname == socket.gethostname() and not process_alive(job.pid):
        return True
    seen = job.heartbeat_at or job.started_at or job.updated_at
    now = now or timezone.now()
    return seen is None or now - seen > timedelta(seconds=settings.KYARA_JOB_LOST_AFTER)


def jobs_mark_lost(*, models: Iterable[type[Job]] | None = None, jobs: Iterable[Job] | None = None
                   ) -> dict[str, list[int]]:
    """Mark running jobs whose process died as failed (stop reason ``lost``, an error saying what to do).

    Every model in ``models`` (default: all job models), or just ``jobs``. Each mark is a compare-and-set
    on the heartbeat that was judged, so a job that beats in between is left alone. Returns the ids
    marked, by model label.
    """
    now = timezone.now()
    if jobs is not None:
        candidates = [type(job).objects.filter(pk=job.pk, status=JobStatus.RUNNING).first() for job in jobs]
    else:
        cutoff = now - timedelta(seconds=settings.KYARA_JOB_LOST_AFTER)
        suspicious = (Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True)
                      | Q(hostname=socket.gethostname(), pid__isnull=False))
        candidates = [job for model in (models or job_models())
                      for job in model.objects.filter(suspicious, status=JobStatus.RUNNING)]
    lost: dict[str, list[int]] = {}
    for job in candidates:
        if job is None or not job_is_lost(job, now=now):
            continue
        model = type(job)
        marked = model.objects.filter(pk=job.pk, status=JobStatus.RUNNING, launch_token=job.launch_token,
                                      heartbeat_at=job.heartbeat_at).update(
            status=JobStatus.FAILED, stop_reason=job.LOST_REASON, error=job.lost_message()[:MAX_ERROR],
            finished_at=now, updated_at=now)
        if marked:
            logger.warning("%s marked lost (pid %s on %s, last heartbeat %s)", _name(job), job.pid,
                           job.hostname or "?", job.heartbeat_at)
            lost.setdefault(model._meta.label, []).append(job.pk)
    return lost


def lost_sweep_schedule(*, using: str = "default"):
    """Create (or update) the django-q schedule of the sweep, idempotently; KYARA_JOB_SWEEP_MINUTES=0
    removes it. Returns the schedule or None."""
    from django_q.models import Schedule

    minutes = settings.KYARA_JOB_SWEEP_MINUTES
    schedules = Schedule.objects.using(using)
    if minutes <= 0:
        schedules.filter(name=SWEEP_SCHEDULE).delete()
        return None
    schedule, _ = schedules.update_or_create(name=SWEEP_SCHEDULE, defaults={
        "func": SWEEP_TASK, "schedule_type": Schedule.MINUTES, "minutes": minutes, "repeats": -1})
    return schedule


def ensure_lost_sweep_schedule(sender=None, *, using: str = "default", **kwargs) -> None:
    """``post_migrate`` receiver: the schedule exists wherever django-q's tables do."""
    from django.db import connections

    if "django_q_schedule" not in connections[using].introspection.table_names():
        return
    lost_sweep_schedule(using=using)
