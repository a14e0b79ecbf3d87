"""Each stage of an improvement cycle as one function: ``stage(cycle, write) -> Step``.

A stage function runs what can run now and returns at once: it starts child jobs (crawls, a training job,
evaluations) and says ``WAIT``, or finds them finished and says ``DONE``. It is called again by the next
``advance_cycle`` (a child's task ended, the schedule, a person's continue), so it must be idempotent: every
id it creates is written on the cycle (``write``, under the cycle's launch token) in the same transaction that
creates it, and a second call reads them back instead of creating more. A problem a person must look at
raises ``StageFailed``; the cycle then fails with that message and resumes from this stage.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import groupby

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from apps.characters.models import Character, DatasetItem, DatasetVersion, Image
from apps.characters.services import dataset_version_freeze
from apps.core.api import ServiceError
from apps.crawling.models import CrawlJob, SeenPost
from apps.evaluation.models import EvaluationRun
from apps.evaluation.selectors import collection_plan_rows
from apps.inference.models import ModelAlias, ModelVersion
from apps.training.models import TrainingJob

from .models import Cycle, Stage

logger = logging.getLogger(__name__)

DEFAULT_ALIAS = "default"
CANDIDATE_ALIAS = "candidate"
Writer = Callable[..., None]

# Outcomes of one call of a stage
DONE = "done"  # finished: go to the next stage
SKIPPED = "skipped"  # nothing to do here: go to the next stage
WAIT = "wait"  # its jobs run (or a person reviews): the next advance calls it again
AGAIN = "again"  # more of the same work: call it again now (within the advance's time budget)


class StageFailed(Exception):
    """The stage cannot go on without a person (a child job failed, a leak, nothing to collect)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class Step:
    outcome: str
    detail: str = ""
    links: list[dict] = field(default_factory=list)
    finish: bool = False  # DONE, and every later stage is skipped: the cycle ends here (held, with hold_reason)


def link(kind: str, pk: int | None, label: str) -> dict:
    """A reference a page or the API turns into a URL (``selectors.link_urls``)."""
    return {"kind": kind, "id": pk, "label": label}


def default_version() -> ModelVersion | None:
    alias = ModelAlias.objects.filter(name=DEFAULT_ALIAS).select_related("version").first()
    return alias.version if alias else None


# --- plan ------------------------------------------------------------------------------------------

def plan_rows(*, run: EvaluationRun, characters: list[str], sources: list[str] | None) -> list[dict]:
    """The evaluation's collection plan (most urgent tier first), kept to ``characters`` when given, each row
    with a target and at least one source that has the character's tags. Refuses (400) a plan that would
    collect nothing, naming why."""
    rows = collection_plan_rows(run=run, sources=sources, include_low_support=bool(characters))
    if characters:
        planned = {row["character"] for row in rows}
        missing = [slug for slug in characters if slug not in planned]
        if missing:
            raise ServiceError("not_in_plan", f"Evaluation {run.pk} gives no collection target to "
                               f"{', '.join(missing)}: its accuracy there is above every tier (or it was not "
                               "measured). Leave it out, or start from another evaluation.", characters=missing)
        rows = [row for row in rows if row["character"] in characters]
    usable = [row for row in rows if row["character_obj"] is not None and row["target"] > 0 and row["sources"]]
    if not usable:
        sourceless = [row["character"] for row in rows if not row["sources"]]
        why = (f"no source has tags for {', '.join(sourceless[:20])} (add booru_tags to the characters, or name "
               "other sources)" if sourceless else f"evaluation {run.pk} has no character in a tier")
        raise ServiceError("nothing_to_collect", f"The cycle would collect nothing: {why}.")
    return usable


