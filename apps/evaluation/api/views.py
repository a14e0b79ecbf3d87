from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from apps.core.api import ServiceError
from apps.core.permissions import IsStaffOrReadOnly

from .. import selectors, services
from ..models import URGENT_FIRST, EvaluationRun, TierRule
from .serializers import (
    CharacterResultSerializer,
    EvaluationRunCreateSerializer,
    EvaluationRunDetailSerializer,
    EvaluationRunSerializer,
    PlanCreateSerializer,
    TierRuleSerializer,
)


class EvaluationRunViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
                           viewsets.GenericViewSet):
    """Evaluations: start one (POST), read its metrics and per-character rows, compare two, plan from one."""

    permission_classes = [IsStaffOrReadOnly]
    filterset_fields = ["status", "model_version", "dataset_version", "split", "origin"]

    def get_queryset(self):  # reads only: runs whose worker died are marked by the scheduled sweep
        queryset = EvaluationRun.objects.select_related("model_version", "dataset_version")
        if self.action == "retrieve":
            queryset = queryset.prefetch_related("characters")
        return queryset

    def get_serializer_class(self):
        if self.action == "create":
            return EvaluationRunCreateSerializer
        return EvaluationRunDetailSerializer if self.action == "retrieve" else EvaluationRunSerializer

    @extend_schema(request=EvaluationRunCreateSerializer, responses={201: EvaluationRunSerializer})
    def create(self, request, *args, **kwargs):
        serializer = EvaluationRunCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        run = services.evaluation_run_create(origin=EvaluationRun.Origin.API, requested_by=request.user,
                                             **serializer.validated_data)
        return Response(EvaluationRunSerializer(run).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses=CharacterResultSerializer(many=True))
    @action(detail=True, methods=["get"])
    def characters(self, request, pk=None):
        """Per-character rows, most urgent tier first, then lowest accuracy."""
        rows = self.get_object().characters.order_by(*URGENT_FIRST)
        return Response(CharacterResultSerializer(rows, many=True).data)

    @extend_schema(parameters=[OpenApiParameter("with", int, required=True, description="The other run's id")],
                   responses=dict)
    @action(detail=True, methods=["get"])
    def compare(self, request, pk=None):
        """Deltas from this run to ``?with=ID``: headline metrics and which characters got better or worse."""
        other_id = request.query_params.get("with", "")
        valid = other_id.isascii() and other_id.isdigit() and int(other_id) < 2**63  # "²".isdigit() is True
        other = EvaluationRun.objects.filter(pk=int(other_id)).first() if valid else None
        if other is None:
            raise ServiceError("unknown_run", "Give the other run's id as ?with=ID.", status_code=404)
        return Response(selectors.evaluation_runs_compare(base=self.get_object(), other=other))

    @extend_schema(responses=dict)
    @action(detail=True, methods=["get"])
    def history(self, request, pk=None):
        """The loop: each character's accuracy across runs and image count across dataset versions."""
        return Response(selectors.evaluation_loop(run=self.get_object()))

    @extend_schema(request=PlanCreateSerializer, responses=dict)
    @action(detail=True, methods=["get", "post"])
    def plan(self, request, pk=None):
        """GET: the plan (tier, target, sources per character); POST: create its crawl jobs (staff)."""
        run = self.get_object()
        serializer = PlanCreateSerializer(data=request.data if request.method == "POST" else {
            "include_low_support": request.query_params.get("include_low_support") in ("1", "true")})
        serializer.is_valid(raise_exception=True)
        options = serializer.validated_data
        if request.method == "POST":
            jobs = services.evaluation_plan_create(run=run, requested_by=request.user, **options)
            return Response({"jobs": [{"id": j.pk, "source": j.source, "character": j.character.slug,
                                       "quota": j.quota} for j in jobs]}, status=status.HTTP_201_CREATED)
        rows = selectors.collection_plan_rows(run=run, sources=options["sources"],
                                              include_low_support=options["include_low_support"])
        return Response([{k: v for k, v in row.items() if k != "character_obj"} for row in rows])


class TierRuleViewSet(viewsets.ModelViewSet):
    """Tier rules: accuracy bound → priority and images to collect. Staff edit; anyone reads."""

    permission_classes = [IsStaffOrReadOnly]
    queryset = TierRule.objects.all()
    serializer_class = TierRuleSerializer
    pagination_class = None
