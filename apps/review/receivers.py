"""What the review app does when another app announces something."""
from __future__ import annotations

from django.db import transaction

from apps.core.queue import enqueue
from apps.inference.models import AliasChange
from apps.inference.selectors import DEFAULT_ALIAS


def recompute_after_default_moves(sender, instance: AliasChange, created: bool, **kwargs) -> None:
    """``default`` moved (set or rolled back): the queue reads the new version's verdicts, so compute them
    for the pending images, in a worker, once the move is committed."""
    if created and instance.alias == DEFAULT_ALIAS:
        transaction.on_commit(lambda: enqueue("apps.review.tasks.suggestions_recompute_pending",
                                              group="review-suggestions"))
