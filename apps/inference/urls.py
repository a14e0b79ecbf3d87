"""The original FastAPI service's paths, kept for existing clients: same views as /api/v1/."""
from django.urls import path

from .api import views

urlpatterns = [
    path("predict", views.PredictView.as_view(), name="legacy-predict"),
    path("predict_batch", views.PredictBatchView.as_view(), name="legacy-predict-batch"),
    path("models", views.ModelVersionViewSet.as_view({"get": "list"}), name="legacy-models"),
    path("health", views.HealthView.as_view(), name="legacy-health"),
]
