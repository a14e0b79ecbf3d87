from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from apps.core.permissions import IsStaffOrReadOnly

from .. import services
from ..models import TrainingJob
from .serializers import TrainingJobCreateSerializer, TrainingJobDetailSerializer, TrainingJobSerializer


class TrainingJobViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
                         viewsets.GenericViewSet):
    """Training jobs: start one (POST), watch it (GET, per-epoch rows in the detail), cancel, resume."""

    permission_classes = [IsStaffOrReadOnly]
    filterset_fields = ["status", "dataset_version"]

    def get_queryset(self):
        queryset = TrainingJob.objects.select_related("dataset_version", "model_version")
        if self.action == "retrieve":
            queryset = queryset.prefetch_related("epochs")
        return queryset

    def get_serializer_class(self):
        if self.action == "create":
            return TrainingJobCreateSerializer
        return TrainingJobDetailSerializer if self.action == "retrieve" else TrainingJobSerializer

    @extend_schema(request=TrainingJobCreateSerializer, responses={201: TrainingJobDetailSerializer})
    def create(self, request, *args, **kwargs):
        serializer = TrainingJobCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        job = services.training_job_start(created_by=request.user, **serializer.validated_data)
        return Response(TrainingJobDetailSerializer(job).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=TrainingJobSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        job = services.training_job_cancel(job=self.get_object())
        return Response(TrainingJobSerializer(job).data)

    @extend_schema(request=None, responses=TrainingJobSerializer)
    @action(detail=True, methods=["post"])
    def resume(self, request, pk=None):
        job = services.training_job_resume(job=self.get_object())
        return Response(TrainingJobSerializer(job).data)
