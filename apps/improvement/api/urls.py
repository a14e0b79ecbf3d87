from rest_framework.routers import DefaultRouter

from .views import CycleViewSet

router = DefaultRouter(trailing_slash=True)
router.register("cycles", CycleViewSet, basename="cycle")

urlpatterns = router.urls
