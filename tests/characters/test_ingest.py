"""The ingest service: validation, reason codes, exact and near dedupe, concurrency."""
import io
import threading

import pytest
from django.core.files.storage import default_storage
from django.db import connection
from PIL import Image as PILImage

from apps.characters.models import Image
from apps.characters.services import image_ingest
from tests.conftest import make_image_bytes, near_copy_bytes


def _scrambled(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + b"\xff" * 64 + data[middle + 64 :]


def ingest(data, **kw):
    kw.setdefault("source_kind", "upload")
    return image_ingest(data=data, **kw)


@pytest.mark.django_db
class TestValidation:
    @pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP"])
    def test_accepted_formats(self, fmt):
        result = ingest(make_image_bytes(1, fmt=fmt))
        assert result.outcome == "new", result.message
        image = result.image
        assert image.format == fmt and (image.width, image.height) == (96, 96)
        assert image.file.name == f"images/{image.sha256[:2]}/{image.sha256[2:4]}/{image.sha256}.{image.file.name.rsplit('.', 1)[1]}"
        assert default_storage.exists(image.file.name) and default_storage.exists(image.thumbnail)

    @pytest.mark.parametrize("mode", ["CMYK", "P", "LA", "RGBA", "L", "1", "I;16"])
    def test_unusual_modes_are_handled(self, mode):
        fmt = "JPEG" if mode == "CMYK" else "PNG"
        result = ingest(make_image_bytes(7, mode=mode, fmt=fmt))
        assert result.outcome == "new", result.message

    def test_transparent_palette_image(self):
        img = PILImage.new("P", (80, 80))
        img.putpalette([0, 0, 0, 255, 0, 0] * 128)
        img.info["transparency"] = 0
        out = io.BytesIO()
        img.save(out, format="PNG", transparency=0)
        assert ingest(out.getvalue()).outcome == "new"

    def test_animated_gif_uses_first_frame(self):
        frames = [PILImage.open(io.BytesIO(make_image_bytes(s))).convert("P") for s in (3, 4, 5)]
        out = io.BytesIO()
        frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:], duration=50)
        result = ingest(out.getvalue())
        assert result.outcome == "new" and result.image.format == "GIF"

    def test_exif_orientation_is_applied(self):
        img = PILImage.open(io.BytesIO(make_image_bytes(9, size=(120, 80))))
        exif = img.getexif()
        exif[0x0112] = 6  # rotate 90°: stored 120×80, displayed 80×120
        out = io.BytesIO()
        img.save(out, format="JPEG", exif=exif)
        result = ingest(out.getvalue())
        assert (result.image.width, result.image.height) == (80, 120)

    @pytest.mark.parametrize(
        "data,reason",
        [
            (b"", "empty"),
            (b"this is not an image at all", "not_an_image"),
            (make_image_bytes(2, fmt="JPEG")[:600], "truncated"),
            (_scrambled(make_image_bytes(2, fmt="PNG")), "corrupt"),
            (make_image_bytes(2, size=(200, 40)), "too_small"),
        ],
        ids=["empty", "text", "truncated-jpeg", "corrupt-png", "too-small"],
    )
    def test_bad_files_are_refused_with_a_reason(self, data, reason):
        result = ingest(data)
        assert result.outcome == "refused"
        assert result.reason == reason, result.message
        assert Image.objects.count() == 0

    def test_other_formats_are_refused(self):
        out = io.BytesIO()
        PILImage.open(io.BytesIO(make_image_bytes(1))).save(out, format="TIFF")
        assert ingest(out.getvalue()).reason == "unsupported_format"

    def test_decompression_bomb_is_refused_from_the_header(self, settings):
        # A 12000×12000 PNG of one colour compresses to a few hundred KB but would need 432 MB decoded.
        settings.KYARA_MAX_IMAGE_PIXELS = 40_000_000
        out = io.BytesIO()
        PILImage.new("L", (12000, 12000)).save(out, format="PNG", optimize=True)
        result = ingest(out.getvalue())
        assert result.reason == "too_many_pixels" and "144,000,000" in result.message

    def test_too_many_bytes_is_refused_before_decoding(self, settings):
        settings.KYARA_MAX_IMAGE_BYTES = 1000
        result = ingest(io.BytesIO(make_image_bytes(1, fmt="BMP")))
        assert result.reason == "too_large"

    def test_minimum_side_is_a_setting(self, settings):
        settings.KYARA_MIN_IMAGE_SIDE = 32
        assert ingest(make_image_bytes(2, size=(200, 40))).outcome == "new"


