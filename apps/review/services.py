"""Every state change of the review app: the model's suggestions, a reviewer's decisions, undo, bulk approval.

Suggestions come from the model the predict API serves (the predictor cache's loaded model, resolved by
``apps.inference.selectors.model_resolve``) through ``Predictor.predict_many``, the path ``/predict_batch``
takes: a suggestion and a prediction of the same image are one answer.

Every decision goes through the curation services (``image_set_status``, ``image_relabel``), so each
change is an ImageEvent; a batch of decisions is a ``ReviewBatch`` that keeps each image's state before
and after, which is what undo restores, and checks nobody changed in between.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import F, Max
from django.utils import timezone

from apps.characters.models import Character, Image, ImageEvent
from apps.characters.services import REJECT_REASONS, image_relabel, image_set_status, suggestions_request
from apps.core.api import ServiceError
from apps.inference.gallery import answer_many, embeddings_store
from apps.inference.loading import predictor_cache
from apps.inference.models import ModelVersion

from .models import ReviewBatch, ReviewDecision, Suggestion
from .selectors import NO_MODEL_MESSAGE, ReviewFilters, flag_confidence, review_queue, suggesting_version
from .verdict import TOP_K, judge

logger = logging.getLogger(__name__)

ACTIONS = ("approve", "reject", "relabel")
DEFAULT_REJECT_REASON = "other"
DECISIONS_MAX = 1000  # per request: a page of the queue is 50; a bulk client can send a few pages at once
IMAGES_PER_CHUNK = 256  # rows read, predicted and stored at a time: memory stays flat whatever the count
PROBLEMS_SHOWN = 10
NOTE_MAX = 200  # ImageEvent.reason


def probability_check(value, name: str) -> float:
    """A probability from 0 to 1, or a 400 naming ``name``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(value, bool) or not 0.0 <= number <= 1.0:
        raise ServiceError("invalid_probability", f"{name} must be a number from 0 to 1, not {value!r}.",
                           field=name)
    return number


# --- Suggestions -----------------------------------------------------------------------------------

def _chunks(ids: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(ids), size):
        yield ids[start:start + size]


def _files(images: list[Image], missing: set[int]) -> Iterator[bytes]:
    """Each image's bytes, read lazily; a file that cannot be read is empty bytes (the predictor refuses it,
    and the image is counted as failed, with ``file_missing`` as the reason)."""
    for image in images:
        try:
            with default_storage.open(image.file.name, "rb") as handle:
                yield handle.read()
        except OSError:
            missing.add(image.pk)
            yield b""


def _suggest_chunk(version: ModelVersion, loaded, images: list[Image]) -> tuple[list[Suggestion], list[dict]]:
    """The verdicts on ``images`` (one forward per ``KYARA_EVAL_BATCH_SIZE``, over the classifier's classes and
    the gallery's characters), and the images that failed. The same forward's embeddings are kept: an image
    approved later joins the gallery without another pass."""
    missing: set[int] = set()
    done = answer_many(loaded, version, _files(images, missing), batch_size=settings.KYARA_EVAL_BATCH_SIZE,
                       embeddings=True)
    embeddings_store(version=version, image_ids=[images[position].pk for position in done.kept],
                     vectors=done.embeddings)
    index = {slug: i for i, slug in enumerate(done.labels)}
    flag = flag_confidence()
    rows = []
    for row, position in enumerate(done.kept):
        image, probabilities = images[position], done.probabilities[row]
        order = np.argsort(-probabilities, kind="stable")[:TOP_K]
        # Rounded as the predict API rounds, so both say the same numbers.
        top = [(done.labels[i], round(float(probabilities[i]), 6)) for i in order]
        claimed = image.character.slug if image.character_id else None
        known = claimed in index
        claimed_probability = round(float(probabilities[index[claimed]]), 6) if known else None
        verdict = judge(top=top, claimed=claimed, claimed_probability=claimed_probability, known=known,
                        flag_confidence=flag)
        rows.append(Suggestion(image=image, model_version=version, claimed_slug=claimed or "",
                               top=[{"slug": slug, "probability": probability, "source": done.source_of(slug)}
                                    for slug, probability in top],
                               claimed_probability=verdict.claimed_probability, agrees=verdict.agrees,
                               flagged=verdict.flagged, doubt=verdict.doubt))
    failed = [{"image": images[position].pk,
               "reason": "file_missing" if images[position].pk in missing else exc.reason}
              for position, exc in done.rejected]
    return rows, failed


