"""Background work of the review app: thin functions that take ids (called by dotted path through
``apps.core.queue.enqueue``, so the apps below — characters, crawling — never import review)."""
from __future__ import annotations

from . import services


def suggest_images(image_ids: list[int], auto_approve_min_confidence: float | None = None,
                   model: str = "default") -> dict:
    """The model's verdict on newly ingested images (after an upload, an import or a crawl); with
    ``auto_approve_min_confidence``, the crawl's auto-review policy approves what the model confirms."""
    return services.suggestions_compute(image_ids=image_ids, model=model,
                                        auto_approve_min_confidence=auto_approve_min_confidence)


def suggestions_recompute_pending(model: str = "default") -> dict:
    """Queue the verdicts of the model ``default`` points at now on the pending images (after it moved)."""
    return services.suggestions_recompute_pending(model=model)
