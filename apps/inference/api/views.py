"""The predict API (open, throttled) and the registry API (read open, changes staff-only)."""
from __future__ import annotations

import math

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.db.models import Prefetch
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import Throttled
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.api import ServiceError
from apps.core.limits import MULTIPART_SLACK_BYTES
from apps.core.throttling import AnonThrottle, ModelLoadThrottle, UserThrottle

from .. import services
from ..models import ModelAlias, ModelVersion
from ..selectors import alias_history, aliases_map, inference_health
from ..serving import Upload, predict_uploads
from .serializers import (
    AliasChangeSerializer,
    AliasSetSerializer,
    ModelAliasSerializer,
    ModelVersionSerializer,
    PredictBatchRequestSerializer,
    PredictRequestSerializer,
    PromoteSerializer,
    RollbackSerializer,
)


class PredictAnonThrottle(AnonThrottle):
    scope = "predict_anon"


class PredictUserThrottle(UserThrottle):
    """Signed-in clients only; anonymous ones are counted once, by PredictAnonThrottle."""

    scope = "predict_user"


def _uploads(request, field: str, limit: int) -> list[Upload]:
    try:
        files = request.FILES.getlist(field)
    except (TooManyFilesSent, TooManyFieldsSent):
        raise ServiceError("too_many_files", f"Too many files in one request; send at most {limit}.") from None
    except RequestDataTooBig:
        raise ServiceError("too_large", "The request body is too large.", status_code=413) from None
    if not files:
        raise ServiceError("no_file", f"Send the image as the multipart field {field!r}.")
    if len(files) > limit:
        raise ServiceError("too_many_files", f"{len(files)} files sent; at most {limit} per request "
                           "(KYARA_PREDICT_BATCH_MAX).", count=len(files), limit=limit)
    uploads, max_bytes = [], settings.KYARA_PREDICT_MAX_BYTES
    for index, upload in enumerate(files):
        name = upload.name or f"file-{index + 1}"
        if upload.size > max_bytes:
            raise ServiceError("too_large", f"{name!r} is {upload.size:,} bytes; the limit is {max_bytes:,}.",
                               status_code=413, filename=name)
        uploads.append(Upload(name=name, data=upload.read()))
    return uploads


class _PredictBase(APIView):
    permission_classes = [AllowAny]
    throttle_classes = [PredictAnonThrottle, PredictUserThrottle]
    parser_classes = [MultiPartParser, FormParser]

    def _predict(self, request, uploads: list[Upload], *, batch: bool = False) -> dict:
        user = request.user
        signed_in = bool(user and user.is_authenticated)

        def before_load(version) -> None:
            throttle = ModelLoadThrottle()
            if not throttle.allow_request(request, self):
                wait = throttle.wait()
                raise Throttled(wait=wait, detail=(
                    f"Too many model loads from this client: {version.name} is not loaded in this server process "
                    f"and loading it is rate-limited (KYARA_THROTTLE_MODEL_LOAD). Use a loaded alias "
                    f"(GET /api/v1/health lists them) or try again in {math.ceil(wait or 1)} seconds."))

        return predict_uploads(model=self._option(request, "model"), uploads=uploads,
                               top_k=self._option(request, "top_k"), batch=batch,
                               versions_allowed=signed_in or settings.KYARA_PREDICT_ANON_VERSIONS,
                               before_load=before_load)

    def _option(self, request, name):
        value = request.query_params.get(name)
        if value is None:
            try:
                value = request.data.get(name)
            except (TooManyFilesSent, TooManyFieldsSent):
                value = None  # reported by _uploads
        return value


class PredictView(_PredictBase):
    """POST one image (multipart ``file``); optional ``model`` (alias or version) and ``top_k``."""

    @staticmethod
    def request_body_limit() -> int:
        return settings.KYARA_PREDICT_MAX_BYTES + MULTIPART_SLACK_BYTES

    @extend_schema(request={"multipart/form-data": PredictRequestSerializer}, responses={200: dict})
    def post(self, request):
        uploads = _uploads(request, "file", 1)
        answer = self._predict(request, uploads)
        return Response({"model": answer["model"], **answer["results"][0], "time_ms": answer["time_ms"]})


