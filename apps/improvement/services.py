"""Every state change of an improvement cycle: start, advance, cancel, resume, continue, and its schedules.

A cycle is a state machine advanced by short tasks. ``cycle_advance`` takes the cycle's lease (a
compare-and-set on ``lease_until``, so two advances never run a step twice), runs the current stage's
function (``apps.improvement.stages``) and moves on while stages finish at once; when one waits (for its
crawls, its training, its evaluations or a person) it returns and the worker is free. What advances it
again (see ``receivers`` and ``tasks``):

- the end of a child's task: django-q's ``post_execute`` signal, sent by a cluster's monitor after every
  task, enqueues ``advance_cycle`` when the task was a crawl, a training launch or an evaluation of a
  running cycle; no app below needs to know about cycles, and it fires in whichever cluster ran the child;
- a schedule (``cycles: advance``, every ``KYARA_CYCLE_ADVANCE_MINUTES``) that advances every running
  cycle: it catches what a signal missed (a worker killed between the two), notices that a person finished
  the review, and is the heartbeat that keeps a waiting cycle from being swept as lost;
- a person: continue (go on without waiting for the review), cancel, resume.

Job lifecycle: queued → running (the first advance claims it) → succeeded | failed | cancelled, as every job
(``apps.core.jobs``); a running cycle has no process of its own, so its pid is cleared and only a
heartbeat older than ``KYARA_JOB_LOST_AFTER`` (no advance for minutes: no default qcluster) makes it lost.
"""
from __future__ import annotations

import logging
import time
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apps.characters.models import Character
from apps.core.api import ServiceError
from apps.core.jobs import JobWatcher, job_cancel, job_claim, job_finish, job_heartbeat, job_requeue
from apps.core.queue import enqueue
from apps.crawling.models import CrawlJob
from apps.crawling.sources import sources as source_registry
from apps.evaluation.models import EvaluationRun
from apps.ml.config import ConfigError, TrainConfig
from apps.training.models import TrainingJob

from . import stages
from .models import Cycle, Stage, StageStatus

logger = logging.getLogger(__name__)

ADVANCE_TASK = "apps.improvement.tasks.advance_cycle"
ADVANCE_SCHEDULE = "cycles: advance"
ADVANCE_ALL_TASK = "apps.improvement.tasks.advance_cycles"
WEEKLY_SCHEDULE = "cycles: weekly"
WEEKLY_TASK = "apps.improvement.tasks.start_weekly_cycle"
# One advance runs stages for at most this long, then queues the next advance (the worker serves others).
ADVANCE_BUDGET_SECONDS = 60.0
# A step holds the lease this long at most (a worker killed mid-step frees it when it expires).
LEASE = timedelta(minutes=15)


class _TakenOver(Exception):
    """The cycle's launch token changed (a resume took it over) or it ended: this advance writes no more."""


# --- Starting ---------------------------------------------------------------------------------------

def _check_options(*, from_evaluation: EvaluationRun, characters: list[str], sources: list[str],
                   auto_approve_min_confidence: float | None, epochs: int | None, image_size: int | None,
                   config_overrides: dict, margin: float) -> None:
    if from_evaluation.status != EvaluationRun.Status.SUCCEEDED:
        raise ServiceError("not_evaluated", f"Evaluation {from_evaluation.pk} is {from_evaluation.status}; start a "
                           "cycle from a succeeded evaluation.", status_code=409)
    unknown = sorted(set(characters) - set(Character.objects.filter(slug__in=characters).values_list("slug", flat=True)))
    if unknown:
        raise ServiceError("unknown_character", f"No character with the slug {', '.join(unknown)}.", characters=unknown)
    bad_sources = [name for name in sources if name not in source_registry]
    if bad_sources:
        raise ServiceError("unknown_source", f"Unknown source {', '.join(bad_sources)}; the sources are "
                           f"{', '.join(source_registry.names())}.", sources=bad_sources)
    if auto_approve_min_confidence is not None and not 0 <= auto_approve_min_confidence <= 1:
        raise ServiceError("invalid_probability", "auto_approve_min_confidence must be a probability from 0 to 1, "
                           f"not {auto_approve_min_confidence!r}.", field="auto_approve_min_confidence")
    if not -1 <= margin <= 1:
        raise ServiceError("invalid_margin", f"margin is a difference of top-1 accuracy, from -1 to 1, not {margin!r}.",
                           field="margin")
    overrides = {**config_overrides, **({"epochs": epochs} if epochs else {}),
                 **({"image_size": image_size} if image_size else {})}
    try:
        TrainConfig.from_dict(overrides)
    except ConfigError as exc:
        raise ServiceError("invalid_config", f"The training settings are refused: {exc}",
                           problems=exc.problems) from None


