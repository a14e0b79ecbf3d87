"""The review queue: pending images, largest doubt first, with the current default model's verdict on each
and the approved images of the dataset they nearly duplicate."""
from __future__ import annotations

from dataclasses import dataclass, field

from django.conf import settings
from django.core.files.storage import default_storage
from django.db.models import Case, FilteredRelation, IntegerField, Q, QuerySet, Value, When
from django.db.models.functions import Coalesce

from apps.characters.models import Character, Image
from apps.characters.phash import band_probes, hamming
from apps.core.api import ServiceError
from apps.crawling.models import CrawlJob, SeenPost
from apps.evaluation.models import EvaluationRun
from apps.evaluation.selectors import label_issue_image_ids
from apps.inference.models import ModelVersion
from apps.inference.selectors import DEFAULT_ALIAS, model_resolve

from .models import ReviewDecision, Suggestion
from .verdict import NO_SUGGESTION, judge

NO_MODEL_MESSAGE = ("No model is promoted to 'default' yet, so there are no suggestions: the images wait for a "
                    "person. Promote a model and they are computed (POST /api/v1/aliases/default/set/).")
NEAR_DUPLICATES_SHOWN = 3


def flag_confidence() -> float:
    """Top-1 probability from which a model that contradicts the label flags the image
    (``KYARA_REVIEW_FLAG_CONFIDENCE``)."""
    return settings.KYARA_REVIEW_FLAG_CONFIDENCE


def suggesting_version(model: str | None = None, *, fresh: bool = False) -> ModelVersion | None:
    """The version whose verdicts count: what ``model`` (an alias or version name; ``default`` unless told)
    means to THE resolver the predict API uses; None while no model is promoted to ``default``."""
    try:
        version, _alias = model_resolve(model or DEFAULT_ALIAS, fresh=fresh)
    except ServiceError as exc:
        if exc.code == "no_model":
            return None
        raise
    return version


@dataclass(frozen=True)
class ReviewFilters:
    """What the queue can be narrowed to; every field optional (None: no filter)."""

    character: str | None = None  # the claimed character's slug
    source: str | None = None  # a source site (safebooru, waifu_pics...) or kind (upload, import, crawl)
    crawl_job: int | None = None  # images that crawl job stored
    plan: int | None = None  # an evaluation run: images the crawl jobs of its collection plan stored
    evaluation: int | None = None  # an evaluation run: its suspect labels not decided since (approved images)
    flagged: bool | None = None
    unlabelled: bool | None = None


def _exists(model, pk: int, what: str) -> None:
    if not model.objects.filter(pk=pk).exists():
        raise ServiceError("unknown_filter", f"No {what} {pk}.", field=what.replace(" ", "_"))


def _crawled_by(job_ids) -> Q:
    return Q(pk__in=SeenPost.objects.filter(job_id__in=job_ids, image__isnull=False).values("image_id"))


def _run(run_id: int, field: str) -> EvaluationRun:
    run = EvaluationRun.objects.filter(pk=run_id).only("plan", "label_issues", "finished_at", "created_at").first()
    if run is None:
        raise ServiceError("unknown_filter", f"No evaluation run {run_id}.", field=field)
    return run


def _plan_jobs(run_id: int) -> list[int]:
    """The crawl jobs an evaluation run's collection plan created: those that name the run, and those its
    ``plan`` lists (jobs planned before crawl jobs named their run)."""
    listed = (_run(run_id, "plan").plan or {}).get("jobs", [])
    named = CrawlJob.objects.filter(evaluation_run_id=run_id).values_list("pk", flat=True)
    return sorted({*named, *(pk for pk in listed if isinstance(pk, int))})


def label_issue_images(run_id: int) -> list[int]:
    """An evaluation run's suspect labels left to review, most suspect first: still approved with the label
    the run doubted (``label_issue_image_ids``), and not decided since the run in a batch not undone (a
    reviewer who keeps the label changes nothing on the image)."""
    run = _run(run_id, "evaluation")
    still = label_issue_image_ids(run)
    decided = set(ReviewDecision.objects.filter(image_id__in=still, batch__undone_at__isnull=True,
                                                batch__created_at__gte=run.finished_at or run.created_at)
                  .values_list("image_id", flat=True))
    return [pk for pk in still if pk not in decided]


