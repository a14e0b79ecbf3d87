"""What the evaluation app does when another app announces something."""
from __future__ import annotations

import logging

from django.conf import settings

from apps.core.api import ServiceError

logger = logging.getLogger(__name__)


def evaluate_after_training(sender, job, model_version, **kwargs) -> None:
    """A training job succeeded: queue the evaluation of its model version on its dataset version's test
    split, and let that run set the version's open-set threshold (from the val split)."""
    from .models import EvaluationRun
    from .services import evaluation_run_create

    split = settings.KYARA_EVAL_AFTER_TRAINING_SPLIT
    if not split:
        return
    try:
        run = evaluation_run_create(model_version=model_version, dataset_version=job.dataset_version, split=split,
                                    origin=EvaluationRun.Origin.TRAINING, training_job_id=job.pk,
                                    apply_threshold=True)
    except ServiceError as exc:
        logger.warning("Training job %s: no evaluation of %s: %s", job.pk, model_version, exc.message)
        return
    logger.info("Training job %s: evaluation %s of %s queued", job.pk, run.pk, model_version)