def _store(rows: list[Suggestion]) -> None:
    Suggestion.objects.bulk_create(
        rows, update_conflicts=True, unique_fields=["image", "model_version"],
        update_fields=["top", "claimed_slug", "claimed_probability", "agrees", "flagged", "doubt", "created_at"])


def _compute(version: ModelVersion, image_ids: Iterable[int], *, auto_approve_min_confidence: float | None,
             actor) -> dict:
    loaded = predictor_cache.get(version)  # ServiceError (503) with the reason when it cannot serve
    counts = {"suggested": 0, "flagged": 0, "approved": 0, "failed": 0}
    failures: list[dict] = []
    confirmed: dict[int, int] = {}  # image id → the character the model confirmed
    for chunk in _chunks(sorted({int(pk) for pk in image_ids}), IMAGES_PER_CHUNK):
        images = list(Image.objects.filter(pk__in=chunk).select_related("character").order_by("pk"))
        rows, failed = _suggest_chunk(version, loaded, images)
        _store(rows)
        counts["suggested"] += len(rows)
        counts["flagged"] += sum(row.flagged for row in rows)
        counts["failed"] += len(failed)
        failures += failed
        if auto_approve_min_confidence is not None:
            confirmed.update((row.image_id, row.image.character_id) for row in rows
                             if row.agrees and row.claimed_probability >= auto_approve_min_confidence
                             and row.image.status == Image.Status.PENDING)
    if failures:
        logger.warning("Suggestions by %s: %d images failed, e.g. %s", version.name, len(failures), failures[:5])
    batch = None
    if confirmed:
        batch = _auto_approve(version, confirmed, auto_approve_min_confidence, actor)
        counts["approved"] = batch.counts["approved"] if batch else 0
    return {"model": version.name, **counts, "failures": failures[:PROBLEMS_SHOWN],
            "batch": batch.pk if batch else None}


def suggestions_compute(*, image_ids: Iterable[int], model: str = "default",
                        auto_approve_min_confidence: float | None = None, actor=None) -> dict:
    """Store the verdict of ``model`` (an alias or version name; the version ``default`` points at unless
    told) on each image, computed in batches through the serving predictor. With
    ``auto_approve_min_confidence``, pending images whose claimed label the model confirms (its top-1, at
    that probability or more) are approved, as one undoable batch.

    Returns ``{"model", "suggested", "flagged", "approved", "failed", "failures", "batch"}``; without a
    default model, a no-op that says so (``model`` None and a ``message``): images wait for a person.
    """
    threshold = (None if auto_approve_min_confidence is None
                 else probability_check(auto_approve_min_confidence, "auto_approve_min_confidence"))
    version = suggesting_version(model, fresh=True)
    if version is None:
        return {"model": None, "suggested": 0, "flagged": 0, "approved": 0, "failed": 0, "failures": [],
                "batch": None, "message": NO_MODEL_MESSAGE}
    return _compute(version, image_ids, auto_approve_min_confidence=threshold, actor=actor)


def suggestions_recompute_pending(*, model: str = "default") -> dict:
    """Ask for the verdicts of the version ``model`` points at now on every pending image that has none from
    it (run when ``default`` moves: the queue reads the current default's verdicts). Queued as tasks of a
    few hundred images each, so a large queue never holds one worker for long.
    Returns ``{"model", "queued"}`` (and a ``message`` when no model is promoted)."""
    version = suggesting_version(model, fresh=True)
    if version is None:
        return {"model": None, "queued": 0, "message": NO_MODEL_MESSAGE}
    ids = list(Image.objects.filter(status=Image.Status.PENDING).exclude(suggestions__model_version=version)
               .order_by("pk").values_list("pk", flat=True))
    suggestions_request(ids)
    return {"model": version.name, "queued": len(ids)}


# --- Decisions ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Decision:
    image: int
    action: str  # approve, reject, relabel (a relabelled image is approved: the reviewer has decided)
    character: Character | None = None  # relabel
    reason: str = ""  # reject: a reason code; approve and relabel: a note recorded on the event


