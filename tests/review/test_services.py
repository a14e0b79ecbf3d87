"""Suggestions through the serving predictor, the auto-review policy, decisions all or nothing, undo,
bulk approval and the queue's order and filters, on a real trained model."""
from __future__ import annotations

import pytest

from apps.characters.models import Character, Image, ImageEvent
from apps.core.api import ServiceError
from apps.review import selectors, services
from apps.review.models import ReviewBatch, Suggestion
from tests.review.conftest import BLUE, GREEN, RED, ingest, red_green_mix

pytestmark = pytest.mark.django_db


def verdict(image) -> Suggestion:
    return Suggestion.objects.get(image=image)


def state(image) -> tuple:
    image.refresh_from_db()
    return image.status, image.reason, image.character.slug if image.character_id else None


def test_a_suggestion_is_what_the_predict_api_answers_for_the_same_image(suggested, api_client, registry):
    for image in suggested.all:
        with image.file.open("rb") as handle:
            answer = api_client.post("/api/v1/predict", {"file": handle, "top_k": 3}, format="multipart").json()
        assert answer["model"]["version"] == registry.v1.name
        top = verdict(image).top
        assert [entry["slug"] for entry in top] == [p["slug"] for p in answer["predictions"]]
        assert [entry["probability"] for entry in top] == pytest.approx(
            [p["probability"] for p in answer["predictions"]], abs=2e-6)
        assert Suggestion.objects.get(image=image).model_version_id == registry.v1.pk


def test_verdicts_judge_the_claimed_label(suggested):
    w = suggested
    for image in w.confirmed:
        s = verdict(image)
        assert s.agrees is True and not s.flagged and s.claimed_probability > 0.99
        assert s.top[0]["slug"] == image.character.slug and s.claimed_slug == image.character.slug
    unsure = verdict(w.unsure)
    assert unsure.agrees is True and not unsure.flagged and 0.5 < unsure.claimed_probability < 0.8
    disputed = verdict(w.disputed)
    assert disputed.agrees is False and not disputed.flagged and disputed.top[0]["slug"] == GREEN
    assert disputed.claimed_probability == next(e["probability"] for e in disputed.top if e["slug"] == RED)
    contradicted = verdict(w.contradicted)
    assert contradicted.agrees is False and contradicted.flagged and contradicted.top[0]["slug"] == RED
    assert contradicted.top[0]["probability"] >= 0.8 and contradicted.claimed_probability < 0.1
    for cannot_judge in (w.unlabelled, w.unknown):
        s = verdict(cannot_judge)
        assert s.agrees is None and s.claimed_probability is None and not s.flagged
    assert verdict(w.unlabelled).top[0]["slug"] == BLUE and verdict(w.unlabelled).claimed_slug == ""


def test_the_flag_confidence_is_a_setting(waiting, settings):
    settings.KYARA_REVIEW_FLAG_CONFIDENCE = 0.5
    result = services.suggestions_compute(image_ids=[waiting.disputed.pk, waiting.contradicted.pk])
    assert result["flagged"] == 2 and verdict(waiting.disputed).flagged


def test_without_a_default_model_suggesting_is_a_no_op_that_says_so(characters):
    image = ingest(red_green_mix(), character=characters[RED])
    result = services.suggestions_compute(image_ids=[image.pk], auto_approve_min_confidence=0.5)
    assert result["model"] is None and result["suggested"] == 0 and "No model is promoted" in result["message"]
    assert not Suggestion.objects.exists() and state(image)[0] == "pending"


def test_a_missing_file_is_counted_as_failed_and_the_rest_are_suggested(waiting):
    from django.core.files.storage import default_storage

    default_storage.delete(waiting.unsure.file.name)
    result = services.suggestions_compute(image_ids=[image.pk for image in waiting.all])
    assert result["failed"] == 1 and result["failures"] == [{"image": waiting.unsure.pk, "reason": "file_missing"}]
    assert result["suggested"] == len(waiting.all) - 1
    assert not Suggestion.objects.filter(image=waiting.unsure).exists()


