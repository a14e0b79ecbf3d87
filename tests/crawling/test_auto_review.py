"""The auto-review policy end to end: a real qcluster worker crawls the fake booru, hands the new images to the
review app's task by its dotted path, and the trained model (``default``) approves those whose claimed label
it confirms; the ones it contradicts wait for a person."""
from __future__ import annotations

import pytest

from apps.characters.models import Image
from apps.crawling.models import CrawlJob
from tests.conftest import running_qcluster, wait_for
from tests.crawling.conftest import TAG, crawl_worker_env, standard_posts
from tests.evaluation.conftest import _fast_serving  # noqa: F401 - autouse: eager PyTorch, fresh predictor cache
from tests.inference.conftest import (  # noqa: F401 - fixtures reused
    LABELS,
    characters,
    class_image_bytes,
    registry,
    trained_artifacts,
)

RED, GREEN, BLUE = LABELS

pytestmark = [pytest.mark.queue, pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.backend]


def test_a_crawl_with_the_policy_gets_what_the_model_confirms_approved(registry, characters, world, tmp_path,  # noqa: F811
                                                                       staff_api_client):
    from apps.review.models import Suggestion

    knight = characters[BLUE]
    knight.booru_tags = {"danbooru": TAG}
    knight.save(update_fields=["booru_tags"])
    world.posts = standard_posts(["ok"] * 4)
    world.within_page_dup = world.across_page_dup = False
    red_posts = {str(post.id) for post in world.posts[1::2]}  # tagged as the knight, but they show the red hero
    world.picture = lambda post: class_image_bytes(RED if str(post.id) in red_posts else BLUE, post.id)
    local_root = tmp_path / "incoming"
    local_root.mkdir()

    env = crawl_worker_env(world, local_root)
    with running_qcluster("qcluster-auto-review.log", KYARA_INFERENCE_BACKEND="torch", KYARA_ALIAS_WATCH_SECONDS="0",
                          **env):
        response = staff_api_client.post("/api/v1/crawl-jobs/", {"source": "danbooru", "character": BLUE, "quota": 10,
                                                                  "auto_approve_min_confidence": 0.9}, format="json")
        assert response.status_code == 201, response.content
        job_id = response.json()["id"]
        job = wait_for(lambda: CrawlJob.objects.filter(pk=job_id, status__in=CrawlJob.FINISHED).first(), timeout=90,
                       message="the crawl to finish in the worker")
        assert job.status == "succeeded" and job.accepted == 4, job.error
        wait_for(lambda: Suggestion.objects.filter(model_version=registry.v1).count() == 4, timeout=120,
                 message="the model's suggestions for the crawled images")

    status = dict(Image.objects.values_list("source_post_id", "status"))
    assert {post for post, state in status.items() if state == "approved"} == set(status) - red_posts
    assert {post for post, state in status.items() if state == "pending"} == red_posts
    flagged = Suggestion.objects.filter(image__source_post_id__in=red_posts)
    assert flagged.count() == 2 and all(not s.agrees and s.top[0]["slug"] == RED for s in flagged)
