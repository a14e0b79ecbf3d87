from django.urls import path

from . import views

app_name = "improvement"

urlpatterns = [
    path("", views.cycle_list, name="list"),
    path("start/", views.cycle_start, name="start"),
    path("<int:pk>/", views.cycle_detail, name="detail"),
    path("<int:pk>/cancel/", views.cycle_cancel, name="cancel"),
    path("<int:pk>/resume/", views.cycle_resume, name="resume"),
    path("<int:pk>/continue/", views.cycle_continue, name="continue"),
]
