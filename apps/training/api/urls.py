from rest_framework.routers import DefaultRouter

from .views import TrainingJobViewSet

router = DefaultRouter(trailing_slash=True)
router.register("training-jobs", TrainingJobViewSet, basename="training-job")

urlpatterns = router.urls