def initial_stages() -> list[dict]:
    return [{"name": name, "label": Stage(name).label, "status": StageStatus.PENDING, "started_at": None,
             "finished_at": None, "detail": "", "links": []} for name in stages.ORDER]


@transaction.atomic
def cycle_create(*, from_evaluation: EvaluationRun, characters: list[str] | None = None,
                 sources: list[str] | None = None, auto_approve_min_confidence: float | None = None,
                 epochs: int | None = None, image_size: int | None = None, config_overrides: dict | None = None,
                 promote_if_better: bool = False, margin: float | None = None, skip_waiting: bool = False,
                 origin: str = Cycle.Origin.API, requested_by=None, queue: bool = True) -> Cycle:
    """Check everything a person can get wrong (the evaluation, characters, sources, training settings, a plan
    that collects nothing), create the cycle and (after commit) queue its first advance."""
    characters = list(dict.fromkeys(characters or []))
    sources = list(dict.fromkeys(sources or []))
    config_overrides = dict(config_overrides or {})
    margin = settings.KYARA_CYCLE_PROMOTE_MARGIN if margin is None else float(margin)
    _check_options(from_evaluation=from_evaluation, characters=characters, sources=sources,
                   auto_approve_min_confidence=auto_approve_min_confidence, epochs=epochs, image_size=image_size,
                   config_overrides=config_overrides, margin=margin)
    stages.plan_rows(run=from_evaluation, characters=characters, sources=sources or None)
    cycle = Cycle(
        from_evaluation=from_evaluation, characters=characters, sources=sources,
        auto_approve_min_confidence=auto_approve_min_confidence, epochs=epochs, image_size=image_size,
        config_overrides=config_overrides, promote_if_better=promote_if_better, margin=margin,
        skip_waiting=skip_waiting, origin=origin, stages=initial_stages(),
        requested_by=requested_by if getattr(requested_by, "is_authenticated", False) else None,
    )
    cycle.full_clean()
    cycle.save()
    if queue:
        _enqueue_advance(cycle.pk)
    return cycle


def _enqueue_advance(cycle_id: int) -> None:
    transaction.on_commit(lambda: enqueue(ADVANCE_TASK, cycle_id, group=f"cycle-{cycle_id}"))


# --- Advancing --------------------------------------------------------------------------------------

def _lease_take(cycle_id: int) -> object | None:
    now = timezone.now()
    until = now + LEASE
    taken = Cycle.objects.filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now), pk=cycle_id).update(
        lease_until=until)
    return until if taken else None


def _lease_release(cycle_id: int, lease) -> None:
    Cycle.objects.filter(pk=cycle_id, lease_until=lease).update(lease_until=None)


def _writer(cycle: Cycle):
    def write(**fields) -> None:
        if not job_heartbeat(cycle, **fields):
            raise _TakenOver
    return write


def _set_stage(cycle: Cycle, name: str, **values) -> list[dict]:
    """The stages list with ``name``'s record updated (a copy: written by the caller)."""
    records = [dict(record) for record in cycle.stages]
    for record in records:
        if record["name"] == name:
            record.update(values)
    return records


def _now() -> str:
    return timezone.now().isoformat()


def _fail(cycle: Cycle, name: str, message: str) -> None:
    records = _set_stage(cycle, name, status=StageStatus.FAILED, finished_at=_now(), detail=message[:2000])
    job_finish(cycle, status=Cycle.Status.FAILED, error=message, stop_reason="error", stages=records)