def _filtered(queryset: QuerySet[Image], filters: ReviewFilters) -> QuerySet[Image]:
    if filters.character:
        if not Character.objects.filter(slug=filters.character).exists():
            raise ServiceError("unknown_filter", f"Unknown character {filters.character!r}.", field="character")
        queryset = queryset.filter(character__slug=filters.character)
    if filters.source:
        queryset = queryset.filter(Q(source_site=filters.source) | Q(source_kind=filters.source))
    if filters.crawl_job is not None:
        _exists(CrawlJob, filters.crawl_job, "crawl job")
        queryset = queryset.filter(_crawled_by([filters.crawl_job]))
    if filters.plan is not None:
        queryset = queryset.filter(_crawled_by(_plan_jobs(filters.plan)))
    if filters.unlabelled is not None:
        queryset = queryset.filter(character__isnull=filters.unlabelled)
    if filters.flagged:
        queryset = queryset.filter(current__flagged=True)
    elif filters.flagged is False:
        queryset = queryset.filter(Q(current__flagged=False) | Q(current__isnull=True))
    return queryset


def review_queue(*, filters: ReviewFilters | None = None, version: ModelVersion | None = None) -> QuerySet[Image]:
    """Pending images, largest doubt first, then the longest waiting; each annotated with ``review_doubt``
    and joinable as ``current`` to ``version``'s suggestion on it (pass ``suggesting_version()``: the
    default's; None when no model is promoted: every image then waits in arrival order). With
    ``filters.evaluation``, that run's suspect labels left to review instead (approved images), in the
    run's order.

    Images without a verdict yet (just ingested, or their file cannot be read) sort with doubt
    ``NO_SUGGESTION``: after the flagged and disagreeing ones, before those the model agrees with — a
    person must look at them anyway, and nothing vouches for them.
    """
    filters = filters or ReviewFilters()
    order = ["-review_doubt", "pk"]
    if filters.evaluation is None:
        waiting = Q(status=Image.Status.PENDING)
    else:  # the run's order: most suspect first
        issues = label_issue_images(filters.evaluation)
        waiting = Q(pk__in=issues)
        order = [Case(*(When(pk=pk, then=Value(rank)) for rank, pk in enumerate(issues)), default=Value(0),
                      output_field=IntegerField())]
    queryset = (Image.objects.filter(waiting).select_related("character__series")
                .annotate(current=FilteredRelation("suggestions", condition=Q(
                    suggestions__model_version_id=version.pk if version else None)))
                .annotate(review_doubt=Coalesce("current__doubt", Value(NO_SUGGESTION))))
    return _filtered(queryset, filters).order_by(*order)


@dataclass
class ReviewItem:
    """One image of the queue as a reviewer sees it."""

    image: Image
    model_version: str | None
    suggestions: list[dict]  # [{"slug", "name", "probability"}], most probable first
    claimed_probability: float | None
    agrees: bool | None
    flagged: bool
    doubt: float | None
    near_duplicates: list[dict] = field(default_factory=list)


def image_urls(image_file: str, thumbnail: str) -> tuple[str, str]:
    """(full, thumbnail) URLs of a stored image; the full one stands in for a missing thumbnail."""
    full = default_storage.url(image_file) if image_file else ""
    return full, (default_storage.url(thumbnail) if thumbnail else full)


