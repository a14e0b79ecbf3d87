from django.urls import re_path
from rest_framework.routers import SimpleRouter

from . import views

# "/?": the paths have no trailing slash (POST /api/v1/predict), DRF's usually do; both work.
router = SimpleRouter()
router.trailing_slash = "/?"  # the constructor only knows "/" or ""
router.register("models", views.ModelVersionViewSet, basename="modelversion")
router.register("aliases", views.AliasViewSet, basename="modelalias")

urlpatterns = [
    re_path(r"^predict/?$", views.PredictView.as_view(), name="predict"),
    re_path(r"^predict_batch/?$", views.PredictBatchView.as_view(), name="predict-batch"),
    re_path(r"^health/?$", views.HealthView.as_view(), name="inference-health"),
    *router.urls,
]
