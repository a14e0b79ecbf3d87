from __future__ import annotations

from dataclasses import fields

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.characters.services import REJECT_REASONS

from ..selectors import ReviewFilters, image_urls
from ..services import ACTIONS, DECISIONS_MAX

ID_MAX = 2**63 - 1  # what a database column holds: a bigger id is a 400, not a 500


def absolute(request, url: str) -> str:
    return request.build_absolute_uri(url) if request is not None and url.startswith("/") else url


class ReviewFilterSerializer(serializers.Serializer):
    """The queue's filters, as query parameters (GET) or body fields (approve-agreeing)."""

    character = serializers.CharField(required=False, max_length=200, help_text="Claimed character's slug")
    source = serializers.CharField(required=False, max_length=60,
                                   help_text="Source site (safebooru, waifu_pics...) or kind (upload, import, crawl)")
    crawl_job = serializers.IntegerField(required=False, min_value=0, max_value=ID_MAX,
                                         help_text="Images this crawl job stored")
    plan = serializers.IntegerField(required=False, min_value=0, max_value=ID_MAX,
                                    help_text="Evaluation run id: images its collection plan's crawl jobs stored")
    evaluation = serializers.IntegerField(required=False, min_value=0, max_value=ID_MAX,
                                         help_text="Evaluation run id: its suspect labels left to review (approved "
                                         "images; instead of the pending ones)")
    flagged = serializers.BooleanField(required=False, allow_null=True, default=None,
                                       help_text="The model contradicts the label with high confidence")
    unlabelled = serializers.BooleanField(required=False, allow_null=True, default=None,
                                          help_text="Images without a claimed character")

    def filters(self) -> ReviewFilters:
        return ReviewFilters(**{f.name: self.validated_data.get(f.name) for f in fields(ReviewFilters)})


class CharacterRefSerializer(serializers.Serializer):
    slug = serializers.CharField()
    name = serializers.CharField()


class SuggestedCharacterSerializer(CharacterRefSerializer):
    probability = serializers.FloatField()


class ImageSourceSerializer(serializers.Serializer):
    kind = serializers.CharField(source="source_kind", help_text="import, upload or crawl")
    site = serializers.CharField(source="source_site")
    url = serializers.CharField(source="source_url")
    post_id = serializers.CharField(source="source_post_id")


class NearDuplicateSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    url = serializers.CharField()
    thumbnail_url = serializers.CharField()
    character = CharacterRefSerializer(allow_null=True)
    distance = serializers.IntegerField(help_text="Hamming distance of the pHashes")

    def to_representation(self, instance):
        data = super().to_representation(instance)
        request = self.context.get("request")
        return {**data, "url": absolute(request, data["url"]), "thumbnail_url": absolute(request, data["thumbnail_url"])}


class ReviewItemSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="image.pk")
    url = serializers.SerializerMethodField()
    thumbnail_url = serializers.SerializerMethodField()
    width = serializers.IntegerField(source="image.width")
    height = serializers.IntegerField(source="image.height")
    character = serializers.SerializerMethodField(help_text="The claimed character; null: unlabelled")
    source = ImageSourceSerializer(source="image")
    status = serializers.CharField(source="image.status")
    model_version = serializers.CharField(allow_null=True, help_text="The default model whose suggestions these are")
    suggestions = SuggestedCharacterSerializer(many=True, help_text="The model's top 3, most probable first; "
                                               "empty until computed")
    claimed_probability = serializers.FloatField(allow_null=True)
    agrees = serializers.BooleanField(allow_null=True, help_text="Top-1 is the claimed character; null: the model "
                                      "cannot judge (unlabelled, a character it has no class for, no suggestion)")
    flagged = serializers.BooleanField()
    doubt = serializers.FloatField(allow_null=True, help_text="The queue's sort key, largest first")
    near_duplicates = NearDuplicateSerializer(many=True, help_text="Up to 3 approved images of the dataset it "
                                              "nearly duplicates")
    created_at = serializers.DateTimeField(source="image.created_at")

    def _urls(self, item) -> tuple[str, str]:
        request = self.context.get("request")
        return tuple(absolute(request, url) for url in image_urls(item.image.file.name, item.image.thumbnail))

    def get_url(self, item) -> str:
        return self._urls(item)[0]

    def get_thumbnail_url(self, item) -> str:
        return self._urls(item)[1]

    @extend_schema_field(CharacterRefSerializer(allow_null=True))
    def get_character(self, item):
        character = item.image.character
        return {"slug": character.slug, "name": character.name} if character else None


class DecisionSerializer(serializers.Serializer):
    """One decision, as documented; the service checks every item and names the bad ones by index."""

    image = serializers.IntegerField(min_value=1, max_value=ID_MAX)
    action = serializers.ChoiceField(choices=ACTIONS)
    character = serializers.CharField(required=False, allow_null=True,
                                      help_text="relabel: the character's slug (the image is then approved)")
    reason = serializers.CharField(required=False, allow_null=True, allow_blank=True,
                                   help_text=f"reject: a reason code ({', '.join(REJECT_REASONS)}; default other); "
                                   "approve and relabel: a note recorded with the change")


class DecideSerializer(serializers.Serializer):
    decisions = DecisionSerializer(many=True, max_length=DECISIONS_MAX)


class DecideResultSerializer(serializers.Serializer):
    batch = serializers.IntegerField(help_text="Undo reverts the last batch")
    approved = serializers.IntegerField()
    rejected = serializers.IntegerField()
    relabelled = serializers.IntegerField()


class UndoResultSerializer(serializers.Serializer):
    batch = serializers.IntegerField()
    kind = serializers.CharField()
    restored = serializers.IntegerField()


class ApproveAgreeingSerializer(ReviewFilterSerializer):
    min_probability = serializers.FloatField(min_value=0.0, max_value=1.0,
                                             help_text="Approve where the model's probability of the label is at least this")


class ApproveAgreeingResultSerializer(serializers.Serializer):
    model = serializers.CharField(allow_null=True)
    approved = serializers.IntegerField()
    batch = serializers.IntegerField(allow_null=True)
    message = serializers.CharField(required=False)