def test_auto_review_approves_only_what_the_model_confirms_at_the_threshold(waiting, staff_user):
    result = services.suggestions_compute(image_ids=[image.pk for image in waiting.all],
                                          auto_approve_min_confidence=0.9, actor=staff_user)
    assert result["approved"] == len(waiting.confirmed) and result["flagged"] == 1
    for image in waiting.confirmed:
        assert state(image) == ("approved", "", image.character.slug)
        event = ImageEvent.objects.get(image=image)
        assert (event.from_value, event.to_value, event.actor) == ("pending", "approved", staff_user)
        assert event.reason == f"review batch {result['batch']}: auto-review: simple-v1 confirms at ≥ 0.9"
    for image in (waiting.unsure, waiting.disputed, waiting.contradicted, waiting.unlabelled, waiting.unknown):
        assert state(image)[0] == "pending" and not ImageEvent.objects.filter(image=image).exists()
    batch = ReviewBatch.objects.get(pk=result["batch"])
    assert batch.kind == "auto_approve" and sorted(batch.events) == sorted(
        ImageEvent.objects.values_list("pk", flat=True))
    # The same images again: nothing is pending that the model confirms, so nothing more is approved.
    again = services.suggestions_compute(image_ids=[image.pk for image in waiting.all], auto_approve_min_confidence=0.5)
    assert again["approved"] == 1 and state(waiting.unsure)[0] == "approved"  # 73% ≥ 50%


@pytest.mark.backend
def test_decisions_are_all_or_nothing_and_name_the_bad_items(suggested, staff_user):
    w = suggested
    before = [state(image) for image in w.all]
    decisions = [
        {"image": w.confirmed[0].pk, "action": "approve"},
        {"image": w.contradicted.pk, "action": "relabel", "character": RED},
        {"image": w.unlabelled.pk, "action": "relabel", "character": "nobody"},
        {"image": 10**9, "action": "approve"},
        {"image": w.disputed.pk, "action": "burn"},
        {"image": w.unknown.pk, "action": "reject", "reason": "ugly"},
        {"image": w.confirmed[0].pk, "action": "reject"},
        {"image": w.unlabelled.pk, "action": "approve"},
        "approve all",
    ]
    with pytest.raises(ServiceError) as caught:
        services.review_decide(decisions=decisions, actor=staff_user)
    message = caught.value.message
    assert message.startswith("Nothing was applied: ")
    for expected in ("decisions[2].character: unknown character 'nobody'", "decisions[3].image: no image 1000000000",
                     "decisions[4].action: unknown action 'burn'", "decisions[5].reason: unknown reject reason 'ugly'",
                     "decisions[6].image: image", "decided by decisions[0]", "decisions[7].action: image",
                     "has no character", "decisions[8]: must be an object"):
        assert expected in message, message
    assert {p["index"] for p in caught.value.details["problems"]} == {2, 3, 4, 5, 6, 7, 8}
    assert [state(image) for image in w.all] == before
    assert not ImageEvent.objects.exists() and not ReviewBatch.objects.exists()


@pytest.mark.backend
def test_decisions_go_through_curation_and_are_recorded(suggested, staff_user):
    w = suggested
    result = services.review_decide(actor=staff_user, decisions=[
        {"image": w.confirmed[0].pk, "action": "approve"},
        {"image": w.contradicted.pk, "action": "relabel", "character": RED},
        {"image": w.unlabelled.pk, "action": "relabel", "character": BLUE, "reason": "suggestion 1"},
        {"image": w.disputed.pk, "action": "reject", "reason": "multiple_characters"},
        {"image": w.unknown.pk, "action": "reject"},
    ])
    assert result == {"batch": result["batch"], "approved": 1, "rejected": 2, "relabelled": 2}
    assert state(w.confirmed[0]) == ("approved", "", w.confirmed[0].character.slug)
    assert state(w.contradicted) == ("approved", "", RED)
    assert state(w.unlabelled) == ("approved", "", BLUE)
    assert state(w.disputed) == ("rejected", "multiple_characters", RED)
    assert state(w.unknown)[:2] == ("rejected", "other")  # no reason given: "other"
    events = ImageEvent.objects.filter(actor=staff_user)
    label = events.get(image=w.contradicted, kind="label")
    assert (label.from_value, label.to_value) == (GREEN, RED)
    assert events.get(image=w.unlabelled, kind="status").reason == f"review batch {result['batch']}: suggestion 1"
    assert events.get(image=w.disputed).reason == "multiple_characters"
    assert sorted(ReviewBatch.objects.get(pk=result["batch"]).events) == sorted(events.values_list("pk", flat=True))


