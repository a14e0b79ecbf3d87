from rest_framework.routers import DefaultRouter

from . import views

router = DefaultRouter(trailing_slash=True)
router.register("crawl-jobs", views.CrawlJobViewSet, basename="crawljob")
router.register("crawl-sources", views.CrawlSourceViewSet, basename="crawlsource")

urlpatterns = router.urls
