"""The pages. Root paths /predict, /predict_batch, /models and /health belong to the inference app's
old JSON API (apps/inference/urls.py); every page lives under /ui/ except home and log in/out."""
from django.contrib.auth import views as auth_views
from django.urls import path

from apps.core.throttling import throttle_login_posts

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", throttle_login_posts(auth_views.LoginView.as_view(redirect_authenticated_user=True)),
         name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("ui/predict/", views.predict, name="predict"),
    path("ui/predict/examples/", views.predict_examples, name="predict-examples"),
    path("ui/dataset/", views.dataset, name="dataset"),
    path("ui/characters/<str:slug>/", views.character_detail, name="character-detail"),
    path("ui/crawls/", views.crawl_list, name="crawl-list"),
    path("ui/crawls/start/", views.crawl_start, name="crawl-start"),
    path("ui/crawls/<int:pk>/", views.crawl_detail, name="crawl-detail"),
    path("ui/crawls/<int:pk>/cancel/", views.crawl_cancel, name="crawl-cancel"),
    path("ui/crawls/<int:pk>/retry/", views.crawl_retry, name="crawl-retry"),
    path("ui/training/", views.training_list, name="training-list"),
    path("ui/training/<int:pk>/", views.training_detail, name="training-detail"),
    path("ui/training/<int:pk>/cancel/", views.training_cancel, name="training-cancel"),
    path("ui/training/<int:pk>/resume/", views.training_resume, name="training-resume"),
    path("ui/evaluations/", views.evaluation_list, name="evaluation-list"),
    path("ui/evaluations/compare/", views.evaluation_compare, name="evaluation-compare"),
    path("ui/evaluations/<int:pk>/", views.evaluation_detail, name="evaluation-detail"),
    path("ui/evaluations/<int:pk>/plan/", views.evaluation_plan, name="evaluation-plan"),
    path("ui/models/", views.model_list, name="model-list"),
    path("ui/models/aliases/set/", views.alias_set, name="alias-set"),
    path("ui/models/aliases/<slug:name>/rollback/", views.alias_rollback, name="alias-rollback"),
    path("ui/vendor/plotly-<str:version>.min.js", views.plotly_js, name="plotly-js"),
]
