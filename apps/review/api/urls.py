from rest_framework.routers import SimpleRouter

from . import views

# "/?": the paths have no trailing slash (POST /api/v1/review/decide), DRF's usually do; both work.
router = SimpleRouter()
router.trailing_slash = "/?"
router.register("review", views.ReviewViewSet, basename="review")

urlpatterns = router.urls
