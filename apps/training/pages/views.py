"""The training pages: the list with a start form, one job's page (config, epochs, live curves), cancel and resume."""
from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render

from apps.characters.models import DatasetVersion
from apps.characters.selectors import latest_dataset_version, thin_characters
from apps.core.pages import LIST_LIMIT, form_action, job_action
from apps.training import services
from apps.training.models import TrainingJob

from .forms import TrainingStartForm


def training_list(request, form: TrainingStartForm | None = None):
    jobs = TrainingJob.objects.select_related("dataset_version", "model_version").order_by("-created_at", "-id")
    if form is None and request.user.is_staff:
        version = DatasetVersion.objects.filter(pk=_int(request.GET.get("version"))).first() or latest_dataset_version()
        form = TrainingStartForm(initial={"dataset_version": version})
    return render(request, "training/list.html", {
        "jobs": jobs[:LIST_LIMIT], "form": form, "has_versions": DatasetVersion.objects.exists(),
    }, status=400 if form is not None and form.is_bound else 200)


def _start(request, form):
    """Start a job through the training service (as POST /api/v1/training-jobs/ does), then open its page."""
    job = services.training_job_start(dataset_version=form.cleaned_data["dataset_version"], config=form.config,
                                      name=form.cleaned_data["name"], created_by=request.user)
    messages.success(request, f"Training job {job.pk} queued.")
    return redirect("training:detail", pk=job.pk)


training_start = form_action(TrainingStartForm, page=training_list, act=_start,
                             fields={"dataset_unusable": "dataset_version"})


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


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
