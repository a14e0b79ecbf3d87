from django.urls import path

from . import views

app_name = "characters"

urlpatterns = [
    path("freeze/", views.freeze, name="freeze"),
    path("freeze/preview/", views.freeze_preview, name="freeze_preview"),
    path("imports/", views.imports, name="imports"),
    path("imports/<int:pk>/", views.import_detail, name="import_detail"),
    path("imports/<int:pk>/retry/", views.import_retry, name="import_retry"),
    path("imports/<int:pk>/cancel/", views.import_cancel, name="import_cancel"),
]
