from rest_framework import serializers

from ..models import Character, DatasetVersion, Image, Series
from ..services import REJECT_REASONS


def aliases_field() -> serializers.ListField:
    """Typed, so that a form's "null" or a number is a 400 and never a NULL in a NOT NULL column."""
    return serializers.ListField(child=serializers.CharField(max_length=200), required=False, max_length=100)


class SeriesSerializer(serializers.ModelSerializer):
    characters = serializers.IntegerField(source="num_characters", read_only=True)
    aliases = aliases_field()

    class Meta:
        model = Series
        fields = ["id", "slug", "name", "aliases", "characters", "created_at"]
        read_only_fields = ["id", "created_at"]

    def to_representation(self, instance):
        if not hasattr(instance, "num_characters"):  # a created or updated row lacks the list's annotation
            instance.num_characters = instance.characters.count()
        return super().to_representation(instance)


class CharacterSerializer(serializers.ModelSerializer):
    series = serializers.SlugRelatedField(slug_field="slug", queryset=Series.objects.all())
    images = serializers.IntegerField(source="num_images", read_only=True)
    approved = serializers.IntegerField(source="num_approved", read_only=True)
    aliases = aliases_field()
    booru_tags = serializers.DictField(child=serializers.CharField(max_length=500), required=False,
                                       help_text="Tag family → the character's tag there, e.g. {\"danbooru\": \"hu_tao\"}")

    class Meta:
        model = Character
        fields = ["id", "slug", "name", "series", "aliases", "booru_tags", "active", "target_image_count",
                  "images", "approved", "created_at"]
        read_only_fields = ["id", "created_at"]

    def to_representation(self, instance):
        if not hasattr(instance, "num_images"):  # a created or updated row lacks the list's annotations
            instance.num_images = instance.images.count()
            instance.num_approved = instance.images.filter(status=Image.Status.APPROVED).count()
        return super().to_representation(instance)


class ImageSerializer(serializers.ModelSerializer):
    character = serializers.SlugRelatedField(slug_field="slug", read_only=True, allow_null=True)
    series = serializers.SerializerMethodField()
    url = serializers.FileField(source="file", read_only=True)
    thumbnail_url = serializers.SerializerMethodField()
    source_url = serializers.CharField(read_only=True, help_text="Where a crawl found it (empty otherwise)")
    phash = serializers.SerializerMethodField()

    class Meta:
        model = Image
        fields = ["id", "sha256", "url", "thumbnail_url", "format", "width", "height", "bytes", "phash",
                  "dup_group", "character", "series", "status", "reason", "source_kind", "source_site",
                  "source_url", "source_post_id", "source_tags", "original_name", "created_at", "updated_at"]
        read_only_fields = fields

    def get_thumbnail_url(self, obj: Image) -> str | None:
        from django.core.files.storage import default_storage

        if not obj.thumbnail:
            return None
        url = default_storage.url(obj.thumbnail)
        request = self.context.get("request")
        return request.build_absolute_uri(url) if request and url.startswith("/") else url

    def get_series(self, obj: Image) -> str | None:
        return obj.character.series.slug if obj.character_id else None  # unlabelled: no series either

    def get_phash(self, obj: Image) -> str:
        from ..phash import phash_hex

        return phash_hex(obj.phash)


class ImageUploadSerializer(serializers.Serializer):
    file = serializers.FileField()
    character = serializers.SlugRelatedField(slug_field="slug", queryset=Character.objects.all(), required=False,
                                             allow_null=True)
    status = serializers.ChoiceField(choices=Image.Status.choices, required=False)
    near_duplicate_policy = serializers.ChoiceField(choices=["keep", "refuse"], required=False)


class RelabelSerializer(serializers.Serializer):
    character = serializers.SlugRelatedField(slug_field="slug", queryset=Character.objects.all(), allow_null=True)
    reason = serializers.CharField(required=False, allow_blank=True, default="")


class RejectSerializer(serializers.Serializer):
    reason = serializers.ChoiceField(choices=sorted(REJECT_REASONS))


class DatasetVersionSerializer(serializers.ModelSerializer):
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = DatasetVersion
        fields = ["id", "name", "content_hash", "created_by", "notes", "params", "counts", "excluded",
                  "leak_report", "created_at"]
        read_only_fields = fields


class FreezeSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=120)
    val = serializers.FloatField(default=0.15, min_value=0, max_value=0.9)
    test = serializers.FloatField(default=0.15, min_value=0, max_value=0.9)
    seed = serializers.IntegerField(default=0)
    min_images = serializers.IntegerField(default=6, min_value=1)
    notes = serializers.CharField(required=False, allow_blank=True, default="")