def _state(image: Image) -> dict:
    return {"status": image.status, "reason": image.reason, "character": image.character_id}


def _user(actor):
    return actor if getattr(actor, "is_authenticated", False) else None


def _note(batch: ReviewBatch, text: str = "") -> str:
    return f"review batch {batch.pk}{': ' + text if text else ''}"[:NOTE_MAX]


def _apply(*, kind: str, decisions: list[Decision], actor, version: ModelVersion | None = None,
           note: str = "") -> ReviewBatch:
    """Apply ``decisions`` (validated) through the curation services, in the caller's transaction, as one
    batch. ``note`` is recorded on the approval events (after the batch's id)."""
    ids = [decision.image for decision in decisions]
    images = {image.pk: image for image in Image.objects.select_for_update().filter(pk__in=ids).order_by("pk")}
    gone = [pk for pk in ids if pk not in images]
    if gone:
        raise ServiceError("images_gone", f"Image(s) {', '.join(map(str, gone[:PROBLEMS_SHOWN]))} were deleted "
                           "meanwhile; nothing was applied.", status_code=409, images=gone)
    before = {pk: _state(image) for pk, image in images.items()}
    marker = ImageEvent.objects.aggregate(last=Max("id"))["last"] or 0
    batch = ReviewBatch.objects.create(kind=kind, actor=_user(actor), model_version=version)
    relabel: dict[Character, list[int]] = defaultdict(list)
    approve: dict[str, list[int]] = defaultdict(list)
    reject: dict[str, list[int]] = defaultdict(list)
    for decision in decisions:
        if decision.action == "reject":
            reject[decision.reason].append(decision.image)
            continue
        if decision.action == "relabel":
            relabel[decision.character].append(decision.image)
        approve[_note(batch, decision.reason or note)].append(decision.image)
    for character, image_ids in relabel.items():
        image_relabel(image_ids=image_ids, character=character, actor=actor, reason=_note(batch))
    for text, image_ids in approve.items():
        image_set_status(image_ids=image_ids, status=Image.Status.APPROVED, actor=actor, reason=text)
    for reason, image_ids in reject.items():
        image_set_status(image_ids=image_ids, status=Image.Status.REJECTED, actor=actor, reason=reason)
    after = {image.pk: _state(image) for image in Image.objects.filter(pk__in=ids)}
    ReviewDecision.objects.bulk_create(
        ReviewDecision(batch=batch, image_id=d.image, action=d.action, reason=d.reason,
                       character=d.character.slug if d.character else "", before=before[d.image], after=after[d.image])
        for d in decisions)
    batch.events = list(ImageEvent.objects.filter(image_id__in=ids, pk__gt=marker).order_by("pk")
                        .values_list("pk", flat=True))
    actions = [decision.action for decision in decisions]
    batch.counts = {"approved": actions.count("approve"), "rejected": actions.count("reject"),
                    "relabelled": actions.count("relabel")}
    batch.save(update_fields=["events", "counts"])
    return batch


def _auto_approve(version: ModelVersion, confirmed: dict[int, int], threshold: float, actor) -> ReviewBatch | None:
    """Approve the confirmed images still pending with the label the model confirmed."""
    with transaction.atomic():
        ids = list(Image.objects.select_for_update().filter(pk__in=list(confirmed), status=Image.Status.PENDING)
                   .values_list("pk", "character_id"))
        still = [pk for pk, character_id in ids if confirmed[pk] == character_id]
        if not still:
            return None
        return _apply(kind=ReviewBatch.Kind.AUTO_APPROVE, actor=actor, version=version,
                      decisions=[Decision(pk, "approve") for pk in still],
                      note=f"auto-review: {version.name} confirms at ≥ {threshold:g}")