def plan(cycle: Cycle, write: Writer) -> Step:
    """Group the plan by tier (P1 first); the crawl stage runs one tier at a time."""
    rows = plan_rows(run=cycle.from_evaluation, characters=cycle.characters, sources=cycle.sources or None)
    tiers = []
    for tier, group in groupby(rows, key=lambda row: row["tier"]):
        group = list(group)
        tiers.append({"tier": tier, "name": group[0]["tier_name"], "status": "pending", "jobs": [],
                      "targets": {row["character"]: row["target"] for row in group}})
    write(plan={"tiers": tiers, "created_at": timezone.now().isoformat()})
    detail = "; ".join(f"{t['name']}: {len(t['targets'])} character(s), {sum(t['targets'].values())} images"
                       for t in tiers)
    return Step(DONE, detail, [link("evaluation", cycle.from_evaluation_id, f"evaluation {cycle.from_evaluation_id}")])


# --- crawl -----------------------------------------------------------------------------------------

def _crawl_link(job: CrawlJob) -> dict:
    who = job.character.slug if job.character_id else "unlabelled"
    return link("crawl_job", job.pk, f"crawl #{job.pk} {job.source} → {who}")


def _start_tier(cycle: Cycle, write: Writer, tiers: list[dict], index: int) -> None:
    from apps.crawling.services import collection_plan_create

    tier = tiers[index]
    characters = {c.slug: c for c in Character.objects.filter(slug__in=list(tier["targets"]))}
    targets = [(characters[slug], wanted) for slug, wanted in tier["targets"].items() if slug in characters]
    with transaction.atomic():
        # The policy is applied by the review stage (every pending image, deterministically, after the crawls);
        # the jobs name the evaluation so the review queue's plan filter finds what the cycle brought.
        jobs = collection_plan_create(targets=targets, requested_by=cycle.requested_by,
                                      sources=cycle.sources or None, evaluation_run_id=cycle.from_evaluation_id)
        tiers[index] = {**tier, "status": "running", "jobs": [job.pk for job in jobs],
                        "started_at": timezone.now().isoformat()}
        write(plan={**cycle.plan, "tiers": tiers})
        cycle.crawl_jobs.add(*jobs)


def crawl(cycle: Cycle, write: Writer) -> Step:
    """Tier by tier: start the crawl jobs of the first tier not done, wait for them, then the next.

    A crawl job someone cancelled counts as done; a failed one stops the cycle (resume retries it)."""
    tiers = [dict(tier) for tier in cycle.plan.get("tiers", [])]
    for index, tier in enumerate(tiers):
        if tier["status"] == "done":
            continue
        if not tier["jobs"] and tier["status"] == "pending":
            _start_tier(cycle, write, tiers, index)
            tier = tiers[index]
        jobs = list(CrawlJob.objects.filter(pk__in=tier["jobs"]).select_related("character"))
        links = [_crawl_link(job) for job in jobs]
        failed = [job for job in jobs if job.status == CrawlJob.Status.FAILED]
        if failed:
            raise StageFailed(f"{tier['name']}: crawl job {failed[0].pk} ({failed[0].source}) failed: "
                              f"{failed[0].error or failed[0].stop_reason}. Resume the cycle to retry it.")
        active = [job for job in jobs if job.is_active]
        if active:
            accepted = sum(job.accepted for job in jobs)
            return Step(WAIT, f"{tier['name']}: {len(active)} of {len(jobs)} crawl job(s) running, "
                              f"{accepted} new image(s) so far", links)
        tiers[index] = {**tier, "status": "done", "finished_at": timezone.now().isoformat(),
                        "accepted": sum(job.accepted for job in jobs)}
        write(plan={**cycle.plan, "tiers": tiers})
    jobs = list(cycle.crawl_jobs.select_related("character").order_by("pk"))
    detail = "; ".join(f"{t['name']}: {len(t['jobs'])} job(s), {t.get('accepted', 0)} new image(s)" for t in tiers)
    return Step(DONE, detail, [_crawl_link(job) for job in jobs])


# --- auto-review and the wait for a person ---------------------------------------------------------

def crawled_images(cycle: Cycle) -> QuerySet[Image]:
    """The images this cycle's crawls stored (not the duplicates they met)."""
    stored = SeenPost.objects.filter(job__cycles=cycle, outcome="new", image__isnull=False).values("image_id")
    return Image.objects.filter(pk__in=stored)


def pending_images(cycle: Cycle) -> QuerySet[Image]:
    return crawled_images(cycle).filter(status=Image.Status.PENDING)


