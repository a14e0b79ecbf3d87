"""The review API: the queue (GET), decisions, undo and bulk approval (POST). Staff only, reading too:
the queue shows unreviewed images and who decided what."""
from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.parsers import JSONParser
from rest_framework.permissions import IsAdminUser
from rest_framework.response import Response

from .. import services
from ..selectors import review_items, review_queue, suggesting_version
from . import serializers as s


class ReviewViewSet(viewsets.GenericViewSet):
    permission_classes = [IsAdminUser]
    parser_classes = [JSONParser]
    serializer_class = s.ReviewItemSerializer
    filter_backends: list = []  # the queue's filters are its own (ReviewFilterSerializer)

    @extend_schema(parameters=[s.ReviewFilterSerializer], responses=s.ReviewItemSerializer(many=True))
    def list(self, request):
        """Pending images, largest doubt first (flagged, disagreeing, unjudged, least sure agreements, unlabelled),
        each with the default model's top-3, its verdict on the claimed character and approved near-duplicates."""
        form = s.ReviewFilterSerializer(data=request.query_params)
        form.is_valid(raise_exception=True)
        version = suggesting_version()
        page = self.paginate_queryset(review_queue(filters=form.filters(), version=version))
        items = review_items(page, version=version)
        return self.get_paginated_response(self.get_serializer(items, many=True).data)

    @extend_schema(request=s.DecideSerializer, responses=s.DecideResultSerializer)
    @action(detail=False, methods=["post"])
    def decide(self, request):
        """Apply decisions all or nothing; a 400 names each bad item (``decisions[3].character: ...``)."""
        decisions = request.data.get("decisions") if isinstance(request.data, dict) else None
        return Response(services.review_decide(decisions=decisions, actor=request.user))

    @extend_schema(request=None, responses=s.UndoResultSerializer)
    @action(detail=False, methods=["post"])
    def undo(self, request):
        """Revert your last batch of decisions (404: none left; 409: its images changed since)."""
        return Response(services.review_undo(actor=request.user))

    @extend_schema(request=s.ApproveAgreeingSerializer, responses=s.ApproveAgreeingResultSerializer)
    @action(detail=False, methods=["post"], url_path="approve-agreeing")
    def approve_agreeing(self, request):
        """Approve every pending image (with the queue's filters) whose label the model confirms at ≥ min_probability."""
        form = s.ApproveAgreeingSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        return Response(services.review_approve_agreeing(
            min_probability=form.validated_data["min_probability"], filters=form.filters(), actor=request.user))
