"""The admin shows suggestions and review batches with their decisions, and changes none of them."""
from __future__ import annotations

import pytest

from apps.review import services
from apps.review.models import ReviewBatch

pytestmark = pytest.mark.django_db


def test_the_admin_lists_suggestions_and_batches_read_only(suggested, admin_client, admin_user):
    result = services.review_decide(actor=admin_user, decisions=[
        {"image": suggested.contradicted.pk, "action": "relabel", "character": "colors_red_hero"}])
    page = admin_client.get("/admin/review/suggestion/?flagged__exact=1")
    assert page.status_code == 200 and page.context["cl"].result_count == 1
    batch = admin_client.get(f"/admin/review/reviewbatch/{result['batch']}/change/")
    assert batch.status_code == 200 and b"colors_red_hero" in batch.content and b"relabel" in batch.content
    assert admin_client.get("/admin/review/reviewbatch/add/").status_code == 403
    admin_client.post(f"/admin/review/reviewbatch/{result['batch']}/change/", {"kind": "auto_approve"})
    assert ReviewBatch.objects.get().kind == "decide"
