from django.urls import path

from . import views

app_name = "inference"

urlpatterns = [
    path("predict/", views.predict, name="predict"),
    path("predict/examples/", views.predict_examples, name="predict-examples"),
    path("models/", views.model_list, name="models"),
    path("models/aliases/set/", views.alias_set, name="alias-set"),
    path("models/aliases/<slug:name>/rollback/", views.alias_rollback, name="alias-rollback"),
]