def _finish_cancelled(cycle: Cycle) -> None:
    _cancel_children(cycle)  # again: a step that ran while the cancel came may have started some
    records = _set_stage(cycle, cycle.stage, status=StageStatus.CANCELLED, finished_at=_now())
    job_finish(cycle, status=Cycle.Status.CANCELLED, stop_reason="cancelled", stages=records)


def _step(cycle: Cycle) -> bool:
    """Run the current stage once and record what it said; True while the next stage can run right away."""
    name = cycle.stage
    record = cycle.stage_record(name) or {}
    write = _writer(cycle)
    if record.get("status") != StageStatus.RUNNING:
        write(stages=_set_stage(cycle, name, status=StageStatus.RUNNING, started_at=record.get("started_at") or _now(),
                                finished_at=None))
    try:
        step = stages.STAGES[name](cycle, write)
    except _TakenOver:
        raise
    except stages.StageFailed as exc:
        _fail(cycle, name, exc.message)
        return False
    except ServiceError as exc:
        _fail(cycle, name, f"{exc.code}: {exc.message}")
        return False
    except Exception as exc:  # noqa: BLE001 - a crashed step fails the cycle with the error, keeping what was done
        logger.exception("Cycle %s: the %s stage crashed", cycle.pk, name)
        _fail(cycle, name, f"The {name} stage crashed: {type(exc).__name__}: {exc}")
        return False
    if step.outcome in (stages.WAIT, stages.AGAIN):
        waiting = StageStatus.WAITING if name == Stage.WAIT else StageStatus.RUNNING
        write(stages=_set_stage(cycle, name, status=waiting, detail=step.detail, links=step.links))
        return step.outcome == stages.AGAIN
    status = StageStatus.SKIPPED if step.outcome == stages.SKIPPED else StageStatus.SUCCEEDED
    records = _set_stage(cycle, name, status=status, finished_at=_now(), detail=step.detail, links=step.links)
    index = stages.ORDER.index(name)
    if step.finish or index + 1 == len(stages.ORDER):
        for later in records[index + 1:]:
            later.update(status=StageStatus.SKIPPED, detail=f"the cycle ended at its {name} stage")
        job_finish(cycle, status=Cycle.Status.SUCCEEDED, stop_reason="completed", stages=records, progress=1.0)
        return False
    write(stages=records, stage=stages.ORDER[index + 1], progress=(index + 1) / len(stages.ORDER))
    return True


def cycle_advance(*, cycle_id: int, budget: float = ADVANCE_BUDGET_SECONDS) -> Cycle | None:
    """Run every stage that can run now, for up to ``budget`` seconds (then queue the next advance). Any
    process may call it at any time: a queued cycle is claimed, a finished one is left alone, and while
    another advance holds the lease this one returns at once."""
    cycle = Cycle.objects.filter(pk=cycle_id).first()
    if cycle is None:
        return None
    if cycle.status == Cycle.Status.QUEUED:
        claimed = job_claim(Cycle, cycle_id)
        if claimed is not None:  # no process of its own: lost only when no advance beats for minutes
            job_heartbeat(claimed, pid=None, hostname="")
    lease = _lease_take(cycle_id)
    if lease is None:
        return Cycle.objects.get(pk=cycle_id)
    began = time.monotonic()
    try:
        while True:
            cycle = Cycle.objects.select_related("from_evaluation__dataset_version").get(pk=cycle_id)
            if cycle.status != Cycle.Status.RUNNING:
                break
            if cycle.cancel_requested:
                _finish_cancelled(cycle)
                break
            with JobWatcher(cycle):  # heartbeats through a long step (a promotion loads the model)
                go_on = _step(cycle)
            if not go_on:
                break
            if time.monotonic() - began > budget:
                _enqueue_advance(cycle_id)
                break
    except _TakenOver:
        logger.info("Cycle %s: taken over (resumed or ended elsewhere); this advance stops", cycle_id)
    finally:
        _lease_release(cycle_id, lease)
    return Cycle.objects.get(pk=cycle_id)