def review_links(cycle: Cycle) -> list[dict]:
    """The review queue narrowed to each crawl job that left images pending, with how many."""
    counts = (SeenPost.objects.filter(job__cycles=cycle, outcome="new", image__in=pending_images(cycle))
              .values("job_id").annotate(n=Count("id")).order_by("job_id"))
    return [link("review", row["job_id"], f"review what crawl #{row['job_id']} brought ({row['n']} pending)")
            for row in counts]


def review(cycle: Cycle, write: Writer) -> Step:
    """The default model's suggestions for the pending images the crawls brought, a batch per call (cursor
    on the image id in the plan), approving what it confirms at ``auto_approve_min_confidence`` or more.

    Without a policy only images with no suggestion from default yet are sent (the crawl may have asked
    already); with one every pending image is, since the policy must judge each."""
    try:
        from apps.review.services import suggestions_compute
    except ImportError:
        return Step(SKIPPED, "the review app is not installed: every crawled image waits for a person")
    version = default_version()
    if version is None:
        return Step(SKIPPED, "no default model to suggest labels: every crawled image waits for a person")
    progress = dict(cycle.plan.get("review") or {})
    after = progress.get("after_id", 0)
    images = pending_images(cycle).filter(pk__gt=after)
    if cycle.auto_approve_min_confidence is None:
        images = images.exclude(suggestions__model_version=version)
    batch = list(images.order_by("pk").values_list("pk", flat=True)[:settings.KYARA_CYCLE_REVIEW_BATCH])
    if batch:
        result = suggestions_compute(image_ids=batch, model=version.name, actor=cycle.requested_by,
                                     auto_approve_min_confidence=cycle.auto_approve_min_confidence)
        for key in ("suggested", "approved", "flagged", "failed"):
            progress[key] = progress.get(key, 0) + int(result.get(key) or 0)
        progress.update(after_id=batch[-1], model=version.name)
        write(plan={**cycle.plan, "review": progress})
    detail = (f"{progress.get('suggested', 0)} image(s) given {version.name}'s suggestions, "
              f"{progress.get('approved', 0)} approved by the policy "
              f"(≥ {cycle.auto_approve_min_confidence})" if cycle.auto_approve_min_confidence is not None else
              f"{progress.get('suggested', 0)} image(s) given {version.name}'s suggestions (no auto-approval)")
    if progress.get("flagged"):
        detail += f", {progress['flagged']} flagged"
    if progress.get("failed"):
        detail += f", {progress['failed']} could not be read"
    return Step(AGAIN if len(batch) == settings.KYARA_CYCLE_REVIEW_BATCH else DONE, detail, review_links(cycle))


def wait(cycle: Cycle, write: Writer) -> Step:
    """Wait while images from this cycle's crawls are pending, unless told to go on (continue, or
    ``skip_waiting``). The schedule looks again every minute, so a finished review lets it go on."""
    pending = pending_images(cycle).count()
    links = review_links(cycle)
    if not pending:
        return Step(DONE, "no crawled image waits for review", links)
    if cycle.skip_waiting:
        return Step(DONE, f"went on without waiting: {pending} crawled image(s) still pending stay out of the "
                          "new version", links)
    return Step(WAIT, f"{pending} crawled image(s) wait for review", links)


# --- freeze ----------------------------------------------------------------------------------------