class PredictBatchView(_PredictBase):
    """POST up to ``KYARA_PREDICT_BATCH_MAX`` images (multipart ``files``), answered by one batched forward."""

    @staticmethod
    def request_body_limit() -> int:
        return settings.KYARA_PREDICT_BATCH_MAX * settings.KYARA_PREDICT_MAX_BYTES + MULTIPART_SLACK_BYTES

    @extend_schema(request={"multipart/form-data": PredictBatchRequestSerializer}, responses={200: dict})
    def post(self, request):
        uploads = _uploads(request, "files", settings.KYARA_PREDICT_BATCH_MAX)
        answer = self._predict(request, uploads, batch=True)
        return Response({**answer, "count": len(uploads)})


class HealthView(APIView):
    """Live, and ready: the database answers and the default model is promoted and not known broken."""

    permission_classes = [AllowAny]
    authentication_classes: list = []

    @extend_schema(responses={200: dict, 503: dict})
    def get(self, request):
        body = inference_health()
        return Response(body, status=200 if body["ready"] else 503)


class ModelVersionViewSet(viewsets.ReadOnlyModelViewSet):
    """Model versions with their aliases, labels, metrics summary and availability; promote is staff-only."""

    serializer_class = ModelVersionSerializer
    lookup_field = "name"
    lookup_value_regex = "[^/]+"
    pagination_class = None
    list_is_one_object = True  # {"aliases": ..., "versions": [...]}, the original service's shape

    def get_queryset(self):
        return ModelVersion.objects.select_related("availability").prefetch_related(
            Prefetch("aliases", queryset=ModelAlias.objects.only("name", "version_id")))

    @extend_schema(responses=inline_serializer("ModelList", {
        "aliases": serializers.DictField(child=serializers.CharField(), help_text="alias → version name"),
        "versions": ModelVersionSerializer(many=True),
    }))
    def list(self, request, *args, **kwargs):
        versions = self.get_serializer(self.get_queryset(), many=True).data
        return Response({"aliases": aliases_map(), "versions": versions})

    @extend_schema(request=PromoteSerializer, responses={200: AliasChangeSerializer})
    @action(detail=True, methods=["post"])
    def promote(self, request, name=None):
        version = self.get_object()
        data = PromoteSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        change = services.model_alias_set(name=data.validated_data["alias"], version=version, actor=request.user,
                                          why=data.validated_data["why"], force=data.validated_data["force"])
        return Response(AliasChangeSerializer(change).data)


class AliasViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Aliases; ``set`` creates or moves one, ``rollback`` undoes its last change, ``history`` lists them."""

    serializer_class = ModelAliasSerializer
    queryset = ModelAlias.objects.select_related("version", "updated_by")
    lookup_field = "name"
    pagination_class = None

    @extend_schema(request=AliasSetSerializer, responses={200: AliasChangeSerializer})
    @action(detail=True, methods=["post"], url_path="set")
    def set_version(self, request, name=None):
        data = AliasSetSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        change = services.model_alias_set(name=name, version=data.validated_data["version"], actor=request.user,
                                          why=data.validated_data["why"], force=data.validated_data["force"])
        return Response(AliasChangeSerializer(change).data)

    @extend_schema(request=RollbackSerializer, responses={200: AliasChangeSerializer})
    @action(detail=True, methods=["post"])
    def rollback(self, request, name=None):
        data = RollbackSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        change = services.model_alias_rollback(name=name, actor=request.user, why=data.validated_data["why"])
        return Response(AliasChangeSerializer(change).data)

    @extend_schema(responses={200: AliasChangeSerializer(many=True)})
    @action(detail=True, methods=["get"])
    def history(self, request, name=None):
        return Response(AliasChangeSerializer(alias_history(name), many=True).data)