def cycles_advance_all() -> list[int]:
    """The schedule's work: queue an advance for every running (or queued) cycle."""
    ids = list(Cycle.objects.filter(status__in=Cycle.ACTIVE).values_list("pk", flat=True))
    for cycle_id in ids:
        enqueue(ADVANCE_TASK, cycle_id, group=f"cycle-{cycle_id}")
    return ids


def cycles_for_task(func: str, args) -> list[int]:
    """Running cycles waiting on the job a finished task ran (a crawl, a training launch, an evaluation)."""
    from apps.crawling.services import RUN_TASK as CRAWL_TASK
    from apps.evaluation.services import RUN_TASK as EVALUATION_TASK
    from apps.training.services import LAUNCH_TASK

    if not args or not isinstance(args[0], int):
        return []
    job_id = args[0]
    if func == CRAWL_TASK:
        condition = Q(crawl_jobs=job_id)
    elif func == LAUNCH_TASK:
        condition = Q(training_job=job_id)
    elif func == EVALUATION_TASK:
        condition = Q()
        for name in stages.EVALUATIONS:
            condition |= Q(**{name: job_id})
    else:
        return []
    return list(Cycle.objects.filter(condition, status=Cycle.Status.RUNNING).values_list("pk", flat=True).distinct())


# --- A person's actions -------------------------------------------------------------------------------

def _cancel_children(cycle: Cycle) -> None:
    """Cancel the cycle's crawls, training and evaluations that are still queued or running."""
    runs = [getattr(cycle, name) for name in stages.EVALUATIONS if getattr(cycle, f"{name}_id")]
    jobs = [*cycle.crawl_jobs.filter(status__in=CrawlJob.ACTIVE), *runs]
    if cycle.training_job_id:
        jobs.append(cycle.training_job)
    for job in jobs:
        if job.status in job.ACTIVE:
            try:
                job_cancel(job)
            except ServiceError:  # it ended meanwhile
                pass


def cycle_cancel(*, cycle: Cycle) -> Cycle:
    """A queued cycle ends at once; a running one stops, its running crawls, training and evaluations are
    cancelled, and it ends as cancelled (now, or when the step running meanwhile returns)."""
    cycle = job_cancel(cycle, refused_code="not_cancellable")
    _cancel_children(cycle)
    if cycle.status == Cycle.Status.CANCELLED:  # it was queued: no advance will record it
        Cycle.objects.filter(pk=cycle.pk).update(stages=_set_stage(
            cycle, cycle.stage, status=StageStatus.CANCELLED, finished_at=_now()))
    if cycle.status == Cycle.Status.RUNNING:
        cycle_advance(cycle_id=cycle.pk)  # finishes it as cancelled unless a step runs: that step does
    return Cycle.objects.get(pk=cycle.pk)


def _retry_children(cycle: Cycle) -> None:
    """What the stage that had not finished needs again: its failed or cancelled crawls retried, its training
    resumed from the last checkpoint (or started anew), its failed evaluations run again."""
    from apps.crawling.services import crawl_job_retry
    from apps.training.services import training_job_resume

    if cycle.stage == Stage.CRAWL:
        current = [tier for tier in cycle.plan.get("tiers", []) if tier["status"] != "done"][:1]
        for job in CrawlJob.objects.filter(pk__in=current[0]["jobs"] if current else [],
                                           status__in=CrawlJob.RESUMABLE):
            crawl_job_retry(job=job)
    elif cycle.stage == Stage.TRAIN and cycle.training_job_id:
        job = cycle.training_job
        if job.status in TrainingJob.RESUMABLE:
            if job.has_checkpoint:
                training_job_resume(job=job)
            else:
                Cycle.objects.filter(pk=cycle.pk).update(training_job=None)
    elif cycle.stage == Stage.EVALUATE:
        gone = {name: None for name in stages.EVALUATIONS
                if getattr(cycle, f"{name}_id") and getattr(cycle, name).status in EvaluationRun.RESUMABLE}
        if gone:
            Cycle.objects.filter(pk=cycle.pk).update(**gone)


