"""The REST API, version 1: every app's routes under /api/v1/ (each app keeps its own in ``api/urls.py``)."""
from django.urls import include, path

api_v1 = [
    path("", include("apps.characters.api.urls")),
    path("", include("apps.crawling.api.urls")),
    path("", include("apps.training.api.urls")),
    path("", include("apps.inference.api.urls")),
    path("", include("apps.evaluation.api.urls")),
    path("", include("apps.review.api.urls")),
    path("", include("apps.improvement.api.urls")),
]
