"""Images for the characters app: the shared decoder (apps.ml.images) and thumbnails."""
from __future__ import annotations

import io

from PIL import Image as PILImage

from apps.ml.images import ALLOWED_FORMATS, DecodedImage, ImageRejected, decode_image  # noqa: F401


def make_thumbnail(rgb: PILImage.Image, size: int) -> bytes:
    thumb = rgb.copy()
    thumb.thumbnail((size, size), PILImage.Resampling.LANCZOS, reducing_gap=2.0)
    out = io.BytesIO()
    thumb.save(out, format="WEBP", quality=80, method=4)
    return out.getvalue()
