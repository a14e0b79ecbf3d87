from django.urls import path

from . import views

app_name = "training"

urlpatterns = [
    path("", views.training_list, name="list"),
    path("start/", views.training_start, name="start"),
    path("<int:pk>/", views.training_detail, name="detail"),
    path("<int:pk>/cancel/", views.training_cancel, name="cancel"),
    path("<int:pk>/resume/", views.training_resume, name="resume"),
]
