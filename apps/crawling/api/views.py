from django_filters import rest_framework as filters
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import IsAdminUser
from rest_framework.response import Response

from apps.core.permissions import IsStaffOrReadOnly

from .. import selectors, services
from ..models import CrawlJob
from . import serializers as s


class CrawlJobFilter(filters.FilterSet):
    character = filters.CharFilter(field_name="character__slug")
    unlabelled = filters.BooleanFilter(field_name="character", lookup_expr="isnull")

    class Meta:
        model = CrawlJob
        fields = ["status", "source", "origin"]


class CrawlJobViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
                      viewsets.GenericViewSet):
    """Crawl jobs: anyone may watch them (live counters); staff start, cancel and retry them."""

    serializer_class = s.CrawlJobSerializer
    permission_classes = [IsStaffOrReadOnly]
    filterset_class = CrawlJobFilter
    filter_backends = [filters.DjangoFilterBackend]

    def get_queryset(self):  # reads only: jobs whose worker died are marked by the scheduled sweep
        return selectors.crawl_jobs_with_relations().order_by("-created_at", "-id")

    @extend_schema(request=s.CrawlJobCreateSerializer, responses={201: s.CrawlJobSerializer})
    def create(self, request, *args, **kwargs):
        form = s.CrawlJobCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        job = services.crawl_job_create(requested_by=request.user, origin="api", **form.validated_data)
        return Response(self.get_serializer(job).data, status=status.HTTP_201_CREATED)

    def _after(self, job):
        return Response(self.get_serializer(self.get_queryset().get(pk=job.pk)).data)

    @extend_schema(request=None, responses=s.CrawlJobSerializer)
    @action(detail=True, methods=["post"], permission_classes=[IsAdminUser])
    def cancel(self, request, pk=None):
        return self._after(services.crawl_job_cancel(job=self.get_object()))

    @extend_schema(request=None, responses=s.CrawlJobSerializer)
    @action(detail=True, methods=["post"], permission_classes=[IsAdminUser])
    def retry(self, request, pk=None):
        return self._after(services.crawl_job_retry(job=self.get_object()))

    @extend_schema(request=s.CollectionPlanSerializer, responses={201: s.CrawlJobSerializer(many=True)})
    @action(detail=False, methods=["post"], permission_classes=[IsAdminUser])
    def plan(self, request):
        form = s.CollectionPlanSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        targets = [(t["character"], t["wanted"]) for t in data["targets"]]
        jobs = services.collection_plan_create(targets=targets, requested_by=request.user, sources=data.get("sources"),
                                               solo=data["solo"],
                                               auto_approve_min_confidence=data["auto_approve_min_confidence"])
        return Response(self.get_serializer(jobs, many=True).data, status=status.HTTP_201_CREATED)


class CrawlSourceViewSet(viewsets.ViewSet):
    """The registered source adapters (built-in and plugins), and plugins that failed to load."""

    permission_classes = [IsStaffOrReadOnly]

    @extend_schema(responses=s.SourceSerializer(many=True))
    def list(self, request):
        return Response(selectors.source_registry_snapshot())
