"""The training pages: the list, one job's page (config, epochs, live curves), cancel and resume."""
from __future__ import annotations

from django.conf import settings
from django.shortcuts import get_object_or_404, render

from apps.characters.selectors import thin_characters
from apps.core.pages import LIST_LIMIT, job_action
from apps.training import services
from apps.training.models import TrainingJob


def training_list(request):
    jobs = TrainingJob.objects.select_related("dataset_version", "model_version").order_by("-created_at", "-id")
    return render(request, "training/list.html", {"jobs": jobs[:LIST_LIMIT]})


def training_detail(request, pk: int):
    job = get_object_or_404(TrainingJob.objects.select_related("dataset_version", "model_version", "created_by"),
                            pk=pk)
    effective = (job.summary or {}).get("config") or {}
    # What was asked, and what the recipe filled in where nothing was (shown as "value (recipe)").
    config = [(key, value if value is not None else effective.get(key, "from the recipe"), value is None)
              for key, value in sorted((job.config or {}).items())]
    return render(request, "training/detail.html", {
        "job": job, "config": config, "epochs": list(job.epochs.all()),
        "can_resume": job.status in TrainingJob.RESUMABLE and job.has_checkpoint,
        "thin": thin_characters(job.dataset_version), "thin_threshold": settings.KYARA_THIN_CHARACTER_IMAGES,
    })


training_cancel = job_action(services.training_job_cancel, TrainingJob, "training:detail",
                             "Training job {pk}: cancel requested.")
training_resume = job_action(services.training_job_resume, TrainingJob, "training:detail",
                             "Training job {pk} queued to resume from its last checkpoint.")
