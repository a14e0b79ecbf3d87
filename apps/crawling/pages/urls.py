from django.urls import path

from . import views

app_name = "crawling"

urlpatterns = [
    path("", views.crawl_list, name="list"),
    path("start/", views.crawl_start, name="start"),
    path("<int:pk>/", views.crawl_detail, name="detail"),
    path("<int:pk>/cancel/", views.crawl_cancel, name="cancel"),
    path("<int:pk>/retry/", views.crawl_retry, name="retry"),
]
