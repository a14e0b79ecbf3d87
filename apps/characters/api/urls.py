from rest_framework.routers import DefaultRouter

from . import views

router = DefaultRouter(trailing_slash=True)
router.register("series", views.SeriesViewSet, basename="series")
router.register("characters", views.CharacterViewSet, basename="character")
router.register("images", views.ImageViewSet, basename="image")
router.register("dataset-versions", views.DatasetVersionViewSet, basename="datasetversion")

urlpatterns = router.urls
