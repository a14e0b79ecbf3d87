from django import forms
from django.db.models import Case, Count, IntegerField, OuterRef, Q, Subquery, Value, When
from django.db.models.functions import Coalesce
from django_filters import rest_framework as filters
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.permissions import IsAdminUser
from rest_framework.response import Response

from apps.core.api import ServiceError

from .. import services
from ..models import Character, DatasetItem, DatasetVersion, Image, Series
from . import serializers as s


class SeriesViewSet(viewsets.ModelViewSet):
    serializer_class = s.SeriesSerializer
    lookup_field = "slug"
    lookup_value_regex = "[^/]+"
    queryset = Series.objects.annotate(num_characters=Count("characters")).order_by("slug")
    search_fields = ["slug", "name"]


class CharacterFilter(filters.FilterSet):
    series = filters.CharFilter(field_name="series__slug")
    q = filters.CharFilter(method="filter_q", label="name, slug or alias contains")
    search = filters.CharFilter(method="filter_search", max_length=200,
                                label="type-ahead: name or slug contains it; exact, then prefix matches first")

    class Meta:
        model = Character
        fields = ["series", "active"]

    def filter_q(self, queryset, name, value):
        return queryset.filter(Q(name__icontains=value) | Q(slug__icontains=value) | Q(aliases__icontains=value))

    def filter_search(self, queryset, name, value):
        value = value.strip()
        if not value:
            return queryset
        rank = Case(When(Q(name__iexact=value) | Q(slug__iexact=value), then=Value(0)),
                    When(Q(name__istartswith=value) | Q(slug__istartswith=value), then=Value(1)),
                    default=Value(2), output_field=IntegerField())
        return (queryset.filter(Q(name__icontains=value) | Q(slug__icontains=value))
                .annotate(match_rank=rank).order_by("match_rank", "name", "slug"))


class CharacterPagination(PageNumberPagination):
    """Pages of 50 unless ``?limit=`` asks for another size (a type-ahead asks for 20)."""

    page_size_query_param = "limit"
    max_page_size = 200


def _image_count(**condition) -> Coalesce:
    """Images of the row's character, counted per returned row through the (character, status) index:
    a page of a type-ahead over thousands of characters counts the images of its 20 rows, not all."""
    counted = (Image.objects.filter(character=OuterRef("pk"), **condition).order_by()
               .values("character").annotate(n=Count("pk")).values("n"))
    return Coalesce(Subquery(counted, output_field=IntegerField()), Value(0))


class CharacterViewSet(viewsets.ModelViewSet):
    serializer_class = s.CharacterSerializer
    lookup_field = "slug"
    lookup_value_regex = "[^/]+"
    filterset_class = CharacterFilter
    filter_backends = [filters.DjangoFilterBackend]
    pagination_class = CharacterPagination
    queryset = (
        Character.objects.select_related("series")
        .annotate(num_images=_image_count(), num_approved=_image_count(status=Image.Status.APPROVED))
        .order_by("series__slug", "name")
    )


class IdFilter(filters.NumberFilter):
    """A whole number a database column can hold: ``?version=-4.8e+60`` or ``1.5`` is a 400, not a 500."""

    field_class = forms.IntegerField

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("min_value", 0)
        kwargs.setdefault("max_value", 2**63 - 1)
        super().__init__(*args, **kwargs)


class ImageFilter(filters.FilterSet):
    character = filters.CharFilter(field_name="character__slug")
    series = filters.CharFilter(field_name="character__series__slug")
    unlabelled = filters.BooleanFilter(field_name="character", lookup_expr="isnull")
    min_side = IdFilter(method="filter_min_side")
    split = filters.ChoiceFilter(choices=DatasetItem.Split.choices, method="filter_split")
    version = IdFilter(method="filter_version", label="dataset version id (with split)")
    dup_group = IdFilter(field_name="dup_group")

    class Meta:
        model = Image
        fields = ["status", "source_kind", "source_site", "format"]

    def filter_min_side(self, queryset, name, value):
        return queryset.filter(width__gte=value, height__gte=value)

    def filter_version(self, queryset, name, value):
        return queryset.filter(dataset_items__version_id=value)

    def filter_split(self, queryset, name, value):
        version_id = self.form.cleaned_data.get("version") or DatasetVersion.objects.order_by(
            "-created_at", "-id").values_list("id", flat=True).first()
        return queryset.filter(dataset_items__version_id=version_id, dataset_items__split=value)


class ImageViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Images: list with filters, detail, upload (through the ingest service), relabel, approve, reject."""

    serializer_class = s.ImageSerializer
    queryset = Image.objects.select_related("character__series").order_by("-id")
    filterset_class = ImageFilter
    filter_backends = [filters.DjangoFilterBackend]
    parser_classes = [MultiPartParser, FormParser, JSONParser]

    @extend_schema(request=s.ImageUploadSerializer, responses={201: s.ImageSerializer, 200: s.ImageSerializer})
    def create(self, request, *args, **kwargs):
        form = s.ImageUploadSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        upload = form.validated_data["file"]
        result = services.image_ingest(
            data=upload,
            source_kind=Image.SourceKind.UPLOAD,
            character=form.validated_data.get("character"),
            status=form.validated_data.get("status"),
            near_duplicate_policy=form.validated_data.get("near_duplicate_policy"),
            original_name=upload.name or "",
        )
        if result.outcome in ("refused", "near_duplicate"):
            code = 413 if result.reason == "too_large" else 409 if result.outcome == "near_duplicate" else 400
            raise ServiceError(result.reason, result.message, status_code=code,
                               near_duplicates=result.near_duplicate_ids)
        if result.outcome == "new":
            waits = services.awaits_review(result.image)
            services.suggestions_request([result.image.pk] if waits else [], approved=not waits)
        body = self.get_serializer(result.image).data
        body = {**body, "outcome": result.outcome, "message": result.message,
                "near_duplicates": result.near_duplicate_ids}
        return Response(body, status=status.HTTP_201_CREATED if result.outcome == "new" else status.HTTP_200_OK)

    def _after(self, request, pk):
        return Response(self.get_serializer(self.get_queryset().get(pk=pk)).data)

    @extend_schema(request=s.RelabelSerializer, responses=s.ImageSerializer)
    @action(detail=True, methods=["post"], permission_classes=[IsAdminUser])
    def relabel(self, request, pk=None):
        image = self.get_object()
        form = s.RelabelSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        services.image_relabel(image_ids=[image.pk], character=form.validated_data["character"],
                               actor=request.user, reason=form.validated_data["reason"])
        return self._after(request, image.pk)

    @extend_schema(request=None, responses=s.ImageSerializer)
    @action(detail=True, methods=["post"], permission_classes=[IsAdminUser])
    def approve(self, request, pk=None):
        image = self.get_object()
        services.image_approve(image_ids=[image.pk], actor=request.user)
        return self._after(request, image.pk)

    @extend_schema(request=s.RejectSerializer, responses=s.ImageSerializer)
    @action(detail=True, methods=["post"], permission_classes=[IsAdminUser])
    def reject(self, request, pk=None):
        image = self.get_object()
        form = s.RejectSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        services.image_reject(image_ids=[image.pk], reason=form.validated_data["reason"], actor=request.user)
        return self._after(request, image.pk)

    @extend_schema(responses=s.ImageSerializer(many=True))
    @action(detail=True, methods=["get"], url_path="near-duplicates", pagination_class=None, filter_backends=[])
    def near_duplicates(self, request, pk=None):
        from ..selectors import near_duplicates_of

        image = self.get_object()
        return Response(self.get_serializer(near_duplicates_of(image), many=True).data)


class DatasetVersionViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = s.DatasetVersionSerializer
    queryset = DatasetVersion.objects.select_related("created_by").order_by("-created_at", "-id")

    @extend_schema(request=s.FreezeSerializer, responses={201: s.DatasetVersionSerializer})
    @action(detail=False, methods=["post"], permission_classes=[IsAdminUser])
    def freeze(self, request):
        form = s.FreezeSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        version = services.dataset_version_freeze(created_by=request.user, **form.validated_data)
        return Response(self.get_serializer(version).data, status=status.HTTP_201_CREATED)