@pytest.mark.backend
def test_undo_reverts_the_last_batch_of_that_reviewer_only(suggested, staff_user, django_user_model):
    w = suggested
    other = django_user_model.objects.create_user("other-curator", is_staff=True)
    before = {image.pk: state(image) for image in w.all}
    first = services.review_decide(actor=staff_user, decisions=[{"image": w.unsure.pk, "action": "approve"}])
    second = services.review_decide(actor=staff_user, decisions=[
        {"image": w.contradicted.pk, "action": "relabel", "character": RED},
        {"image": w.disputed.pk, "action": "reject", "reason": "low_quality"}])
    services.review_decide(actor=other, decisions=[{"image": w.confirmed[0].pk, "action": "approve"}])

    undone = services.review_undo(actor=staff_user)
    assert undone == {"batch": second["batch"], "kind": "decide", "restored": 2}
    assert state(w.contradicted) == before[w.contradicted.pk] and state(w.disputed) == before[w.disputed.pk]
    assert state(w.unsure)[0] == "approved" and state(w.confirmed[0])[0] == "approved"  # not this batch
    undo_events = ImageEvent.objects.filter(image=w.contradicted, reason=f"undo review batch {second['batch']}")
    assert {(e.kind, e.from_value, e.to_value) for e in undo_events} == {("label", RED, GREEN),
                                                                        ("status", "approved", "pending")}
    assert services.review_undo(actor=staff_user)["batch"] == first["batch"]
    assert state(w.unsure) == before[w.unsure.pk]
    with pytest.raises(ServiceError) as caught:
        services.review_undo(actor=staff_user)
    assert caught.value.code == "nothing_to_undo" and caught.value.status_code == 404


@pytest.mark.backend
def test_undo_refuses_when_an_image_changed_since(suggested, staff_user):
    from apps.characters.services import image_reject

    w = suggested
    batch = services.review_decide(actor=staff_user, decisions=[{"image": w.unsure.pk, "action": "approve"},
                                                                {"image": w.disputed.pk, "action": "approve"}])
    image_reject(image_ids=[w.disputed.pk], reason="duplicate")  # someone else, in the admin
    with pytest.raises(ServiceError) as caught:
        services.review_undo(actor=staff_user)
    assert caught.value.status_code == 409 and caught.value.details["images"] == [w.disputed.pk]
    assert state(w.unsure)[0] == "approved" and state(w.disputed)[:2] == ("rejected", "duplicate")
    assert ReviewBatch.objects.get(pk=batch["batch"]).undone_at is None


@pytest.mark.backend
def test_approve_agreeing_approves_what_the_model_confirms_at_p_and_can_be_undone(suggested, staff_user):
    w = suggested
    result = services.review_approve_agreeing(min_probability=0.9, actor=staff_user)
    assert result["approved"] == len(w.confirmed) and result["model"] == "simple-v1"
    assert all(state(image)[0] == "approved" for image in w.confirmed)
    assert all(state(image)[0] == "pending" for image in w.all if image not in w.confirmed)
    services.review_undo(actor=staff_user)
    assert all(state(image)[0] == "pending" for image in w.all)
    only_green = services.review_approve_agreeing(min_probability=0.5, actor=staff_user,
                                                  filters=selectors.ReviewFilters(character=GREEN))
    assert only_green["approved"] == 2  # the green picture and the 73% mix labelled green
    assert state(w.unsure)[0] == "approved" and state(w.confirmed[0])[0] == "pending"