def _verdict(image: Image, suggestion: Suggestion, version: ModelVersion) -> tuple[float | None, bool | None, bool]:
    """(claimed probability, agrees, flagged) on the label the image has now. A verdict computed on another
    label (relabelled since) is judged again from its top-3 (the probability of a label outside them is not
    known; its doubt keeps the stored value until recomputed)."""
    claimed = image.character.slug if image.character_id else None
    if (claimed or "") == suggestion.claimed_slug:
        return suggestion.claimed_probability, suggestion.agrees, suggestion.flagged
    top = [(entry["slug"], entry["probability"]) for entry in suggestion.top]
    probability = next((p for slug, p in top if slug == claimed), None)
    verdict = judge(top=top, claimed=claimed, claimed_probability=probability, known=claimed in version.labels,
                    flag_confidence=flag_confidence())
    return verdict.claimed_probability, verdict.agrees, verdict.flagged


def review_items(images: list[Image], *, version: ModelVersion | None) -> list[ReviewItem]:
    """The queue's page as reviewers see it: each image's suggestions with character names, the verdict on
    its label now, and up to three approved near-duplicates. A fixed number of queries for any page."""
    suggestions = ({s.image_id: s for s in Suggestion.objects.filter(model_version=version,
                                                                      image__in=[i.pk for i in images])}
                   if version else {})
    slugs = {entry["slug"] for s in suggestions.values() for entry in s.top}
    names = dict(Character.objects.filter(slug__in=slugs).values_list("slug", "name"))
    near = near_duplicates_in_dataset(images)
    items = []
    for image in images:
        suggestion = suggestions.get(image.pk)
        if suggestion is None:
            items.append(ReviewItem(image, version.name if version else None, [], None, None, False, None,
                                    near[image.pk]))
            continue
        claimed_probability, agrees, flagged = _verdict(image, suggestion, version)
        items.append(ReviewItem(
            image, version.name, [{"slug": e["slug"], "name": names.get(e["slug"], e["slug"]),
                                   "probability": e["probability"]} for e in suggestion.top],
            claimed_probability, agrees, flagged, suggestion.doubt, near[image.pk]))
    return items


def near_duplicates_in_dataset(images: list[Image], *, limit: int = NEAR_DUPLICATES_SHOWN) -> dict[int, list[dict]]:
    """For each image, up to ``limit`` approved images in its near-duplicate group or within
    ``KYARA_NEAR_DUPLICATE_DISTANCE`` of its pHash, nearest first: what the dataset already holds of it.

    One query finds the candidates of the whole page (the group ids and the pHash bands, as
    ``apps.characters.selectors.near_duplicates_of_hash`` does for one image), one more reads the chosen.
    """
    found: dict[int, list[dict]] = {image.pk: [] for image in images}
    if not images:
        return found
    max_distance = settings.KYARA_NEAR_DUPLICATE_DISTANCE
    values: list[set[int]] = [set(), set(), set(), set()]
    for image in images:
        for band, probes in enumerate(band_probes(image.phash, max_distance)):
            values[band].update(probes)
    condition = Q(dup_group__in={image.dup_group for image in images if image.dup_group})
    for band, probes in enumerate(values):
        condition |= Q(**{f"phash_b{band}__in": probes})
    candidates = list(Image.objects.filter(condition, status=Image.Status.APPROVED)
                      .values_list("pk", "phash", "dup_group"))
    chosen: dict[int, list[tuple[int, int]]] = {}
    for image in images:
        near = []
        for pk, phash, group in candidates:
            distance = hamming(image.phash, phash)
            same_group = image.dup_group is not None and group == image.dup_group
            if pk != image.pk and (same_group or distance <= max_distance):
                near.append((distance, pk))
        chosen[image.pk] = sorted(near)[:limit]
    wanted = {pk for near in chosen.values() for _distance, pk in near}
    rows = Image.objects.filter(pk__in=wanted).select_related("character")
    details = {}
    for row in rows:
        url, thumbnail_url = image_urls(row.file.name, row.thumbnail)
        details[row.pk] = {"id": row.pk, "url": url, "thumbnail_url": thumbnail_url,
                           "character": {"slug": row.character.slug, "name": row.character.name}
                           if row.character_id else None}
    for pk, near in chosen.items():
        found[pk] = [{**details[other], "distance": distance} for distance, other in near if other in details]
    return found