def freeze(cycle: Cycle, write: Writer) -> Step:
    """A new dataset version with the previous version's split settings (so the two compare), named after the
    cycle. Nothing new since the previous version ends the cycle: training again would learn nothing."""
    previous = cycle.from_evaluation.dataset_version
    name = f"cycle-{cycle.pk}"
    notes = f"Frozen by improvement cycle {cycle.pk} from {previous.name}."
    version = DatasetVersion.objects.filter(name=name, notes=notes).first()  # frozen before a crash: adopt it
    if version is None:
        params = previous.params or {}
        options = {key: params[key] for key in ("val", "test", "seed", "min_images") if key in params}
        try:
            version = dataset_version_freeze(name=name, notes=notes, created_by=cycle.requested_by, **options)
        except ServiceError as exc:
            leaks = (exc.details.get("report") or {}).get("leaks")
            raise StageFailed(f"Freezing {name} was refused: {exc.message}"
                              + (f" ({leaks} leak(s); see the report)" if leaks else "")) from None
    write(dataset_version=version)
    links = [link("dataset_version", version.pk, version.name)]
    splits = version.counts.get("splits", {})
    detail = (f"{version.name}: {splits.get('train', 0)} train, {splits.get('val', 0)} val, "
              f"{splits.get('test', 0)} test images ({version.num_images - previous.num_images:+d} vs {previous.name})")
    if version.content_hash == previous.content_hash:
        write(hold_reason=f"Nothing changed since {previous.name}: no new approved image, so no new model.")
        return Step(DONE, f"{detail}; the same images as {previous.name}", links, finish=True)
    return Step(DONE, detail, links)


# --- train -----------------------------------------------------------------------------------------

def training_config(cycle: Cycle) -> dict:
    """Default's training config (else that of the evaluated model), with the cycle's overrides."""
    base: dict = {}
    for version in (default_version(), cycle.from_evaluation.model_version):
        job = (TrainingJob.objects.filter(pk=version.training_job_id).first()
               if version is not None and version.training_job_id else None)
        if job is not None:
            base = dict(job.config)
            break
    config = {**base, **(cycle.config_overrides or {})}
    if cycle.epochs:
        config["epochs"] = cycle.epochs
    if cycle.image_size:
        config["image_size"] = cycle.image_size
    return config


def _training_link(job: TrainingJob) -> dict:
    return link("training_job", job.pk, f"training job {job.pk}")


def train(cycle: Cycle, write: Writer) -> Step:
    from apps.training.services import training_job_start

    job = cycle.training_job
    if job is None:
        with transaction.atomic():
            job = training_job_start(dataset_version=cycle.dataset_version, config=training_config(cycle),
                                     name=f"cycle {cycle.pk}: {cycle.dataset_version.name}",
                                     created_by=cycle.requested_by)
            write(training_job=job)
        return Step(WAIT, f"training job {job.pk} queued", [_training_link(job)])
    job.refresh_from_db()
    links = [_training_link(job)]
    if job.status == TrainingJob.Status.SUCCEEDED:
        links.append(link("model_version", job.model_version_id, job.model_version.name))
        return Step(DONE, f"{job.model_version.name}: {job.epochs_run} epoch(s), best val accuracy "
                          f"{job.best_val_accuracy or 0:.1%}", links)
    if job.status in TrainingJob.FINISHED:
        raise StageFailed(f"Training job {job.pk} {job.status}: {job.error or job.stop_reason}. Resume the cycle "
                          "to resume it from its last checkpoint (or start it again).")
    config = job.config
    return Step(WAIT, f"training job {job.pk} {job.status}: epoch {job.epochs_run}/{config.get('epochs')}", links)


# --- evaluate --------------------------------------------------------------------------------------

# The runs a cycle compares on: field → (whose model, which dataset version)
EVALUATIONS = {
    "evaluation": ("candidate", "new"),
    "evaluation_previous": ("candidate", "previous"),
    "baseline_evaluation": ("baseline", "new"),
    "baseline_evaluation_previous": ("baseline", "previous"),
}


def _run_for(model: ModelVersion, version: DatasetVersion, cycle: Cycle) -> EvaluationRun | None:
    """A run of ``model`` on ``version``'s test split to compare with: one that succeeded or still runs (the
    evaluation after training, the cycle's evaluation), else a new one; None when the split is empty."""
    from apps.evaluation.services import evaluation_run_create

    existing = (EvaluationRun.objects.filter(model_version=model, dataset_version=version, split="test")
                .filter(Q(status=EvaluationRun.Status.SUCCEEDED) | Q(status__in=EvaluationRun.ACTIVE))
                .order_by("-created_at", "-id").first())
    if existing is not None:
        return existing
    if not DatasetItem.objects.filter(version=version, split="test").exists():
        return None
    return evaluation_run_create(model_version=model, dataset_version=version, split="test",
                                 origin=EvaluationRun.Origin.CYCLE, requested_by=cycle.requested_by)