def _integer_id(value) -> int | None:
    """A positive whole number a database column holds, else None (bools and floats are not ids)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**63:
        return None
    return value


def _check_decision(index: int, item, images: dict[int, Image], characters: dict[str, Character],
                    seen: dict[int, int]) -> tuple[Decision | None, list[tuple[str, str]]]:
    """One decision, or the problems with it as (field, message)."""
    if not isinstance(item, dict):
        return None, [("", 'must be an object: {"image": id, "action": "approve"|"reject"|"relabel", ...}')]
    problems: list[tuple[str, str]] = []
    image_id, action = _integer_id(item.get("image")), item.get("action")
    slug, reason = item.get("character"), item.get("reason")
    image = images.get(image_id) if image_id is not None else None
    if image_id is None:
        problems.append(("image", f"must be an image id, not {item.get('image')!r}"))
    elif image is None:
        problems.append(("image", f"no image {image_id}"))
    elif image_id in seen:
        problems.append(("image", f"image {image_id} is also decided by decisions[{seen[image_id]}]; "
                                  "decide each image once"))
    if action not in ACTIONS:
        problems.append(("action", f"unknown action {action!r}; use one of {', '.join(ACTIONS)}"))
    if slug is not None and not isinstance(slug, str):
        problems.append(("character", f"must be a character slug, not {slug!r}"))
        slug = None
    if reason is not None and not isinstance(reason, str):
        problems.append(("reason", f"must be text, not {reason!r}"))
        reason = None
    character = characters.get(slug) if slug else None
    if action == "relabel":
        if not slug:
            problems.append(("character", "relabel needs the character's slug"))
        elif character is None:
            problems.append(("character", f"unknown character {slug!r}"))
    elif action in ("approve", "reject") and slug and (image is None or image.character is None
                                                       or image.character.slug != slug):
        problems.append(("character", f"{action} keeps the image's label; to give it {slug!r}, use relabel"))
    if action == "approve" and image is not None and image.character_id is None:
        problems.append(("action", f"image {image.pk} has no character: relabel it (or reject it)"))
    if action == "reject":
        reason = reason or DEFAULT_REJECT_REASON
        if reason not in REJECT_REASONS:
            problems.append(("reason", f"unknown reject reason {reason!r}; use one of {', '.join(REJECT_REASONS)}"))
    if problems:
        return None, problems
    return Decision(image_id, action, character, (reason or "")[:NOTE_MAX]), []


def decisions_validate(decisions) -> list[Decision]:
    """Every decision checked before any is applied; a ServiceError (400) names each bad item and why,
    e.g. ``decisions[3].character: unknown character 'x'``."""
    if not isinstance(decisions, list) or not decisions:
        raise ServiceError("invalid_decisions", 'Send "decisions": a list of at least one '
                           '{"image": id, "action": "approve"|"reject"|"relabel", "character": slug, "reason": code}.',
                           field="decisions")
    if len(decisions) > DECISIONS_MAX:
        raise ServiceError("too_many_decisions", f"{len(decisions)} decisions; send at most {DECISIONS_MAX} at once.",
                           field="decisions", limit=DECISIONS_MAX)
    items = [item if isinstance(item, dict) else {} for item in decisions]
    ids = {pk for pk in (_integer_id(item.get("image")) for item in items) if pk is not None}
    slugs = {item.get("character") for item in items if isinstance(item.get("character"), str)}
    images = Image.objects.select_related("character").in_bulk(list(ids))
    characters = Character.objects.in_bulk(list(slugs), field_name="slug")
    valid, problems, seen = [], [], {}
    for index, item in enumerate(decisions):
        decision, found = _check_decision(index, item, images, characters, seen)
        problems += [{"index": index, "field": field, "message": message} for field, message in found]
        if decision is not None:
            seen[decision.image] = index
            valid.append(decision)
        elif isinstance(item, dict) and _integer_id(item.get("image")) in images:
            seen.setdefault(item["image"], index)
    if problems:
        shown = "; ".join(f"decisions[{p['index']}]{'.' + p['field'] if p['field'] else ''}: {p['message']}"
                          for p in problems[:PROBLEMS_SHOWN])
        more = f" (and {len(problems) - PROBLEMS_SHOWN} more)" if len(problems) > PROBLEMS_SHOWN else ""
        raise ServiceError("invalid_decisions", f"Nothing was applied: {shown}{more}.", problems=problems)
    return valid


@transaction.atomic
def review_decide(*, decisions, actor) -> dict:
    """Apply a reviewer's decisions, all or nothing: ``[{"image", "action", "character"?, "reason"?}]``.

    - approve: keep the label, approve (an unlabelled image cannot be approved: relabel or reject it);
    - reject: with a reason code (``REJECT_REASONS``; none given: ``other``);
    - relabel: give the character (its slug) and approve: the reviewer has decided what it shows.
    Any image may be decided, whatever its status (label issues of an evaluation are approved images; a
    reviewer may reverse an earlier decision); every change is an ImageEvent and the batch can be undone.
    Returns ``{"batch", "approved", "rejected", "relabelled"}``.
    """
    batch = _apply(kind=ReviewBatch.Kind.DECIDE, decisions=decisions_validate(decisions), actor=actor)
    return {"batch": batch.pk, **batch.counts}


@transaction.atomic
def review_undo(*, actor) -> dict:
    """Revert ``actor``'s last batch not undone yet (decisions or a bulk approval): each image goes back to
    its status, reason and label before it, through the curation services (recorded as events too).
    Refused (409) when an image of the batch changed since: undo would lose that change."""
    user = _user(actor)
    batch = None if user is None else (
        ReviewBatch.objects.select_for_update().filter(
            actor=user, undone_at__isnull=True, kind__in=[ReviewBatch.Kind.DECIDE, ReviewBatch.Kind.APPROVE_AGREEING])
        .order_by("-created_at", "-id").first())
    if batch is None:
        raise ServiceError("nothing_to_undo", "You have no review decisions left to undo.", status_code=404)
    decisions = list(batch.decisions.all())
    current = {image.pk: image for image in
               Image.objects.select_for_update().filter(pk__in=[d.image_id for d in decisions])}
    changed = [d.image_id for d in decisions if d.image_id not in current or _state(current[d.image_id]) != d.after]
    if changed:
        raise ServiceError("changed_since", f"Cannot undo review batch {batch.pk}: image(s) "
                           f"{', '.join(map(str, changed[:PROBLEMS_SHOWN]))} changed after it; undoing would lose "
                           "those changes. Decide them again instead.", status_code=409, images=changed)
    note = f"undo review batch {batch.pk}"
    by_character: dict[int | None, list[int]] = defaultdict(list)
    by_status: dict[tuple[str, str], list[int]] = defaultdict(list)
    for decision in decisions:
        before = decision.before
        by_character[before["character"]].append(decision.image_id)
        rejected = before["status"] == Image.Status.REJECTED
        reason = (before["reason"] if before["reason"] in REJECT_REASONS else DEFAULT_REJECT_REASON) if rejected else note
        by_status[(before["status"], reason)].append(decision.image_id)
    characters = Character.objects.in_bulk([pk for pk in by_character if pk is not None])
    for character_id, image_ids in by_character.items():
        image_relabel(image_ids=image_ids, character=characters.get(character_id), actor=actor, reason=note)
    for (status, reason), image_ids in by_status.items():
        image_set_status(image_ids=image_ids, status=status, actor=actor, reason=reason)
    batch.undone_at = timezone.now()
    batch.save(update_fields=["undone_at"])
    return {"batch": batch.pk, "kind": batch.kind, "restored": len(decisions)}


@transaction.atomic
def review_approve_agreeing(*, min_probability: float, filters: ReviewFilters | None = None, actor) -> dict:
    """Approve every pending image in the queue (``filters`` as the queue's) whose label the current
    default model agrees with at ``min_probability`` or more, as one undoable batch.
    Returns ``{"model", "approved", "batch"}`` (and a ``message`` when no model is promoted)."""
    threshold = probability_check(min_probability, "min_probability")
    version = suggesting_version(fresh=True)
    if version is None:
        return {"model": None, "approved": 0, "batch": None, "message": NO_MODEL_MESSAGE}
    # The verdict must be on the label the image has now (claimed_slug), not one it had when computed.
    ids = list(review_queue(filters=filters, version=version)
               .filter(status=Image.Status.PENDING, current__agrees=True, current__claimed_probability__gte=threshold,
                       current__claimed_slug=F("character__slug"))
               .values_list("pk", flat=True))
    if not ids:
        return {"model": version.name, "approved": 0, "batch": None}
    batch = _apply(kind=ReviewBatch.Kind.APPROVE_AGREEING, actor=actor, version=version,
                   decisions=[Decision(pk, "approve") for pk in ids],
                   note=f"{version.name} agrees at ≥ {threshold:g}")
    return {"model": version.name, "approved": batch.counts["approved"], "batch": batch.pk}
