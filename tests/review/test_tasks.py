"""Suggestions are asked for where images arrive (upload, import, a crawl by dotted path) and recomputed when
``default`` moves: in a real qcluster worker, and in this process through django-q's synchronous mode."""
from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from apps.characters.models import Image
from apps.inference.models import ImageEmbedding
from apps.review.models import Suggestion
from tests.conftest import running_qcluster, wait_for
from tests.inference.conftest import CLASSES
from tests.review.conftest import BLUE, GREEN, RED, class_image_bytes, ingest


@pytest.fixture
def committed(settings, django_capture_on_commit_callbacks):
    """``with committed():`` — on leaving it, what was to run after commit runs, and ``enqueue`` runs its task
    here (KYARA_RUN_TASKS_INLINE: django-q's synchronous mode)."""
    settings.KYARA_RUN_TASKS_INLINE = True
    return lambda: django_capture_on_commit_callbacks(execute=True)


@pytest.mark.django_db
def test_an_import_of_pending_images_asks_for_their_suggestions(registry, tmp_path, committed):
    from apps.characters.services import images_import

    for label in (RED, GREEN):
        folder = tmp_path / "pending" / f"colors_{CLASSES[label][0]}"  # the characters the model knows
        folder.mkdir(parents=True)
        (folder / "a.jpg").write_bytes(class_image_bytes(label, 90))
    with committed():
        summary = images_import(path=tmp_path / "pending", status="pending")
    assert summary.new == 2
    suggested = Suggestion.objects.filter(model_version=registry.v1).select_related("image__character")
    assert len(suggested) == 2 and all(s.agrees and s.claimed_slug == s.image.character.slug for s in suggested)


@pytest.mark.django_db
def test_an_import_of_a_curated_dataset_asks_for_no_suggestion_only_the_gallery(registry, tmp_path, committed):
    from django_q.models import Task

    from apps.characters.services import images_import

    folder = tmp_path / "curated" / "colors_red_hero"
    folder.mkdir(parents=True)
    (folder / "a.jpg").write_bytes(class_image_bytes(RED, 91))
    with committed() as callbacks:
        assert images_import(path=tmp_path / "curated").new == 1  # approved on arrival: nobody reviews it
    assert Image.objects.get().status == "approved" and not Suggestion.objects.exists() and len(callbacks) == 1
    # ...but the serving model's gallery takes it in (its embedding, computed by the refresh itself).
    assert list(Task.objects.values_list("func", flat=True)) == ["apps.inference.tasks.gallery_refresh"]
    assert registry.v1.gallery.counts == [1] and ImageEmbedding.objects.filter(version=registry.v1).count() == 1


@pytest.mark.django_db
def test_a_crawl_asks_by_dotted_path_with_its_auto_review_policy(registry, characters, committed):
    from apps.core.queue import enqueue

    sure = ingest(class_image_bytes(BLUE, 92), character=characters[BLUE])
    wrong = ingest(class_image_bytes(BLUE, 93), character=characters[RED])
    enqueue("apps.review.tasks.suggest_images", [sure.pk, wrong.pk], auto_approve_min_confidence=0.9)
    sure.refresh_from_db(), wrong.refresh_from_db()
    assert (sure.status, wrong.status) == ("approved", "pending")
    assert Suggestion.objects.get(image=wrong).flagged


@pytest.mark.django_db
def test_moving_default_recomputes_the_pending_images(suggested, registry, committed):
    from django_q.models import Task

    from apps.inference.services import model_alias_set

    approved = suggested.confirmed[0]
    Image.objects.filter(pk=approved.pk).update(status="approved")
    with committed():
        model_alias_set(name="default", version=registry.v2, why="better")
    moved = Suggestion.objects.filter(model_version=registry.v2)
    assert {s.image_id for s in moved} == {image.pk for image in suggested.all} - {approved.pk}
    assert moved.get(image=suggested.contradicted).flagged
    recomputed = Task.objects.filter(func="apps.review.tasks.suggestions_recompute_pending")
    assert recomputed.count() == 1 and recomputed.get().success
    with committed():
        model_alias_set(name="mobile", version=registry.v1)  # another alias: nothing to recompute
    assert recomputed.count() == 1


@pytest.fixture
def unmeasured(settings):
    """Registration queues no runtime measurement (the worker would spend half a minute timing runtimes first)."""
    settings.KYARA_RUNTIME_CHOOSE_ON_REGISTER = False


@pytest.mark.backend
@pytest.mark.slow
@pytest.mark.queue
@pytest.mark.django_db(transaction=True)
def test_a_worker_suggests_for_an_upload_and_again_when_default_moves(unmeasured, registry, staff_api_client):
    from django_q.models import Task

    with running_qcluster("qcluster-review.log", KYARA_INFERENCE_BACKEND="torch", KYARA_ALIAS_WATCH_SECONDS="0"):
        # First the recompute that promoting v1 queued: the upload's own task must be what suggests for it.
        wait_for(lambda: Task.objects.filter(func="apps.review.tasks.suggestions_recompute_pending").exists(),
                 timeout=120, message="the worker to run the recompute that promoting v1 queued")
        upload = SimpleUploadedFile("red.jpg", class_image_bytes(RED, 94), content_type="image/jpeg")
        response = staff_api_client.post("/api/v1/images/", {"file": upload, "character": GREEN}, format="multipart")
        assert response.status_code == 201, response.json()
        image_id = response.json()["id"]
        first = wait_for(lambda: Suggestion.objects.filter(image_id=image_id).first(), timeout=120,
                         message="the worker's suggestions for the upload")
        assert first.model_version_id == registry.v1.pk and first.flagged and first.top[0]["slug"] == RED
        assert Task.objects.get(func="apps.review.tasks.suggest_images").args == ([image_id],)

        moved = staff_api_client.post("/api/v1/aliases/default/set/", {"version": "simple-v2", "why": "better"},
                                      format="json")
        assert moved.status_code == 200, moved.json()
        second = wait_for(lambda: Suggestion.objects.filter(image_id=image_id, model_version=registry.v2).first(),
                          timeout=120, message="the worker's suggestions from the new default")
        assert second.flagged and second.top[0]["slug"] == RED
        item = staff_api_client.get("/api/v1/review/").json()["results"][0]
        assert item["id"] == image_id and item["model_version"] == "simple-v2" and item["flagged"]