def evaluate(cycle: Cycle, write: Writer) -> Step:
    """The new model and default, each on the new version's test split and on the previous version's."""
    candidate = cycle.training_job.model_version
    if cycle.baseline_model_id is None:
        baseline = default_version()
        if baseline is not None:
            write(baseline_model=baseline)
    models = {"candidate": candidate, "baseline": cycle.baseline_model}
    versions = {"new": cycle.dataset_version, "previous": cycle.from_evaluation.dataset_version}
    created = {}
    with transaction.atomic():
        for name, (whose, which) in EVALUATIONS.items():
            if getattr(cycle, f"{name}_id") is None and models[whose] is not None:
                run = _run_for(models[whose], versions[which], cycle)
                if run is not None:
                    created[name] = run
        if created:
            write(**created)
    runs = {name: getattr(cycle, name) for name in EVALUATIONS if getattr(cycle, f"{name}_id")}
    for run in runs.values():
        run.refresh_from_db()
    links = [link("evaluation", run.pk, f"evaluation {run.pk}: {run.model_version.name} on "
                  f"{run.dataset_version.name}/test") for run in runs.values()]
    failed = [run for run in runs.values() if run.status in (EvaluationRun.Status.FAILED,
                                                             EvaluationRun.Status.CANCELLED)]
    if failed:
        raise StageFailed(f"Evaluation {failed[0].pk} ({failed[0].model_version.name} on "
                          f"{failed[0].dataset_version.name}/test) {failed[0].status}: {failed[0].error}. Resume the "
                          "cycle to run it again.")
    if "evaluation" not in runs:
        raise StageFailed(f"{cycle.dataset_version.name} has no test images to evaluate the new model on; freeze "
                          "with a test share above 0.")
    active = [run for run in runs.values() if run.is_active]
    if active:
        return Step(WAIT, f"{len(active)} of {len(runs)} evaluation(s) running", links)
    return Step(DONE, f"{len(runs)} evaluation(s) done", links)


# --- compare and promote ---------------------------------------------------------------------------

def clean_top1(run: EvaluationRun) -> float | None:
    """Top-1 on the images the run's model did not train on (its leak report's accuracy without leaks):
    default was trained on images the new split may hold, and the new model on the previous test images."""
    value = (run.leak_report or {}).get("accuracy_without_leaks")
    return run.top1 if value is None else value


def _side(run: EvaluationRun) -> dict:
    return {"run": run.pk, "model_version": run.model_version.name, "top1": run.top1, "top1_clean": clean_top1(run),
            "images": run.images, "leaked_images": run.leaks, "mean_per_class_accuracy": run.mean_per_class_accuracy}


def comparison_of(cycle: Cycle) -> dict:
    """Candidate vs baseline on each test split both were measured on; better only if, on every one, the
    candidate's clean top-1 beats the baseline's by at least the margin."""
    from apps.evaluation.selectors import evaluation_runs_compare

    margin = cycle.margin
    result = {"margin": margin, "metric": "top-1 on images the model did not train on",
              "candidate": cycle.training_job.model_version.name,
              "baseline": cycle.baseline_model.name if cycle.baseline_model_id else None, "splits": []}
    if cycle.baseline_model_id is None:
        return {**result, "better": True, "reason": "no default model to beat"}
    result["gallery"] = gallery_coverage(cycle)
    losing = []
    for split, (mine, theirs) in (("new", ("evaluation", "baseline_evaluation")),
                                  ("previous", ("evaluation_previous", "baseline_evaluation_previous"))):
        candidate, baseline = getattr(cycle, mine), getattr(cycle, theirs)
        if candidate is None or baseline is None:
            continue
        a, b = _side(candidate), _side(baseline)
        delta = None if a["top1_clean"] is None or b["top1_clean"] is None else a["top1_clean"] - b["top1_clean"]
        better = delta is not None and delta >= margin
        characters = evaluation_runs_compare(base=baseline, other=candidate)
        result["splits"].append({
            "split": split, "dataset_version": candidate.dataset_version.name, "candidate": a, "baseline": b,
            "delta": delta, "better": better, "characters": characters["counts"],
            "most_improved": [row for row in characters["characters"] if (row["delta"] or 0) > 0][-5:][::-1],
            "most_worsened": [row for row in characters["characters"] if (row["delta"] or 0) < 0][:5]})
        if not better:
            losing.append(f"on {candidate.dataset_version.name}/test the new model's top-1 is "
                          f"{_percent(a['top1_clean'])} against default's {_percent(b['top1_clean'])} "
                          f"(needs +{margin:.1%} or more)")
    if not result["splits"]:
        return {**result, "better": False, "reason": "no test split measured both models"}
    if losing:
        return {**result, "better": False, "reason": "not better by the margin: " + "; ".join(losing)}
    gains = ", ".join(f"{s['delta']:+.1%} on {s['dataset_version']}/test" for s in result["splits"])
    return {**result, "better": True, "reason": f"better by the margin: {gains}"}