@pytest.mark.django_db
class TestDedupe:
    def test_exact_duplicate_is_a_noop_that_says_so(self, character):
        data = make_image_bytes(11)
        first = ingest(data, character=character)
        again = ingest(data)
        assert again.outcome == "exact_duplicate" and again.image.pk == first.image.pk
        assert f"image {first.image.pk}" in again.message
        assert Image.objects.count() == 1

    def test_near_duplicates_are_grouped_when_kept(self):
        original = ingest(make_image_bytes(12)).image
        copy = ingest(near_copy_bytes(make_image_bytes(12)))
        assert copy.outcome == "new" and copy.near_duplicate_ids == [original.pk]
        assert copy.image.dup_group == original.dup_group == original.pk
        unrelated = ingest(make_image_bytes(13)).image
        assert unrelated.dup_group == unrelated.pk != original.pk

    def test_near_duplicates_are_refused_on_crawls_by_default(self):
        original = ingest(make_image_bytes(12)).image
        result = ingest(near_copy_bytes(make_image_bytes(12)), source_kind="crawl")
        assert result.outcome == "near_duplicate" and result.reason == "near_duplicate"
        assert result.near_duplicate_ids == [original.pk]
        assert Image.objects.count() == 1

    def test_policy_can_be_overridden_per_call(self):
        ingest(make_image_bytes(12))
        kept = ingest(near_copy_bytes(make_image_bytes(12)), source_kind="crawl", near_duplicate_policy="keep")
        assert kept.outcome == "new"
        refused = ingest(near_copy_bytes(make_image_bytes(12), fmt="PNG"), near_duplicate_policy="refuse")
        assert refused.outcome == "near_duplicate"

    def test_bridging_image_merges_groups(self, settings):
        settings.KYARA_NEAR_DUPLICATE_DISTANCE = 6
        from apps.characters.phash import bands, to_signed
        from apps.characters.services.ingest import _join_group

        a = ingest(make_image_bytes(21)).image
        b = ingest(make_image_bytes(22)).image
        c = ingest(make_image_bytes(23)).image
        _join_group(c, [a.dup_group, b.dup_group])
        a.refresh_from_db(), b.refresh_from_db()
        assert a.dup_group == b.dup_group == c.dup_group == min(a.pk, b.pk)
        assert bands(to_signed(2**64 - 1)) == [65535] * 4

    def test_lookup_uses_the_band_index_not_a_scan(self, django_assert_max_num_queries):
        from apps.characters.selectors import near_duplicates_of_hash

        original = ingest(make_image_bytes(12)).image
        with django_assert_max_num_queries(1) as captured:
            found = near_duplicates_of_hash(original.phash, exclude_id=None)
        assert [nd.image_id for nd in found] == [original.pk]
        sql = captured.captured_queries[0]["sql"]
        assert "phash_b0" in sql and "phash_b3" in sql and " IN " in sql


@pytest.mark.backend
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_ingests_of_the_same_file_leave_one_image():
    data = make_image_bytes(31)
    results, errors = [], []
    barrier = threading.Barrier(2)

    def run():
        try:
            barrier.wait(timeout=10)
            results.append(image_ingest(data=data, source_kind="upload"))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    assert sorted(r.outcome for r in results) == ["exact_duplicate", "new"]
    assert Image.objects.count() == 1
    assert len({r.image.pk for r in results}) == 1
