from django.urls import path

from . import views

app_name = "evaluation"

urlpatterns = [
    path("", views.evaluation_list, name="list"),
    path("start/", views.evaluation_start, name="start"),
    path("compare/", views.evaluation_compare, name="compare"),
    path("<int:pk>/", views.evaluation_detail, name="detail"),
    path("<int:pk>/plan/", views.evaluation_plan, name="plan"),
    path("<int:pk>/promote/", views.evaluation_promote, name="promote"),
]
