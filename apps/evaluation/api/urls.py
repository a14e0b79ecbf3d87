from rest_framework.routers import DefaultRouter

from .views import EvaluationRunViewSet, TierRuleViewSet

router = DefaultRouter(trailing_slash=True)
router.register("evaluations", EvaluationRunViewSet, basename="evaluation")
router.register("tier-rules", TierRuleViewSet, basename="tier-rule")

urlpatterns = router.urls
