"""The cross-app pages. Every page lives under /ui/ except home; each app's own pages are included from
config/urls.py under their namespace (crawling:, training:, evaluation:, inference:)."""
from django.urls import path

from . import views

app_name = "dashboard"

urlpatterns = [
    path("", views.home, name="home"),
    path("ui/dataset/", views.dataset, name="dataset"),
    path("ui/characters/<str:slug>/", views.character_detail, name="character"),
]
