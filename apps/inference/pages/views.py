"""The inference pages: predict (upload and see the answer beside examples) and models (versions, the
runtime each machine chose, aliases and their history)."""
from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET

from apps.characters.selectors import example_images
from apps.core.pages import LIST_LIMIT, form_action, staff_action
from apps.inference import services
from apps.inference.loading import machine_key
from apps.inference.models import AliasChange, ModelAlias, ModelVersion
from apps.inference.selectors import metrics_summary

from .forms import AliasRollbackForm, AliasSetForm


def predict(request):
    aliases = list(ModelAlias.objects.select_related("version").order_by("name"))
    versions = list(ModelVersion.objects.order_by("-created_at", "-id").values_list("name", flat=True)[:50])
    return render(request, "inference/predict.html", {
        "aliases": aliases, "versions": versions, "top_k": settings.KYARA_PREDICT_TOP_K,
        "batch_max": settings.KYARA_PREDICT_BATCH_MAX, "max_bytes": settings.KYARA_PREDICT_MAX_BYTES,
    })


@require_GET
def predict_examples(request):
    """``?characters=a,b``: a few approved pictures of each, for the predict page."""
    slugs = [s.strip() for s in request.GET.get("characters", "").split(",") if s.strip()]
    return JsonResponse({"characters": example_images(slugs)})


def model_list(request, set_form: AliasSetForm | None = None):
    versions = list(ModelVersion.objects.select_related("availability", "dataset_version")
                    .prefetch_related("aliases").order_by("-created_at", "-id")[:LIST_LIMIT])
    here = machine_key()[0]
    for version in versions:
        version.summary = metrics_summary(version.metrics)
        version.runtime_here = (version.runtime_choices or {}).get(here)  # the choice this server loads
        version.runtime_elsewhere = [record for key, record in (version.runtime_choices or {}).items() if key != here]
    aliases = list(ModelAlias.objects.select_related("version", "updated_by").order_by("name"))
    history = list(AliasChange.objects.select_related("from_version", "to_version", "actor")[:100])
    if set_form is None and request.user.is_staff:
        set_form = AliasSetForm()
    return render(request, "inference/models.html", {
        "versions": versions, "aliases": aliases, "history": history, "set_form": set_form,
        "rollback_form": AliasRollbackForm() if request.user.is_staff else None,
    }, status=400 if set_form is not None and set_form.is_bound else 200)


def _set_alias(request, form):
    data = form.cleaned_data
    change = services.model_alias_set(name=data["alias"], version=data["version"], actor=request.user,
                                      why=data["why"], force=data["force"])
    messages.success(request, f"{change.alias} → {change.to_version.name}")
    return redirect("inference:models")


alias_set = form_action(AliasSetForm, page=model_list, act=_set_alias)


@staff_action
def alias_rollback(request, name: str):
    form = AliasRollbackForm(request.POST)
    why = form.cleaned_data["why"] if form.is_valid() else ""
    change = services.model_alias_rollback(name=name, actor=request.user, why=why)
    messages.success(request, f"{change.alias} rolled back to {change.to_version.name}")
    return redirect("inference:models")