def gallery_coverage(cycle: Cycle) -> dict:
    """What the gallery covered until this training: the characters default answered from their approved images
    (no class of its own) on the new version's test split, how well, and which of them the new model has as classes."""
    run = cycle.baseline_evaluation
    if run is None:
        return {"characters": 0, "rows": []}
    candidate = set(cycle.training_job.model_version.labels)
    rows = [{"character": row.label, "accuracy": row.accuracy, "support": row.support, "now_a_class": row.label in candidate}
            for row in run.characters.filter(source="gallery").order_by("label")]
    measured = [row["accuracy"] for row in rows if row["accuracy"] is not None]
    return {"characters": len(rows), "now_classes": sum(row["now_a_class"] for row in rows),
            "mean_accuracy": sum(measured) / len(measured) if measured else None, "rows": rows[:50]}


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def compare(cycle: Cycle, write: Writer) -> Step:
    comparison = comparison_of(cycle)
    write(comparison=comparison)
    return Step(DONE, comparison["reason"], [link("evaluation", run_id, f"evaluation {run_id}") for run_id in
                                             (cycle.evaluation_id, cycle.baseline_evaluation_id) if run_id])


def promote(cycle: Cycle, write: Writer) -> Step:
    """Default moves to the new model (through ``model_alias_set``, so the promotion gate applies) only when
    it is better and the cycle may promote; otherwise ``candidate`` points at it and the reason is kept."""
    from apps.inference.services import model_alias_set

    candidate = cycle.training_job.model_version
    comparison = cycle.comparison
    why = f"improvement cycle {cycle.pk}: {comparison.get('reason', '')}"[:2000]
    links = [link("model_version", candidate.pk, candidate.name)]
    hold = ""
    if not comparison.get("better"):
        hold = comparison.get("reason") or "not better"
    elif not cycle.promote_if_better:
        hold = f"{comparison.get('reason')}; but the cycle may not promote (promote_if_better is off)"
    else:
        try:
            model_alias_set(name=DEFAULT_ALIAS, version=candidate, actor=cycle.requested_by, why=why)
        except ServiceError as exc:
            hold = f"the promotion was refused: {exc.message}"
    if not hold:
        write(promoted=True, hold_reason="")
        return Step(DONE, f"default → {candidate.name}", links)
    model_alias_set(name=CANDIDATE_ALIAS, version=candidate, actor=cycle.requested_by, why=why)
    write(promoted=False, hold_reason=hold)
    kept = cycle.baseline_model.name if cycle.baseline_model_id else "unset"
    return Step(DONE, f"held: candidate → {candidate.name}, default stays {kept}", links)


STAGES: dict[str, Callable[[Cycle, Writer], Step]] = {
    Stage.PLAN: plan, Stage.CRAWL: crawl, Stage.REVIEW: review, Stage.WAIT: wait, Stage.FREEZE: freeze,
    Stage.TRAIN: train, Stage.EVALUATE: evaluate, Stage.COMPARE: compare, Stage.PROMOTE: promote,
}
ORDER = list(STAGES)