@transaction.atomic
def cycle_resume(*, cycle: Cycle) -> Cycle:
    """A failed or cancelled cycle (or one swept as lost) goes on from the stage that had not finished."""
    cycle = job_requeue(cycle, refused_code="not_resumable", verb="resumed")
    _retry_children(cycle)
    cycle.refresh_from_db()
    records = _set_stage(cycle, cycle.stage, status=StageStatus.PENDING, finished_at=None)
    Cycle.objects.filter(pk=cycle.pk).update(stages=records, lease_until=None)
    _enqueue_advance(cycle.pk)
    return Cycle.objects.get(pk=cycle.pk)


@transaction.atomic
def cycle_continue(*, cycle: Cycle) -> Cycle:
    """Go on without waiting for the review of the images still pending (they stay out of the new version)."""
    cycle = Cycle.objects.select_for_update().get(pk=cycle.pk)
    record = cycle.stage_record(Stage.WAIT) or {}
    if cycle.status not in Cycle.ACTIVE or record.get("status") in (StageStatus.SUCCEEDED, StageStatus.SKIPPED):
        raise ServiceError("not_waiting", f"Cycle {cycle.pk} is {cycle.status} at its {cycle.stage} stage; only a "
                           "queued or running cycle that has not passed its wait for review can be told to go on.",
                           status_code=409)
    Cycle.objects.filter(pk=cycle.pk).update(skip_waiting=True, updated_at=timezone.now())
    _enqueue_advance(cycle.pk)
    return Cycle.objects.get(pk=cycle.pk)


# --- Schedules ------------------------------------------------------------------------------------

def cycle_start_weekly() -> Cycle | None:
    """The weekly schedule's cycle: from the latest succeeded test-split evaluation of ``default``, unless a
    cycle is already under way or there is nothing to start from (logged)."""
    if Cycle.objects.filter(status__in=Cycle.ACTIVE).exists():
        logger.info("Weekly cycle not started: another cycle is under way")
        return None
    version = stages.default_version()
    run = (EvaluationRun.objects.filter(model_version=version, status=EvaluationRun.Status.SUCCEEDED, split="test")
           .order_by("-created_at", "-id").first() if version is not None else None)
    if run is None:
        logger.warning("Weekly cycle not started: default has no succeeded test-split evaluation to plan from")
        return None
    try:
        return cycle_create(from_evaluation=run, origin=Cycle.Origin.SCHEDULE,
                            promote_if_better=settings.KYARA_CYCLE_WEEKLY_PROMOTE)
    except ServiceError as exc:
        logger.warning("Weekly cycle not started: %s", exc.message)
        return None


def cycle_schedules(*, using: str = "default") -> None:
    """The advance schedule (every KYARA_CYCLE_ADVANCE_MINUTES; 0 removes it) and the weekly one
    (KYARA_CYCLE_WEEKLY), created or updated idempotently: run after every migrate, like the lost sweep."""
    from django_q.models import Schedule

    schedules = Schedule.objects.using(using)
    minutes = settings.KYARA_CYCLE_ADVANCE_MINUTES
    if minutes > 0:
        schedules.update_or_create(name=ADVANCE_SCHEDULE, defaults={
            "func": ADVANCE_ALL_TASK, "schedule_type": Schedule.MINUTES, "minutes": minutes, "repeats": -1})
    else:
        schedules.filter(name=ADVANCE_SCHEDULE).delete()
    if settings.KYARA_CYCLE_WEEKLY:
        schedules.update_or_create(name=WEEKLY_SCHEDULE, defaults={
            "func": WEEKLY_TASK, "schedule_type": Schedule.WEEKLY, "repeats": -1})
    else:
        schedules.filter(name=WEEKLY_SCHEDULE).delete()


def ensure_cycle_schedules(sender=None, *, using: str = "default", **kwargs) -> None:
    """``post_migrate`` receiver: the schedules exist wherever django-q's tables do."""
    from django.db import connections

    if "django_q_schedule" not in connections[using].introspection.table_names():
        return
    cycle_schedules(using=using)