def test_approve_agreeing_ignores_a_verdict_on_a_label_the_image_no_longer_has(suggested, staff_user):
    from apps.characters.services import image_relabel

    w = suggested
    image_relabel(image_ids=[w.confirmed[0].pk], character=Character.objects.get(slug=BLUE))
    assert services.review_approve_agreeing(min_probability=0.5, actor=staff_user)["approved"] == 3
    assert state(w.confirmed[0]) == ("pending", "", BLUE)


@pytest.mark.backend
def test_the_queue_puts_the_largest_doubt_first(suggested, registry):
    w = suggested
    newcomer = ingest(red_green_mix(quality=80), character=w.confirmed[0].character)  # no suggestion yet
    Image.objects.filter(pk=w.confirmed[0].pk).update(status="approved")  # reviewed: leaves the queue
    order = list(selectors.review_queue(version=registry.v1).values_list("pk", flat=True))
    assert order[:3] == [w.contradicted.pk, w.disputed.pk, newcomer.pk]
    assert order[3] == w.unsure.pk
    assert set(order[4:6]) == {image.pk for image in w.confirmed[1:]}
    assert set(order[6:]) == {w.unlabelled.pk, w.unknown.pk}
    assert w.confirmed[0].pk not in order


@pytest.mark.backend
def test_the_queue_filters(suggested, registry, characters):
    from apps.characters.models import DatasetVersion
    from apps.crawling.models import CrawlJob, SeenPost
    from apps.evaluation.models import EvaluationRun

    w = suggested

    def queue(**filters) -> set[int]:
        return set(selectors.review_queue(filters=selectors.ReviewFilters(**filters), version=registry.v1)
                   .values_list("pk", flat=True))

    assert queue(character=GREEN) == {w.confirmed[1].pk, w.unsure.pk, w.contradicted.pk}
    assert queue(source="waifu_pics") == {w.unlabelled.pk}
    assert queue(source="upload") == {w.unknown.pk}
    assert queue(flagged=True) == {w.contradicted.pk}
    assert queue(flagged=False) == {image.pk for image in w.all} - {w.contradicted.pk}
    assert queue(unlabelled=True) == {w.unlabelled.pk}
    assert queue(character=GREEN, flagged=False) == {w.confirmed[1].pk, w.unsure.pk}

    job, other_job, named_job = (CrawlJob.objects.create(source="safebooru", quota=5) for _ in range(3))
    crawled = [(w.disputed, job), (w.contradicted, job), (w.unsure, other_job), (w.unknown, named_job)]
    for post, (image, crawl) in enumerate(crawled):
        SeenPost.objects.create(source="safebooru", post_id=str(post), outcome="new", image=image, job=crawl)
    assert queue(crawl_job=job.pk) == {w.disputed.pk, w.contradicted.pk}
    dataset = DatasetVersion.objects.create(name="d1", content_hash="0" * 64)
    run = EvaluationRun.objects.create(model_version=registry.v1, dataset_version=dataset,
                                       plan={"jobs": [other_job.pk]})
    CrawlJob.objects.filter(pk=named_job.pk).update(evaluation_run_id=run.pk)
    assert queue(plan=run.pk) == {w.unsure.pk, w.unknown.pk}  # listed in the run's plan, or naming the run
    for bad, message in ((dict(character="nobody"), "Unknown character 'nobody'"),
                         (dict(crawl_job=10**9), "No crawl job 1000000000"),
                         (dict(plan=10**9), "No evaluation run 1000000000"),
                         (dict(evaluation=10**9), "No evaluation run 1000000000")):
        with pytest.raises(ServiceError, match=message):
            queue(**bad)


