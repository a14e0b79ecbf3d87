from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import IsAdminUser
from rest_framework.response import Response

from apps.core.permissions import IsStaffOrReadOnly

from .. import services
from ..models import Cycle
from ..selectors import cycles_with_relations
from .serializers import CycleCreateSerializer, CycleSerializer


class CycleViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
                   viewsets.GenericViewSet):
    """Improvement cycles: start one from an evaluation (staff), watch its stages, cancel, resume, continue."""

    serializer_class = CycleSerializer
    permission_classes = [IsStaffOrReadOnly]
    filterset_fields = ["status", "stage", "from_evaluation"]

    def get_queryset(self):  # reads only: the schedule and the children's tasks advance cycles
        return cycles_with_relations()

    def _answer(self, cycle: Cycle, code: int = status.HTTP_200_OK) -> Response:
        return Response(self.get_serializer(self.get_queryset().get(pk=cycle.pk)).data, status=code)

    @extend_schema(request=CycleCreateSerializer, responses={201: CycleSerializer})
    def create(self, request, *args, **kwargs):
        form = CycleCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        cycle = services.cycle_create(requested_by=request.user, origin=Cycle.Origin.API, **form.validated_data)
        return self._answer(cycle, status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=CycleSerializer)
    @action(detail=True, methods=["post"], permission_classes=[IsAdminUser])
    def cancel(self, request, pk=None):
        """Stop the cycle and cancel its running crawls, training and evaluations."""
        return self._answer(services.cycle_cancel(cycle=self.get_object()))

    @extend_schema(request=None, responses=CycleSerializer)
    @action(detail=True, methods=["post"], permission_classes=[IsAdminUser])
    def resume(self, request, pk=None):
        """Go on from the stage that had not finished (a failed or cancelled cycle)."""
        return self._answer(services.cycle_resume(cycle=self.get_object()))

    @extend_schema(request=None, responses=CycleSerializer)
    @action(detail=True, methods=["post"], permission_classes=[IsAdminUser], url_path="continue", url_name="continue")
    def go_on(self, request, pk=None):
        """Go on without waiting for the review of the crawled images still pending."""
        return self._answer(services.cycle_continue(cycle=self.get_object()))
