"""The cross-app pages: home (a first-run guide on an empty installation, then where the loop stands), the dataset
(images per character beside the latest evaluation's quality, the latest version and the freeze form) and one
character (pictures of every status with the crawls that brought them).
Each app's own pages live in ``apps/<app>/pages/``."""
from __future__ import annotations

from django.conf import settings
from django.shortcuts import get_object_or_404, render

from apps.characters.models import Character
from apps.characters.pages.forms import FreezeForm, FreezePreviewForm, ImportForm, suggested_version_name
from apps.characters.selectors import dataset_stats, latest_dataset_version, version_summary
from apps.evaluation.selectors import latest_character_metrics
from apps.inference.selectors import character_serving

from . import selectors


def home(request):
    summary = selectors.home_summary()
    staff_guide = request.user.is_staff and summary["guide"] is not None
    return render(request, "dashboard/home.html", {
        **summary, "import_form": ImportForm() if staff_guide else None,
        "version_name": suggested_version_name() if staff_guide else "", "freeze_defaults": FreezePreviewForm(),
    })


def dataset(request):
    stats = dataset_stats()
    run, quality = latest_character_metrics()
    chart = {"characters": [], "approved": [], "pending": [], "rejected": []}
    for series in stats["series"]:
        for row in series["characters"]:
            row["quality"] = quality.get(row["character"])
            chart["characters"].append(row["name"])
            for status in ("approved", "pending", "rejected"):
                chart[status].append(row["status"].get(status, 0))
    return render(request, "dashboard/dataset.html", {
        "stats": stats, "chart": chart, "run": run, "thin_threshold": settings.KYARA_THIN_CHARACTER_IMAGES,
        "latest": version_summary(latest_dataset_version()),
        "freeze_form": FreezeForm(initial={"name": suggested_version_name()}) if request.user.is_staff else None,
    })


def character_detail(request, slug: str):
    character = get_object_or_404(Character.objects.select_related("series"), slug=slug)
    try:
        page = int(request.GET.get("page", 1))
    except ValueError:
        page = 1
    context = selectors.character_page(character, page=page)
    return render(request, "dashboard/character.html", {"character": character, **context,
                                                        "serving": character_serving(character.slug)})