def test_each_item_shows_the_approved_near_duplicates_already_in_the_dataset(suggested, registry, characters):
    from tests.conftest import near_copy_bytes
    from tests.inference.conftest import class_image_bytes

    w = suggested
    kept = ingest(near_copy_bytes(class_image_bytes(RED, 50)), character=characters[RED], status="approved",
                  source_kind="import")
    rejected_copy = ingest(near_copy_bytes(class_image_bytes(RED, 50), fmt="PNG"), character=characters[RED],
                           status="rejected", source_kind="import")
    items = {item.image.pk: item for item in selectors.review_items(
        list(selectors.review_queue(version=registry.v1)), version=registry.v1)}
    near = items[w.contradicted.pk].near_duplicates
    assert [entry["id"] for entry in near] == [kept.pk] and rejected_copy.pk not in [e["id"] for e in near]
    assert near[0]["thumbnail_url"].endswith(".webp") and near[0]["character"]["slug"] == RED
    assert near[0]["distance"] <= 6
    assert items[w.contradicted.pk].suggestions[0] == {"slug": RED, "name": "Red Hero",
                                                       "probability": verdict(w.contradicted).top[0]["probability"]}


def test_a_relabelled_image_is_judged_on_its_label_now(suggested, registry):
    from apps.characters.services import image_relabel

    w = suggested
    image_relabel(image_ids=[w.contradicted.pk], character=Character.objects.get(slug=RED))
    w.contradicted.refresh_from_db()
    (item,) = selectors.review_items([w.contradicted], version=registry.v1)
    assert item.agrees is True and not item.flagged and item.claimed_probability > 0.99


def test_an_evaluation_s_suspect_labels_are_a_queue_until_decided(registry, characters, staff_user):
    from django.utils import timezone

    from apps.characters.models import DatasetVersion
    from apps.evaluation.models import EvaluationRun
    from tests.inference.conftest import class_image_bytes

    def approved(label: str, seed: int, **extra):
        return ingest(class_image_bytes(label, seed), character=characters[label], status="approved", **extra)

    red, green, relabelled, rejected = (approved(RED, 100), approved(GREEN, 101), approved(BLUE, 102),
                                        approved(RED, 103))
    Image.objects.filter(pk=rejected.pk).update(status="rejected", reason="duplicate")
    run = EvaluationRun.objects.create(
        model_version=registry.v1, dataset_version=DatasetVersion.objects.create(name="d", content_hash="1" * 64),
        split="test", status="succeeded", finished_at=timezone.now(), label_issues=[
            {"image": image.pk, "label": label, "predicted": BLUE, "probability": 0.9, "self_confidence": 0.05}
            for image, label in ((green, GREEN), (red, RED), (relabelled, RED), (rejected, RED))])
    pending = ingest(red_green_mix(), character=characters[GREEN])

    def issues() -> list[int]:
        return list(selectors.review_queue(filters=selectors.ReviewFilters(evaluation=run.pk), version=registry.v1)
                    .values_list("pk", flat=True))

    # The run's order (most suspect first); relabelled and rejected since: settled; the pending image: no issue.
    assert issues() == [green.pk, red.pk] and pending.pk not in issues()
    services.review_decide(actor=staff_user, decisions=[{"image": red.pk, "action": "approve"}])  # the label stays
    assert issues() == [green.pk] and state(red) == ("approved", "", RED)
    services.review_undo(actor=staff_user)
    assert issues() == [green.pk, red.pk]
    services.suggestions_compute(image_ids=[red.pk, green.pk])  # the model agrees with both labels
    bulk = services.review_approve_agreeing(min_probability=0.0, actor=staff_user,
                                            filters=selectors.ReviewFilters(evaluation=run.pk))
    assert bulk["approved"] == 0 and issues() == [green.pk, red.pk]  # bulk approval is for pending images only
    EvaluationRun.objects.filter(pk=run.pk).update(label_issues=[])
    assert issues() == []
